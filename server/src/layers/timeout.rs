//! Bounds the time to the response head: a request stuck behind a slow registry gets 504
//! instead of holding its client for ever. The body is not limited here (a large NAR may
//! stream for minutes; a stalled one is cut by the registry client's read timeout).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use axum::response::IntoResponse;
use tower::{Layer, Service};

#[derive(Debug, Clone, Copy)]
pub struct ResponseTimeoutLayer {
    limit: Duration,
}

impl ResponseTimeoutLayer {
    pub fn new(limit: Duration) -> Self {
        Self { limit }
    }
}

impl<S> Layer<S> for ResponseTimeoutLayer {
    type Service = ResponseTimeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ResponseTimeout {
            inner,
            limit: self.limit,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ResponseTimeout<S> {
    inner: S,
    limit: Duration,
}

impl<S> Service<Request<Body>> for ResponseTimeout<S>
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
        let limit = self.limit;
        let future = self.inner.call(request);
        Box::pin(async move {
            match tokio::time::timeout(limit, future).await {
                Ok(response) => response,
                Err(_) => Ok((
                    StatusCode::GATEWAY_TIMEOUT,
                    format!(
                        "no answer within {}s; the registry may be slow, try again\n",
                        limit.as_secs()
                    ),
                )
                    .into_response()),
            }
        })
    }
}
