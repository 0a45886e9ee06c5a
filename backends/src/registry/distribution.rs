//! The generic OCI distribution backend: any registry that speaks the distribution API
//! (CNCF distribution, Harbor, Zot, and underneath ghcr.io and Docker Hub).
//!
//! One pooled `reqwest` client per registry; auth from [`super::auth`]; retries from
//! [`super::retry`]; a semaphore bounds requests in flight. Blob bodies stream both ways:
//! downloads as a byte stream, uploads in bounded chunks (POST, PATCH..., PUT) hashed as they
//! go, so memory never grows with the blob.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use oranc_core::Registry as _;
use oranc_core::{
    BlobBody, BlobInfo, ByteRange, Error, RepositoryName, Result, Sha256Hash, StoredManifest, Tag,
    UploadSlot,
};
use reqwest::header::{
    HeaderMap, ACCEPT, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LINK, LOCATION, RANGE,
};
use reqwest::{Client, Method, RequestBuilder, Response, StatusCode};
use serde::Deserialize;
use tokio::io::AsyncRead;

mod chunked;

use super::auth::{Authenticator, Scope};
use super::credentials::Credentials;
use super::origins::Origins;
use super::retry::{retry_after, Decision, RetryPolicy};
use super::throttle::Throttle;
use chunked::{ChunkSize, Refusal};

/// ghcr.io refuses request bodies over 4 MiB, the registry most oranc users push to; the
/// oci-client crate (the original oranc's) sends 4 MiB chunks for the same reason.
pub const DEFAULT_CHUNK_SIZE: usize = 4 << 20;
/// 429s one request may meet before it fails; each is waited out (see [`Throttle`]), and
/// none once the registry has pushed back for ten minutes without a success.
const MAX_PUSHBACKS: u32 = 30;
/// Blobs at least this large are looked for (HEAD) before they are uploaded.
const HEAD_BEFORE_UPLOAD_BYTES: usize = 64 << 10;
/// Manifest media types we ask for; registries answer with what the tag holds.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json;q=0.9";

/// How to reach and talk to one registry.
#[derive(Debug, Clone)]
pub struct DistributionSettings {
    /// `host[:port]` of the registry API, e.g. `ghcr.io` or `127.0.0.1:5000`.
    pub host: String,
    pub credentials: Credentials,
    pub tuning: HttpTuning,
    /// How user-typed repository names become this registry's names.
    pub naming: fn(&str) -> Result<RepositoryName>,
}

/// Connection knobs shared by every HTTP registry backend.
#[derive(Debug, Clone)]
pub struct HttpTuning {
    /// Talk plain HTTP (the original's `--no-ssl`), for local registries.
    pub plain_http: bool,
    pub retry: RetryPolicy,
    pub connect_timeout: Duration,
    /// For whole small requests (manifests, tags, tokens).
    pub request_timeout: Duration,
    /// Longest wait for the next bytes of a body; a stalled blob fails instead of hanging.
    pub read_timeout: Duration,
    pub max_in_flight: usize,
    /// Largest request body of an upload (a chunk); one upload holds at most two chunks
    /// in memory. Halved for the rest of the run when the registry refuses a body as too
    /// large (see [`chunked`]).
    pub chunk_size: usize,
    /// Tags asked for per page of a tag listing.
    pub tags_page_size: usize,
    /// Token services (URLs or origins) that may receive the credentials besides the
    /// registry's own origin; see [`super::origins`].
    pub token_realms: Vec<String>,
    /// Longest a request waits out a registry's pushback (429 and its `Retry-After`) before
    /// failing with [`Error::PushedBack`]; `None` waits it out (push and gc: a batch job
    /// slows down). The server waits 2 s, so that a client hears 503 with the wait instead
    /// of hanging (Nix 2.35 backs off as `Retry-After` says).
    pub max_pushback_wait: Option<Duration>,
    /// Where a blob GET's redirect may be followed (besides the registry itself and its
    /// backend's known storage); `None` follows any (push and gc, which talk to the
    /// user's own registry). Never with credentials either way.
    pub blob_origins: Option<Vec<String>>,
}

