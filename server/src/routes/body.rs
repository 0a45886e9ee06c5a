//! An upload's body as the handlers read it: a stream that fails when the client stops
//! sending for `clients.body_stall_timeout_secs`. A slow upload that keeps sending goes on
//! however long it takes (a NAR of gigabytes over a slow link); a stalled one gives back its
//! connection instead of holding it for ever.

use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use futures::{Stream, StreamExt as _};

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

/// A stream of an upload's bytes, as the handlers read them.
pub type BodyStream = std::pin::Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// `chunks`, failing with [`BodyTooLarge`] once they have given more than `limit` bytes.
pub fn capped(chunks: BodyStream, limit: u64) -> BodyStream {
    let mut given = 0u64;
    Box::pin(chunks.map(move |chunk| {
        let chunk = chunk?;
        given += chunk.len() as u64;
        if given > limit {
            return Err(std::io::Error::other(BodyTooLarge(limit)));
        }
        Ok(chunk)
    }))
}

/// What a body (as sent, or once decoded) gave more than its limit of.
#[derive(Debug, thiserror::Error)]
#[error("larger than {0} bytes")]
pub struct BodyTooLarge(pub u64);

/// An error of the client's body, marked as such where the registry's own could also come.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FromTheClient(pub std::io::Error);

/// A small body read whole (bound it with [`capped`]).
pub async fn read_whole(mut chunks: BodyStream) -> std::io::Result<Bytes> {
    let mut bytes = Vec::new();
    while let Some(chunk) = chunks.next().await {
        bytes.extend_from_slice(&chunk?);
    }
    Ok(Bytes::from(bytes))
}
