//! One accepted connection, start to end: its TLS handshake (ALPN picks HTTP/2 or
//! HTTP/1.1) or, on a plain listener, HTTP/2's preface or not (sniff.rs), both within the
//! header timeout; then hyper serves it in that protocol with the same limits either way:
//!
//! - HTTP/1.1: hyper's header read timeout, which on a kept-alive connection also bounds
//!   the idle time between requests.
//! - HTTP/2: at most `max_streams_per_connection` requests open at once, each holding at
//!   most [`MAX_SEND_BUFFER`] of its answer unsent, a header list of at most
//!   [`MAX_HEADER_LIST`] (a CONTINUATION flood is cut off there by h2), resets bounded
//!   (h2's defences against "rapid reset", CVE-2023-44487: a client that resets more streams
//!   than it lets the server accept gets GOAWAY; each request it does make is counted by the
//!   rate limit like any other), and closed when no request has been open for the header
//!   timeout, as an idle HTTP/1.1 connection is. Dead peers are found with pings.
//!
//! Every request is tagged with its client's [`ClientAddr`] here, in one place, and its
//! connection counts as busy until the answer's body is sent (fair_share.rs). A client with
//! `max_requests_per_client` requests open over all its connections (HTTP/2 carries many on
//! one) gets 429 at once.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::Request;
use axum::Router;
use futures::future::Either;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tower::ServiceExt as _;

use super::fair_share::{Busy, ConnectionState};
use super::listener::ConnectionLimits;
use super::sniff;
use super::tls::ALPN_H2;
use crate::client_addr::ClientAddr;
use crate::metrics::Metrics;

/// The largest header block an HTTP/2 request may send (decoded), as HTTP/1.1's headers are
/// bounded by hyper's buffer. Nix's requests carry a few hundred bytes.
const MAX_HEADER_LIST: u32 = 32 << 10;
/// Bytes of an answer one HTTP/2 stream may hold waiting for its client's window.
const MAX_SEND_BUFFER: usize = 64 << 10;
/// Pings on an HTTP/2 connection with requests open: a peer that does not answer one within
/// [`PING_TIMEOUT`] is gone, and its streams are dropped.
const PING_INTERVAL: Duration = Duration::from_secs(30);
const PING_TIMEOUT: Duration = Duration::from_secs(20);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How connections are served: the TLS configuration, if any, and one builder per protocol.
pub struct Protocols {
    tls: Option<tokio_rustls::TlsAcceptor>,
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    /// For the handshake (TLS, or reading HTTP/2's preface), and an idle HTTP/2 connection.
    header_timeout: Duration,
}

impl Protocols {
    pub fn new(limits: &ConnectionLimits, tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.max_streams_per_connection)
            .max_header_list_size(MAX_HEADER_LIST)
            // What one stream may hold unsent, a sixth of hyper's default (400 KiB): a
            // connection carries up to 100 streams a client may leave unread.
            .max_send_buf_size(MAX_SEND_BUFFER)
            // Uploads of NARs: windows that grow with the path's bandwidth-delay product,
            // not a fixed 64 KiB that would cap a client 20 ms away at 3 MB/s.
            .adaptive_window(true)
            .keep_alive_interval(PING_INTERVAL)
            .keep_alive_timeout(PING_TIMEOUT);
        Self {
            tls: tls.map(tokio_rustls::TlsAcceptor::from),
            http1,
            http2,
            header_timeout: limits.header_read_timeout,
        }
    }
}

/// What serving one connection needs.
pub struct Serving {
    pub app: Router,
    pub peer: SocketAddr,
    /// Requests its client may have open at once (`None`: a trusted proxy, exempt).
    pub max_open_requests: Option<usize>,
    pub trusted_proxies: Arc<[IpAddr]>,
    pub connection: Arc<ConnectionState>,
    pub metrics: Metrics,
}

/// Serves one connection until it ends, or `stop` asks it to finish its requests and close.
pub async fn serve_connection(
    protocols: Arc<Protocols>,
    stream: tokio::net::TcpStream,
    serving: Serving,
    stop: watch::Receiver<bool>,
) -> Result<(), BoxError> {
    let timeout = protocols.header_timeout;
    let timed_out = || -> BoxError { "no handshake within the header timeout".into() };
    match &protocols.tls {
        Some(acceptor) => {
            let stream = tokio::time::timeout(timeout, acceptor.accept(stream))
                .await
                .map_err(|_| timed_out())??;
            let h2 = stream.get_ref().1.alpn_protocol() == Some(ALPN_H2);
            let label = if h2 { "h2" } else { "https/1.1" };
            drive(&protocols, stream, h2, label, serving, stop).await
        }
        None => {
            let (h2, stream) = tokio::time::timeout(timeout, sniff::read_preface(stream))
                .await
                .map_err(|_| timed_out())??;
            let label = if h2 { "h2c" } else { "http/1.1" };
            drive(&protocols, stream, h2, label, serving, stop).await
        }
    }
}

