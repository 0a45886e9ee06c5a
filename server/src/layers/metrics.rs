//! Counts and times every request: `oranc_http_requests_total{cache,route,method,status}`,
//! latency to the response head, and bytes in and out (by Content-Length, so a streamed NAR
//! is counted without being touched). Requests in flight are tower-http's in-flight layer's
//! (router.rs): it counts until the body ends, which a layer that sees only the response
//! head cannot.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::http::{header, Request, Response};
use tower::{Layer, Service};

use crate::metrics::Metrics;
use crate::request_context::RequestContext;

#[derive(Debug, Clone)]
pub struct MetricsLayer {
    metrics: Metrics,
}

impl MetricsLayer {
    pub fn new(metrics: Metrics) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct MetricsService<S> {
    inner: S,
    metrics: Metrics,
}

fn content_length<B>(headers: &axum::http::HeaderMap, _body: &B) -> u64 {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

impl<S> Service<Request<Body>> for MetricsService<S>
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
        let metrics = self.metrics.clone();
        let context = request.extensions().get::<Arc<RequestContext>>().cloned();
        let route = context.as_ref().map_or("other", |c| c.route_label());
        let method = crate::metrics::method_label(request.method());
        let uploaded = content_length(request.headers(), request.body());
        let started = Instant::now();
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            metrics
                .request_duration
                .with_label_values(&[route])
                .observe(started.elapsed().as_secs_f64());
            let cache = context.as_ref().map_or("-", |c| c.cache_label());
            metrics
                .requests
                .with_label_values(&[cache, route, method, response.status().as_str()])
                .inc();
            if method != "HEAD" {
                metrics
                    .response_bytes
                    .with_label_values(&[route])
                    .inc_by(content_length(response.headers(), response.body()));
            }
            if uploaded > 0 {
                metrics
                    .request_bytes
                    .with_label_values(&[route])
                    .inc_by(uploaded);
            }
            Ok(response)
        })
    }
}
