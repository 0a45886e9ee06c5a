//! GET and HEAD of binary-cache files (PUT is `upload.rs`, the dispatch `mod.rs`). A NAR streams from the
//! registry's blob to the client chunk by chunk; small files are read whole and checked
//! before they are served.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::TryStreamExt as _;
use oranc_core::cache_key::KeyKind;
use oranc_core::{BlobBody, ByteRange, CacheKey, NixCacheInfo};

use super::small_file::check_small_file;
use crate::cache_control;
use crate::client_addr::ClientAddr;
use crate::error::ServerError;
use crate::mirror::{Alongside, BesideAnswer, Mirror, NarAnswer, NarinfoAnswer};
use crate::request_context::RequestContext;
use crate::resolve::{resolve, Target};
use crate::state::{AppState, Purpose};

/// `Range: bytes=start-[end]` (one range; anything else is served whole).
fn requested_range(headers: &HeaderMap) -> Option<ByteRange> {
    let value = headers.get(header::RANGE)?.to_str().ok()?;
    let spec = value.strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (start, end) = spec.split_once('-')?;
    let start = start.trim().parse().ok()?;
    let end = match end.trim() {
        "" => None,
        end => Some(end.parse().ok()?),
    };
    Some(ByteRange { start, end })
}

fn header_value(value: &str) -> Result<HeaderValue, ServerError> {
    HeaderValue::from_str(value)
        .map_err(|_| ServerError::Internal(format!("unusable header value {value:?}")))
}

pub(super) async fn read(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
    context: &RequestContext,
    address: Option<ClientAddr>,
) -> Result<Response, ServerError> {
    let target = resolve(state, context, Purpose::Read, address).await?;
    let kind = target.key.kind();
    let mut response = match serve(state, method, headers, target, address).await {
        // An absence is an answer too, and a cache in front may keep it (briefly).
        Err(absent @ ServerError::Core(oranc_core::Error::NotFound { .. })) => {
            absent.into_response()
        }
        other => other?,
    };
    // Private where the client's credentials shaped the answer: a named cache answers
    // everyone alike (and its answers are shared between them in the response cache).
    let private = context.credentials.is_some() && context.reads_depend_on_credentials();
    cache_control::apply(&mut response, kind, private, &state.config().response_cache);
    Ok(response)
}

async fn serve(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
    target: Target<'_>,
    address: Option<ClientAddr>,
) -> Result<Response, ServerError> {
    let (cache, key) = (&target.cache, &target.key);
    if let Some(url) = state.upstreams().find(key.as_str()).await {
        return Ok((StatusCode::FOUND, [(header::LOCATION, header_value(&url)?)]).into_response());
    }
    let not_found = || -> ServerError {
        oranc_core::Error::NotFound {
            what: key.to_string(),
        }
        .into()
    };
    let mirror = target.named.and_then(|named| named.mirror.as_ref());
    let alongside = match mirror {
        Some(mirror) if key.kind() == KeyKind::Nar && method == Method::GET => {
            mirror.nar_alongside_registry(cache, key, address).await?
        }
        _ => None,
    };
    let stored = match alongside {
        Some(Alongside::Streaming(response)) => return Ok(response),
        Some(Alongside::InRegistry(object)) => Some(object),
        None => cache.get(key).await?,
    };
    let object = match (stored, mirror) {
        (Some(object), _) => object,
        (None, Some(mirror)) => match from_mirror(mirror, method, cache, key, address).await? {
            FromMirror::Answer(response) => return Ok(response),
            // Another request's fetch ended without storing it: say so, not "absent".
            FromMirror::Stored => cache.get(key).await?.ok_or_else(|| {
                ServerError::UpstreamFailed(format!("fetching {key} from upstream failed"))
            })?,
            FromMirror::Absent => return Err(not_found()),
        },
        (None, None) => {
            if key.kind() == KeyKind::CacheInfo
                && cache.registry().has_tags(cache.repository()).await?
            {
                return Ok(default_cache_info());
            }
            return Err(not_found());
        }
    };
    // From the key alone, never from the registry: a manifest's annotation could say
    // `text/html` and turn a cached NAR into a page in the browser of whoever opens it.
    let content_type = HeaderValue::from_static(key.content_type());
    // A NAR is named by its hash: its blob digest identifies its bytes for good.
    let etag = (key.kind() == KeyKind::Nar).then(|| cache_control::etag(&object.blob.digest));
    if !cache_control::if_match_holds(headers.get(header::IF_MATCH), etag.as_ref()) {
        return Ok(StatusCode::PRECONDITION_FAILED.into_response());
    }
    if let Some(etag) = &etag {
        if cache_control::not_modified(headers.get(header::IF_NONE_MATCH), etag) {
            return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag.clone())]).into_response());
        }
    }
    let range = requested_range(headers)
        .filter(|_| cache_control::range_allowed(headers.get(header::IF_RANGE), etag.as_ref()));
    let mut response = serve_object(state, method, range, &target, &object, content_type).await?;
    if let Some(etag) = etag {
        if response.status().is_success() {
            response.headers_mut().insert(header::ETAG, etag);
        }
    }
    Ok(response)
}

