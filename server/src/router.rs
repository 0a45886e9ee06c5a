//! The one place the router and its layers are put together.

use axum::routing::get;
use axum::Router;

use crate::layers::response_cache::{ResponseCache, ResponseCacheLayer};
use crate::routes::{cache, health};
use crate::state::AppState;

pub fn router(state: AppState) -> Router {
    let response_cache =
        (state.config().cache.max_bytes > 0).then(|| ResponseCache::new(&state.config().cache));
    Router::new()
        .route("/healthz", get(health::healthz))
        .fallback(cache::handle)
        .layer(ResponseCacheLayer::new(response_cache))
        .with_state(state)
}
