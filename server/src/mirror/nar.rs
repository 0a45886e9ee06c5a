//! One NAR copied from upstream: its bytes go to the client and into a registry upload as
//! they arrive (no full download before the first byte; the upload reads them from a spool
//! at its own pace, `spool.rs`), in a task of its own, so a client
//! that leaves does not stop the store others will read. The blob is tagged only when it is
//! the file the narinfo describes (FileHash, FileSize), and the narinfo is stored after it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse as _, Response};
use bytes::Bytes;
use futures::StreamExt as _;
use oranc_core::registry::ByteStream;
use oranc_core::{BlobInfo, CacheKey, NarInfo, RegistryCache};
use tokio::sync::{mpsc, oneshot, watch};

use super::spool::{SpoolBudget, SpoolWriter};
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

/// NARs being fetched, by key: later requests wait for the first.
#[derive(Debug, Default)]
pub(super) struct InFlight(Arc<Mutex<HashMap<String, watch::Receiver<bool>>>>);

pub(super) enum Role {
    /// Fetch it; dropping the guard (when the copy ends) releases the others.
    Leader(Lead),
    /// Another request is fetching it: wait on this.
    Follower(watch::Receiver<bool>),
}

/// The fetch of one NAR; when dropped, the requests waiting on it go on.
pub(super) struct Lead {
    key: String,
    table: Arc<Mutex<HashMap<String, watch::Receiver<bool>>>>,
    done: watch::Sender<bool>,
}

impl Drop for Lead {
    fn drop(&mut self) {
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.key);
        self.done.send_replace(true);
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
        let (done, waiting) = watch::channel(false);
        table.insert(key.to_owned(), waiting);
        Role::Leader(Lead {
            key: key.to_owned(),
            table: self.0.clone(),
            done,
        })
    }
}

/// Waits until the fetch `done` watches ends (true), or [`FOLLOWER_WAIT`] passes (false).
pub(super) async fn wait(mut done: watch::Receiver<bool>) -> bool {
    let finished = done.wait_for(|finished| *finished);
    matches!(
        tokio::time::timeout(FOLLOWER_WAIT, finished).await,
        Ok(Ok(_))
    )
}

/// A NAR streamed from upstream to one client without being stored (past the mirror's
/// copies, or for a request that waited long enough for another's fetch), checked on the
/// way like a stored one: a NAR that fails its check ends with an error, never as whole.
/// `slot` (the mirror's bound on these) is held until the stream ends or is dropped.
pub(super) fn pass_through(
    body: ByteStream,
    narinfo: &NarInfo,
    key: &CacheKey,
    slot: tokio::sync::OwnedSemaphorePermit,
) -> Result<Response, String> {
    let (body, verdict) = oranc_backends::nar_check::checked(body, narinfo)?;
    let verdict = async move {
        let outcome = verdict.wait().await;
        drop(slot);
        outcome
    };
    let mut response = head_answer(narinfo, key);
    *response.body_mut() = Body::from_stream(last_chunk_after(body, verdict));
    Ok(response)
}

/// `chunks` one chunk behind: the last one is held until `verdict` says the NAR passed its
/// check, and replaced by the failure when it did not. A client (or an HTTP cache in front)
/// that got all of Content-Length would take a NAR that failed as whole, whatever error
/// came after it; one that is a chunk short knows it is not.
fn last_chunk_after<S, V>(
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

/// A NAR's answer without its body (all of it, to HEAD): its type, and its size as the
/// narinfo says where a client can believe it.
pub(super) fn head_answer(narinfo: &NarInfo, key: &CacheKey) -> Response {
    let mut response = (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(key.content_type()),
        )],
    )
        .into_response();
    if let Some(size) = content_length(narinfo) {
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    }
    response
}

