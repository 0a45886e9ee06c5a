//! When and how long to wait before trying a registry request again: connection errors,
//! timeouts, 5xx and 429, with jittered exponential backoff, honouring `Retry-After`.

use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::StatusCode;

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries after the first attempt (the original oranc's `--max-retry`, default 3).
    pub max_retries: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// A `Retry-After` longer than this is not waited for: the request fails instead.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 3,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

/// What to do after an attempt failed in a way that might pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    RetryAfter(Duration),
    GiveUp,
}

impl RetryPolicy {
    pub fn is_retryable_status(status: StatusCode) -> bool {
        matches!(
            status,
            StatusCode::REQUEST_TIMEOUT
                | StatusCode::TOO_MANY_REQUESTS
                | StatusCode::INTERNAL_SERVER_ERROR
                | StatusCode::BAD_GATEWAY
                | StatusCode::SERVICE_UNAVAILABLE
                | StatusCode::GATEWAY_TIMEOUT
        )
    }

    /// `attempt` counts from 0 for the first retry.
    pub fn decide(&self, attempt: u32, retry_after: Option<Duration>) -> Decision {
        if attempt >= self.max_retries {
            return Decision::GiveUp;
        }
        if let Some(wait) = retry_after {
            return if wait <= self.max_retry_after {
                Decision::RetryAfter(wait)
            } else {
                Decision::GiveUp
            };
        }
        let exponential = self
            .base_delay
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max_delay);
        // "Equal jitter": half fixed, half random, so clients that failed together spread out.
        let half = exponential / 2;
        let jitter = half.mul_f64(fastrand::f64());
        Decision::RetryAfter(half + jitter)
    }
}

/// `Retry-After` as seconds or an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_stays_jittered_and_capped() {
        let policy = RetryPolicy {
            max_retries: 10,
            ..Default::default()
        };
        for attempt in 0..10 {
            let Decision::RetryAfter(wait) = policy.decide(attempt, None) else {
                panic!("attempt {attempt} retries");
            };
            let full = (policy.base_delay * (1 << attempt)).min(policy.max_delay);
            assert!(
                wait >= full / 2 && wait <= full,
                "attempt {attempt}: {wait:?}"
            );
        }
        assert_eq!(policy.decide(10, None), Decision::GiveUp);
    }

    #[test]
    fn retry_after_is_honoured_up_to_a_bound() {
        let policy = RetryPolicy::default();
        assert_eq!(
            policy.decide(0, Some(Duration::from_secs(2))),
            Decision::RetryAfter(Duration::from_secs(2))
        );
        assert_eq!(
            policy.decide(0, Some(Duration::from_secs(3600))),
            Decision::GiveUp
        );
    }

    #[test]
    fn parses_retry_after_seconds_and_dates() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        let later = std::time::SystemTime::now() + Duration::from_secs(30);
        headers.insert(RETRY_AFTER, httpdate::fmt_http_date(later).parse().unwrap());
        let wait = retry_after(&headers).unwrap();
        assert!(
            wait <= Duration::from_secs(30) && wait >= Duration::from_secs(28),
            "{wait:?}"
        );
        headers.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&headers), None);
    }
}
