//! Hashing while streaming: an `AsyncRead` adapter that feeds every byte it passes on to
//! SHA-256, so an upload learns its digest without a second pass or a copy in memory.

use std::pin::Pin;
use std::task::{Context, Poll};

use oranc_core::{BlobInfo, Sha256Hash};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt as _, ReadBuf};

pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    size: u64,
}

impl<R> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    /// The digest and size of everything read so far.
    pub fn finish(self) -> BlobInfo {
        BlobInfo {
            digest: Sha256Hash::from_bytes(self.hasher.finalize().into()),
            size: self.size,
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for HashingReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            let fresh = &buf.filled()[before..];
            self.size += fresh.len() as u64;
            self.hasher.update(fresh);
        }
        poll
    }
}

impl<R> std::fmt::Debug for HashingReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashingReader")
            .field("size", &self.size)
            .finish()
    }
}

/// Reads until `limit` bytes or the end, whichever comes first. The buffer grows by
/// doubling but never past `limit`: `read_to_end` would double a full buffer once more to
/// look for the end, holding twice the chunk size for every upload in flight.
pub async fn read_up_to<R: AsyncRead + Unpin>(
    reader: &mut R,
    limit: usize,
) -> std::io::Result<Vec<u8>> {
    let mut buffer = vec![0u8; limit.min(64 << 10)];
    let mut filled = 0;
    while filled < limit {
        if filled == buffer.len() {
            buffer.resize((buffer.len() * 2).min(limit), 0);
        }
        let read = reader.read(&mut buffer[filled..]).await?;
        if read == 0 {
            break;
        }
        filled += read;
    }
    buffer.truncate(filled);
    Ok(buffer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_what_passes_through_in_chunks() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut reader = HashingReader::new(&data[..]);
        let first = read_up_to(&mut reader, 30_000).await.unwrap();
        let rest = read_up_to(&mut reader, 1 << 20).await.unwrap();
        assert_eq!(first.len(), 30_000);
        assert_eq!(rest.len(), 70_000);
        let info = reader.finish();
        assert_eq!(info.size, 100_000);
        assert_eq!(info.digest, Sha256Hash::of(&data));
    }
}
