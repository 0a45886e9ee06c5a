//! Accepting connections, with the limits a server facing hostile clients needs and that
//! `axum::serve` does not set: a cap on connections at once and per client with the
//! connections shared fairly when full (fair_share.rs), the open-file limit raised to its
//! hard limit, and a graceful shutdown that waits a bounded time. What happens on each
//! connection (TLS, HTTP/1.1 or HTTP/2, its timeouts) is connection.rs's.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;

use super::connection::{serve_connection, Protocols, Serving};
use super::fair_share::OpenConnections;
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
    /// Requests one HTTP/2 connection may have open at once.
    pub max_streams_per_connection: u32,
    /// Requests one client may have open at once over all its connections.
    pub max_requests_per_client: usize,
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
            max_streams_per_connection: config.max_streams_per_connection,
            max_requests_per_client: config.max_requests_per_client,
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

/// Serves `app` on `listener` (over TLS with `tls`) until `shutdown` completes, then lets
/// requests in flight finish for at most the grace period.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    metrics: Metrics,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let protocols = Arc::new(Protocols::new(&limits, tls));
    let open = OpenConnections::new(limits.max_connections, limits.max_per_client);
    // Every connection holds a receiver: `send(true)` asks them to finish, and `closed()`
    // says when the last one has.
    let (stopping, _) = tokio::sync::watch::channel(false);
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
            max_open_requests: capped.then_some(limits.max_requests_per_client),
            trusted_proxies: limits.trusted_proxies.clone(),
            connection: admitted.state.clone(),
            metrics: metrics.clone(),
        };
        let connection = serve_connection(protocols.clone(), stream, serving, stopping.subscribe());
        tokio::spawn(async move {
            tokio::select! {
                ended = connection => if let Err(error) = ended {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                },
                // Closed, whatever it was doing, for a client holding fewer connections.
                () = admitted.evicted() => {}
            }
            drop(admitted);
        });
    }
    drop(listener);
    let _ = stopping.send(true);
    tokio::select! {
        () = stopping.closed() => {}
        () = tokio::time::sleep(limits.shutdown_grace) => {
            tracing::warn!(grace = ?limits.shutdown_grace, "requests still in flight after the shutdown grace period; exiting anyway");
        }
    }
    Ok(())
}
