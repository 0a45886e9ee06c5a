//! One NAR copied from upstream: its bytes go to the client as they arrive (no full
//! download before the first byte) and into a spool that the registry upload reads once
//! the NAR has passed its check (`spool.rs`; where there is no room for it, into the upload
//! as they arrive), in a task of its own, so a client that leaves does not stop the store
//! others will read. The blob is tagged only when it is the file the narinfo describes
//! (FileHash, FileSize), and the narinfo is stored after it.
//! Requests for a NAR being fetched share its fetch (one upstream request): they are served
//! from the copy's spool as it grows, their last chunk held until the NAR has passed its
//! check; only a fetch that goes at the registry's pace (no spool) makes them wait, and
//! after 30 s stream it themselves within their address's share.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse as _, Response};
use bytes::Bytes;
use futures::StreamExt as _;
use oranc_backends::nar_check::{last_chunk_after, SharedVerdict};
use oranc_core::registry::ByteStream;
use oranc_core::{BlobInfo, CacheKey, NarInfo, RegistryCache};
use tokio::sync::{mpsc, oneshot, watch};

use super::spool::{GrowingSpool, SpoolBudget, SpoolWriter, SpooledNar};
use crate::metrics::Metrics;

/// Chunks buffered towards the client and towards the registry (each a few KiB to 64 KiB).
const CHANNEL_CHUNKS: usize = 16;
/// How long a request for a NAR being fetched waits for it before fetching it itself.
const FOLLOWER_WAIT: Duration = Duration::from_secs(30);

/// The items `receiver` gets, as a stream (what tokio-stream's wrapper does, in five lines).
fn receiver_stream<T: Send + 'static>(
    receiver: mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    })
}

/// Where the fetch of one NAR is, as the requests waiting on it see it.
#[derive(Debug, Clone)]
pub(super) enum Fetch {
    Running,
    /// Being written to its spool: serve it from there as it grows, its last chunk once
    /// the check passed.
    Growing(GrowingSpool, SharedVerdict),
    /// Fetched and checked, whole in its spool (the store goes on): serve it from there.
    Spooled(SpooledNar),
    /// Over: stored, or not (failed, or its client left first).
    Ended,
}

type FetchTable = Arc<Mutex<HashMap<String, watch::Receiver<Fetch>>>>;

/// NARs being fetched, by key: later requests wait for the first.
#[derive(Debug, Default)]
pub(super) struct InFlight(FetchTable);

pub(super) enum Role {
    /// Fetch it; dropping the guard (when the copy ends) releases the others.
    Leader(Lead),
    /// Another request is fetching it: wait on this.
    Follower(watch::Receiver<Fetch>),
}

/// The fetch of one NAR; when dropped, the requests waiting on it go on.
pub(super) struct Lead {
    key: String,
    table: FetchTable,
    done: watch::Sender<Fetch>,
}

impl Lead {
    /// The NAR is being written to a spool: the requests waiting, and those that join, read
    /// it from there as it grows.
    fn growing(&self, spool: GrowingSpool, verdict: SharedVerdict) {
        self.done.send_replace(Fetch::Growing(spool, verdict));
    }

    /// The NAR passed its check and is whole in `spool`: the requests waiting, and those
    /// that join until the store ends, are served from it.
    fn spooled(&self, spool: SpooledNar) {
        self.done.send_replace(Fetch::Spooled(spool));
    }
}

impl Drop for Lead {
    fn drop(&mut self) {
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.key);
        self.done.send_replace(Fetch::Ended);
    }
}

impl InFlight {
    pub(super) fn join_or_lead(&self, key: &str) -> Role {
        let mut table = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(done) = table.get(key) {
            return Role::Follower(done.clone());
        }
        let (done, waiting) = watch::channel(Fetch::Running);
        table.insert(key.to_owned(), waiting);
        Role::Leader(Lead {
            key: key.to_owned(),
            table: self.0.clone(),
            done,
        })
    }
}

/// What a request waiting on a fetch learns.
pub(super) enum Waited {
    /// The NAR is whole and checked in this spool.
    Spooled(SpooledNar),
    /// The NAR is being written to this spool, and checked on the way.
    Growing(GrowingSpool, SharedVerdict),
    /// The fetch is over (stored or not).
    Ended,
    /// [`FOLLOWER_WAIT`] passed first.
    TooLong,
}