impl Default for HttpTuning {
    fn default() -> Self {
        Self {
            plain_http: false,
            retry: RetryPolicy::default(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            read_timeout: Duration::from_secs(60),
            max_in_flight: 32,
            chunk_size: DEFAULT_CHUNK_SIZE,
            tags_page_size: 1000,
            token_realms: Vec::new(),
            max_pushback_wait: None,
            blob_origins: None,
        }
    }
}

/// The distribution spec's own naming: the name must already be valid.
pub fn plain_naming(name: &str) -> Result<RepositoryName> {
    name.parse()
}

#[derive(Debug, Clone)]
pub struct DistributionRegistry {
    name: String,
    base_url: String,
    http: Client,
    /// Where this registry's answers may send us.
    origins: Arc<Origins>,
    auth: Arc<Authenticator>,
    retry: RetryPolicy,
    /// Requests in flight and the registry's pushback (429), shared by clones.
    throttle: Arc<Throttle>,
    /// See [`HttpTuning::max_pushback_wait`].
    max_pushback_wait: Option<Duration>,
    request_timeout: Duration,
    /// A streamed body must make progress in every window this long.
    read_timeout: Duration,
    /// Shared by clones: what one upload learns, all later ones use.
    chunk_size: Arc<ChunkSize>,
    tags_page_size: usize,
    naming: fn(&str) -> Result<RepositoryName>,
    /// Learned on the first small upload, shared by every client of this registry.
    monolithic: Arc<MonolithicSupport>,
}

/// Whether the registry stores a blob sent whole with the POST that opens its upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Monolithic {
    Untried,
    Supported,
    Unsupported,
}

#[derive(Debug, Default)]
struct MonolithicSupport(AtomicU8);

impl MonolithicSupport {
    fn get(&self) -> Monolithic {
        match self.0.load(Ordering::Relaxed) {
            1 => Monolithic::Supported,
            2 => Monolithic::Unsupported,
            _ => Monolithic::Untried,
        }
    }

    fn set(&self, support: Monolithic) {
        let value = match support {
            Monolithic::Untried => 0,
            Monolithic::Supported => 1,
            Monolithic::Unsupported => 2,
        };
        self.0.store(value, Ordering::Relaxed);
    }
}

