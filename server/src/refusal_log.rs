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

/// Longest reason a log line carries; a client's 60 KB path must not become a 60 KB line.
const MAX_LOGGED_CHARS: usize = 300;

/// `text` as a log line may carry it: control characters and quotes escaped (a client's
/// `%0a` must not start a forged line, nor `%1b` drive a terminal), and cut at
/// [`MAX_LOGGED_CHARS`] with the length said.
pub fn loggable(text: &dyn std::fmt::Display) -> String {
    let text = text.to_string();
    let cut: String = text.chars().take(MAX_LOGGED_CHARS).collect();
    let escaped = cut.escape_debug().to_string();
    if cut.len() < text.len() {
        format!("{escaped}… ({} bytes in all)", text.len())
    } else {
        escaped
    }
}

/// Logs a refusal with its reason, unless this status already had its lines this second.
pub fn log_refusal(status: StatusCode, reason: &dyn std::fmt::Display) {
    if status == StatusCode::NOT_FOUND || !status.is_client_error() {
        tracing::debug!(%status, error = %loggable(reason), "request refused");
        return;
    }
    if LIMITER.check_key(&status.as_u16()).is_ok() {
        tracing::info!(%status, error = %loggable(reason), "request refused");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_text_cannot_forge_lines_or_flood_them() {
        let forged = loggable(&"evil\n2026-11-29T21:00:00Z  INFO oranc_server: FORGED\u{1b}[2J");
        assert!(
            !forged.contains('\n') && !forged.contains('\u{1b}'),
            "{forged}"
        );
        let long = loggable(&"a".repeat(60_000));
        assert!(
            long.len() < 400 && long.ends_with("(60000 bytes in all)"),
            "{long}"
        );
    }
}