/// Waits until the fetch `done` watches has the NAR spooled or ends, or [`FOLLOWER_WAIT`]
/// passes.
pub(super) async fn wait(mut done: watch::Receiver<Fetch>) -> Waited {
    let over = done.wait_for(|fetch| !matches!(fetch, Fetch::Running));
    match tokio::time::timeout(FOLLOWER_WAIT, over).await {
        Ok(Ok(fetch)) => match &*fetch {
            Fetch::Spooled(spool) => Waited::Spooled(spool.clone()),
            Fetch::Growing(spool, verdict) => Waited::Growing(spool.clone(), verdict.clone()),
            Fetch::Running | Fetch::Ended => Waited::Ended,
        },
        // The lead went without a word: the same as ended.
        Ok(Err(_)) => Waited::Ended,
        Err(_) => Waited::TooLong,
    }
}

/// The NAR `spool` holds (whole, and checked against its narinfo) for a request that
/// waited on its fetch, announced at the length checked: the narinfo the request looked up
/// may be a later one than the fetch's (FileSize is not signed), and a Content-Length
/// shorter than the file made a cut body look whole. A client that stops reading for
/// `client_stall` lets go of the spool (and its share of the budget), as a copy lets go of
/// a stalled client; its stream then ends without its last chunk, never looking whole.
pub(super) fn from_spool(key: &CacheKey, spool: SpooledNar, client_stall: Duration) -> Response {
    let length = spool.len();
    let mut response = answer_of_length(key, Some(length));
    *response.body_mut() = pumped_to_client(
        spool.into_stream(),
        client_stall,
        async { Ok(()) },
        "the NAR's spool was not read to its end",
    );
    response
}

/// The NAR `spool` is being fetched into, for a request that joined its fetch: read as it
/// grows, its length not known yet, its last chunk held until the NAR passed its check
/// (`verdict`), and let go by a client that stops reading for `client_stall`.
pub(super) fn from_growing_spool(
    key: &CacheKey,
    spool: GrowingSpool,
    verdict: SharedVerdict,
    client_stall: Duration,
) -> Response {
    let mut response = answer_of_length(key, None);
    *response.body_mut() = pumped_to_client(
        spool.into_stream(),
        client_stall,
        verdict.wait(),
        "the NAR's spool was not read to its end",
    );
    response
}

/// A NAR streamed from upstream to one client without being stored (past the mirror's
/// copies, or for a request that waited long enough for another's fetch), checked on the
/// way like a stored one: a NAR that fails its check ends with an error, never as whole.
/// `slot` (the mirror's bound on these) is held until the stream ends or is dropped.
pub(super) fn pass_through(
    body: ByteStream,
    narinfo: &NarInfo,
    key: &CacheKey,
    slot: super::shares::Place,
    client_stall: Duration,
) -> Result<Response, String> {
    let (body, verdict) = oranc_backends::nar_check::checked(body, narinfo)?;
    // A client that stops reading lets go of the upstream stream and the place (one that
    // never read held them for as long as it kept its connection open).
    let verdict = async move {
        let _slot = slot;
        verdict.wait().await
    };
    let mut response = head_answer(narinfo, key);
    *response.body_mut() = pumped_to_client(
        body,
        client_stall,
        verdict,
        "the NAR's stream was not read to its end",
    );
    Ok(response)
}

/// `chunks` as a body pumped to the client by a task of its own: a client that stops
/// reading for `client_stall` lets go of them (and of whatever `finish` holds), and its
/// body then ends without its last chunk, never looking whole. The last chunk waits for
/// `finish`, run once `chunks` ended, and is replaced by its failure (`unread` when the
/// pump stopped first).
fn pumped_to_client<S, F>(
    chunks: S,
    client_stall: Duration,
    finish: F,
    unread: &'static str,
) -> Body
where
    S: futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    F: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let (to_client, client_stream) = mpsc::channel(1);
    let (whole, whole_sent) = oneshot::channel();
    tokio::spawn(async move {
        let mut chunks = std::pin::pin!(chunks);
        while let Some(chunk) = chunks.next().await {
            let failed = chunk.is_err();
            let sent = tokio::time::timeout(client_stall, to_client.send(chunk)).await;
            if failed || !matches!(sent, Ok(Ok(()))) {
                return;
            }
        }
        let _ = whole.send(finish.await);
    });
    let whole_sent = async move { whole_sent.await.unwrap_or_else(|_| Err(unread.into())) };
    Body::from_stream(last_chunk_after(receiver_stream(client_stream), whole_sent))
}

