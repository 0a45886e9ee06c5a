//! Where a copy's bytes wait for the registry. A registry usually stores a NAR slower than
//! upstream sends it (uploads go in chunks of a few MiB, a round trip each, and ghcr.io
//! takes no more than 4 MiB a request), and a copy that fed the client and the registry in
//! step would give the client the registry's pace. So the copy writes what it fetches to a
//! file, the client gets upstream's pace, and the upload reads the file back at its own,
//! once the NAR has passed its check (the caller holds it back until then; a file the disk
//! stops taking makes it start at once, as the rest then goes in step).
//!
//! The file is made deleted (`tempfile::tempfile`, in `$TMPDIR`): nothing outlives the copy,
//! even when the server is killed. What all spools may hold at once is bounded by
//! `[mirror] spool_max_bytes`; a copy reserves its NAR's FileSize before it starts, and one
//! that does not fit feeds the registry in step with the client, as before.
//!
//! Once its fetch has passed its check, a spool's file is the whole NAR, verified: requests
//! that joined the fetch are served from it ([`SpooledNar`]) instead of waiting for the
//! registry to store it.

use std::os::unix::fs::FileExt as _;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

/// Written to the file at once (fewer blocking-thread trips than one per chunk).
const WRITE_BATCH: usize = 1 << 20;
/// Read back at once, for the upload.
const READ_BATCH: usize = 1 << 20;
/// Read at once for a request served from a spool: one of many a server may stream.
const SERVE_BATCH: usize = 256 << 10;
/// Read at once for a request reading a spool as it grows: it may be one of 64 joined to a
/// fetch (each holds a batch or two while its client is slow).
const GROWING_BATCH: usize = 64 << 10;
/// The budget counts whole MiB: a semaphore takes at most `u32::MAX` permits at a time.
const UNIT: u64 = 1 << 20;
/// Spools at once: each holds an open file and an upload that waits for the registry.
const MAX_FILES: usize = 256;
/// Chunks ahead of the upload once a spool's file takes no more.
const OVERFLOW_CHUNKS: usize = 16;

/// What all spools may hold at once, shared by every mirror of a server.
#[derive(Debug, Clone)]
pub struct SpoolBudget {
    /// In [`UNIT`]s; `None` when the budget is under one.
    bytes: Option<Arc<Semaphore>>,
    files: Arc<Semaphore>,
}

impl SpoolBudget {
    /// `max_bytes` in all, counted in whole MiB (under 1 MiB: no spool at all).
    pub fn new(max_bytes: u64) -> Self {
        let units = usize::try_from(max_bytes / UNIT)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        Self {
            bytes: (units > 0).then(|| Arc::new(Semaphore::new(units))),
            files: Arc::new(Semaphore::new(MAX_FILES)),
        }
    }

    /// A spool for a file of `size` bytes, when the budget has room for it now (a copy
    /// never waits for room). `None` when the size is unknown, too large, or the file could
    /// not be made.
    pub(super) fn open(&self, size: Option<u64>) -> Option<(SpoolWriter, SpoolReader)> {
        let units = u32::try_from(size?.div_ceil(UNIT).max(1)).ok()?;
        let bytes = self.bytes.clone()?.try_acquire_many_owned(units).ok()?;
        let file = self.files.clone().try_acquire_owned().ok()?;
        match tempfile::tempfile() {
            Ok(spool) => Some(pair(spool, [bytes, file])),
            Err(error) => {
                tracing::warn!(%error, "no spool file in the temporary directory; the copy goes at the registry's pace");
                None
            }
        }
    }
}

/// A spool's share of the budget (its bytes and its file), held until the upload and
/// every request served from the file are done with it.
type Reservations = Arc<[OwnedSemaphorePermit; 2]>;

