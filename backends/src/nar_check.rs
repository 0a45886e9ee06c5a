//! Checks a NAR file from another binary cache against its narinfo while it streams: the
//! bytes pass through unchanged (to be stored as they are), and a blocking thread
//! decompresses a copy and hashes the NAR inside. Only the narinfo's signature is trusted,
//! and it covers `NarHash`, `NarSize` and `References`, not `URL`, `FileHash` or `FileSize`:
//! a source that changes those and serves other bytes is caught here, before anything
//! names the file. The stream also ends with an error as soon as it outgrows `FileSize`
//! (or the NAR inside outgrows `NarSize`), so an endless answer costs nothing more.

use std::io::Read as _;
use std::sync::{Arc, OnceLock};

use bytes::{Buf as _, Bytes};
use futures::StreamExt as _;
use oranc_core::registry::ByteStream;
use oranc_core::{NarInfo, Sha256Hash};
use sha2::{Digest as _, Sha256};
use tokio::sync::{mpsc, oneshot};

/// Chunks on their way to the checking thread.
const CHUNKS_AHEAD: usize = 16;

/// Whether the bytes were the NAR the narinfo describes, once the stream has ended.
#[derive(Debug)]
pub struct Verdict {
    checked: oneshot::Receiver<Result<(), String>>,
    /// Why the stream itself stopped the file, if it did (then the checker only saw it end).
    cut: Arc<OnceLock<String>>,
    /// Whether the stream was ever read (the checker starts then).
    read: Arc<std::sync::atomic::AtomicBool>,
}

impl Verdict {
    /// `Ok` only when the whole file went through and its NAR has the narinfo's NarHash
    /// and NarSize (and the file its FileSize, where given; its FileHash is the caller's to
    /// compare with the digest its upload computed).
    pub async fn wait(self) -> Result<(), String> {
        self.outcome().await
    }

    /// [`Self::wait`] for several to await: the stream that holds its last chunk
    /// ([`last_chunk_after`]) and the caller that reports why.
    pub fn shared(self) -> SharedVerdict {
        SharedVerdict {
            read: self.read.clone(),
            outcome: futures::FutureExt::shared(Box::pin(self.outcome())),
        }
    }

    async fn outcome(self) -> Result<(), String> {
        let checked = self
            .checked
            .await
            .unwrap_or_else(|_| Err("the NAR check stopped".into()));
        match self.cut.get() {
            Some(reason) => Err(reason.clone()),
            None => checked,
        }
    }
}

/// `chunks` one chunk behind: the last one is held until `verdict` says the NAR passed its
/// check, and replaced by the failure when it did not. A client (or an HTTP cache in front)
/// that got all of Content-Length would take a NAR that failed as whole, whatever error
/// came after it; one that is a chunk short knows it is not. A registry upload fed this way
/// never commits a file that failed: its body fails instead, and the upload is cancelled.
pub fn last_chunk_after<S, V>(
    chunks: S,
    verdict: V,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static
where
    S: futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    V: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let state = (Box::pin(chunks), None::<Bytes>, Some(Box::pin(verdict)));
    futures::stream::unfold(state, |(mut chunks, mut held, mut verdict)| async move {
        verdict.as_ref()?;
        loop {
            match chunks.next().await {
                Some(Ok(chunk)) => {
                    if let Some(previous) = held.replace(chunk) {
                        return Some((Ok(previous), (chunks, held, verdict)));
                    }
                }
                Some(Err(error)) => return Some((Err(error), (chunks, None, None))),
                None => {
                    let outcome = verdict.take()?.await;
                    let last = match (outcome, held.take()) {
                        (Ok(()), Some(last)) => Ok(last),
                        (Ok(()), None) => return None,
                        (Err(reason), _) => Err(std::io::Error::other(reason)),
                    };
                    return Some((last, (chunks, None, None)));
                }
            }
        }
    })
}

/// A [`Verdict`] several may await.
#[derive(Clone)]
pub struct SharedVerdict {
    read: Arc<std::sync::atomic::AtomicBool>,
    outcome: futures::future::Shared<futures::future::BoxFuture<'static, Result<(), String>>>,
}

