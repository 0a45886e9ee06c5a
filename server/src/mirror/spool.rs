//! Where a copy's bytes wait for the registry. A registry usually stores a NAR slower than
//! upstream sends it (uploads go in chunks of a few MiB, a round trip each, and ghcr.io
//! takes no more than 4 MiB a request), and a copy that fed the client and the registry in
//! step would give the client the registry's pace. So the copy writes what it fetches to a
//! file and the upload reads it back at its own pace, while the client gets upstream's.
//!
//! The file is made deleted (`tempfile::tempfile`, in `$TMPDIR`): nothing outlives the copy,
//! even when the server is killed. What all spools may hold at once is bounded by
//! `[mirror] spool_max_bytes`; a copy reserves its NAR's FileSize before it starts, and one
//! that does not fit feeds the registry in step with the client, as before.

use std::os::unix::fs::FileExt as _;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

/// Written to the file at once (fewer blocking-thread trips than one per chunk).
const WRITE_BATCH: usize = 1 << 20;
/// Read back at once, for the upload.
const READ_BATCH: usize = 1 << 20;
/// The budget counts whole MiB: a semaphore takes at most `u32::MAX` permits at a time.
const UNIT: u64 = 1 << 20;

/// What all spools may hold at once, shared by every mirror of a server.
#[derive(Debug, Clone)]
pub struct SpoolBudget(Option<Arc<Semaphore>>);

impl SpoolBudget {
    /// `max_bytes` in all (0: no spool at all).
    pub fn new(max_bytes: u64) -> Self {
        let units = usize::try_from(max_bytes / UNIT)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        Self((units > 0).then(|| Arc::new(Semaphore::new(units))))
    }

    /// A spool for a file of `size` bytes, when the budget has room for it now (a copy
    /// never waits for room). `None` when the size is unknown, too large, or the file could
    /// not be made.
    pub(super) fn open(&self, size: Option<u64>) -> Option<(SpoolWriter, SpoolReader)> {
        let units = u32::try_from(size?.div_ceil(UNIT).max(1)).ok()?;
        let reservation = self.0.clone()?.try_acquire_many_owned(units).ok()?;
        let file = match tempfile::tempfile() {
            Ok(file) => Arc::new(file),
            Err(error) => {
                tracing::warn!(%error, "no spool file in the temporary directory; the copy goes at the registry's pace");
                return None;
            }
        };
        let (progress, watched) = watch::channel(Progress::Writing(0));
        let writer = SpoolWriter {
            file: file.clone(),
            written: 0,
            batch: Vec::new(),
            batched: 0,
            progress,
        };
        let reader = SpoolReader {
            file,
            read: 0,
            progress: watched,
            _reservation: reservation,
        };
        Some((writer, reader))
    }
}

/// How far the writer has got.
#[derive(Debug, Clone)]
enum Progress {
    /// This many bytes are in the file, and more are coming.
    Writing(u64),
    /// The file is whole at this many bytes.
    Ended(u64),
    /// The fetch failed: the upload must fail too.
    Failed(String),
}

/// The copy's side: appends what it fetches.
#[derive(Debug)]
pub(super) struct SpoolWriter {
    file: Arc<std::fs::File>,
    written: u64,
    /// Chunks not written yet, and their bytes.
    batch: Vec<Bytes>,
    batched: usize,
    progress: watch::Sender<Progress>,
}

impl SpoolWriter {
    /// Appends `chunk` (written out a batch at a time). An error means the file cannot
    /// take more (a full disk): the upload is told, and the copy goes on without it.
    pub(super) async fn write(&mut self, chunk: Bytes) -> std::io::Result<()> {
        self.batched += chunk.len();
        self.batch.push(chunk);
        if self.batched >= WRITE_BATCH {
            self.flush().await?;
        }
        Ok(())
    }

    /// Whether the upload stopped reading (it failed): nothing more needs writing.
    pub(super) fn upload_gone(&self) -> bool {
        self.progress.is_closed()
    }

    /// The file is whole: the upload reads it to its end (or fails, when the last bytes
    /// could not be written).
    pub(super) async fn finish(mut self) -> std::io::Result<()> {
        match self.flush().await {
            Ok(()) => {
                self.progress.send_replace(Progress::Ended(self.written));
                Ok(())
            }
            Err(error) => {
                self.progress
                    .send_replace(Progress::Failed(format!("spooling the NAR: {error}")));
                Err(error)
            }
        }
    }