/// A NAR's answer without its body (all of it, to HEAD): its type, and its size as the
/// narinfo says where a client can believe it.
pub(super) fn head_answer(narinfo: &NarInfo, key: &CacheKey) -> Response {
    answer_of_length(key, narinfo.file_size)
}

/// A NAR's answer without its body, announcing `length` (a narinfo's FileSize, which is not
/// signed, or a checked spool's size) as its Content-Length only where a client can take it
/// at its word. A NAR file is never empty, and clients refuse lengths past `i64::MAX`:
/// announced, 0 would make a failed NAR look whole (no chunk left to hold back), and a
/// refused length lets a client take a short body. Without it the body is chunked, and one
/// that fails its check ends without its last.
fn answer_of_length(key: &CacheKey, length: Option<u64>) -> Response {
    let mut response = (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(key.content_type()),
        )],
    )
        .into_response();
    if let Some(size) = length.filter(|size| (1..=i64::MAX.unsigned_abs()).contains(size)) {
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    }
    response
}

/// Whether `blob` is the file `narinfo` describes: its FileHash and FileSize, where given
/// (the NAR inside is checked separately, against the signed NarHash).
pub(super) fn matches(narinfo: &NarInfo, blob: &BlobInfo) -> bool {
    narinfo.file_hash.is_none_or(|hash| hash == blob.digest)
        && narinfo.file_size.is_none_or(|size| size == blob.size)
}

pub(super) async fn store_narinfo(
    cache: &RegistryCache,
    narinfo: &NarInfo,
) -> oranc_core::Result<()> {
    let key = CacheKey::narinfo(&narinfo.store_path);
    cache
        .put_bytes(&key, key.content_type(), Bytes::from(narinfo.to_string()))
        .await
        .map(|_| ())
}

/// What a mirror's copies know of its repository's shared config blob (the one every
/// manifest names): looked for by the first copy, not by each. Copies that each uploaded it
/// raced in the registry: distribution rewrites a blob's link at each upload, and a manifest
/// naming the blob put meanwhile failed with DIGEST_INVALID. Forgotten when a store fails,
/// in case the registry lost it (emptied, garbage-collected).
#[derive(Debug, Clone, Default)]
pub(super) struct KnownConfig(Arc<Mutex<Arc<tokio::sync::OnceCell<BlobInfo>>>>);

impl KnownConfig {
    /// `cache`, sharing what the mirror's copies know.
    pub(super) fn shared_by(&self, cache: &RegistryCache) -> RegistryCache {
        let known = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        cache.clone().sharing_config(known)
    }

    fn forget(&self) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::default();
    }
}

/// What one copy needs.
pub(super) struct Copy {
    /// Its place among the mirror's bounded copies: given back when its fetch ends if the
    /// registry's bytes are spooled (the upload then holds the spool's share of its
    /// budget), else when the copy ends.
    pub slot: Option<super::shares::Place>,
    pub cache: RegistryCache,
    pub narinfo: NarInfo,
    pub nar_key: CacheKey,
    pub cache_name: String,
    /// Which of the mirror's upstreams the bytes come from (asked last next time when
    /// they fail their check).
    pub upstream: usize,
    pub metrics: Metrics,
    pub client_stall: Duration,
    /// The mirror's memory of its NARs: this one is marked stored once it is.
    pub nars: super::NarMemory,
    /// Where the registry's bytes may wait for it.
    pub spool: SpoolBudget,
    /// Forgotten when the store fails (`cache` shares it).
    pub known_config: KnownConfig,
}