#[derive(Deserialize)]
struct TagList {
    tags: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct ErrorBody {
    errors: Vec<ErrorEntry>,
}

#[derive(Deserialize)]
struct ErrorEntry {
    code: String,
    #[serde(default)]
    message: String,
}

impl DistributionRegistry {
    pub fn new(settings: DistributionSettings) -> std::result::Result<Self, crate::BackendError> {
        let DistributionSettings {
            host,
            credentials,
            tuning,
            naming,
        } = settings;
        let http = Client::builder()
            .connect_timeout(tuning.connect_timeout)
            .read_timeout(tuning.read_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            // HTTP/2 where the registry offers it (ALPN on https): every request of a push
            // multiplexed on one connection, the window sized to the path's delay.
            .http2_adaptive_window(true)
            // Redirects are followed by hand: blob storage must not see our Authorization.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("oranc/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| crate::BackendError::HttpClient(e.to_string()))?;
        let scheme = if tuning.plain_http { "http" } else { "https" };
        let base_url = format!("{scheme}://{host}");
        let origins = Arc::new(Origins::new(
            &base_url,
            &tuning.token_realms,
            tuning.blob_origins.as_deref(),
        )?);
        let throttle = Arc::new(Throttle::new(
            &host,
            tuning.max_in_flight,
            tuning.retry.max_retry_after,
        ));
        Ok(Self {
            base_url,
            name: host,
            http,
            auth: Arc::new(Authenticator::new(credentials, origins.clone())),
            origins,
            retry: tuning.retry,
            max_pushback_wait: tuning.max_pushback_wait,
            throttle,
            request_timeout: tuning.request_timeout,
            read_timeout: tuning.read_timeout,
            chunk_size: Arc::new(ChunkSize::new(tuning.chunk_size)),
            tags_page_size: tuning.tags_page_size.max(1),
            naming,
            monolithic: Arc::default(),
        })
    }

    /// The same registry with other credentials: shares the connection pool and the bound
    /// on requests in flight, but has its own tokens.
    pub fn with_credentials(&self, credentials: Credentials) -> Self {
        Self {
            auth: Arc::new(Authenticator::new(credentials, self.origins.clone())),
            ..self.clone()
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v2/{path}", self.base_url)
    }

    /// A `Location` or `Link` the registry sent, made absolute; one that leads off the
    /// registry's own origin is refused, since what follows it carries our credentials or
    /// data (an upload's bytes, the next page of tags).
    fn own_url(&self, location: &str, what: &str) -> Result<String> {
        if !location.contains("://") {
            let separator = if location.starts_with('/') { "" } else { "/" };
            return Ok(format!("{}{separator}{location}", self.base_url));
        }
        if self.origins.is_own(location) {
            return Ok(location.to_owned());
        }
        Err(Error::Protocol {
            what: what.to_owned(),
            reason: format!(
                "the registry {} pointed us at {}, another origin; refused (credentials and data go only to the registry itself)",
                self.name,
                Origins::display(location)
            ),
        })
    }

    /// `Err(PushedBack)` when the registry asked for a pause longer than this client waits
    /// (`max_pushback_wait`).
    fn within_pushback_wait(&self, what: &str) -> Result<()> {
        let Some(limit) = self.max_pushback_wait else {
            return Ok(());
        };
        match self.throttle.paused_for() {
            Some(left) if left > limit => Err(Error::PushedBack {
                what: what.to_owned(),
                retry_after: left,
            }),
            _ => Ok(()),
        }
    }

    /// Sends a request built by `build` (called again for each attempt), with auth, the
    /// in-flight bound and retries. Returns the response, whatever its status, except that
    /// a 401 after a fresh authorization is [`Error::Denied`].
    async fn send(
        &self,
        scope: Scope<'_>,
        what: &str,
        build: &(dyn Fn() -> RequestBuilder + Send + Sync),
    ) -> Result<Response> {
        let mut attempt = 0;
        let mut pushbacks = 0;
        let mut challenged = false;
        loop {
            self.within_pushback_wait(what)?;
            let request = self.auth.authorize(build(), scope);
            let turn = self
                .throttle
                .turn()
                .await
                .ok_or_else(|| Error::Unavailable {
                    what: what.to_owned(),
                    reason: "the client is shutting down".into(),
                })?;
            let outcome = request.send().await;
            let pushed_back = match &outcome {
                Ok(answer) if answer.status() == StatusCode::TOO_MANY_REQUESTS => {
                    Some(retry_after(answer.headers()))
                }
                _ => None,
            };
            self.throttle.finished(turn, pushed_back);
            if pushed_back.is_some() {
                self.within_pushback_wait(what)?;
            }
            let wait = match outcome {
                // A 429 paces the whole registry (the throttle holds every request for its
                // Retry-After and sends fewer at once), so it is retried after that pause
                // on a budget of its own: slowing down is not failing.
                Ok(answer)
                    if pushed_back.is_some_and(|asked| {
                        asked.is_none_or(|asked| asked <= self.retry.max_retry_after)
                    }) && pushbacks < MAX_PUSHBACKS
                        && !self.throttle.pushback_spell_over() =>
                {
                    log_rate_limit(&self.name, answer.headers());
                    pushbacks += 1;
                    continue;
                }
                Ok(answer) if answer.status() == StatusCode::UNAUTHORIZED => {
                    if challenged {
                        self.auth.forget(scope);
                        return Err(Error::Denied {
                            what: what.to_owned(),
                            hint: Some("the registry refused the credentials or token".into()),
                        });
                    }
                    challenged = true;
                    self.auth
                        .answer_challenge(&self.http, &answer, scope, what)
                        .await?;
                    continue;
                }
                Ok(answer) if RetryPolicy::is_retryable_status(answer.status()) => {
                    log_rate_limit(&self.name, answer.headers());
                    match self.retry.decide(attempt, retry_after(answer.headers())) {
                        Decision::RetryAfter(wait) => {
                            tracing::debug!(registry = %self.name, what, status = %answer.status(), ?wait, "retrying");
                            wait
                        }
                        Decision::GiveUp => return Ok(answer),
                    }
                }
                Ok(answer) => return Ok(answer),
                Err(error) => match self.retry.decide(attempt, None) {
                    Decision::RetryAfter(wait) if is_transient(&error) => {
                        tracing::debug!(registry = %self.name, what, error = %error.without_url(), ?wait, "retrying");
                        wait
                    }
                    _ => return Err(self.transport_error(what, error)),
                },
            };
            attempt += 1;
            tokio::time::sleep(wait).await;
        }
    }

    /// `send`, then turns any non-success status into the matching error.
    async fn send_ok(
        &self,
        scope: Scope<'_>,
        what: &str,
        build: &(dyn Fn() -> RequestBuilder + Send + Sync),
    ) -> Result<Response> {
        let answer = self.send(scope, what, build).await?;
        if answer.status().is_success() {
            Ok(answer)
        } else {
            Err(status_error(what, answer).await)
        }
    }

    fn request(&self, method: Method, url: &str) -> RequestBuilder {
        self.http.request(method, url).timeout(self.request_timeout)
    }

    async fn start_upload(&self, repo: &RepositoryName) -> Result<String> {
        let url = self.url(&format!("{repo}/blobs/uploads/"));
        let what = format!("starting a blob upload to {repo}");
        let answer = self
            .send_ok(Scope::Push(repo), &what, &|| {
                self.request(Method::POST, &url).header(CONTENT_LENGTH, 0)
            })
            .await?;
        self.location(&answer, &what)
    }

    /// The upload session's `Location`, which must be on the registry's own origin.
    fn location(&self, answer: &Response, what: &str) -> Result<String> {
        self.own_url(location_header(answer, what)?, what)
    }

    /// A blob redirect's `Location`: storage elsewhere is expected (S3, a CDN), and is
    /// fetched without our credentials.
    fn redirect_location(&self, answer: &Response, what: &str) -> Result<String> {
        let location = location_header(answer, what)?;
        if location.contains("://") {
            return Ok(location.to_owned());
        }
        self.own_url(location, what)
    }

    async fn finish_upload(
        &self,
        repo: &RepositoryName,
        location: &str,
        blob: &BlobInfo,
        body: Bytes,
    ) -> Result<()> {
        let what = format!(
            "finishing the upload of {} to {repo}",
            blob.digest.to_oci_digest()
        );
        let put = |location: &str, body: Bytes| {
            let url = with_query(location, "digest", &blob.digest.to_oci_digest());
            let what = &what;
            async move {
                self.send(Scope::Push(repo), what, &|| {
                    self.http
                        .put(&url)
                        .header(CONTENT_TYPE, "application/octet-stream")
                        .header(CONTENT_LENGTH, body.len())
                        .body(body.clone())
                })
                .await
            }
        };
        let answer = put(location, body.clone()).await?;
        if answer.status().is_success() {
            return Ok(());
        }
        // The whole blob in one PUT was too large for the registry: in chunks instead.
        if body.is_empty() {
            return Err(status_error(&what, answer).await);
        }
        if let Refusal::Fatal(error) = self.refusal(answer, body.len(), &what).await {
            return Err(error);
        }
        let location = self.patch_all(repo, location, 0, body, &what).await?;
        let answer = put(&location, Bytes::new()).await?;
        if !answer.status().is_success() {
            return Err(status_error(&what, answer).await);
        }
        Ok(())
    }

    /// Uploads a blob held in memory: through `session` when one was opened ahead, else in
    /// one request where the registry takes monolithic uploads, else POST + PUT.
    async fn put_small_blob(
        &self,
        repo: &RepositoryName,
        session: Option<String>,
        bytes: Bytes,
    ) -> Result<BlobInfo> {
        let blob = BlobInfo {
            digest: Sha256Hash::of(&bytes),
            size: bytes.len() as u64,
        };
        if let Some(location) = session {
            self.finish_upload(repo, &location, &blob, bytes).await?;
            return Ok(blob);
        }
        // For a tiny blob the HEAD costs as much as the upload it might save, and most are
        // new (narinfos are unique); look first only where bytes are at stake.
        if bytes.len() >= HEAD_BEFORE_UPLOAD_BYTES
            && self.head_blob(repo, &blob.digest).await? == Some(blob.size)
        {
            return Ok(blob);
        }
        let location = match self.monolithic.get() {
            Monolithic::Unsupported => self.start_upload(repo).await?,
            Monolithic::Untried | Monolithic::Supported => {
                match self.post_monolithic(repo, &blob, &bytes).await? {
                    None => return Ok(blob),
                    Some(location) => location,
                }
            }
        };
        self.finish_upload(repo, &location, &blob, bytes).await?;
        Ok(blob)
    }

    /// `POST …/blobs/uploads/?digest=…` with the body: the whole upload in one request
    /// (`None`) where the registry supports it. One that answers 202 instead (CNCF
    /// distribution 2.8 stores nothing then) has opened an ordinary session, whose location
    /// is returned and used as is, so the attempt costs bytes, not a request; the registry
    /// is remembered as not supporting it and later uploads send an empty POST.
    async fn post_monolithic(
        &self,
        repo: &RepositoryName,
        blob: &BlobInfo,
        bytes: &Bytes,
    ) -> Result<Option<String>> {
        let url = with_query(
            &self.url(&format!("{repo}/blobs/uploads/")),
            "digest",
            &blob.digest.to_oci_digest(),
        );
        let what = format!(
            "uploading {} to {repo} in one request",
            blob.digest.to_oci_digest()
        );
        let answer = self
            .send(Scope::Push(repo), &what, &|| {
                self.request(Method::POST, &url)
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_LENGTH, bytes.len())
                    .body(bytes.clone())
            })
            .await?;
        if !answer.status().is_success() {
            // Too large for one request: an ordinary session, which goes in chunks.
            return match self.refusal(answer, bytes.len(), &what).await {
                Refusal::Split => self.start_upload(repo).await.map(Some),
                Refusal::Fatal(error) => Err(error),
            };
        }
        if answer.status() == StatusCode::CREATED {
            self.monolithic.set(Monolithic::Supported);
            return Ok(None);
        }
        if self.monolithic.get() == Monolithic::Untried {
            tracing::debug!(registry = %self.name, "no monolithic uploads; using POST + PUT");
        }
        self.monolithic.set(Monolithic::Unsupported);
        self.location(&answer, &what).map(Some)
    }

    /// One page of a tag listing at `url`: its tags and the next page's link, or `None`
    /// when the repository does not exist (NAME_UNKNOWN: nothing was ever pushed to it).
    async fn tag_page(
        &self,
        repo: &RepositoryName,
        url: &str,
        what: &str,
    ) -> Result<Option<(Vec<String>, Option<String>)>> {
        let answer = self
            .send(Scope::Pull(repo), what, &|| self.request(Method::GET, url))
            .await?;
        if answer.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !answer.status().is_success() {
            return Err(status_error(what, answer).await);
        }
        let next = next_link(answer.headers());
        let body = super::bounded::read_capped(answer, super::bounded::MAX_TAG_PAGE, what).await?;
        let page: TagList = serde_json::from_slice(&body).map_err(|e| Error::Protocol {
            what: what.to_owned(),
            reason: format!("unreadable tag list: {e}"),
        })?;
        Ok(Some((page.tags.unwrap_or_default(), next)))
    }

    /// A blob GET; a redirect to other storage is handed back when `pass_redirect`, else
    /// followed without our credentials.
    async fn fetch_blob(
        &self,
        repo: &RepositoryName,
        digest: &Sha256Hash,
        range: Option<ByteRange>,
        pass_redirect: bool,
    ) -> Result<BlobBody> {
        let url = self.url(&format!("{repo}/blobs/{}", digest.to_oci_digest()));
        let what = format!("blob {} in {repo}", digest.to_oci_digest());
        let answer = self
            .send(Scope::Pull(repo), &what, &|| {
                let request = self.http.get(&url);
                match range {
                    Some(range) => request.header(RANGE, range_header(range)),
                    None => request,
                }
            })
            .await?;
        let status = answer.status();
        if status.is_redirection() {
            let location = self.redirect_location(&answer, &what)?;
            if pass_redirect {
                return Ok(BlobBody::Redirect { url: location });
            }
            return self.get_redirected_blob(&location, range, &what).await;
        }
        if !status.is_success() {
            return Err(status_error(&what, answer).await);
        }
        Ok(stream_body(answer, range.is_some(), self.read_timeout))
    }

    async fn get_redirected_blob(
        &self,
        url: &str,
        range: Option<ByteRange>,
        what: &str,
    ) -> Result<BlobBody> {
        if !self.origins.allows_blob_redirect(url) {
            return Err(Error::Protocol {
                what: what.to_owned(),
                reason: format!(
                    "the registry {} redirected the blob to {}, which this server does not follow (list it in blob_origins under the registry, or set redirect_blobs)",
                    self.name,
                    Origins::display(url)
                ),
            });
        }
        // A fresh request without our Authorization: the blob store is another host and
        // authenticates with the signed URL itself.
        let mut request = self.http.get(url);
        if let Some(range) = range {
            request = request.header(RANGE, range_header(range));
        }
        let answer = request
            .send()
            .await
            .map_err(|e| self.transport_error(what, e))?;
        if !answer.status().is_success() {
            return Err(status_error(what, answer).await);
        }
        Ok(stream_body(answer, range.is_some(), self.read_timeout))
    }
}

/// The `Location` of an answer that must have one.
fn location_header<'a>(answer: &'a Response, what: &str) -> Result<&'a str> {
    answer
        .headers()
        .get(LOCATION)
        .and_then(|l| l.to_str().ok())
        .ok_or_else(|| Error::Protocol {
            what: what.to_owned(),
            reason: format!(
                "the registry answered {} without a Location",
                answer.status()
            ),
        })
}