/// A writer and a reader of `file`, holding `reservations` until both (and every
/// [`SpooledNar`] the writer made) are dropped.
fn pair(
    file: std::fs::File,
    reservations: [OwnedSemaphorePermit; 2],
) -> (SpoolWriter, SpoolReader) {
    let file = Arc::new(file);
    let reservations = Arc::new(reservations);
    let (progress, watched) = watch::channel(Progress {
        in_file: 0,
        overflowed: false,
        state: State::Writing,
    });
    let (overflow, overflow_chunks) = mpsc::channel(OVERFLOW_CHUNKS);
    let writer = SpoolWriter {
        file: file.clone(),
        batch: Vec::new(),
        batched: 0,
        progress,
        overflow,
        reservations: reservations.clone(),
    };
    let reader = SpoolReader {
        file,
        read: 0,
        progress: watched,
        overflow: overflow_chunks,
        _reservations: reservations,
    };
    (writer, reader)
}

/// How far the writer has got.
#[derive(Debug, Clone)]
struct Progress {
    /// Bytes in the file, ready to read.
    in_file: u64,
    /// The file took no more (a full disk): what follows it comes through the channel.
    overflowed: bool,
    state: State,
}

#[derive(Debug, Clone)]
enum State {
    /// More is coming.
    Writing,
    /// Everything was handed over.
    Ended,
    /// The fetch failed: the upload must fail too.
    Failed(String),
}

/// The copy's side: appends what it fetches.
#[derive(Debug)]
pub(super) struct SpoolWriter {
    file: Arc<std::fs::File>,
    /// Chunks not written yet, and their bytes.
    batch: Vec<Bytes>,
    batched: usize,
    progress: watch::Sender<Progress>,
    /// Where chunks go once the file takes no more: the upload's pace then.
    overflow: mpsc::Sender<Bytes>,
    reservations: Reservations,
}

impl SpoolWriter {
    /// Appends `chunk` (written out a batch at a time). Once the file takes no more (a full
    /// disk), the rest is handed to the upload directly, at its pace: stored all the same.
    /// An error means the upload stopped.
    pub(super) async fn write(&mut self, chunk: Bytes) -> Result<(), String> {
        if self.progress.borrow().overflowed {
            return self.hand_over(chunk).await;
        }
        self.batched += chunk.len();
        self.batch.push(chunk);
        if self.batched >= WRITE_BATCH {
            self.flush().await?;
        }
        Ok(())
    }

    /// The file as it grows, for requests that join the fetch before it is whole.
    pub(super) fn growing(&self) -> GrowingSpool {
        GrowingSpool {
            file: self.file.clone(),
            progress: self.progress.subscribe(),
            _reservations: self.reservations.clone(),
        }
    }

    /// Whether the upload stopped reading (it failed): nothing more needs writing.
    pub(super) fn upload_gone(&self) -> bool {
        self.progress.is_closed()
    }

    /// Everything is handed over: the upload reads it to its end. The file, when it holds
    /// everything (it never overflowed), to serve others from once the NAR has passed its
    /// check.
    pub(super) async fn finish(mut self) -> Result<Option<SpooledNar>, String> {
        self.flush().await?;
        self.progress
            .send_modify(|progress| progress.state = State::Ended);
        let progress = self.progress.borrow().clone();
        Ok((!progress.overflowed).then(|| SpooledNar {
            file: self.file.clone(),
            length: progress.in_file,
            _reservations: self.reservations.clone(),
        }))
    }

    /// The fetch failed: the upload fails with `reason`.
    pub(super) fn fail(self, reason: String) {
        self.progress
            .send_modify(|progress| progress.state = State::Failed(reason));
    }