/// Serves `io` in the protocol agreed.
async fn drive<I>(
    protocols: &Protocols,
    io: I,
    h2: bool,
    label: &'static str,
    serving: Serving,
    stop: watch::Receiver<bool>,
) -> Result<(), BoxError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    serving
        .metrics
        .connections_served
        .with_label_values(&[label])
        .inc();
    let state = serving.connection.clone();
    let service = service(serving);
    if h2 {
        let idle = Some((state, protocols.header_timeout));
        let connection = protocols.http2.serve_connection(TokioIo::new(io), service);
        until_closed(connection, |c| c.graceful_shutdown(), stop, idle).await?;
    } else {
        let connection = protocols.http1.serve_connection(TokioIo::new(io), service);
        until_closed(connection, |c| c.graceful_shutdown(), stop, None).await?;
    }
    Ok(())
}

/// Drives `connection` to its end, closing it gracefully (requests in flight finish) when
/// `stop` says so or, with `idle`, once no request has been open for that long. An idle
/// connection that has not closed that long after (HTTP/2's graceful close waits for the
/// client to answer a ping, which a hostile one never does) is dropped.
async fn until_closed<C, E>(
    connection: C,
    close: impl Fn(Pin<&mut C>),
    mut stop: watch::Receiver<bool>,
    idle: Option<(Arc<ConnectionState>, Duration)>,
) -> Result<(), E>
where
    C: Future<Output = Result<(), E>>,
{
    let mut connection = std::pin::pin!(connection);
    let mut closing = false;
    let mut drop_at: Option<tokio::time::Instant> = None;
    loop {
        let idle_long_enough = async {
            match &idle {
                Some((state, limit)) => idle_for(state, *limit).await,
                None => std::future::pending().await,
            }
        };
        let dropped = async {
            match drop_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ended = connection.as_mut() => return ended,
            _ = stop.changed(), if !closing => {
                close(connection.as_mut());
                closing = true;
            }
            () = idle_long_enough, if !closing => {
                close(connection.as_mut());
                closing = true;
                if let Some((_, limit)) = &idle {
                    drop_at = Some(tokio::time::Instant::now() + *limit);
                }
            }
            () = dropped => return Ok(()),
        }
    }
}

/// Resolves once `state` has had no request open for `limit`.
async fn idle_for(state: &ConnectionState, limit: Duration) {
    loop {
        match state.idle_time() {
            Some(idle) if idle >= limit => return,
            Some(idle) => tokio::time::sleep(limit - idle).await,
            None => tokio::time::sleep(limit).await,
        }
    }
}

/// The service for one connection's requests: each is tagged with its client, and holds the
/// connection busy until its answer is sent.
fn service(
    serving: Serving,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = axum::http::Response<SentWhileBusy>,
    Error = std::convert::Infallible,
    Future = impl Future<
        Output = Result<axum::http::Response<SentWhileBusy>, std::convert::Infallible>,
    > + Send,
> + Clone {
    let serving = Arc::new(serving);
    hyper::service::service_fn(move |mut request: Request<Incoming>| {
        let client = ClientAddr::of_request(
            serving.peer.ip(),
            request.headers(),
            &serving.trusted_proxies,
        );
        request.extensions_mut().insert(client);
        let over_cap = serving
            .max_open_requests
            .is_some_and(|cap| serving.connection.client_open_requests() >= cap);
        let busy = serving.connection.request_started();
        let answer = if over_cap {
            serving.metrics.requests_over_client_cap.inc();
            Either::Left(std::future::ready(Ok(too_many_open())))
        } else {
            Either::Right(serving.app.clone().oneshot(request))
        };
        async move {
            let response = answer.await?;
            Ok::<_, std::convert::Infallible>(
                response.map(|body| SentWhileBusy { body, _busy: busy }),
            )
        }
    })
}

/// The answer to a request over its client's cap of open requests: retry in a second.
fn too_many_open() -> axum::response::Response {
    use axum::response::IntoResponse as _;
    (
        axum::http::StatusCode::TOO_MANY_REQUESTS,
        [(axum::http::header::RETRY_AFTER, "1")],
        "too many requests open from this client at once (clients.max_requests_per_client); retry in a second\n",
    )
        .into_response()
}

/// An answer's body, holding its connection busy until it is sent (or dropped).
pub struct SentWhileBusy {
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