/// Docker Hub (and others) say how much of the pull quota is left; worth a line when low.
fn log_rate_limit(registry: &str, headers: &HeaderMap) {
    // A registry's header values are its text: cut, and only printable ASCII kept.
    let header = |name: &str| {
        headers.get(name).and_then(|v| v.to_str().ok()).map(|v| {
            v.chars()
                .filter(|c| c.is_ascii_graphic() || *c == ' ')
                .take(64)
                .collect::<String>()
        })
    };
    if let Some(remaining) = header("ratelimit-remaining") {
        tracing::warn!(
            registry,
            remaining,
            limit = header("ratelimit-limit"),
            "registry rate limit"
        );
    }
}

fn is_transient(error: &reqwest::Error) -> bool {
    error.is_connect() || error.is_timeout() || error.is_request() || error.is_body()
}

impl DistributionRegistry {
    /// What failed to reach the registry, and why: reqwest's own words ("error sending
    /// request") say neither, so its causes follow ("connection refused", "invalid peer
    /// certificate", …), with the URL, and for https a hint about plain-HTTP registries,
    /// the usual cause on a loopback test registry.
    fn transport_error(&self, what: &str, error: reqwest::Error) -> Error {
        // `without_url`: a redirect URL may carry a signature; keep it out of messages.
        let error = error.without_url();
        let what = what.to_owned();
        if error.is_timeout() {
            return Error::TimedOut { what, reason: None };
        }
        // "error sending request: client error (Connect): tcp connect error: Connection
        // refused (os error 111)".
        let causes = oranc_core::error::said_once(&error);
        Error::Unavailable {
            what,
            reason: if error.is_connect() {
                let hint = if self.base_url.starts_with("https://") {
                    "; if the registry speaks plain HTTP, use --no-ssl (in the server's config, plain_http = true under [registries.\"HOST\"])"
                } else {
                    ""
                };
                format!("cannot connect to {}: {causes}{hint}", self.base_url)
            } else {
                causes
            },
        }
    }
}

