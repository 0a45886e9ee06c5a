//! Caches small answers (narinfo, nix-cache-info) and 404s in memory, so a warm lookup
//! costs no registry round trip; concurrent identical misses wait for one registry request
//! (moka's `try_get_with` coalesces them). Entries are keyed by method, path and a digest
//! of the client's credentials (Basic or SigV4), so one client's answer is never served to
//! another with other credentials. A successful PUT through this server drops the entries for its
//! path at once.
//!
//! NAR bodies are never buffered: for them only a 404 is remembered.
//!
//! Requests whose answer depends on more than method, path and credentials (`Range`,
//! conditional headers) pass through alone: they are neither answered from the cache nor
//! share another request's answer, so a 206 of 20 bytes is never handed to a plain GET.
//! A body that cannot be read whole (larger than the server accepts, or broken) is a 502,
//! never an empty 200, and is not kept.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, Response, StatusCode};
use bytes::Bytes;
use tower::{Layer, Service, ServiceExt as _};

use crate::request_context::RequestContext;

pub use crate::metrics::CacheStats;

/// Headers that shape an answer beyond method, path and credentials.
const SHAPING_HEADERS: [axum::http::HeaderName; 5] = [
    axum::http::header::RANGE,
    axum::http::header::IF_NONE_MATCH,
    axum::http::header::IF_MATCH,
    axum::http::header::IF_MODIFIED_SINCE,
    axum::http::header::IF_RANGE,
];

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    head: bool,
    target: String,
    authorization: [u8; 32],
    /// The stored file the answer is about (registry, repository, key), whichever route
    /// named it: a PUT through one named cache or URL drops the answers of every other
    /// route to the same file.
    stored: Option<String>,
}

#[derive(Debug)]
struct Cached {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Cached {
    fn to_response(&self) -> Response<Body> {
        let mut response = Response::new(Body::from(self.body.clone()));
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers.clone();
        response
    }
}

struct TtlByStatus {
    positive: Duration,
    negative: Duration,
}

impl moka::Expiry<Key, Arc<Cached>> for TtlByStatus {
    fn expire_after_create(
        &self,
        _key: &Key,
        value: &Arc<Cached>,
        _now: Instant,
    ) -> Option<Duration> {
        Some(if value.status == StatusCode::NOT_FOUND {
            self.negative
        } else {
            self.positive
        })
    }
}

#[derive(Clone)]
pub struct ResponseCache {
    entries: moka::future::Cache<Key, Arc<Cached>>,
    stats: Arc<CacheStats>,
    /// The largest small file the server accepts and serves (`max_small_body_bytes`).
    max_body: usize,
    /// Each named cache's registry and repository, by name.
    named: Arc<std::collections::HashMap<String, (String, String)>>,
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache")
            .field("entries", &self.entries.entry_count())
            .finish()
    }
}

impl Cached {
    /// An answer that must not be kept (a mirror's "not yet known here", which a later
    /// narinfo lookup changes; kept, it would let anyone hide a NAR from everyone).
    fn says_no_store(&self) -> bool {
        self.headers
            .get(axum::http::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("no-store"))
    }
}

