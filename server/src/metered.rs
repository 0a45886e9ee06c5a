//! A [`Registry`] decorator that times and counts every registry operation for the metrics,
//! by registry name and operation; errors by kind (not_found, denied, unavailable, ...).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use oranc_core::registry::{Backpressure, Reclaimed};
use oranc_core::{
    BlobBody, BlobInfo, ByteRange, Registry, RepositoryName, Result, Sha256Hash, StoredManifest,
    Tag, UploadSlot,
};
use tokio::io::AsyncRead;

use crate::metrics::Metrics;

#[derive(Debug)]
pub struct MeteredRegistry {
    inner: Arc<dyn Registry>,
    metrics: Metrics,
    /// The `registry` label: the name of a registry the config brings in (never a local
    /// directory's path), `unlisted` for one a URL named under `allow_any_registry`, so
    /// no request can add label values.
    label: String,
    /// The backend's count of 429s already added to the counter.
    slowdowns_seen: AtomicU64,
}

impl MeteredRegistry {
    /// `inner`, metered under its name; `listed` is false for a registry a URL named.
    pub fn wrap(inner: Arc<dyn Registry>, metrics: Metrics, listed: bool) -> Arc<dyn Registry> {
        let label = if listed {
            crate::metrics::registry_label(inner.name()).to_owned()
        } else {
            "unlisted".to_owned()
        };
        // The series exist from the start (at 0), so dashboards and alerts see them.
        metrics.registry_slowdowns.with_label_values(&[&label]);
        for operation in OPERATIONS {
            for kind in ERROR_KINDS {
                metrics
                    .registry_errors
                    .with_label_values(&[&label, operation, kind]);
            }
        }
        Arc::new(Self {
            inner,
            metrics,
            label,
            slowdowns_seen: AtomicU64::new(0),
        })
    }

    /// The backend counts the registry's 429s (it waits them out); brings the counter up
    /// to its count, each new one once. Called as operations start and end, so a storm of
    /// 429s shows while requests are still waiting, not only once one succeeds.
    fn sync_slowdowns(&self) {
        let slowdowns = self.inner.backpressure().slowdowns;
        // fetch_max: a thread holding an older count never moves "seen" back down.
        let before = self.slowdowns_seen.fetch_max(slowdowns, Ordering::Relaxed);
        if slowdowns > before {
            self.metrics
                .registry_slowdowns
                .with_label_values(&[&self.label])
                .inc_by(slowdowns - before);
        }
    }

    fn record<T>(&self, operation: &str, started: Instant, result: &Result<T>) {
        let registry = self.label.as_str();
        self.metrics
            .registry_requests
            .with_label_values(&[registry, operation])
            .inc();
        self.metrics
            .registry_duration
            .with_label_values(&[registry, operation])
            .observe(started.elapsed().as_secs_f64());
        self.sync_slowdowns();
        if let Err(error) = result {
            let kind = match error {
                oranc_core::Error::NotFound { .. } => "not_found",
                oranc_core::Error::Denied { .. } => "denied",
                // One label for both: dashboards and alerts count them together.
                oranc_core::Error::Unavailable { .. }
                | oranc_core::Error::TimedOut { .. }
                | oranc_core::Error::PushedBack { .. } => "unavailable",
                oranc_core::Error::Protocol { .. } => "protocol",
                oranc_core::Error::Unsupported { .. } => "unsupported",
                _ => "other",
            };
            self.metrics
                .registry_errors
                .with_label_values(&[registry, operation, kind])
                .inc();
        }
    }
}

/// The `operation` labels [`metered!`] gives.
const OPERATIONS: [&str; 11] = [
    "ping",
    "open_upload",
    "head_blob",
    "get_blob",
    "put_blob",
    "get_manifest",
    "has_manifest",
    "put_manifest",
    "delete_manifest",
    "list_tags",
    "has_tags",
];
/// The `kind` labels of `oranc_registry_errors_total` (`MeteredRegistry::record`).
const ERROR_KINDS: [&str; 6] = [
    "not_found",
    "denied",
    "unavailable",
    "protocol",
    "unsupported",
    "other",
];