    /// Writes the batch to the file, or hands it to the upload when the file fails.
    async fn flush(&mut self) -> Result<(), String> {
        if self.batch.is_empty() {
            return Ok(());
        }
        // Never once overflowed: `write` hands chunks over directly from then on.
        let batch = std::mem::take(&mut self.batch);
        let length = std::mem::take(&mut self.batched) as u64;
        let file = self.file.clone();
        let mut offset = self.progress.borrow().in_file;
        let chunks = batch.clone();
        let written = tokio::task::spawn_blocking(move || {
            chunks.iter().try_for_each(|chunk| {
                file.write_all_at(chunk, offset)?;
                offset += chunk.len() as u64;
                Ok::<_, std::io::Error>(())
            })
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|written| written);
        match written {
            Ok(()) => {
                self.progress
                    .send_modify(|progress| progress.in_file += length);
            }
            Err(error) => {
                // What the file holds stays readable; the rest goes to the upload directly.
                tracing::warn!(%error, "the spool file takes no more; the rest of this copy goes at the registry's pace");
                self.progress
                    .send_modify(|progress| progress.overflowed = true);
                for chunk in batch {
                    self.hand_over(chunk).await?;
                }
            }
        }
        Ok(())
    }

    async fn hand_over(&self, chunk: Bytes) -> Result<(), String> {
        self.overflow
            .send(chunk)
            .await
            .map_err(|_| "the upload stopped".to_owned())
    }
}

/// A spool's whole file, for the requests that joined its fetch: read from the start by
/// each, while the upload reads it too. Holds the spool's share of the budget.
#[derive(Debug, Clone)]
pub(super) struct SpooledNar {
    file: Arc<std::fs::File>,
    length: u64,
    _reservations: Reservations,
}

impl SpooledNar {
    /// Its bytes: the whole file, as checked.
    pub(super) fn len(&self) -> u64 {
        self.length
    }

    /// The file's bytes, from the start.
    pub(super) fn into_stream(
        self,
    ) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
        futures::stream::unfold((self, 0u64), |(nar, read)| async move {
            if read >= nar.length {
                return None;
            }
            match read_at(&nar.file, read, nar.length - read, SERVE_BATCH).await {
                Ok(bytes) => {
                    let read = read + bytes.len() as u64;
                    Some((Ok(bytes), (nar, read)))
                }
                // Ends the stream: `read` past the end.
                Err(error) => Some((Err(error), (nar, u64::MAX))),
            }
        })
    }
}

/// A spool's file as it grows, for the requests that join its fetch before the NAR is whole
/// (found in review: 64 requests for one NAR being fetched became 64 upstream downloads
/// once they had waited 30 s): each reads it from the start as far as it is written, while
/// the upload does too, and none fetches it again. Holds the spool's share of the budget.
#[derive(Debug, Clone)]
pub(super) struct GrowingSpool {
    file: Arc<std::fs::File>,
    progress: watch::Receiver<Progress>,
    _reservations: Reservations,
}

impl GrowingSpool {
    /// The file's bytes from the start, as they are written; an error when the fetch
    /// failed, or when the file took no more (a full disk: the rest went to the upload
    /// alone).
    pub(super) fn into_stream(
        self,
    ) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
        futures::stream::unfold(Some((self, 0u64)), |state| async move {
            let (mut spool, read) = state?;
            let next = next_in_file(&spool.file, &mut spool.progress, read, GROWING_BATCH).await;
            match next {
                Ok(InFile::Bytes(bytes)) => {
                    let read = read + bytes.len() as u64;
                    Some((Ok(bytes), Some((spool, read))))
                }
                Ok(InFile::Ended) => None,
                Ok(InFile::Overflowed) => {
                    let error = std::io::Error::other("the spool file took no more of the NAR");
                    Some((Err(error), None))
                }
                Err(error) => Some((Err(error), None)),
            }
        })
    }
}

/// What a reader of a spool's file finds next.
enum InFile {
    /// Bytes written since it read last.
    Bytes(Bytes),
    /// The file took no more: the rest went to the upload alone.
    Overflowed,
    /// Everything was written, and read.
    Ended,
}