/// Says that a `nix-cache-info` answer is oranc's default, not a stored file.
pub const DEFAULT_CACHE_INFO_HEADER: &str = "x-oranc-cache-info";

/// Says that a mirror's 404 for a narinfo is because no upstream answered.
pub const UPSTREAM_UNREACHABLE_HEADER: &str = "x-oranc-upstream";

/// What a mirror cache's upstreams say about a file its registry lacks.
enum FromMirror {
    Answer(Response),
    /// Stored meanwhile (by another request's fetch): read the registry again.
    Stored,
    Absent,
}

/// The answer of `mirror`'s upstreams for `key`, which the registry lacks.
async fn from_mirror(
    mirror: &Mirror,
    method: &Method,
    cache: &oranc_core::RegistryCache,
    key: &CacheKey,
    address: Option<ClientAddr>,
) -> Result<FromMirror, ServerError> {
    Ok(match key.kind() {
        // A mirror is a cache before anything is stored in it.
        KeyKind::CacheInfo => FromMirror::Answer(default_cache_info()),
        KeyKind::NarInfo => match mirror.narinfo(cache, key).await? {
            NarinfoAnswer::Found(bytes) => FromMirror::Answer(whole_file(method, key, bytes)),
            NarinfoAnswer::Absent => FromMirror::Absent,
            // Nix gives up on a build when a substituter's narinfo is a 5xx (2.8 aborts
            // even with `fallback = true`); a 404 lets it build the path itself.
            NarinfoAnswer::UpstreamUnreachable => FromMirror::Answer(
                (
                    StatusCode::NOT_FOUND,
                    [(
                        HeaderName::from_static(UPSTREAM_UNREACHABLE_HEADER),
                        HeaderValue::from_static("unreachable"),
                    )],
                    format!("{key} not found: the registry lacks it and no upstream answered\n"),
                )
                    .into_response(),
            ),
        },
        KeyKind::Nar => match mirror
            .nar(cache, key, method == Method::HEAD, address)
            .await?
        {
            NarAnswer::Streaming(response) => FromMirror::Answer(response),
            NarAnswer::Stored => FromMirror::Stored,
            // No upstream narinfo names it under this mirror's name for it. Kept by no cache:
            // an absence a client could provoke must not hide a NAR from everyone.
            NarAnswer::Unknown => FromMirror::Answer(
                (
                    StatusCode::NOT_FOUND,
                    [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
                    format!("{key} not found: no upstream narinfo names it\n"),
                )
                    .into_response(),
            ),
        },
        KeyKind::Listing
        | KeyKind::Log
        | KeyKind::DebugInfo
        | KeyKind::Realisation
        | KeyKind::BuildTrace => match mirror.file_beside(cache, key).await? {
            BesideAnswer::Found(bytes) => FromMirror::Answer(whole_file(method, key, bytes)),
            BesideAnswer::Stored => FromMirror::Stored,
            BesideAnswer::Absent => FromMirror::Absent,
        },
    })
}

/// A file a mirror read whole from upstream, as the answer to GET or HEAD.
fn whole_file(method: &Method, key: &CacheKey, bytes: Bytes) -> Response {
    let length = HeaderValue::from(bytes.len());
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        Body::from(bytes)
    };
    let mut response = (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(key.content_type()),
        )],
        body,
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, length);
    response
}

/// `nix-cache-info` for a repository that has objects but none (the original oranc pushed
/// without `initialize`): the defaults oranc would write. Nix would otherwise try to PUT
/// one, fail without credentials and call the cache "not a binary cache". Never stored by
/// a read; the header marks it for those who look.
fn default_cache_info() -> Response {
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(oranc_core::cache_info::CONTENT_TYPE),
            ),
            (
                HeaderName::from_static(DEFAULT_CACHE_INFO_HEADER),
                HeaderValue::from_static("default; this repository has no nix-cache-info"),
            ),
        ],
        NixCacheInfo::default().to_string(),
    )
        .into_response()
}