/// Where a copy puts the bytes its registry upload reads.
enum RegistryFeed {
    /// A file the upload reads at its own pace (`spool.rs`).
    Spool(SpoolWriter),
    /// A few chunks ahead of the upload: the copy goes at the registry's pace.
    InStep(mpsc::Sender<std::io::Result<Bytes>>),
}

impl RegistryFeed {
    /// Hands `chunk` on; an error when the upload takes no more.
    async fn send(&mut self, chunk: Bytes) -> Result<(), String> {
        match self {
            Self::Spool(writer) if writer.upload_gone() => Err("the upload stopped".into()),
            Self::Spool(writer) => writer.write(chunk).await,
            Self::InStep(sender) => sender
                .send(Ok(chunk))
                .await
                .map_err(|_| "the upload stopped".into()),
        }
    }

    /// The upload fails with `reason`: nothing partial is stored.
    async fn fail(self, reason: String) {
        match self {
            Self::Spool(writer) => writer.fail(reason),
            Self::InStep(sender) => {
                let _ = sender.send(Err(std::io::Error::other(reason))).await;
            }
        }
    }

    /// Everything is handed on: the upload ends with the file. The spool, when it holds
    /// the whole file.
    async fn finish(self) -> Option<SpooledNar> {
        match self {
            // An error means the upload stopped, and reports why itself.
            Self::Spool(writer) => writer.finish().await.ok().flatten(),
            Self::InStep(_) => None,
        }
    }
}

impl Copy {
    /// Starts copying `body` and answers with the client's stream of it. The bytes are
    /// checked on the way (`nar_check`: the NAR inside against the signed NarHash, the file
    /// bounded by FileSize); they are stored only when they pass.
    pub(super) fn start(self, body: ByteStream, lead: Lead) -> Result<Response, String> {
        let (body, verdict) = oranc_backends::nar_check::checked(body, &self.narinfo)?;
        let (to_client, client_stream) = mpsc::channel(CHANNEL_CHUNKS);
        let (client_verdict, client_waits) = oneshot::channel();
        let client_verdict_arrives = async {
            client_waits
                .await
                .unwrap_or_else(|_| Err("the copy stopped".into()))
        };
        let mut response = head_answer(&self.narinfo, &self.nar_key);
        *response.body_mut() = Body::from_stream(last_chunk_after(
            receiver_stream(client_stream),
            client_verdict_arrives,
        ));
        tokio::spawn(async move {
            self.run(body, verdict, to_client, client_verdict, &lead)
                .await;
            drop(lead);
        });
        Ok(response)
    }

    async fn run(
        mut self,
        body: ByteStream,
        verdict: oranc_backends::nar_check::Verdict,
        to_client: mpsc::Sender<std::io::Result<Bytes>>,
        client_verdict: oneshot::Sender<Result<(), String>>,
        lead: &Lead,
    ) {
        let path = self.narinfo.store_path.clone();
        let verdict = verdict.shared();
        let (to_registry, registry_stream, overflowed) = self.registry_feed();
        if let RegistryFeed::Spool(writer) = &to_registry {
            lead.growing(writer.growing(), verdict.clone());
        }
        // A spooled upload may take much longer than its fetch (a slow registry): held to
        // the end, the slots would run out while clients fetch at upstream's pace, and the
        // NARs past them would go unstored.
        let mut slot = self.slot.take();
        let spooling = overflowed.is_some();
        let (passed, passed_heard) = oneshot::channel::<()>();
        let upload = self.upload(
            registry_stream,
            overflowed,
            futures::FutureExt::shared(passed_heard),
        );
        // The client's last chunk waits for the check, not for the store.
        let fetch = async {
            let (client, fetched, spooled) = self.pump(body, to_client, to_registry).await;
            let checked = verdict.wait().await;
            if checked.is_ok() {
                let _ = passed.send(());
            }
            if let (Ok(()), Some(spooled)) = (&checked, spooled) {
                lead.spooled(spooled);
            }
            let told = match (&checked, &client) {
                (Ok(()), None) => Err("the client did not keep up".to_owned()),
                _ => checked.clone(),
            };
            let _ = client_verdict.send(told);
            if spooling {
                drop(slot.take());
            }
            (checked, fetched)
        };
        let (uploaded, (checked, fetched)) = tokio::join!(upload, fetch);
        self.metrics
            .mirror_fetched_bytes
            .with_label_values(&[&self.cache_name])
            .inc_by(fetched);
        let outcome = match (checked, uploaded) {
            (Err(reason), _) => {
                self.nars.upstream_failed(&self.nar_key, self.upstream);
                Err(format!("{reason}; not stored"))
            }
            (Ok(()), Some(Ok(blob))) if matches(&self.narinfo, &blob) => self.store(&blob).await,
            (Ok(()), Some(Ok(blob))) => {
                self.nars.upstream_failed(&self.nar_key, self.upstream);
                Err(format!(
                    "the NAR from upstream is not the file its narinfo describes (sha256 {}, {} bytes); not stored",
                    blob.digest, blob.size
                ))
            }
            (Ok(()), Some(Err(error))) => Err(format!("storing the NAR: {error}")),
            (Ok(()), None) => Err("the upload never started; not stored".to_owned()),
        };
        match outcome {
            Ok(()) => {
                self.nars.remember_stored(&self.nar_key);
                self.metrics
                    .mirror_stored_bytes
                    .with_label_values(&[&self.cache_name])
                    .inc_by(fetched);
                tracing::info!(cache = %self.cache_name, %path, bytes = fetched, "mirrored");
            }
            Err(reason) => {
                self.nars.drop_registry_word(&self.nar_key);
                self.known_config.forget();
                tracing::warn!(cache = %self.cache_name, %path, %reason, "mirroring failed");
            }
        }
    }