impl std::fmt::Debug for SharedVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedVerdict")
            .field("read", &self.was_read())
            .finish_non_exhaustive()
    }
}

impl SharedVerdict {
    /// Whether the checked stream was ever read: when it was not (its reader failed
    /// first), the verdict says nothing about the NAR.
    pub fn was_read(&self) -> bool {
        self.read.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// See [`Verdict::wait`].
    pub fn wait(&self) -> impl std::future::Future<Output = Result<(), String>> + Send + 'static {
        self.outcome.clone()
    }
}

/// The largest file a NAR of `nar_size` bytes may come in, whatever its (unsigned)
/// FileSize says: NarSize + 1% + 1 MiB. zstd and xz grow what they cannot compress by well
/// under 1% (block headers), so only padding goes past it: zstd skippable frames or xz
/// stream padding, which decoders pass over, made a 120-byte NAR a 200 MB file that every
/// client would download (docs/security.md).
pub fn largest_file(nar_size: u64) -> u64 {
    nar_size
        .saturating_add(nar_size / 100)
        .saturating_add(1 << 20)
}

/// `body` as it is, checked against `narinfo`; refused at once when its compression is one
/// this cannot decompress.
pub fn checked(body: ByteStream, narinfo: &NarInfo) -> Result<(ByteStream, Verdict), String> {
    let compression = narinfo
        .compression
        .clone()
        .unwrap_or_else(|| "bzip2".into());
    if !matches!(compression.as_str(), "xz" | "zstd" | "none") {
        return Err(format!(
            "the NAR of {} is {compression}-compressed; only xz, zstd and none can be checked against its NarHash",
            narinfo.store_path
        ));
    }
    let expected = Expected {
        nar_hash: narinfo.nar_hash,
        nar_size: narinfo.nar_size,
        file_size: narinfo.file_size,
    };
    let (to_checker, chunks) = mpsc::channel::<Bytes>(CHUNKS_AHEAD);
    let (verdict_sender, verdict) = oneshot::channel();
    // The thread starts when the stream is first read, not here: waking a blocking thread
    // costs tens of µs on a busy machine, and a caller answering a client before it reads
    // (the mirror's first byte) should not wait for that. Never read, it never starts, and
    // the verdict is that the check stopped.
    let read = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let read_by_stream = read.clone();
    let mut checker = Some(move || {
        read_by_stream.store(true, std::sync::atomic::Ordering::Relaxed);
        tokio::task::spawn_blocking(move || {
            let _ = verdict_sender.send(check(&compression, chunks, expected));
        });
    });
    let limit = largest_file(expected.nar_size).min(expected.file_size.unwrap_or(u64::MAX));
    let cut = Arc::new(OnceLock::new());
    let cut_by_stream = cut.clone();
    let stream = futures::stream::unfold(
        (body, Some(to_checker), 0u64),
        move |(mut body, to_checker, seen)| {
            let cut_by_stream = cut_by_stream.clone();
            if let Some(start) = checker.take() {
                start();
            }
            async move {
                let to_checker = to_checker?;
                match body.next().await {
                    None => None,
                    Some(Err(error)) => Some((Err(error), (body, None, seen))),
                    Some(Ok(chunk)) => {
                        let seen = seen + chunk.len() as u64;
                        if seen > limit {
                            let reason = format!(
                                "the file is larger than its FileSize or than a NAR of its NarSize can take ({limit} bytes)"
                            );
                            let _ = cut_by_stream.set(reason.clone());
                            return Some((Err(std::io::Error::other(reason)), (body, None, seen)));
                        }
                        if to_checker.send(chunk.clone()).await.is_err() {
                            // The checker has its verdict already (a corrupt or oversized NAR).
                            let error = std::io::Error::other(
                                "the NAR file is not the one its narinfo describes",
                            );
                            return Some((Err(error), (body, None, seen)));
                        }
                        Some((Ok(chunk), (body, Some(to_checker), seen)))
                    }
                }
            }
        },
    );
    Ok((
        stream.boxed(),
        Verdict {
            checked: verdict,
            cut,
            read,
        },
    ))
}