/// Up to `batch` bytes of `file` from `read`, waiting (on the writer's `progress`) until
/// there are some, the file takes no more, or it ends; an error when the fetch failed or
/// its writer stopped before the file was whole. The upload's reader and the requests
/// joined to a fetch follow a spool this one way.
async fn next_in_file(
    file: &Arc<std::fs::File>,
    progress: &mut watch::Receiver<Progress>,
    read: u64,
    batch: usize,
) -> std::io::Result<InFile> {
    loop {
        let now = progress.borrow_and_update().clone();
        if let State::Failed(reason) = now.state {
            return Err(std::io::Error::other(reason));
        }
        if now.in_file > read {
            return read_at(file, read, now.in_file - read, batch)
                .await
                .map(InFile::Bytes);
        }
        if now.overflowed {
            return Ok(InFile::Overflowed);
        }
        if matches!(now.state, State::Ended) {
            return Ok(InFile::Ended);
        }
        if progress.changed().await.is_err() {
            return Err(stopped());
        }
    }
}

/// Up to `batch` of the `left` bytes of `file` from `offset`.
async fn read_at(
    file: &Arc<std::fs::File>,
    offset: u64,
    left: u64,
    batch: usize,
) -> std::io::Result<Bytes> {
    let length = usize::try_from(left).unwrap_or(batch).min(batch);
    let file = file.clone();
    let bytes = tokio::task::spawn_blocking(move || {
        let mut buffer = vec![0; length];
        file.read_exact_at(&mut buffer, offset).map(|()| buffer)
    })
    .await
    .map_err(std::io::Error::other)??;
    Ok(Bytes::from(bytes))
}

/// The upload's side: reads the file as it grows, to its end, then what overflowed it.
/// Holds the copy's share of the budget until it is dropped.
#[derive(Debug)]
pub(super) struct SpoolReader {
    file: Arc<std::fs::File>,
    read: u64,
    progress: watch::Receiver<Progress>,
    overflow: mpsc::Receiver<Bytes>,
    _reservations: Reservations,
}

impl SpoolReader {
    /// Resolves once the file takes no more (a full disk): the writer then waits for the
    /// upload to take each chunk, so an upload held back must start.
    pub(super) fn overflowed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut progress = self.progress.clone();
        async move {
            if progress
                .wait_for(|progress| progress.overflowed)
                .await
                .is_err()
            {
                // The writer is gone without overflowing: never.
                std::future::pending::<()>().await;
            }
        }
    }

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
        match next_in_file(&self.file, &mut self.progress, self.read, READ_BATCH).await? {
            InFile::Bytes(bytes) => {
                self.read += bytes.len() as u64;
                Ok(Some(bytes))
            }
            InFile::Ended => Ok(None),
            InFile::Overflowed => {
                if let Some(chunk) = self.overflow.recv().await {
                    return Ok(Some(chunk));
                }
                let state = self.progress.borrow().state.clone();
                match state {
                    State::Ended => Ok(None),
                    State::Failed(reason) => Err(std::io::Error::other(reason)),
                    State::Writing => Err(stopped()),
                }
            }
        }
    }
}

