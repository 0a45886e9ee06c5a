//! Request handlers: the binary-cache files (reads, uploads), health and metrics. The
//! dispatch by method lives here, so reads (`cache.rs`) and uploads (`upload.rs`) never
//! import each other.

pub mod body;
pub mod cache;
pub mod content_coding;
pub mod health;
pub mod landing;
pub mod metrics;
pub mod small_file;
pub mod upload;
pub mod verified;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Extension;

pub use content_coding::ACCEPTED as ACCEPTED_CODINGS;

use crate::client_addr::ClientAddr;
use crate::error::ServerError;
use crate::request_context::RequestContext;
use crate::state::AppState;

/// Every request for a binary-cache file: GET and HEAD read, PUT uploads.
pub async fn handle(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Extension(context): Extension<Arc<RequestContext>>,
    address: Option<Extension<ClientAddr>>,
    body: Body,
) -> Response {
    let address = address.map(|Extension(address)| address);
    if test_panic_requested(uri.path()) {
        panic!("ORANC_TEST_PANIC_PATH asked for a panic at {}", uri.path());
    }
    // `/NAME` alone is a named cache's settings (one-segment paths with a query are
    // files of a URL-addressed cache: `/nix-cache-info?registry=…&repository=…`).
    if matches!(method, Method::GET | Method::HEAD) && uri.query().is_none() {
        let name = uri.path().trim_start_matches('/');
        if let Some(answer) = landing::one_cache(&state, name, &headers).await {
            return answer;
        }
    }
    let outcome = match method {
        // Only the time to the response head counts; a NAR may stream for longer. An upload
        // has no such bound: it may take as long as it keeps sending (see body.rs).
        Method::GET | Method::HEAD => {
            let limit = state.config().response_timeout_secs;
            tokio::time::timeout(
                Duration::from_secs(limit),
                cache::read(&state, &method, &headers, &context, address),
            )
            .await
            .unwrap_or(Err(ServerError::ResponseTimedOut(limit)))
        }
        Method::PUT => upload::write(&state, &headers, &context, address, body).await,
        _ => Ok((
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "GET, HEAD, PUT")],
        )
            .into_response()),
    };
    outcome.unwrap_or_else(|error| match error {
        ServerError::Core(oranc_core::Error::Denied { .. }) => {
            registry_refusal(&context, method == Method::PUT, error).into_response()
        }
        error => error.into_response(),
    })
}

/// What to answer when the registry refused the credentials a request acted with. A named
/// cache acts with its own (on reads always): the operator must fix them, and the client is
/// not challenged for credentials that would change nothing. Otherwise, where the client
/// sent none, it is challenged, so a client with a netrc file (Nix, through curl) answers
/// with them; the challenge says whether reading or writing needs them.
fn registry_refusal(context: &RequestContext, write: bool, error: ServerError) -> ServerError {
    match context.named_cache() {
        Some(name) if !write || context.credentials.is_none() => {
            ServerError::CacheCredentialsRefused(format!("{name} ({error})"))
        }
        _ if context.credentials.is_some() => error,
        _ if write => ServerError::CredentialsRequired,
        _ => ServerError::ReadCredentialsRequired,
    }
}

/// Tests only (builds with the `test-hooks` feature): with `ORANC_TEST_PANIC_PATH=/x`, a
/// request for a path ending in `/x` panics, so that "a bug is a 500, never a dropped
/// connection" is tested with a real panic.
fn test_panic_requested(path: &str) -> bool {
    if !cfg!(feature = "test-hooks") {
        return false;
    }
    static PANIC_PATH: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    PANIC_PATH
        .get_or_init(|| std::env::var("ORANC_TEST_PANIC_PATH").ok())
        .as_deref()
        .is_some_and(|suffix| path.ends_with(suffix))
}