/// Maps a registry's non-success answer to the error kind callers act on.
async fn status_error(what: &str, answer: Response) -> Error {
    let status = answer.status();
    let retry = retry_after(answer.headers());
    let detail = super::bounded::read_capped(answer, super::bounded::MAX_ERROR_BODY, what)
        .await
        .ok()
        .and_then(|body| serde_json::from_slice::<ErrorBody>(&body).ok())
        .and_then(|body| body.errors.into_iter().next())
        .map(|e| format!(": {} {}", e.code, e.message).trim_end().to_owned())
        .unwrap_or_default();
    let what = what.to_owned();
    match status {
        StatusCode::NOT_FOUND => Error::NotFound { what },
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Error::Denied {
            what,
            hint: Some(format!("{status}{detail}")),
        },
        StatusCode::METHOD_NOT_ALLOWED => Error::Unsupported {
            what,
            reason: format!("{status}{detail}"),
        },
        StatusCode::TOO_MANY_REQUESTS => Error::Unavailable {
            what,
            reason: format!(
                "rate limited{}{detail}",
                retry
                    .map(|d| format!(", retry after {}s", d.as_secs()))
                    .unwrap_or_default()
            ),
        },
        s if s.is_server_error() || s == StatusCode::REQUEST_TIMEOUT => Error::Unavailable {
            what,
            reason: format!("{status}{detail}"),
        },
        _ => Error::Protocol {
            what,
            reason: format!("{status}{detail}"),
        },
    }
}

