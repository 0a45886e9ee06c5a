//! The one place the router and its layers are put together. Order, outermost first:
//! metrics (sees every answer, limited or cached or not), the rate limit, the response
//! timeout, the response cache, then the handlers.

use axum::routing::get;
use axum::Router;

use crate::layers::metrics::MetricsLayer;
use crate::layers::rate_limit::RateLimitLayer;
use crate::layers::response_cache::ResponseCacheLayer;
use crate::layers::timeout::ResponseTimeoutLayer;
use crate::routes::{cache, health, metrics};
use crate::state::AppState;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::metrics))
        .fallback(cache::handle)
        .layer(ResponseCacheLayer::new(state.response_cache()))
        .layer(ResponseTimeoutLayer::new(std::time::Duration::from_secs(
            state.config().response_timeout_secs,
        )))
        .layer(RateLimitLayer::new(
            &state.config().rate_limit,
            state.metrics().clone(),
        ))
        .layer(MetricsLayer::new(state.metrics().clone()))
        .with_state(state)
}
