//! The one place the router is put together.

use axum::routing::get;
use axum::Router;

use crate::routes::{cache, health};
use crate::state::AppState;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .fallback(cache::handle)
        .with_state(state)
}