    /// The registry upload of `registry_stream`. A spooled NAR reaches the registry only
    /// once it has passed its check (`passed` sent): one that fails it costs the registry
    /// nothing (no upload left behind for its purge), and the client's fetch has the
    /// machine to itself (on a busy host the upload took a third of its pace). In step, the
    /// registry takes the bytes as they come, and so does a spool whose file takes no more
    /// (`overflowed`); their last chunk waits for the check, so a NAR that fails it is never
    /// committed as a blob. `None` when the upload never started.
    async fn upload(
        &self,
        registry_stream: futures::stream::BoxStream<'static, std::io::Result<Bytes>>,
        overflowed: Option<futures::future::BoxFuture<'static, ()>>,
        passed: futures::future::Shared<oneshot::Receiver<()>>,
    ) -> Option<oranc_core::Result<BlobInfo>> {
        if let Some(overflowed) = overflowed {
            tokio::select! {
                heard = passed.clone() => {
                    if heard.is_err() {
                        return None;
                    }
                }
                () = overflowed => {}
            }
        }
        let checked = async {
            passed
                .await
                .map_err(|_| "the NAR failed its check".to_owned())
        };
        let registry_stream = Box::pin(last_chunk_after(registry_stream, checked));
        let uploaded = async {
            let slot = self.cache.open_upload().await?;
            let mut reader = tokio_util::io::StreamReader::new(registry_stream);
            self.cache.upload_blob_via(slot, &mut reader).await
        };
        Some(uploaded.await)
    }

    /// Where the registry's bytes wait for its upload: a spool when the budget has room for
    /// this NAR (the client then gets upstream's pace), else a channel (the registry's pace).
    /// With a spool, also what resolves when its file takes no more.
    fn registry_feed(
        &self,
    ) -> (
        RegistryFeed,
        futures::stream::BoxStream<'static, std::io::Result<Bytes>>,
        Option<futures::future::BoxFuture<'static, ()>>,
    ) {
        if let Some((writer, reader)) = self.spool.open(self.narinfo.file_size) {
            let overflowed = futures::FutureExt::boxed(reader.overflowed());
            return (
                RegistryFeed::Spool(writer),
                reader.into_stream().boxed(),
                Some(overflowed),
            );
        }
        let (sender, receiver) = mpsc::channel(CHANNEL_CHUNKS);
        (
            RegistryFeed::InStep(sender),
            receiver_stream(receiver).boxed(),
            None,
        )
    }