fn stopped() -> std::io::Error {
    std::io::Error::other("the copy stopped before the NAR was whole")
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

    /// Writes `times` chunks of `length` patterned bytes, then finishes: what was written.
    async fn write_all(mut writer: SpoolWriter, length: usize, times: usize) -> Vec<u8> {
        let chunk: Vec<u8> = (0..=255u8).cycle().take(length).collect();
        let mut written = Vec::new();
        for _ in 0..times {
            writer.write(Bytes::from(chunk.clone())).await.unwrap();
            written.extend_from_slice(&chunk);
            tokio::task::yield_now().await;
        }
        writer.finish().await.unwrap();
        written
    }

    #[tokio::test]
    async fn the_upload_reads_what_was_written_while_it_is_written() {
        let budget = SpoolBudget::new(8 << 20);
        let (writer, reader) = budget.open(Some(3 << 20)).unwrap();
        let reading = tokio::spawn(read_all(reader));
        let written = write_all(writer, 100_003, 30).await;
        assert_eq!(reading.await.unwrap().unwrap(), written);
    }

    #[tokio::test]
    async fn a_whole_spool_serves_others_from_the_start_and_holds_its_budget_meanwhile() {
        let budget = SpoolBudget::new(4 << 20);
        let (mut writer, reader) = budget.open(Some(3 << 20)).unwrap();
        let chunk: Vec<u8> = (0..=255u8).cycle().take(1_500_007).collect();
        for _ in 0..2 {
            writer.write(Bytes::from(chunk.clone())).await.unwrap();
        }
        let spooled = writer.finish().await.unwrap().expect("a whole spool");
        let from_spool = |spooled: SpooledNar| async move {
            let mut stream = std::pin::pin!(spooled.into_stream());
            let mut all = Vec::new();
            while let Some(bytes) = stream.next().await {
                all.extend_from_slice(&bytes.unwrap());
            }
            all
        };
        let whole = [chunk.as_slice(), chunk.as_slice()].concat();
        assert_eq!(from_spool(spooled.clone()).await, whole);
        assert_eq!(read_all(reader).await.unwrap(), whole);
        assert!(budget.open(Some(2 << 20)).is_none(), "still served from");
        assert_eq!(from_spool(spooled).await, whole);
        assert!(budget.open(Some(4 << 20)).is_some(), "given back");
    }

    #[tokio::test]
    async fn requests_joining_a_fetch_read_its_file_as_it_grows() {
        let budget = SpoolBudget::new(8 << 20);
        let (writer, reader) = budget.open(Some(3 << 20)).unwrap();
        let growing = writer.growing();
        let joined = tokio::spawn(async move {
            let mut stream = std::pin::pin!(growing.into_stream());
            let mut all = Vec::new();
            while let Some(bytes) = stream.next().await {
                all.extend_from_slice(&bytes?);
            }
            std::io::Result::Ok(all)
        });
        let upload = tokio::spawn(read_all(reader));
        let written = write_all(writer, 100_003, 30).await;
        assert_eq!(joined.await.unwrap().unwrap(), written);
        assert_eq!(upload.await.unwrap().unwrap(), written);

        let (mut writer, _reader) = budget.open(Some(1)).unwrap();
        let growing = writer.growing();
        writer.write(Bytes::from_static(b"part")).await.unwrap();
        writer.fail("upstream reset".into());
        let mut stream = std::pin::pin!(growing.into_stream());
        let mut failed = None;
        while let Some(bytes) = stream.next().await {
            if let Err(error) = bytes {
                failed = Some(error);
            }
        }
        assert!(failed.unwrap().to_string().contains("upstream reset"));
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
        let (writer, reader) = budget.open(Some(3 << 20)).unwrap();
        assert!(budget.open(Some(2 << 20)).is_none(), "the rest is taken");
        drop(reader);
        assert!(budget.open(Some(2 << 20)).is_none(), "the writer holds it");
        drop(writer);
        assert!(budget.open(Some(4 << 20)).is_some(), "given back");
        assert!(SpoolBudget::new(0).open(Some(1)).is_none(), "off");
    }

    #[tokio::test]
    async fn a_file_that_takes_no_more_hands_the_rest_to_the_upload() {
        let budget = Arc::new(Semaphore::new(2));
        let reservations = [
            budget.clone().try_acquire_owned().unwrap(),
            budget.try_acquire_owned().unwrap(),
        ];
        // Opened to read only: every write fails, as on a full disk.
        let refusing = std::fs::File::open("/dev/null").unwrap();
        let (writer, reader) = pair(refusing, reservations);
        let reading = tokio::spawn(read_all(reader));
        let written = write_all(writer, 300_007, 10).await;
        assert_eq!(reading.await.unwrap().unwrap(), written);
    }
}