#[derive(Debug, Clone, Copy)]
struct Expected {
    nar_hash: Sha256Hash,
    nar_size: u64,
    file_size: Option<u64>,
}

/// The chunks `chunks` brings, as a blocking reader that counts them. The file's own hash
/// (FileHash) is not taken here: the upload it goes to computes it anyway, and callers
/// compare that. Decoders read it as a `BufRead`, straight from the chunks: through a
/// `Read` each byte was copied once more, into the decoder's buffer, on the thread whose
/// pace bounds a mirror's cold fetch.
struct ChunkReader {
    chunks: mpsc::Receiver<Bytes>,
    current: Bytes,
    file_size: u64,
}

impl std::io::BufRead for ChunkReader {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                Some(chunk) => {
                    self.file_size += chunk.len() as u64;
                    self.current = chunk;
                }
                None => break,
            }
        }
        Ok(&self.current)
    }

    fn consume(&mut self, amount: usize) {
        self.current.advance(amount);
    }
}

impl std::io::Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        use std::io::BufRead as _;
        let available = self.fill_buf()?;
        let n = out.len().min(available.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

fn check(
    compression: &str,
    chunks: mpsc::Receiver<Bytes>,
    expected: Expected,
) -> Result<(), String> {
    let mut reader = ChunkReader {
        chunks,
        current: Bytes::new(),
        file_size: 0,
    };
    let (nar_hash, nar_size) = {
        let decoder: Box<dyn std::io::Read + '_> = match compression {
            "xz" => Box::new(xz2::bufread::XzDecoder::new_multi_decoder(&mut reader)),
            "zstd" => Box::new(
                zstd::stream::read::Decoder::with_buffer(&mut reader)
                    .map_err(|e| format!("starting zstd: {e}"))?,
            ),
            _ => Box::new(&mut reader),
        };
        hash_at_most(decoder, expected.nar_size)?
    };
    // What the decoder left unread (trailing bytes) still belongs to the file.
    std::io::copy(&mut reader, &mut std::io::sink()).map_err(|e| e.to_string())?;
    if nar_hash != expected.nar_hash || nar_size != expected.nar_size {
        return Err(format!(
            "the NAR inside is not the one the narinfo's signature covers (NarHash {}, {nar_size} bytes; signed {}, {} bytes)",
            nar_hash.to_nix_string(),
            expected.nar_hash.to_nix_string(),
            expected.nar_size
        ));
    }
    if expected
        .file_size
        .is_some_and(|size| size != reader.file_size)
    {
        return Err(format!(
            "the file is {} bytes, not its FileSize ({} bytes)",
            reader.file_size,
            expected.file_size.unwrap_or_default()
        ));
    }
    Ok(())
}