impl ResponseCache {
    /// `named`: each named cache's registry and repository, by name.
    pub fn new(
        config: &oranc_config::ResponseCacheConfig,
        max_body: usize,
        named: std::collections::HashMap<String, (String, String)>,
    ) -> Self {
        let stats = Arc::new(CacheStats::default());
        let evictions = stats.clone();
        let entries = moka::future::Cache::builder()
            .max_capacity(config.max_bytes)
            .weigher(|key: &Key, value: &Arc<Cached>| {
                let stored = key.stored.as_ref().map_or(0, String::len);
                u32::try_from(value.body.len() + key.target.len() + stored + 256)
                    .unwrap_or(u32::MAX)
            })
            .expire_after(TtlByStatus {
                positive: Duration::from_secs(config.ttl_secs),
                negative: Duration::from_secs(config.negative_ttl_secs),
            })
            .support_invalidation_closures()
            .eviction_listener(move |_key, _value, cause| {
                if cause == moka::notification::RemovalCause::Size {
                    evictions.evictions.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build();
        Self {
            entries,
            stats,
            max_body,
            named: Arc::new(named),
        }
    }

    /// The whole answer, kept in memory; one whose body cannot be read whole is a 502.
    async fn buffer(&self, response: Response<Body>) -> Cached {
        let (parts, body) = response.into_parts();
        match axum::body::to_bytes(body, self.max_body).await {
            Ok(body) => Cached {
                status: parts.status,
                headers: parts.headers,
                body,
            },
            Err(error) => {
                tracing::warn!(%error, limit = self.max_body, "an answer could not be read whole; answered 502");
                let mut headers = HeaderMap::new();
                headers.insert(
                    axum::http::header::CONTENT_TYPE,
                    axum::http::HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                Cached {
                    status: StatusCode::BAD_GATEWAY,
                    headers,
                    body: Bytes::from(format!(
                        "the answer could not be read whole (over {} bytes, or broken); see the server log\n",
                        self.max_body
                    )),
                }
            }
        }
    }

    pub fn stats(&self) -> Arc<CacheStats> {
        self.stats.clone()
    }

    /// Drops every answer about the file `key` names: under any credentials, and under
    /// every route to the file it stores.
    fn invalidate(&self, key: Key) {
        let _ = self.entries.invalidate_entries_if(move |cached, _| {
            cached.target == key.target || (key.stored.is_some() && cached.stored == key.stored)
        });
    }

    fn key_of(&self, request: &Request<Body>) -> Key {
        let context = context_of(request);
        // By credentials, not by header: a SigV4 header differs on every request. Only
        // where they shape the answer: a named cache answers everyone alike.
        let authorization = context
            .filter(|context| context.reads_depend_on_credentials())
            .map_or([0; 32], |context| context.fingerprint);
        Key {
            head: request.method() == Method::HEAD,
            target: target_of(request),
            authorization,
            stored: context.and_then(|context| context.stored_file(&self.named)),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ResponseCacheLayer {
    /// Shared: the service is cloned for every request, and one reference count is cheaper
    /// than the cache's own handles.
    cache: Option<Arc<ResponseCache>>,
}

impl ResponseCacheLayer {
    /// `None` (or `max_bytes = 0`) passes everything through.
    pub fn new(cache: Option<ResponseCache>) -> Self {
        Self {
            cache: cache.map(Arc::new),
        }
    }
}

impl<S> Layer<S> for ResponseCacheLayer {
    type Service = ResponseCacheService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ResponseCacheService {
            inner,
            cache: self.cache.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ResponseCacheService<S> {
    inner: S,
    cache: Option<Arc<ResponseCache>>,
}

/// The request's context (request_context.rs), which the layers outside set.
fn context_of(request: &Request<Body>) -> Option<&RequestContext> {
    request
        .extensions()
        .get::<Arc<RequestContext>>()
        .map(Arc::as_ref)
}

/// What an entry is kept under: the file the request names (its cache and parsed key), so
/// every spelling of one URL shares one entry and a PUT drops them all; the normalised
/// path for anything that names no file.
fn target_of(request: &Request<Body>) -> String {
    context_of(request)
        .and_then(RequestContext::file_identity)
        .unwrap_or_else(|| normalised_target(request.uri()))
}

/// The path, and of the query only what the server reads (`registry`, `repository`, as the
/// original oranc's URLs carry them): made-up parameters must not make new entries, or a
/// flood of them would push out the answers Nix needs.
fn normalised_target(uri: &axum::http::Uri) -> String {
    let mut target = uri.path().to_owned();
    let kept: Vec<&str> = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|pair| pair.starts_with("registry=") || pair.starts_with("repository="))
        .collect();
    if !kept.is_empty() {
        target.push('?');
        target.push_str(&kept.join("&"));
    }
    target
}

/// An answer that is not worth caching, shared with every request coalesced onto it.
#[derive(Debug)]
struct Uncacheable(Arc<Cached>);

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

impl<S> Service<Request<Body>> for ResponseCacheService<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let Some(cache) = self.cache.clone() else {
            return Box::pin(self.inner.call(request));
        };
        // The service that was polled ready serves this request; a clone takes its place.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let method = request.method().clone();
        // What the answer is kept under, and what a successful PUT drops.
        let key = cache.key_of(&request);
        let shaped = SHAPING_HEADERS
            .iter()
            .any(|name| request.headers().contains_key(name));
        // Small files are kept whole; anything else only has its 404s remembered.
        let small_file = context_of(&request).is_some_and(RequestContext::is_small_file);
        match method {
            Method::GET | Method::HEAD if shaped => Box::pin(inner.oneshot(request)),
            Method::PUT => Box::pin(async move {
                let response = inner.oneshot(request).await?;
                if response.status().is_success() {
                    cache.invalidate(key);
                }
                Ok(response)
            }),
            Method::GET | Method::HEAD if small_file => Box::pin(async move {
                if let Some(hit) = cache.entries.get(&key).await {
                    cache.stats.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(hit.to_response());
                }
                cache.stats.misses.fetch_add(1, Ordering::Relaxed);
                let stats = cache.stats.clone();
                let buffering = cache.clone();
                let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let ran_here = ran.clone();
                let outcome = cache
                    .entries
                    .try_get_with(key, async move {
                        ran_here.store(true, Ordering::Relaxed);
                        let response = inner
                            .oneshot(request)
                            .await
                            .unwrap_or_else(|never| match never {});
                        let cached = Arc::new(buffering.buffer(response).await);
                        if matches!(cached.status, StatusCode::OK | StatusCode::NOT_FOUND) {
                            Ok(cached)
                        } else {
                            Err(Uncacheable(cached))
                        }
                    })
                    .await;
                if !ran.load(Ordering::Relaxed) {
                    stats.coalesced.fetch_add(1, Ordering::Relaxed);
                }
                Ok(match outcome {
                    Ok(cached) => cached.to_response(),
                    Err(uncacheable) => uncacheable.0.to_response(),
                })
            }),
            Method::GET | Method::HEAD => Box::pin(async move {
                if let Some(hit) = cache.entries.get(&key).await {
                    cache.stats.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(hit.to_response());
                }
                let response = inner.oneshot(request).await?;
                if response.status() == StatusCode::NOT_FOUND {
                    cache.stats.misses.fetch_add(1, Ordering::Relaxed);
                    let cached = Arc::new(cache.buffer(response).await);
                    if cached.status == StatusCode::NOT_FOUND && !cached.says_no_store() {
                        cache.entries.insert(key, cached.clone()).await;
                    }
                    return Ok(cached.to_response());
                }
                Ok(response)
            }),
            _ => Box::pin(inner.oneshot(request)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// An inner service that counts calls and answers after a pause, 404 for `absent`.
    fn counting_service(
        calls: Arc<AtomicUsize>,
    ) -> impl Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future = impl Send>
           + Clone
           + Send
           + 'static {
        tower::service_fn(move |request: Request<Body>| {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                let status =
                    if request.method() != Method::PUT && request.uri().path().contains(ABSENT) {
                        StatusCode::NOT_FOUND
                    } else {
                        StatusCode::OK
                    };
                let mut response = Response::new(Body::from("StorePath: x\n"));
                *response.status_mut() = status;
                Ok::<_, Infallible>(response)
            }
        })
    }

    /// A cache with a sub-second negative TTL (the config counts whole seconds).
    fn cache(negative_ttl_ms: u64) -> ResponseCache {
        let entries = moka::future::Cache::builder()
            .max_capacity(1 << 20)
            .expire_after(TtlByStatus {
                positive: Duration::from_secs(60),
                negative: Duration::from_millis(negative_ttl_ms),
            })
            .support_invalidation_closures()
            .build();
        ResponseCache {
            entries,
            stats: Arc::new(CacheStats::default()),
            max_body: 1 << 20,
            named: Arc::default(),
        }
    }

    /// Narinfos the counting service has, and has not.
    const PRESENT: &str = "5kk4mwqi310s9ssry90al6mxrb47vdiw.narinfo";
    const ABSENT: &str = "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a.narinfo";

    /// `request` with the context the layers outside would attach.
    fn in_context(request: Request<Body>) -> Request<Body> {
        crate::request_context::AddressRules::new([], 2).attach(request)
    }

    fn get(path: &str) -> Request<Body> {
        in_context(Request::get(path).body(Body::empty()).unwrap())
    }

    #[tokio::test]
    async fn a_hundred_concurrent_misses_make_one_inner_request() {
        let calls = Arc::new(AtomicUsize::new(0));
        let cache = cache(1000);
        let service =
            ResponseCacheLayer::new(Some(cache.clone())).layer(counting_service(calls.clone()));
        let requests = (0..100).map(|_| service.clone().oneshot(get(&format!("/r/o/c/{PRESENT}"))));
        let responses = futures::future::join_all(requests).await;
        assert!(responses
            .iter()
            .all(|r| r.as_ref().unwrap().status() == StatusCode::OK));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(cache.stats.coalesced.load(Ordering::Relaxed), 99);
        // And a later request is a plain hit.
        service
            .clone()
            .oneshot(get(&format!("/r/o/c/{PRESENT}")))
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(cache.stats.hits.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn only_the_parameters_the_server_reads_make_a_key() {
        let uri = |s: &str| s.parse::<axum::http::Uri>().unwrap();
        assert_eq!(
            normalised_target(&uri("/c/x.narinfo?junk=1")),
            "/c/x.narinfo"
        );
        assert_eq!(
            normalised_target(&uri("/x.narinfo?a=1&registry=r&b=2&repository=o%2Fc")),
            "/x.narinfo?registry=r&repository=o%2Fc"
        );
    }

    #[tokio::test]
    async fn a_404_is_cached_for_its_ttl_only() {
        let calls = Arc::new(AtomicUsize::new(0));
        let service =
            ResponseCacheLayer::new(Some(cache(300))).layer(counting_service(calls.clone()));
        for _ in 0..3 {
            let answer = service
                .clone()
                .oneshot(get(&format!("/r/o/c/{ABSENT}")))
                .await
                .unwrap();
            assert_eq!(answer.status(), StatusCode::NOT_FOUND);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_millis(400)).await;
        service
            .clone()
            .oneshot(get(&format!("/r/o/c/{ABSENT}")))
            .await
            .unwrap();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "asked again after the negative TTL"
        );
    }

    #[tokio::test]
    async fn a_put_drops_the_cached_answer_and_credentials_separate_entries() {
        let calls = Arc::new(AtomicUsize::new(0));
        let service =
            ResponseCacheLayer::new(Some(cache(60_000))).layer(counting_service(calls.clone()));
        service
            .clone()
            .oneshot(get(&format!("/r/o/c/{ABSENT}")))
            .await
            .unwrap();
        let with_credentials = in_context(
            Request::get(format!("/r/o/c/{ABSENT}"))
                .header("authorization", "Basic dTpw")
                .body(Body::empty())
                .unwrap(),
        );
        service.clone().oneshot(with_credentials).await.unwrap();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "another client, another entry"
        );
        let put = in_context(
            Request::put(format!("/r/o/c/{ABSENT}"))
                .body(Body::empty())
                .unwrap(),
        );
        service.clone().oneshot(put).await.unwrap();
        service
            .clone()
            .oneshot(get(&format!("/r/o/c/{ABSENT}")))
            .await
            .unwrap();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            4,
            "the PUT and a fresh lookup"
        );
    }

    #[tokio::test]
    async fn a_put_through_one_route_drops_the_answers_of_every_route_to_its_file() {
        let calls = Arc::new(AtomicUsize::new(0));
        let mut cache = cache(60_000);
        cache.named = Arc::new(
            [
                ("main".to_owned(), ("r".to_owned(), "o/c".to_owned())),
                ("alias".to_owned(), ("r".to_owned(), "o/c".to_owned())),
            ]
            .into(),
        );
        let service = ResponseCacheLayer::new(Some(cache)).layer(counting_service(calls.clone()));
        let rules = crate::request_context::AddressRules::new(["main".into(), "alias".into()], 2);
        let request = |method: Method, path: &str| {
            rules.attach(
                Request::builder()
                    .method(method)
                    .uri(path)
                    .body(Body::empty())
                    .unwrap(),
            )
        };
        service
            .clone()
            .oneshot(request(Method::GET, &format!("/alias/{ABSENT}")))
            .await
            .unwrap();
        service
            .clone()
            .oneshot(request(Method::PUT, &format!("/main/{ABSENT}")))
            .await
            .unwrap();
        service
            .clone()
            .oneshot(request(Method::GET, &format!("/alias/{ABSENT}")))
            .await
            .unwrap();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            3,
            "the PUT through /main dropped /alias's answer: same registry, repository, key"
        );
    }

    #[tokio::test]
    async fn a_put_drops_the_answer_under_every_spelling_of_its_file() {
        let calls = Arc::new(AtomicUsize::new(0));
        let service =
            ResponseCacheLayer::new(Some(cache(60_000))).layer(counting_service(calls.clone()));
        let spellings = [
            format!("/r/o/c/{ABSENT}"),
            format!("/{ABSENT}?registry=r&repository=o%2Fc"),
            format!("/{ABSENT}?repository=o/c&registry=r&junk=1"),
        ];
        for spelling in &spellings {
            service.clone().oneshot(get(spelling)).await.unwrap();
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "one file, one entry");
        let put = in_context(
            Request::put(format!("/r/o/c/{ABSENT}"))
                .body(Body::empty())
                .unwrap(),
        );
        service.clone().oneshot(put).await.unwrap();
        service.clone().oneshot(get(&spellings[1])).await.unwrap();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            3,
            "the PUT dropped the answer kept for another spelling"
        );
    }
}