/// Meters one operation: the registry's 429s are synced as it starts (so a storm shows
/// while requests still wait), its outcome recorded as it ends. One dropped before it ends
/// (its client left, the response timeout fired, a probe another lookup made redundant)
/// is not counted: none of those says anything about the registry.
macro_rules! metered {
    ($self:ident, $operation:literal, $call:expr) => {{
        $self.sync_slowdowns();
        let started = Instant::now();
        let result = $call.await;
        $self.record($operation, started, &result);
        result
    }};
}

#[async_trait]
impl Registry for MeteredRegistry {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn repository(&self, name: &str) -> Result<RepositoryName> {
        self.inner.repository(name)
    }

    async fn ping(&self) -> Result<()> {
        metered!(self, "ping", self.inner.ping())
    }

    async fn checks_credentials(&self) -> Result<bool> {
        metered!(self, "ping", self.inner.checks_credentials())
    }

    async fn head_blob(&self, repo: &RepositoryName, digest: &Sha256Hash) -> Result<Option<u64>> {
        metered!(self, "head_blob", self.inner.head_blob(repo, digest))
    }

    async fn get_blob(
        &self,
        repo: &RepositoryName,
        digest: &Sha256Hash,
        range: Option<ByteRange>,
    ) -> Result<BlobBody> {
        metered!(self, "get_blob", self.inner.get_blob(repo, digest, range))
    }

    async fn get_blob_or_redirect(
        &self,
        repo: &RepositoryName,
        digest: &Sha256Hash,
        range: Option<ByteRange>,
    ) -> Result<BlobBody> {
        metered!(
            self,
            "get_blob",
            self.inner.get_blob_or_redirect(repo, digest, range)
        )
    }

    async fn put_blob(
        &self,
        repo: &RepositoryName,
        body: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<BlobInfo> {
        metered!(self, "put_blob", self.inner.put_blob(repo, body))
    }

    async fn put_blob_bytes(&self, repo: &RepositoryName, bytes: Bytes) -> Result<BlobInfo> {
        metered!(self, "put_blob", self.inner.put_blob_bytes(repo, bytes))
    }

    async fn get_manifest(
        &self,
        repo: &RepositoryName,
        tag: &Tag,
    ) -> Result<Option<StoredManifest>> {
        metered!(self, "get_manifest", self.inner.get_manifest(repo, tag))
    }

    async fn has_manifest(&self, repo: &RepositoryName, tag: &Tag) -> Result<bool> {
        metered!(self, "has_manifest", self.inner.has_manifest(repo, tag))
    }

    async fn put_manifest(
        &self,
        repo: &RepositoryName,
        tag: &Tag,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<Sha256Hash> {
        metered!(
            self,
            "put_manifest",
            self.inner.put_manifest(repo, tag, media_type, bytes)
        )
    }

    async fn list_tags(&self, repo: &RepositoryName) -> Result<Vec<Tag>> {
        metered!(self, "list_tags", self.inner.list_tags(repo))
    }

    fn backpressure(&self) -> Backpressure {
        self.inner.backpressure()
    }

    async fn open_upload(&self, repo: &RepositoryName) -> Result<UploadSlot> {
        metered!(self, "open_upload", self.inner.open_upload(repo))
    }

    async fn cancel_upload(&self, repo: &RepositoryName, slot: UploadSlot) {
        self.inner.cancel_upload(repo, slot).await;
    }

    async fn put_blob_via(
        &self,
        repo: &RepositoryName,
        slot: UploadSlot,
        body: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<BlobInfo> {
        metered!(self, "put_blob", self.inner.put_blob_via(repo, slot, body))
    }

    async fn reclaim_space(
        &self,
        repo: &RepositoryName,
        older_than: std::time::Duration,
    ) -> Result<Option<Reclaimed>> {
        self.inner.reclaim_space(repo, older_than).await
    }

    async fn has_tags(&self, repo: &RepositoryName) -> Result<bool> {
        metered!(self, "has_tags", self.inner.has_tags(repo))
    }

    async fn delete_manifest(&self, repo: &RepositoryName, digest: &Sha256Hash) -> Result<()> {
        metered!(
            self,
            "delete_manifest",
            self.inner.delete_manifest(repo, digest)
        )
    }
}
