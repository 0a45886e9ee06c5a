//! Per-client rate limiting: a burst of Nix clients must not get us throttled by ghcr.io or
//! Docker Hub, and one client must not crowd out the others. A client is its address
//! ([`ClientAddr`], set by the listener), never its credentials: those are not checked
//! here, and made-up ones would buy a fresh allowance each. Over the limit, the answer is
//! 429 with Retry-After; `/metrics` and health checks are never limited.

use std::convert::Infallible;
use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{header, Request, Response, StatusCode};
use axum::response::IntoResponse;
use tower::{Layer, Service};

use crate::client_addr::ClientAddr;
use crate::client_limiter::ClientLimiter;
use crate::metrics::Metrics;
use crate::request_context::RequestContext;

#[derive(Clone)]
pub struct RateLimitLayer {
    limiter: Option<Arc<ClientLimiter>>,
    metrics: Metrics,
}

impl std::fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("on", &self.limiter.is_some())
            .finish()
    }
}

impl RateLimitLayer {
    pub fn new(config: &oranc_config::RateLimitConfig, metrics: Metrics) -> Self {
        let limiter = NonZeroU32::new(config.requests_per_second).map(|rate| {
            let burst = NonZeroU32::new(config.burst).unwrap_or(rate);
            Arc::new(ClientLimiter::per_second(rate, burst, config.max_clients))
        });
        Self { limiter, metrics }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimitService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RateLimitService<S> {
    inner: S,
    layer: RateLimitLayer,
}

impl<S> Service<Request<Body>> for RateLimitService<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let exempt = request
            .extensions()
            .get::<Arc<RequestContext>>()
            .is_some_and(|context| context.is_endpoint());
        if let (Some(limiter), false) = (&self.layer.limiter, exempt) {
            let client = request.extensions().get::<ClientAddr>().copied();
            if let Err(wait) = limiter.check(client) {
                self.layer.metrics.rate_limited.inc();
                let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                let response = (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(header::RETRY_AFTER, seconds.max(1).to_string())],
                    "too many requests from this client; retry later\n",
                )
                    .into_response();
                return Box::pin(async move { Ok(response) });
            }
        }
        Box::pin(self.inner.call(request))
    }
}
