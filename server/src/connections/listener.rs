//! Accepting connections, with the limits a server facing hostile clients needs and that
//! `axum::serve` does not set: a header read timeout (which on a kept-alive connection also
//! bounds the idle time between requests), a cap on connections at once and per client
//! with the connections shared fairly when full (fair_share.rs), the open-file limit raised
//! to its hard limit, and a graceful shutdown that waits a bounded
//! time. hyper serves each connection as HTTP/1.1 (what Nix, curl and proxies in front
//! speak); every request is tagged with its client's [`ClientAddr`] here, in one place.
//!
//! Not hyper-util's `auto` builder: to tell HTTP/1 from HTTP/2 it first waits for a
//! client's opening bytes with no timeout at all, so a connection that sent nothing was held
//! for ever (found by a red-team run). hyper's HTTP/1 header timer starts at accept.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1::Builder;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower::ServiceExt as _;

use super::fair_share::{Busy, ConnectionState, OpenConnections};
use crate::client_addr::ClientAddr;
use crate::metrics::Metrics;

/// Bytes left unsent in a connection's socket at which its writer is woken
/// (`TCP_NOTSENT_LOWAT`): a few of a NAR's chunks.
const UNSENT_LOW_WATER: u32 = 256 << 10;

/// File descriptors kept free for registry connections, the log and the layout's files.
const RESERVED_FILES: u64 = 128;

/// The connection limits, from the config and the process's open-file limit.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    pub max_per_client: usize,
    pub trusted_proxies: Arc<[IpAddr]>,
    pub shutdown_grace: Duration,
}

impl ConnectionLimits {
    /// The config's limits, with `max_connections` kept below the open-file limit, which
    /// is first raised to its hard limit (a server needs far more than the usual soft 1024).
    pub fn from_config(config: &oranc_config::ClientLimitsConfig) -> Self {
        let files = raise_open_file_limit();
        let fitting = files.saturating_sub(RESERVED_FILES).max(16) as usize;
        if fitting < config.max_connections {
            tracing::warn!(
                open_file_limit = files,
                max_connections = fitting,
                "the open-file limit allows fewer connections than clients.max_connections; raise it (LimitNOFILE) to serve more"
            );
        }
        let max_connections = config.max_connections.min(fitting);
        Self {
            header_read_timeout: Duration::from_secs(config.header_read_timeout_secs),
            max_connections,
            // One client never holds more than half of what there is.
            max_per_client: config
                .max_connections_per_client
                .min((max_connections / 2).max(1)),
            trusted_proxies: config.trusted_proxies.clone().into(),
            shutdown_grace: Duration::from_secs(config.shutdown_grace_secs),
        }
    }
}

/// Raises the open-file limit to its hard limit (the usual soft 1024 is far too few for
/// a server, or for a push that also answers scrapes); returns the limit now.
pub fn raise_open_file_limit() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024)
}

/// Serves `app` on `listener` until `shutdown` completes, then lets requests in flight
/// finish for at most the grace period.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    metrics: Metrics,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut builder = Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let open = OpenConnections::new(limits.max_connections, limits.max_per_client);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // Accepting even when full: a newcomer either takes the place of a connection of
        // an address holding more (fair_share.rs) or is closed at once, instead of waiting
        // in the listen queue until it gives up.
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, or a connection reset before accept: wait a
                    // little rather than spin.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let capped = !limits.trusted_proxies.contains(&peer.ip());
        let admitted = match open.admit(ClientAddr::of_peer(peer.ip()), capped) {
            Ok(admitted) => admitted,
            Err(refusal) => {
                tracing::debug!(%peer, ?refusal, "connection refused");
                metrics.connections_refused.inc();
                drop(stream);
                continue;
            }
        };
        if admitted.evicted_another {
            metrics.connections_evicted.inc();
        }
        let _ = stream.set_nodelay(true);
        // The socket wakes its writer once less than this is left unsent, not only once a
        // third of its send buffer (up to 4 MB) is free: a client reading steadily but
        // slower than that third per `read_timeout_secs` looked stalled to the mirror's
        // streams and was cut off (found by the red team: 200 KB/s with a 5 s timeout).
        // What is in flight on the network is not limited by it.
        let _ = socket2::SockRef::from(&stream).set_tcp_notsent_lowat(UNSENT_LOW_WATER);
        let serving = Serving {
            app: app.clone(),
            peer,
            trusted_proxies: limits.trusted_proxies.clone(),
            connection: admitted.state.clone(),
        };
        let connection = graceful.watch(connection(&builder, stream, serving));
        tokio::spawn(async move {
            tokio::select! {
                ended = connection => if let Err(error) = ended {
                    tracing::debug!(%peer, error = %error, "connection ended with an error");
                },
                // Closed, whatever it was doing, for a client holding fewer connections.
                () = admitted.evicted() => {}
            }
            drop(admitted);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.shutdown_grace) => {
            tracing::warn!(grace = ?limits.shutdown_grace, "requests still in flight after the shutdown grace period; exiting anyway");
        }
    }
    Ok(())
}

/// What serving one connection needs.
struct Serving {
    app: Router,
    peer: SocketAddr,
    trusted_proxies: Arc<[IpAddr]>,
    connection: Arc<ConnectionState>,
}

/// One accepted connection, served as HTTP/1.1; each of its requests is tagged with its
/// [`ClientAddr`], and the connection counts as busy until each answer has been sent.
fn connection(
    builder: &Builder,
    stream: tokio::net::TcpStream,
    serving: Serving,
) -> impl hyper_util::server::graceful::GracefulConnection<Error = hyper::Error> {
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        let client = ClientAddr::of_request(
            serving.peer.ip(),
            request.headers(),
            &serving.trusted_proxies,
        );
        request.extensions_mut().insert(client);
        let busy = serving.connection.request_started();
        let answer = serving.app.clone().oneshot(request);
        async move {
            let response = answer.await?;
            Ok::<_, std::convert::Infallible>(
                response.map(|body| SentWhileBusy { body, _busy: busy }),
            )
        }
    });
    builder.serve_connection(TokioIo::new(stream), service)
}

/// An answer's body, holding its connection busy until it is sent (or dropped).
struct SentWhileBusy {
    body: axum::body::Body,
    _busy: Busy,
}

impl hyper::body::Body for SentWhileBusy {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}