/// The `Content-Length` a NAR file's answer may announce: its FileSize, which is not
/// signed, only where a client can take it at its word. A NAR file is never empty, and
/// clients refuse lengths past `i64::MAX`: announced, 0 would make a failed NAR look whole
/// (no chunk left to hold back), and a refused length lets a client take a short body.
/// Without it the body is chunked, and one that fails its check ends without its last.
fn content_length(narinfo: &NarInfo) -> Option<u64> {
    narinfo
        .file_size
        .filter(|size| (1..=i64::MAX.unsigned_abs()).contains(size))
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
    pub slot: Option<tokio::sync::OwnedSemaphorePermit>,
    pub cache: RegistryCache,
    pub narinfo: NarInfo,
    pub nar_key: CacheKey,
    pub cache_name: String,
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

    /// Everything is handed on: the upload ends with the file.
    async fn finish(self) {
        if let Self::Spool(writer) = self {
            // An error means the upload stopped, and reports why itself.
            let _ = writer.finish().await;
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
            self.run(body, verdict, to_client, client_verdict).await;
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
    ) {
        let path = self.narinfo.store_path.clone();
        let (to_registry, registry_stream) = self.registry_feed();
        // A spooled upload may take much longer than its fetch (a slow registry): held to
        // the end, the slots would run out while clients fetch at upstream's pace, and the
        // NARs past them would go unstored.
        let mut slot = self.slot.take();
        let spooled = matches!(to_registry, RegistryFeed::Spool(_));
        let upload = async {
            let slot = self.cache.open_upload().await?;
            let mut reader = tokio_util::io::StreamReader::new(registry_stream);
            self.cache.upload_blob_via(slot, &mut reader).await
        };
        // The client's last chunk waits for the check, not for the store.
        let fetch = async {
            let (client, fetched) = self.pump(body, to_client, to_registry).await;
            let checked = verdict.wait().await;
            let told = match (&checked, &client) {
                (Ok(()), None) => Err("the client did not keep up".to_owned()),
                _ => checked.clone(),
            };
            let _ = client_verdict.send(told);
            if spooled {
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
            (Err(reason), _) => Err(format!("{reason}; not stored")),
            (Ok(()), Ok(blob)) if matches(&self.narinfo, &blob) => self.store(&blob).await,
            (Ok(()), Ok(blob)) => Err(format!(
                "the NAR from upstream is not the file its narinfo describes (sha256 {}, {} bytes); not stored",
                blob.digest, blob.size
            )),
            (Ok(()), Err(error)) => Err(format!("storing the NAR: {error}")),
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

    /// Where the registry's bytes wait for its upload: a spool when the budget has room for
    /// this NAR (the client then gets upstream's pace), else a channel (the registry's pace).
    fn registry_feed(
        &self,
    ) -> (
        RegistryFeed,
        futures::stream::BoxStream<'static, std::io::Result<Bytes>>,
    ) {
        if let Some((writer, reader)) = self.spool.open(self.narinfo.file_size) {
            return (RegistryFeed::Spool(writer), reader.into_stream().boxed());
        }
        let (sender, receiver) = mpsc::channel(CHANNEL_CHUNKS);
        (
            RegistryFeed::InStep(sender),
            receiver_stream(receiver).boxed(),
        )
    }

    /// Moves upstream's chunks to the client (while it keeps up) and to the registry (while
    /// its upload takes them). Returns the client's sender if it is still there (held until
    /// its verdict is sent), and the bytes fetched.
    async fn pump(
        &self,
        mut body: ByteStream,
        to_client: mpsc::Sender<std::io::Result<Bytes>>,
        to_registry: RegistryFeed,
    ) -> (Option<mpsc::Sender<std::io::Result<Bytes>>>, u64) {
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
                    return (None, fetched);
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
        if let Some(feed) = registry {
            feed.finish().await;
        }
        (client, fetched)
    }

    /// Tags the NAR, then stores the narinfo: the push order.
    async fn store(&self, blob: &BlobInfo) -> Result<(), String> {
        self.cache
            .tag_blob(&self.nar_key, self.nar_key.content_type(), blob)
            .await
            .map_err(|e| format!("storing {}: {e}", self.nar_key))?;
        store_narinfo(&self.cache, &self.narinfo)
            .await
            .map_err(|e| format!("storing the narinfo of {}: {e}", self.narinfo.store_path))
    }
}