fn with_query(url: &str, key: &str, value: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{key}={value}")
}

fn range_header(range: ByteRange) -> String {
    match range.end {
        Some(end) => format!("bytes={}-{end}", range.start),
        None => format!("bytes={}-", range.start),
    }
}

/// `Content-Range: bytes start-end/total`.
fn parse_content_range(headers: &HeaderMap) -> Option<(u64, u64, u64)> {
    let value = headers.get(CONTENT_RANGE)?.to_str().ok()?;
    let spec = value.strip_prefix("bytes ")?;
    let (range, total) = spec.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    Some((start.parse().ok()?, end.parse().ok()?, total.parse().ok()?))
}

/// A blob answer as a stream that must keep making progress (see [`super::bounded`]).
fn stream_body(answer: Response, ranged: bool, read_timeout: Duration) -> BlobBody {
    let range = if ranged && answer.status() == StatusCode::PARTIAL_CONTENT {
        parse_content_range(answer.headers())
    } else {
        None
    };
    let size = answer.content_length();
    let body =
        super::bounded::with_progress_deadline(super::bounded::body_of(answer), size, read_timeout);
    BlobBody::Stream {
        size,
        range,
        body: Box::pin(body),
    }
}

/// Pages read from one listing at the most (10 million tags at distribution's default
/// 1,000 a page is 10,000 pages; a registry that sends small pages gets ten times that).
const MAX_PAGES: usize = 100_000;

/// Tags read from one listing at the most (a cache of 10 million keys is far beyond any we
/// know; a registry claiming more is looping or lying).
const MAX_TAGS: usize = 10_000_000;

/// The `last` parameter of a (absolute) tag-listing page URL: the tag the page starts after.
fn page_marker(url: &str) -> Option<String> {
    reqwest::Url::parse(url)
        .ok()?
        .query_pairs()
        .find(|(name, _)| name == "last")
        .map(|(_, last)| last.into_owned())
}

/// The next page of a tag listing: `Link: </v2/...?last=x&n=1000>; rel="next"`.
fn next_link(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(LINK)?.to_str().ok()?;
    value.split(',').find_map(|link| {
        let (target, params) = link.split_once(';')?;
        params.contains("rel=\"next\"").then(|| {
            target
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_owned()
        })
    })
}