    /// The fetch failed (or the file could not be written): the upload fails with `reason`.
    pub(super) fn fail(self, reason: String) {
        self.progress.send_replace(Progress::Failed(reason));
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        let length = std::mem::take(&mut self.batched) as u64;
        let file = self.file.clone();
        let mut offset = self.written;
        tokio::task::spawn_blocking(move || {
            batch.iter().try_for_each(|chunk| {
                file.write_all_at(chunk, offset)?;
                offset += chunk.len() as u64;
                Ok::<_, std::io::Error>(())
            })
        })
        .await
        .map_err(std::io::Error::other)??;
        self.written += length;
        self.progress.send_replace(Progress::Writing(self.written));
        Ok(())
    }
}

/// The upload's side: reads the file as it grows, to its end. Holds the copy's share of the
/// budget until it is dropped.
#[derive(Debug)]
pub(super) struct SpoolReader {
    file: Arc<std::fs::File>,
    read: u64,
    progress: watch::Receiver<Progress>,
    _reservation: OwnedSemaphorePermit,
}

impl SpoolReader {
    /// The file's bytes in order, as they are written; an error when the writer failed or
    /// stopped before the file was whole.
    pub(super) fn into_stream(
        self,
    ) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
        futures::stream::unfold(Some(self), |reader| async move {
            let mut reader = reader?;
            match reader.next_batch().await {
                Ok(Some(bytes)) => Some((Ok(bytes), Some(reader))),
                Ok(None) => None,
                Err(error) => Some((Err(error), None)),
            }
        })
    }

    async fn next_batch(&mut self) -> std::io::Result<Option<Bytes>> {
        let available = loop {
            let progress = self.progress.borrow_and_update().clone();
            match progress {
                Progress::Writing(written) if written > self.read => break written,
                Progress::Ended(written) if written > self.read => break written,
                Progress::Ended(_) => return Ok(None),
                Progress::Failed(reason) => return Err(std::io::Error::other(reason)),
                Progress::Writing(_) => {}
            }
            if self.progress.changed().await.is_err() {
                return Err(std::io::Error::other(
                    "the copy stopped before the NAR was whole",
                ));
            }
        };
        let length = usize::try_from(available - self.read)
            .unwrap_or(READ_BATCH)
            .min(READ_BATCH);
        let file = self.file.clone();
        let offset = self.read;
        let bytes = tokio::task::spawn_blocking(move || {
            let mut buffer = vec![0; length];
            file.read_exact_at(&mut buffer, offset).map(|()| buffer)
        })
        .await
        .map_err(std::io::Error::other)??;
        self.read += length as u64;
        Ok(Some(Bytes::from(bytes)))
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt as _;

    use super::*;

    async fn read_all(reader: SpoolReader) -> std::io::Result<Vec<u8>> {
        let mut stream = std::pin::pin!(reader.into_stream());
        let mut all = Vec::new();
        while let Some(bytes) = stream.next().await {
            all.extend_from_slice(&bytes?);
        }
        Ok(all)
    }

    #[tokio::test]
    async fn the_upload_reads_what_was_written_while_it_is_written() {
        let budget = SpoolBudget::new(8 << 20);
        let (mut writer, reader) = budget.open(Some(3 << 20)).unwrap();
        let reading = tokio::spawn(read_all(reader));
        let chunk: Vec<u8> = (0..=255u8).cycle().take(100_003).collect();
        let mut expected = Vec::new();
        for _ in 0..30 {
            writer.write(Bytes::from(chunk.clone())).await.unwrap();
            expected.extend_from_slice(&chunk);
            tokio::task::yield_now().await;
        }
        writer.finish().await.unwrap();
        assert_eq!(reading.await.unwrap().unwrap(), expected);
    }

    #[tokio::test]
    async fn a_failed_or_abandoned_fetch_fails_the_upload() {
        let budget = SpoolBudget::new(8 << 20);
        let (mut writer, reader) = budget.open(Some(1)).unwrap();
        writer
            .write(Bytes::from_static(b"part of a NAR"))
            .await
            .unwrap();
        writer.fail("upstream reset".into());
        let error = read_all(reader).await.unwrap_err();
        assert!(error.to_string().contains("upstream reset"), "{error}");

        let (mut writer, reader) = budget.open(Some(1)).unwrap();
        writer
            .write(Bytes::from_static(b"part of a NAR"))
            .await
            .unwrap();
        drop(writer);
        assert!(read_all(reader).await.is_err());
    }

    #[tokio::test]
    async fn spools_fit_the_budget_or_are_not_made() {
        let budget = SpoolBudget::new(4 << 20);
        assert!(budget.open(None).is_none(), "unknown size");
        assert!(
            budget.open(Some(5 << 20)).is_none(),
            "larger than the budget"
        );
        let (_writer, first) = budget.open(Some(3 << 20)).unwrap();
        assert!(budget.open(Some(2 << 20)).is_none(), "the rest is taken");
        drop(first);
        assert!(budget.open(Some(4 << 20)).is_some(), "given back");
        assert!(SpoolBudget::new(0).open(Some(1)).is_none(), "off");
    }
}