    /// Moves upstream's chunks to the client (while it keeps up) and to the registry (while
    /// its upload takes them). Returns the client's sender if it is still there (held until
    /// its verdict is sent), the bytes fetched, and the spool when it holds all of them.
    async fn pump(
        &self,
        mut body: ByteStream,
        to_client: mpsc::Sender<std::io::Result<Bytes>>,
        to_registry: RegistryFeed,
    ) -> (
        Option<mpsc::Sender<std::io::Result<Bytes>>>,
        u64,
        Option<SpooledNar>,
    ) {
        let mut client = Some(to_client);
        let mut registry = Some(to_registry);
        let mut fetched = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(error) => {
                    let reason = format!("reading the NAR from upstream: {error}");
                    if let Some(registry) = registry.take() {
                        registry.fail(reason.clone()).await;
                    }
                    if let Some(client) = client.take() {
                        let _ = client.send(Err(std::io::Error::other(reason))).await;
                    }
                    return (None, fetched, None);
                }
            };
            fetched += chunk.len() as u64;
            if let Some(sender) = &client {
                let sent = tokio::time::timeout(self.client_stall, sender.send(Ok(chunk.clone())));
                if !matches!(sent.await, Ok(Ok(()))) {
                    // Gone, or not reading: the store goes on without it.
                    client = None;
                }
            }
            if let Some(feed) = &mut registry {
                if let Err(reason) = feed.send(chunk).await {
                    // The upload ended early (its error is reported by `run`): the client
                    // goes on alone.
                    if let Some(feed) = registry.take() {
                        feed.fail(reason).await;
                    }
                }
            }
            if client.is_none() && registry.is_none() {
                break;
            }
        }
        let spooled = match registry {
            Some(feed) => feed.finish().await,
            None => None,
        };
        (client, fetched, spooled)
    }

    /// Tags the NAR, then stores the narinfo: the push order. A NAR tag that holds other
    /// bytes already is never re-tagged, and no narinfo is stored for it: `URL` is not
    /// signed, so an upstream could name another path's stored NAR in a genuine narinfo,
    /// and the copy of that path's bytes would have replaced it for good.
    async fn store(&self, blob: &BlobInfo) -> Result<(), String> {
        let stored = self
            .cache
            .get(&self.nar_key)
            .await
            .map_err(|e| format!("looking for {} before tagging it: {e}", self.nar_key))?;
        match stored {
            Some(stored) if stored.blob.digest != blob.digest => {
                return Err(format!(
                    "{} holds other bytes already (sha256 {}, this copy's {}); it stays as it is, and the narinfo of {} is not stored",
                    self.nar_key, stored.blob.digest, blob.digest, self.narinfo.store_path
                ));
            }
            Some(_) => {}
            None => self
                .cache
                .tag_blob(&self.nar_key, self.nar_key.content_type(), blob)
                .await
                .map_err(|e| format!("storing {}: {e}", self.nar_key))?,
        }
        store_narinfo(&self.cache, &self.narinfo)
            .await
            .map_err(|e| format!("storing the narinfo of {}: {e}", self.narinfo.store_path))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn a_client_that_stops_reading_a_spool_lets_go_of_it_and_never_gets_it_whole() {
        let size = 3 << 20;
        let budget = SpoolBudget::new(4 << 20);
        let (mut writer, upload) = budget.open(Some(size as u64)).unwrap();
        writer.write(Bytes::from(vec![7u8; size])).await.unwrap();
        let spool = writer.finish().await.unwrap().unwrap();
        drop(upload);
        let key: CacheKey = "nar/1bb09xb5vjpsy7wfvhry96kclzn1h9gq5qrj271jdcvidn2av1sr.nar"
            .parse()
            .unwrap();
        let stalled = from_spool(&key, spool, Duration::from_millis(50));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(budget.open(Some(4 << 20)).is_some(), "the spool is let go");
        let mut body = stalled.into_body().into_data_stream();
        let mut received = 0;
        let ended = loop {
            match body.next().await {
                Some(Ok(bytes)) => received += bytes.len(),
                Some(Err(error)) => break Some(error),
                None => break None,
            }
        };
        assert!(
            ended.is_some() && received < size,
            "{received} bytes, {ended:?}"
        );
    }
}
