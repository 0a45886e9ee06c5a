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
    Loggable(&text.to_string()).to_string()
}

/// [`loggable`] of a string, written straight into the formatter: every request's span
/// carries its path and id this way, and the common case (short, plain ASCII) costs no
/// allocation and no escaping pass.
pub struct Loggable<'a>(pub &'a str);

impl std::fmt::Display for Loggable<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = self.0;
        let plain = |b: &u8| b.is_ascii_graphic() && !matches!(b, b'\\' | b'"' | b'\'');
        if text.len() <= MAX_LOGGED_CHARS && text.bytes().all(|b| plain(&b) || b == b' ') {
            return f.write_str(text);
        }
        let cut = text
            .char_indices()
            .nth(MAX_LOGGED_CHARS)
            .map_or(text, |(end, _)| &text[..end]);
        write!(f, "{}", cut.escape_debug())?;
        if cut.len() < text.len() {
            write!(f, "… ({} bytes in all)", text.len())?;
        }
        Ok(())
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
        assert_eq!(
            Loggable("/main/x y.narinfo").to_string(),
            "/main/x y.narinfo"
        );
        assert_eq!(Loggable("a\"b\\c").to_string(), "a\\\"b\\\\c");
        let long = loggable(&"a".repeat(60_000));
        assert!(
            long.len() < 400 && long.ends_with("(60000 bytes in all)"),
            "{long}"
        );
    }
}
