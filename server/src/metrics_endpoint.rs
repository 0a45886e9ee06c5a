//! A bare `/metrics` endpoint for processes other than the server (`oranc watch-store
//! --metrics-listen`): the server's own accept loop and limits (a header-read timeout, a
//! cap on connections in all and per client), so scrapers, or anyone else who reaches the
//! port, cannot hold the process's file descriptors.

use std::sync::Arc;
use std::time::Duration;

use axum::http::header;
use axum::routing::get;
use axum::Router;

use crate::connections::listener::{self, ConnectionLimits};
use crate::metrics::Metrics;

/// What renders the Prometheus text format on each scrape.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Serves `GET /metrics` on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, render: Render) -> std::io::Result<()> {
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let render = render.clone();
            async move {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    render(),
                )
            }
        }),
    );
    let limits = ConnectionLimits {
        header_read_timeout: Duration::from_secs(5),
        max_connections: 16,
        max_per_client: 4,
        max_streams_per_connection: 4,
        max_requests_per_client: 16,
        trusted_proxies: Arc::new([]),
        shutdown_grace: Duration::from_secs(1),
    };
    // The endpoint's own refusals are not the process's metrics.
    listener::serve(
        listener,
        app,
        limits,
        Metrics::new(None),
        None,
        std::future::pending(),
    )
    .await
}
