//! Refused requests (4xx other than 404) are worth a line at `info` with the reason: an
//! operator asking "why did Nix get 401?" should find the answer in the log. A client can
//! send refusals as fast as it likes, though, so each status gets at most a few lines per
//! second; the rest only count in the request metrics.

use std::num::NonZeroU32;
use std::sync::LazyLock;

use axum::http::StatusCode;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Lines per second per status.
const LINES_PER_SECOND: NonZeroU32 = NonZeroU32::new(5).expect("five is not zero");

/// Keyed by status code: at most the hundred 4xx codes, so the table stays small.
static LIMITER: LazyLock<DefaultKeyedRateLimiter<u16>> =
    LazyLock::new(|| RateLimiter::keyed(Quota::per_second(LINES_PER_SECOND)));

/// Logs a refusal with its reason, unless this status already had its lines this second.
pub fn log_refusal(status: StatusCode, reason: &dyn std::fmt::Display) {
    if status == StatusCode::NOT_FOUND || !status.is_client_error() {
        tracing::debug!(%status, error = %reason, "request refused");
        return;
    }
    if LIMITER.check_key(&status.as_u16()).is_ok() {
        tracing::info!(%status, error = %reason, "request refused");
    }
}
