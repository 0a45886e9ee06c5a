//! What caches in front of the server (a CDN, nginx's `proxy_cache`, a corporate proxy) may
//! keep, and for how long, so that they carry the repeated traffic instead of this server.
//!
//! - A NAR is content-addressed (named by its hash): kept for a year, `immutable`, with its
//!   blob digest as `ETag`, so a revalidation is a 304 without touching the blob.
//! - narinfo, nix-cache-info and the other small files: as long as this server's own
//!   response cache keeps them (`[cache] ttl_secs`), a push becomes visible as fast as here.
//! - 404: only the negative TTL, so no cache pins an absence after the path is pushed.
//! - A redirect to storage carries a presigned URL that expires: a minute at most.
//! - Anything else (denied, registry trouble) is not kept.
//!
//! Answers to requests with credentials are `private`: a shared cache must not hand one
//! client's files to another.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use oranc_config::ResponseCacheConfig;
use oranc_core::cache_key::KeyKind;
use oranc_core::Sha256Hash;

const A_YEAR: u64 = 365 * 24 * 3600;
const REDIRECT_SECS: u64 = 60;

/// Sets `Cache-Control` on an answer about a file of `kind`, unless it has one.
pub fn apply(response: &mut Response, kind: KeyKind, private: bool, ttls: &ResponseCacheConfig) {
    if response.headers().contains_key(header::CACHE_CONTROL) {
        return;
    }
    let scope = if private { "private" } else { "public" };
    let status = response.status();
    let value = match status {
        StatusCode::OK | StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED => match kind {
            KeyKind::Nar => format!("{scope}, max-age={A_YEAR}, immutable"),
            _ => format!("{scope}, max-age={}", ttls.ttl_secs),
        },
        StatusCode::NOT_FOUND => format!("{scope}, max-age={}", ttls.negative_ttl_secs),
        StatusCode::TEMPORARY_REDIRECT | StatusCode::FOUND => {
            format!("private, max-age={REDIRECT_SECS}")
        }
        _ => "no-store".to_owned(),
    };
    if let Ok(value) = HeaderValue::from_str(&value) {
        response.headers_mut().insert(header::CACHE_CONTROL, value);
    }
}

/// The `ETag` of a content-addressed file: its blob digest.
pub fn etag(digest: &Sha256Hash) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{}\"", digest.to_oci_digest()))
        .unwrap_or_else(|_| HeaderValue::from_static("\"\""))
}

/// True when `If-None-Match` names `etag` (or `*`).
pub fn not_modified(if_none_match: Option<&HeaderValue>, etag: &HeaderValue) -> bool {
    let Some(if_none_match) = if_none_match else {
        return false;
    };
    let etag = etag.to_str().unwrap_or_default();
    listed_tags(if_none_match)
        .map(|tag| tag.trim_start_matches("W/"))
        .any(|tag| tag == "*" || tag == etag)
}

/// The entity tags of a list header (`If-Match`, `If-None-Match`), quotes kept.
fn listed_tags(value: &HeaderValue) -> impl Iterator<Item = &str> {
    value
        .to_str()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|tag| !tag.is_empty())
}

/// True when `If-Match` holds (RFC 9110, 13.1.1): absent, `*`, or naming `etag` by strong
/// comparison (a weak tag never matches). A file without an ETag matches only `*`. When it
/// fails the answer is 412: a client that asks for the bytes it already knows never gets
/// others, should a writer have replaced the file.
pub fn if_match_holds(if_match: Option<&HeaderValue>, etag: Option<&HeaderValue>) -> bool {
    let Some(if_match) = if_match else {
        return true;
    };
    let etag = etag.and_then(|etag| etag.to_str().ok());
    listed_tags(if_match).any(|tag| tag == "*" || (!tag.starts_with("W/") && Some(tag) == etag))
}

/// True when a `Range` may be honoured under `If-Range` (RFC 9110, 13.1.5): no `If-Range`,
/// or an entity tag that strongly matches `etag`. A date never does (the server sends no
/// `Last-Modified`), nor does anything for a file without an ETag: the whole file is sent
/// instead (200), so a client resuming a download never splices two files.
pub fn range_allowed(if_range: Option<&HeaderValue>, etag: Option<&HeaderValue>) -> bool {
    let Some(if_range) = if_range else {
        return true;
    };
    let validator = if_range.to_str().unwrap_or_default().trim();
    !validator.starts_with("W/") && etag.and_then(|etag| etag.to_str().ok()) == Some(validator)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn cache_control(status: StatusCode, kind: KeyKind, private: bool) -> String {
        let mut response = Response::new(axum::body::Body::empty());
        *response.status_mut() = status;
        apply(
            &mut response,
            kind,
            private,
            &ResponseCacheConfig::default(),
        );
        response.headers()[header::CACHE_CONTROL]
            .to_str()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn lifetimes_follow_what_the_answer_is() {
        let nar = cache_control(StatusCode::OK, KeyKind::Nar, false);
        assert_eq!(nar, "public, max-age=31536000, immutable");
        let nar = cache_control(StatusCode::OK, KeyKind::Nar, true);
        assert!(nar.starts_with("private,"), "{nar}");
        let narinfo = cache_control(StatusCode::OK, KeyKind::NarInfo, false);
        assert_eq!(narinfo, "public, max-age=600");
        let absent = cache_control(StatusCode::NOT_FOUND, KeyKind::NarInfo, false);
        assert_eq!(absent, "public, max-age=30");
        let broken = cache_control(StatusCode::BAD_GATEWAY, KeyKind::NarInfo, false);
        assert_eq!(broken, "no-store");
        let redirect = cache_control(StatusCode::TEMPORARY_REDIRECT, KeyKind::Nar, false);
        assert_eq!(redirect, "private, max-age=60");
    }

    #[test]
    fn if_none_match_names_the_etag() {
        let tag = etag(&Sha256Hash::of(b"nar"));
        let header = |v: &str| HeaderValue::from_str(v).unwrap();
        assert!(not_modified(Some(&tag), &tag));
        assert!(!not_modified(Some(&header("\"other\"")), &tag));
        let listed = format!("\"x\", W/{}", tag.to_str().unwrap());
        assert!(not_modified(Some(&header(&listed)), &tag));
        assert!(not_modified(Some(&header("*")), &tag));
        assert!(!not_modified(None, &tag));
    }

    #[test]
    fn if_match_and_if_range_compare_strongly() {
        let tag = etag(&Sha256Hash::of(b"nar"));
        let header = |v: &str| HeaderValue::from_str(v).unwrap();
        let weak = header(&format!("W/{}", tag.to_str().unwrap()));
        assert!(if_match_holds(None, Some(&tag)));
        assert!(if_match_holds(Some(&tag), Some(&tag)));
        assert!(if_match_holds(Some(&header("\"x\", *")), None));
        assert!(!if_match_holds(Some(&header("\"x\"")), Some(&tag)));
        assert!(!if_match_holds(Some(&weak), Some(&tag)));
        assert!(!if_match_holds(Some(&tag), None));
        assert!(range_allowed(None, None));
        assert!(range_allowed(Some(&tag), Some(&tag)));
        assert!(!range_allowed(Some(&header("\"stale\"")), Some(&tag)));
        assert!(!range_allowed(Some(&weak), Some(&tag)));
        assert!(!range_allowed(
            Some(&header("Wed, 21 Oct 2015 07:28:00 GMT")),
            Some(&tag)
        ));
        assert!(!range_allowed(Some(&tag), None));
    }
}