/// The answer for a stored object: its head, its bytes (or a range of them), or a redirect
/// to the storage that holds them.
async fn serve_object(
    state: &AppState,
    method: &Method,
    range: Option<ByteRange>,
    target: &Target<'_>,
    object: &oranc_core::CacheObject,
    content_type: HeaderValue,
) -> Result<Response, ServerError> {
    let (cache, key) = (&target.cache, &target.key);
    if method == Method::HEAD {
        return Ok((
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, content_type),
                (header::CONTENT_LENGTH, HeaderValue::from(object.blob.size)),
                (header::ACCEPT_RANGES, HeaderValue::from_static("bytes")),
            ],
        )
            .into_response());
    }
    if let Some(range) = range {
        if range.start >= object.blob.size || range.end.is_some_and(|end| end < range.start) {
            return Ok((
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(
                    header::CONTENT_RANGE,
                    header_value(&format!("bytes */{}", object.blob.size))?,
                )],
            )
                .into_response());
        }
    }
    // An end past the file is the file's end, as HTTP says (RFC 9110, 14.1.2): passed on
    // as it came, `bytes=0-N` with N past 2^63 got the registry's 416, and a 502 counted as
    // a registry error, which fires the registry alerts.
    let range = range.map(|range| ByteRange {
        start: range.start,
        end: range
            .end
            .filter(|end| *end < object.blob.size.saturating_sub(1)),
    });
    let small_file = matches!(
        key.kind(),
        KeyKind::NarInfo | KeyKind::CacheInfo | KeyKind::DebugInfo
    );
    // Small files are always read here (and checked); the bytes of the others may come
    // straight from the registry's storage.
    let opened = if target.redirect_blobs && !small_file {
        cache.open_or_redirect(object, range).await?
    } else {
        cache.open(object, range).await?
    };
    let opened = match opened {
        // Small files are read whole and checked before they are served.
        BlobBody::Stream { body, .. } if small_file && range.is_none() => {
            let limit = state.config().max_small_body_bytes;
            let bytes = checked_from_registry(key, &object.blob, body, limit).await?;
            return Ok((
                StatusCode::OK,
                [(header::CONTENT_TYPE, content_type)],
                bytes,
            )
                .into_response());
        }
        other => other,
    };
    match opened {
        BlobBody::Redirect { url } => Ok((
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, header_value(&url)?)],
        )
            .into_response()),
        BlobBody::Stream { size, range, body } => {
            // A whole blob is checked against its digest as it streams; a part of one
            // cannot be (Nix checks the NAR it assembles).
            let body: oranc_core::ByteStream = if range.is_none() && target.check_digests {
                Box::pin(super::verified::verified(
                    body,
                    object.blob,
                    key.clone(),
                    state.metrics().clone(),
                ))
            } else {
                body
            };
            // The status is sent by now; a body that breaks can only be cut off, so say so.
            let failed_key = key.clone();
            let body = body.inspect_err(move |error| {
                tracing::warn!(key = %failed_key, %error, "the registry's body failed mid-transfer; the answer is cut short");
            });
            let mut response = Response::new(Body::from_stream(body));
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, content_type);
            headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            if let Some((start, end, total)) = range {
                *response.status_mut() = StatusCode::PARTIAL_CONTENT;
                let headers = response.headers_mut();
                headers.insert(
                    header::CONTENT_RANGE,
                    header_value(&format!("bytes {start}-{end}/{total}"))?,
                );
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start + 1));
            } else {
                let length = size.unwrap_or(object.blob.size);
                response
                    .headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
            }
            Ok(response)
        }
    }
}

/// A small file read whole from the registry and checked before it is served: one that is
/// not what its key says (too large, not UTF-8, malformed) is a 502 naming the key, never
/// garbage handed to Nix or kept in the response cache.
async fn checked_from_registry(
    key: &CacheKey,
    blob: &oranc_core::BlobInfo,
    body: oranc_core::ByteStream,
    limit: usize,
) -> Result<Bytes, ServerError> {
    let corrupt = |reason: String| oranc_core::Error::Protocol {
        what: format!("{key} from the registry"),
        reason,
    };
    let bytes = axum::body::to_bytes(Body::from_stream(body), limit)
        .await
        .map_err(|e| corrupt(format!("unreadable or larger than {limit} bytes: {e}")))?;
    if oranc_core::Sha256Hash::of(&bytes) != blob.digest {
        return Err(corrupt(format!(
            "its bytes do not match their digest {}",
            blob.digest.to_oci_digest()
        ))
        .into());
    }
    check_small_file(key, &bytes).map_err(corrupt)?;
    Ok(bytes)
}
