//! The one place the router and its layers are put together. Order, outermost first:
//! credentials marked sensitive (no layer can log them), a request id (set when the client
//! sent none, echoed in the answer and in every log line of the request), the count of
//! requests in flight (until their body ends), `X-Content-Type-Options: nosniff` on every
//! answer, the request context (credentials and path read once: request_context.rs), the
//! request's tracing span, metrics (they see every answer: limited, cached,
//! timed out or panicked), panics turned into 500s, the rate limit, the response cache,
//! then the handlers (reads time out there after `response_timeout_secs`: uploads must not,
//! see `routes/body.rs`).
//! Connections, and the client address every layer reads, are the listener's
//! (`connections/listener.rs`).
//!
//! tower-http provides the generic layers; ours are only those it has no equivalent for
//! (the response cache, the per-client rate limit, the metrics). Its body limit is not used:
//! it would cap NAR uploads, which stream unbounded; small files are limited in the handler.

use axum::body::Body;
use axum::http::{header, HeaderValue, Request, Response, StatusCode};
use axum::routing::get;
use axum::Router;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::metrics::InFlightRequestsLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

use crate::layers::metrics::MetricsLayer;
use crate::layers::rate_limit::RateLimitLayer;
use crate::layers::response_cache::ResponseCacheLayer;
use crate::refusal_log::Loggable;
use crate::request_context::{AddressRules, RequestContext};
use crate::routes::{health, landing, metrics};
use crate::state::AppState;

pub fn router(state: AppState) -> Router {
    let rules = AddressRules::new(
        state.config().caches.keys().cloned(),
        state.config().repository_parts,
    );
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::metrics))
        .route("/", get(landing::index))
        .fallback(crate::routes::handle)
        .layer(ResponseCacheLayer::new(state.response_cache()))
        .layer(RateLimitLayer::new(
            &state.config().rate_limit,
            state.metrics().clone(),
        ))
        .layer(CatchPanicLayer::custom(panic_answer))
        .layer(MetricsLayer::new(state.metrics().clone()))
        // One `layer` call for the five: axum boxes (and clones per request) the service at
        // every call, which cost a quarter of the warm-narinfo throughput when they were four.
        .layer(
            ServiceBuilder::new()
                .layer(SetSensitiveRequestHeadersLayer::new([
                    header::AUTHORIZATION,
                    header::PROXY_AUTHORIZATION,
                ]))
                .layer(SetRequestIdLayer::x_request_id(
                    SequentialRequestId::default(),
                ))
                .layer(PropagateRequestIdLayer::x_request_id())
                // In flight until the body ends: a NAR counts for as long as it streams.
                .layer(InFlightRequestsLayer::new(
                    state.metrics().in_flight_requests.clone(),
                ))
                // No answer is ever sniffed into something its Content-Type does not say.
                .layer(SetResponseHeaderLayer::overriding(
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ))
                // Credentials and path read once, for every layer and handler below.
                .map_request(move |request| rules.attach(request))
                // Failures are logged where their cause is known (ServerError, the panic
                // handler); the trace layer's generic line would only repeat them.
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(request_span)
                        .on_failure(()),
                ),
        )
        .with_state(state)
}

/// Request ids unique within the process and across restarts (a random prefix drawn at
/// start, then a counter): as useful as a UUID for matching a client's error with the log,
/// without a call into the system's random source per request.
#[derive(Debug, Clone)]
struct SequentialRequestId {
    prefix: std::sync::Arc<str>,
    next: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Default for SequentialRequestId {
    fn default() -> Self {
        Self {
            prefix: format!("{:016x}", fastrand::u64(..)).into(),
            next: std::sync::Arc::default(),
        }
    }
}

impl MakeRequestId for SequentialRequestId {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        HeaderValue::from_str(&format!("{}-{n}", self.prefix))
            .ok()
            .map(RequestId::new)
    }
}

/// Every log line of a request carries its id, so a Nix error can be matched with the log.
/// Never credentials or query strings.
fn request_span(request: &Request<Body>) -> tracing::Span {
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    let shown = Loggable(request.uri().path());
    // A client may send its own X-Request-Id: it is cut and escaped like the path.
    let id = Loggable(id);
    let route = request
        .extensions()
        .get::<std::sync::Arc<RequestContext>>()
        .map_or("other", |context| context.route_label());
    tracing::info_span!("request", id = %id, method = %request.method(), route, path = %shown)
}

/// A bug must not drop the client's connection: it gets a 500, the log a line.
fn panic_answer(panic: Box<dyn std::any::Any + Send + 'static>) -> Response<String> {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    tracing::error!(panic = message, "a handler panicked; answered 500");
    let mut response = Response::new("internal error; see the server log\n".to_owned());
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response
}