/// SHA-256 and length of what `decoder` gives, refusing more than `limit` bytes.
fn hash_at_most(decoder: impl std::io::Read, limit: u64) -> Result<(Sha256Hash, u64), String> {
    let mut hasher = Sha256::new();
    let mut limited = decoder.take(limit.saturating_add(1));
    let mut buffer = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = limited
            .read(&mut buffer)
            .map_err(|e| format!("decompressing the NAR: {e}"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        size += n as u64;
    }
    if size > limit {
        return Err(format!(
            "the NAR inside is larger than its NarSize ({limit} bytes)"
        ));
    }
    Ok((Sha256Hash::from_bytes(hasher.finalize().into()), size))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn narinfo_for(nar: &[u8], file: &[u8], compression: &str) -> NarInfo {
        let text = format!(
            "StorePath: /nix/store/5kk4mwqi310s9ssry90al6mxrb47vdiw-app\nURL: nar/x.nar\nCompression: {compression}\nFileHash: {}\nFileSize: {}\nNarHash: {}\nNarSize: {}\n",
            Sha256Hash::of(file).to_nix_string(),
            file.len(),
            Sha256Hash::of(nar).to_nix_string(),
            nar.len()
        );
        NarInfo::parse(&text).unwrap()
    }

    async fn run(file: Vec<u8>, narinfo: &NarInfo) -> (Vec<u8>, Result<(), String>) {
        let body = futures::stream::iter(
            file.chunks(1000)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        )
        .boxed();
        let (stream, verdict) = checked(body, narinfo).unwrap();
        let passed: Vec<Bytes> = stream.filter_map(|c| async { c.ok() }).collect().await;
        (passed.concat(), verdict.wait().await)
    }

    #[tokio::test]
    async fn the_file_passes_unchanged_and_its_nar_is_checked() {
        let nar = b"nix-archive-1 and then some".repeat(500);
        let file = zstd::encode_all(&nar[..], 3).unwrap();
        let narinfo = narinfo_for(&nar, &file, "zstd");
        let (passed, verdict) = run(file.clone(), &narinfo).await;
        assert_eq!(passed, file);
        assert_eq!(verdict, Ok(()));
    }

    #[tokio::test]
    async fn other_bytes_with_a_matching_file_hash_are_caught_by_the_nar_hash() {
        let nar = b"the real NAR".repeat(100);
        let other = zstd::encode_all(&b"garbage".repeat(100)[..], 3).unwrap();
        // A source rewrote FileHash/FileSize (unsigned) to match its other bytes.
        let narinfo = narinfo_for(&nar, &other, "zstd");
        let (_, verdict) = run(other, &narinfo).await;
        assert!(verdict.unwrap_err().contains("NarHash"));
    }

    #[tokio::test]
    async fn an_endless_file_stops_at_its_file_size() {
        let nar = b"x".repeat(100);
        let narinfo = narinfo_for(&nar, &nar, "none");
        let endless = futures::stream::repeat_with(|| Ok(Bytes::from_static(&[0u8; 4096])))
            .take(100_000)
            .boxed();
        let (stream, verdict) = checked(endless, &narinfo).unwrap();
        let results: Vec<_> = stream.collect().await;
        assert!(results.len() < 5, "stopped early: {}", results.len());
        assert!(results.last().unwrap().is_err());
        assert!(verdict.wait().await.is_err());
    }

    #[tokio::test]
    async fn padding_past_what_its_nar_size_allows_is_cut_whatever_file_size_says() {
        let nar = b"nix-archive-1 small".repeat(6);
        let mut file = zstd::encode_all(&nar[..], 3).unwrap();
        // zstd skippable frames (magic 0x184D2A5?, then a 4-byte length), 2 MiB of them.
        for _ in 0..32 {
            file.extend_from_slice(&0x184D_2A50u32.to_le_bytes());
            file.extend_from_slice(&(64u32 << 10).to_le_bytes());
            file.extend_from_slice(&[0u8; 64 << 10]);
        }
        // FileHash and FileSize are unsigned: the source made them match the padded file.
        let narinfo = narinfo_for(&nar, &file, "zstd");
        let (passed, verdict) = run(file.clone(), &narinfo).await;
        assert!(passed.len() as u64 <= largest_file(nar.len() as u64));
        assert!(verdict.unwrap_err().contains("NarSize"));
        // The same NAR with no padding passes.
        let plain = zstd::encode_all(&nar[..], 3).unwrap();
        let (_, verdict) = run(plain.clone(), &narinfo_for(&nar, &plain, "zstd")).await;
        assert_eq!(verdict, Ok(()));
    }

    #[tokio::test]
    async fn xz_stream_padding_past_the_bound_is_cut_too() {
        let nar = b"nix-archive-1 small".repeat(6);
        let mut file = Vec::new();
        {
            use std::io::Write as _;
            let mut encoder = xz2::write::XzEncoder::new(&mut file, 6);
            encoder.write_all(&nar).unwrap();
            encoder.finish().unwrap();
        }
        // Stream padding: NUL bytes in multiples of four between and after xz streams.
        file.extend(std::iter::repeat_n(0u8, 2 << 20));
        let narinfo = narinfo_for(&nar, &file, "xz");
        let (passed, verdict) = run(file, &narinfo).await;
        assert!(passed.len() as u64 <= largest_file(nar.len() as u64));
        assert!(verdict.unwrap_err().contains("NarSize"));
    }

    #[test]
    fn a_compression_that_cannot_be_checked_is_refused() {
        let narinfo = narinfo_for(b"n", b"f", "bzip2");
        assert!(checked(futures::stream::empty().boxed(), &narinfo).is_err());
    }
}
