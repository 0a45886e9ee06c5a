//! Blob uploads in chunks that fit the registry's request cap.
//!
//! Registries cap request bodies: ghcr.io refuses one over 4 MiB (416, "the request body is
//! too large"), an nginx in front answers 413 past its `client_max_body_size`. The chunk
//! size starts at the setting (4 MiB by default: ghcr.io's cap) and halves whenever the
//! registry refuses a body as too large; the new size is kept for every later upload to
//! that registry. After a refusal the upload's status (GET of its location) says how much
//! the registry holds, and the upload goes on from there with the bytes still in memory:
//! a NAR never restarts from zero, and a blob the registry holds only in part is never
//! finished (the final PUT names the digest of the whole, which the registry checks).

use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use oranc_core::{BlobInfo, Error, RepositoryName, Result};
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use reqwest::{Method, Response, StatusCode};
use tokio::io::AsyncRead;

use super::super::auth::Scope;
use super::super::hashing::{read_up_to, HashingReader};
use super::{status_error, DistributionRegistry};

/// No chunk is made smaller than this: a registry that refuses 64 KiB is refusing
/// something other than the size.
pub const MIN_CHUNK: usize = 64 << 10;

/// The chunk size of one registry, learned down from the setting.
#[derive(Debug)]
pub struct ChunkSize(AtomicUsize);

impl ChunkSize {
    pub fn new(configured: usize) -> Self {
        Self(AtomicUsize::new(configured.max(MIN_CHUNK)))
    }

    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// After a body of `refused` bytes was refused as too large: chunks of at most half
    /// that from now on. `None` when they cannot get smaller.
    fn shrink_below(&self, refused: usize) -> Option<usize> {
        if refused <= MIN_CHUNK {
            return None;
        }
        let smaller = (refused / 2).max(MIN_CHUNK);
        let now = self.0.fetch_min(smaller, Ordering::Relaxed).min(smaller);
        Some(now)
    }
}

/// Whether a registry refused a request because its body was too large: 413, or ghcr.io's
/// 416 to a chunk over its cap.
fn too_large(status: StatusCode) -> bool {
    status == StatusCode::PAYLOAD_TOO_LARGE || status == StatusCode::RANGE_NOT_SATISFIABLE
}

/// What to do with a body the registry refused as too large.
pub enum Refusal {
    /// Send it again in smaller pieces.
    Split,
    /// It is as small as chunks get: fail with this error.
    Fatal(Error),
}

impl DistributionRegistry {
    /// Streams `body` as one blob: a body smaller than a chunk goes up whole
    /// ([`Self::put_small_blob`]), a larger one in PATCHed chunks, through `session` when
    /// one was opened ahead.
    pub(super) async fn upload_stream(
        &self,
        repo: &RepositoryName,
        session: Option<String>,
        body: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<BlobInfo> {
        let io_error = |source| Error::Io {
            what: format!("reading the blob to upload to {repo}"),
            source,
        };
        let mut reader = HashingReader::new(body);
        let chunk_size = self.chunk_size.get();
        let first = match read_up_to(&mut reader, chunk_size).await {
            Ok(first) => first,
            Err(error) => {
                if let Some(location) = &session {
                    self.cancel_session(repo, location).await;
                }
                return Err(io_error(error));
            }
        };
        if first.len() < chunk_size {
            return self.put_small_blob(repo, session, Bytes::from(first)).await;
        }
        let what = format!("uploading a blob to {repo}");
        let mut location = match session {
            Some(location) => location,
            None => self.start_upload(repo).await?,
        };
        let mut offset: u64 = 0;
        let mut chunk = Bytes::from(first);
        while !chunk.is_empty() {
            let patch = self.patch_all(repo, &location, offset, chunk.clone(), &what);
            // Read and hash the next chunk while this one is on the wire: two chunks in
            // memory at most, and the disk, the hash and the network overlap.
            let (sent, next) = tokio::join!(patch, read_up_to(&mut reader, self.chunk_size.get()));
            location = sent?;
            offset += chunk.len() as u64;
            chunk = match next {
                Ok(next) => Bytes::from(next),
                Err(error) => {
                    self.cancel_session(repo, &location).await;
                    return Err(io_error(error));
                }
            };
        }
        let blob = reader.finish();
        self.finish_upload(repo, &location, &blob, Bytes::new())
            .await?;
        Ok(blob)
    }

    /// Cancels the upload at `location`, whose body failed (a NAR that failed its check
    /// ends that way): nothing of it is to be kept, and the registry need not hold it until
    /// its purge (a week, for distribution). Best effort: one that refuses keeps it so.
    pub(super) async fn cancel_session(&self, repo: &RepositoryName, location: &str) {
        let what = format!("cancelling an upload to {repo}");
        let cancelled = self
            .send_ok(Scope::Push(repo), &what, &|| {
                self.http.delete(location).timeout(self.request_timeout)
            })
            .await;
        if let Err(error) = cancelled {
            tracing::debug!(%repo, %error, "the registry keeps an upload it was asked to cancel");
        }
    }

    /// PATCHes `bytes` (the blob's bytes from `offset` on) into the upload at `location`,
    /// in pieces no larger than the chunk size, splitting further when the registry refuses
    /// one as too large. Returns the upload's next location.
    pub(super) async fn patch_all(
        &self,
        repo: &RepositoryName,
        location: &str,
        mut offset: u64,
        mut bytes: Bytes,
        what: &str,
    ) -> Result<String> {
        let mut location = location.to_owned();
        while !bytes.is_empty() {
            let piece = bytes.slice(..bytes.len().min(self.chunk_size.get()));
            let end = offset + piece.len() as u64 - 1;
            let url = location.clone();
            let build = || {
                self.http
                    .patch(&url)
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_RANGE, format!("{offset}-{end}"))
                    .header(CONTENT_LENGTH, piece.len())
                    .body(piece.clone())
            };
            let answer = self.send(Scope::Push(repo), what, &build).await?;
            if answer.status().is_success() {
                location = self.location(&answer, what)?;
                offset = end + 1;
                bytes = bytes.slice(piece.len()..);
                continue;
            }
            match self.refusal(answer, piece.len(), what).await {
                Refusal::Fatal(error) => return Err(error),
                Refusal::Split => {}
            }
            // Where the registry is now: the refused piece may be partly stored.
            let (stored, next_location) = self.upload_progress(repo, &location, what).await?;
            if stored < offset || stored > end + 1 {
                return Err(Error::Protocol {
                    what: what.to_owned(),
                    reason: format!(
                        "after refusing bytes {offset}-{end} the registry says it holds {stored} bytes; the upload cannot go on from there"
                    ),
                });
            }
            bytes = bytes.slice((stored - offset) as usize..);
            offset = stored;
            location = next_location;
        }
        Ok(location)
    }

