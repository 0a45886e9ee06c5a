//! Reading a registry's (or an upstream binary cache's) answers without trusting their size
//! or pace. A registry is someone else's machine: an endless manifest took the server to
//! 4 GB, a 170 MB tag list a push to 795 MB, and a blob sent one byte every 10 s outlived a
//! 60 s read timeout (each read came in time). Small answers are read with a cap, enforced
//! as they arrive; streamed bodies must make progress: in every `read_timeout` window at
//! least [`MIN_PROGRESS`] bytes (or all that is left), else they fail with "timed out".

use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt as _, TryStreamExt as _};
use oranc_core::{Error, Result};
use reqwest::Response;

/// Largest manifest read (the OCI distribution spec's own bound for what a registry must
/// accept is 4 MiB).
pub const MAX_MANIFEST: usize = 4 << 20;
/// Largest page of a tag listing (a page of 1,000 tags of 128 characters is ~140 KB).
pub const MAX_TAG_PAGE: usize = 8 << 20;
/// Largest token answer (ghcr.io's and Docker Hub's are a few KB).
pub const MAX_TOKEN: usize = 1 << 20;
/// Largest error body read for its message.
pub const MAX_ERROR_BODY: usize = 64 << 10;
/// Bytes a streamed body must deliver in each read-timeout window (unless fewer are left).
pub const MIN_PROGRESS: u64 = 64 << 10;

/// The whole body of `answer`, refusing more than `limit` bytes as soon as it is known
/// (a `Content-Length` over it, or the bytes so far).
pub async fn read_capped(answer: Response, limit: usize, what: &str) -> Result<Bytes> {
    let length = answer.content_length();
    read_stream_capped(body_of(answer), length, limit, what).await
}

/// The body of `answer` as I/O results (a timeout is of kind `TimedOut`), no URL in errors.
pub fn body_of(answer: Response) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    answer.bytes_stream().map_err(|e| {
        let kind = if e.is_timeout() {
            std::io::ErrorKind::TimedOut
        } else {
            std::io::ErrorKind::Other
        };
        std::io::Error::new(kind, e.without_url())
    })
}

/// The whole of `body` (announced as `length` bytes, where known), refusing more than
/// `limit` bytes as soon as it is known; a body error of kind `TimedOut` is `TimedOut`.
pub async fn read_stream_capped<S>(
    body: S,
    length: Option<u64>,
    limit: usize,
    what: &str,
) -> Result<Bytes>
where
    S: Stream<Item = std::io::Result<Bytes>>,
{
    let too_large = || Error::Protocol {
        what: what.to_owned(),
        reason: format!("the answer is larger than {limit} bytes; refused"),
    };
    if length.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    let mut body = std::pin::pin!(body);
    let mut bytes = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| {
            let what = what.to_owned();
            if e.kind() == std::io::ErrorKind::TimedOut {
                Error::TimedOut {
                    what,
                    reason: Some(format!("reading the answer: {e}")),
                }
            } else {
                Error::Unavailable {
                    what,
                    reason: e.to_string(),
                }
            }
        })?;
        if bytes.len() + chunk.len() > limit {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(bytes))
}

/// `body` (of `expected` bytes, where known) failing with `TimedOut` when a window of
/// `window` passes with less than [`MIN_PROGRESS`] (or what is left) received.
pub fn with_progress_deadline<S>(
    body: S,
    expected: Option<u64>,
    window: Duration,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static
where
    S: Stream<Item = std::io::Result<Bytes>> + Send + Unpin + 'static,
{
    struct Progress<S> {
        body: S,
        remaining: Option<u64>,
        window_end: tokio::time::Instant,
        in_window: u64,
    }
    let start = Progress {
        body,
        remaining: expected,
        window_end: tokio::time::Instant::now() + window,
        in_window: 0,
    };
    futures::stream::unfold(Some(start), move |state| async move {
        let mut state = state?;
        loop {
            let needed = state
                .remaining
                .map_or(MIN_PROGRESS, |left| left.min(MIN_PROGRESS));
            let next = tokio::time::timeout_at(state.window_end, state.body.next()).await;
            let window_over = tokio::time::Instant::now() >= state.window_end;
            if window_over {
                let delivered = match &next {
                    Ok(Some(Ok(chunk))) => state.in_window + chunk.len() as u64,
                    _ => state.in_window,
                };
                if delivered < needed {
                    let error = std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "timed out: {delivered} bytes came in {} s, fewer than the {needed} required",
                            window.as_secs()
                        ),
                    );
                    return Some((Err(error), None));
                }
                state.window_end = tokio::time::Instant::now() + window;
                state.in_window = 0;
            }
            match next {
                Err(_) => continue,
                Ok(None) => return None,
                Ok(Some(Err(error))) => return Some((Err(error), None)),
                Ok(Some(Ok(chunk))) => {
                    if !window_over {
                        state.in_window += chunk.len() as u64;
                    }
                    if let Some(left) = &mut state.remaining {
                        *left = left.saturating_sub(chunk.len() as u64);
                    }
                    return Some((Ok(chunk), Some(state)));
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trickle(
        bytes: usize,
        every: Duration,
    ) -> impl Stream<Item = std::io::Result<Bytes>> + Send + Unpin {
        Box::pin(futures::stream::iter(0..bytes).then(move |_| async move {
            tokio::time::sleep(every).await;
            Ok(Bytes::from_static(b"x"))
        }))
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickle_is_a_stall() {
        let body = with_progress_deadline(
            trickle(1_000, Duration::from_secs(10)),
            Some(1_000),
            Duration::from_secs(60),
        );
        let outcome: Vec<_> = body.collect().await;
        let error = outcome.last().unwrap().as_ref().unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
        assert!(error.to_string().contains("timed out"), "{error}");
        assert!(
            outcome.len() < 10,
            "{} chunks before giving up",
            outcome.len()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_small_body_that_arrives_whole_in_time_is_fine() {
        let body = with_progress_deadline(
            trickle(5, Duration::from_secs(1)),
            Some(5),
            Duration::from_secs(60),
        );
        let outcome: Vec<_> = body.collect().await;
        assert_eq!(outcome.len(), 5);
        assert!(outcome.iter().all(Result::is_ok));
    }
}
