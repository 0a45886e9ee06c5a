//! A bare `/metrics` endpoint for processes other than the server (`oranc watch-store
//! --metrics-listen`): the same HTTP stack, nothing else routed.

use std::sync::Arc;

use axum::http::header;
use axum::routing::get;
use axum::Router;

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
    axum::serve(listener, app).await
}
