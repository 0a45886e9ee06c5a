//! Per-client rate limiting: a burst of Nix clients must not get us throttled by ghcr.io or
//! Docker Hub. A client is identified by its credentials when it sends some (so users
//! behind one NAT do not share a bucket), else by its IP address. Over the limit, the answer
//! is 429 with Retry-After; `/metrics` and health checks are never limited.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Request, Response, StatusCode};
use axum::response::IntoResponse;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tower::{Layer, Service};

use crate::metrics::Metrics;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ClientKey {
    Credentials([u8; 32]),
    Address(IpAddr),
    Unknown,
}

#[derive(Clone)]
pub struct RateLimitLayer {
    limiter: Option<Arc<DefaultKeyedRateLimiter<ClientKey>>>,
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
            Arc::new(RateLimiter::keyed(
                Quota::per_second(rate).allow_burst(burst),
            ))
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

fn client_key(request: &Request<Body>) -> ClientKey {
    // By credentials, not by header (a SigV4 header differs on every request, and an
    // unusable one must not buy a fresh allowance).
    if let Some(credentials) = crate::client_auth::client_credentials(request.headers()) {
        return ClientKey::Credentials(crate::client_auth::fingerprint(&credentials));
    }
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(ClientKey::Unknown, |info| ClientKey::Address(info.0.ip()))
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
        let exempt = matches!(request.uri().path(), "/metrics" | "/healthz" | "/readyz");
        if let (Some(limiter), false) = (&self.layer.limiter, exempt) {
            if let Err(not_until) = limiter.check_key(&client_key(&request)) {
                self.layer.metrics.rate_limited.inc();
                let wait = not_until.wait_time_from(DefaultClock::default().now());
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