#[async_trait]
impl oranc_core::Registry for DistributionRegistry {
    fn name(&self) -> &str {
        &self.name
    }

    fn backpressure(&self) -> oranc_core::registry::Backpressure {
        self.throttle.backpressure()
    }

    fn repository(&self, name: &str) -> Result<RepositoryName> {
        (self.naming)(name)
    }

    async fn ping(&self) -> Result<()> {
        let url = format!("{}/v2/", self.base_url);
        let what = format!("registry {}", self.name);
        let answer = self
            .send(Scope::Registry, &what, &|| self.request(Method::GET, &url))
            .await;
        match answer {
            Ok(a) if a.status().is_success() => Ok(()),
            Ok(a) => Err(status_error(&what, a).await),
            // A registry that wants a token scoped to a repository for /v2/ is still up.
            Err(Error::Denied { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// One anonymous `GET /v2/`, outside the auth flow (which would fetch an anonymous
    /// token and succeed): 401 means the registry checks credentials.
    async fn checks_credentials(&self) -> Result<bool> {
        let url = format!("{}/v2/", self.base_url);
        let what = format!("registry {}", self.name);
        let answer = self
            .request(Method::GET, &url)
            .send()
            .await
            .map_err(|e| self.transport_error(&what, e))?;
        match answer.status() {
            StatusCode::UNAUTHORIZED => Ok(true),
            status if status.is_success() => Ok(false),
            _ => Err(status_error(&what, answer).await),
        }
    }

    async fn head_blob(&self, repo: &RepositoryName, digest: &Sha256Hash) -> Result<Option<u64>> {
        let url = self.url(&format!("{repo}/blobs/{}", digest.to_oci_digest()));
        let what = format!("blob {} in {repo}", digest.to_oci_digest());
        let answer = self
            .send(Scope::Pull(repo), &what, &|| {
                self.request(Method::HEAD, &url)
            })
            .await?;
        match answer.status() {
            StatusCode::NOT_FOUND => Ok(None),
            // Some registries redirect HEAD to blob storage too; the blob exists.
            // The header, not `content_length()`: a HEAD answer's body is empty.
            s if s.is_success() || s.is_redirection() => Ok(Some(
                answer
                    .headers()
                    .get(CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            )),
            _ => Err(status_error(&what, answer).await),
        }
    }

    async fn get_blob(
        &self,
        repo: &RepositoryName,
        digest: &Sha256Hash,
        range: Option<ByteRange>,
    ) -> Result<BlobBody> {
        self.fetch_blob(repo, digest, range, false).await
    }

    async fn get_blob_or_redirect(
        &self,
        repo: &RepositoryName,
        digest: &Sha256Hash,
        range: Option<ByteRange>,
    ) -> Result<BlobBody> {
        self.fetch_blob(repo, digest, range, true).await
    }

    async fn put_blob(
        &self,
        repo: &RepositoryName,
        body: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<BlobInfo> {
        self.upload_stream(repo, None, body).await
    }

    async fn open_upload(&self, repo: &RepositoryName) -> Result<UploadSlot> {
        Ok(UploadSlot::new(self.start_upload(repo).await?))
    }

    async fn cancel_upload(&self, repo: &RepositoryName, slot: UploadSlot) {
        if let Some(location) = slot.into_location() {
            self.cancel_session(repo, &location).await;
        }
    }

    async fn put_blob_via(
        &self,
        repo: &RepositoryName,
        slot: UploadSlot,
        body: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<BlobInfo> {
        self.upload_stream(repo, slot.into_location(), body).await
    }

    async fn put_blob_bytes(&self, repo: &RepositoryName, bytes: Bytes) -> Result<BlobInfo> {
        self.put_small_blob(repo, None, bytes).await
    }

    async fn get_manifest(
        &self,
        repo: &RepositoryName,
        tag: &Tag,
    ) -> Result<Option<StoredManifest>> {
        let url = self.url(&format!("{repo}/manifests/{tag}"));
        let what = format!("manifest {repo}:{tag}");
        let answer = self
            .send(Scope::Pull(repo), &what, &|| {
                self.request(Method::GET, &url)
                    .header(ACCEPT, MANIFEST_ACCEPT)
            })
            .await?;
        if answer.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !answer.status().is_success() {
            return Err(status_error(&what, answer).await);
        }
        let media_type = answer
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(oranc_core::layout::MANIFEST_MEDIA_TYPE)
            .to_owned();
        let bytes =
            super::bounded::read_capped(answer, super::bounded::MAX_MANIFEST, &what).await?;
        Ok(Some(StoredManifest {
            digest: Sha256Hash::of(&bytes),
            media_type,
            bytes,
        }))
    }

    async fn has_manifest(&self, repo: &RepositoryName, tag: &Tag) -> Result<bool> {
        let url = self.url(&format!("{repo}/manifests/{tag}"));
        let what = format!("manifest {repo}:{tag}");
        let answer = self
            .send(Scope::Pull(repo), &what, &|| {
                self.request(Method::HEAD, &url)
                    .header(ACCEPT, MANIFEST_ACCEPT)
            })
            .await?;
        match answer.status() {
            StatusCode::NOT_FOUND => Ok(false),
            status if status.is_success() => Ok(true),
            _ => Err(status_error(&what, answer).await),
        }
    }

    async fn put_manifest(
        &self,
        repo: &RepositoryName,
        tag: &Tag,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<Sha256Hash> {
        let url = self.url(&format!("{repo}/manifests/{tag}"));
        let what = format!("storing manifest {repo}:{tag}");
        self.send_ok(Scope::Push(repo), &what, &|| {
            self.request(Method::PUT, &url)
                .header(CONTENT_TYPE, media_type)
                .body(bytes.clone())
        })
        .await?;
        Ok(Sha256Hash::of(&bytes))
    }

    async fn list_tags(&self, repo: &RepositoryName) -> Result<Vec<Tag>> {
        let what = format!("tags of {repo}");
        let mut url = self.url(&format!("{repo}/tags/list?n={}", self.tags_page_size));
        let mut tags = Vec::new();
        // A page's `Link` must lead somewhere new: a registry whose listing loops would
        // otherwise hold push, gc and watch-store for ever.
        let mut seen_pages = std::collections::HashSet::new();
        let mut seen_markers = std::collections::HashSet::new();
        loop {
            let Some((page, next)) = self.tag_page(repo, &url, &what).await? else {
                return Ok(tags);
            };
            for tag in page {
                match tag.parse::<Tag>() {
                    Ok(tag) => tags.push(tag),
                    Err(error) => {
                        tracing::warn!(%repo, %error, "skipping a tag the registry listed")
                    }
                }
            }
            if tags.len() > MAX_TAGS {
                return Err(Error::Protocol {
                    what,
                    reason: format!("the registry lists more than {MAX_TAGS} tags; refused"),
                });
            }
            let Some(next) = next else {
                return Ok(tags);
            };
            let next = self.own_url(&next, &what)?;
            // Seen before (by URL or by the tag it starts after): the listing loops.
            let repeats = !seen_pages.insert(next.clone())
                || page_marker(&next).is_some_and(|last| !seen_markers.insert(last));
            if repeats || seen_pages.len() > MAX_PAGES {
                return Err(Error::Protocol {
                    what,
                    reason: "the registry's tag listing does not advance (its next page repeats an earlier one, or it never ends)".into(),
                });
            }
            url = next;
        }
    }

    async fn has_tags(&self, repo: &RepositoryName) -> Result<bool> {
        let what = format!("tags of {repo}");
        let url = self.url(&format!("{repo}/tags/list?n=1"));
        let page = self.tag_page(repo, &url, &what).await?;
        Ok(page.is_some_and(|(tags, _)| !tags.is_empty()))
    }

    /// The registry frees unreferenced blobs in its own garbage collection (distribution's
    /// `registry garbage-collect`, ghcr.io by itself); the API has no call for it.
    async fn reclaim_space(
        &self,
        _repo: &RepositoryName,
        _older_than: Duration,
    ) -> Result<Option<oranc_core::registry::Reclaimed>> {
        Ok(None)
    }

    async fn delete_manifest(&self, repo: &RepositoryName, digest: &Sha256Hash) -> Result<()> {
        let url = self.url(&format!("{repo}/manifests/{}", digest.to_oci_digest()));
        let what = format!("deleting manifest {} from {repo}", digest.to_oci_digest());
        self.send_ok(Scope::Delete(repo), &what, &|| {
            self.request(Method::DELETE, &url)
        })
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_link_headers_and_reads_content_ranges() {
        let mut headers = HeaderMap::new();
        headers.insert(
            LINK,
            r#"</v2/a/tags/list?last=x&n=2>; rel="next""#.parse().unwrap(),
        );
        assert_eq!(
            next_link(&headers).as_deref(),
            Some("/v2/a/tags/list?last=x&n=2")
        );
        headers.insert(CONTENT_RANGE, "bytes 10-19/100".parse().unwrap());
        assert_eq!(parse_content_range(&headers), Some((10, 19, 100)));
        assert_eq!(
            with_query("http://r/u?_state=1", "digest", "d"),
            "http://r/u?_state=1&digest=d"
        );
        assert_eq!(
            with_query("http://r/u", "digest", "d"),
            "http://r/u?digest=d"
        );
    }
}
