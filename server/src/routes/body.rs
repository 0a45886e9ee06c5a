//! An upload's body as the handlers read it: a stream that fails when the client stops
//! sending for `clients.body_stall_timeout_secs`. A slow upload that keeps sending goes on
//! however long it takes (a NAR of gigabytes over a slow link); a stalled one gives back its
//! connection instead of holding it for ever.

use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use futures::{Stream, StreamExt as _};

use crate::error::ServerError;

/// The body's chunks; an error names what went wrong (a stall, or the client's own error).
pub fn stall_bounded(
    body: Body,
    stall: Duration,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + Unpin + 'static {
    let chunks = body.into_data_stream();
    Box::pin(futures::stream::unfold(
        Some(chunks),
        move |chunks| async move {
            let mut chunks = chunks?;
            match tokio::time::timeout(stall, chunks.next()).await {
                Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(chunks))),
                Ok(Some(Err(error))) => Some((Err(std::io::Error::other(error)), None)),
                Ok(None) => None,
                Err(_) => Some((
                    Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("the upload stalled: no bytes for {} s", stall.as_secs()),
                    )),
                    None,
                )),
            }
        },
    ))
}

/// A small body read whole: at most `limit` bytes, none of them allowed to stall.
pub async fn read_small(body: Body, limit: usize, stall: Duration) -> Result<Bytes, ServerError> {
    let mut chunks = stall_bounded(body, stall);
    let mut bytes = Vec::new();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(ServerError::from_body_error)?;
        if bytes.len() + chunk.len() > limit {
            return Err(ServerError::TooLarge(limit));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(bytes))
}