    /// What a non-success answer to a body of `sent` bytes means: too large (the chunk
    /// size is halved, the caller splits) or an error.
    pub(super) async fn refusal(&self, answer: Response, sent: usize, what: &str) -> Refusal {
        let status = answer.status();
        if !too_large(status) {
            return Refusal::Fatal(status_error(what, answer).await);
        }
        match self.chunk_size.shrink_below(sent) {
            Some(now) => {
                tracing::warn!(
                    registry = %self.name,
                    %status,
                    refused = sent,
                    chunk_size = now,
                    "the registry refused a request body as too large; sending smaller chunks to it from now on"
                );
                Refusal::Split
            }
            None => Refusal::Fatal(status_error(what, answer).await),
        }
    }

    /// How many bytes the upload at `location` holds (its `Range: 0-<last>`), and the
    /// location to go on with.
    async fn upload_progress(
        &self,
        repo: &RepositoryName,
        location: &str,
        what: &str,
    ) -> Result<(u64, String)> {
        let answer = self
            .send_ok(Scope::Push(repo), what, &|| {
                self.request(Method::GET, location)
            })
            .await?;
        let last = answer
            .headers()
            .get(RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("0-"))
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| Error::Protocol {
                what: what.to_owned(),
                reason: "the upload's status has no Range: 0-<last byte>".into(),
            })?;
        // distribution says `0-0` for an empty upload (and for one byte, which no upload
        // here ever holds after a refusal: chunks are at least 64 KiB).
        let stored = match last {
            0 => 0,
            last => last.checked_add(1).ok_or_else(|| Error::Protocol {
                what: what.to_owned(),
                reason: format!("the upload's status claims bytes up to {last}"),
            })?,
        };
        let next = match answer.headers().get(reqwest::header::LOCATION) {
            Some(_) => self.location(&answer, what)?,
            None => location.to_owned(),
        };
        Ok((stored, next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_below_what_was_refused_and_stops_at_the_floor() {
        let size = ChunkSize::new(4 << 20);
        assert_eq!(size.shrink_below(4 << 20), Some(2 << 20));
        assert_eq!(size.get(), 2 << 20);
        // A late refusal of a larger body never grows it back.
        assert_eq!(size.shrink_below(8 << 20), Some(2 << 20));
        assert_eq!(size.shrink_below(100 << 10), Some(MIN_CHUNK));
        assert_eq!(size.shrink_below(MIN_CHUNK), None);
        assert_eq!(ChunkSize::new(1).get(), MIN_CHUNK);
    }
}
