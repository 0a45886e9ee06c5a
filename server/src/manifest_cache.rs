//! A [`Registry`] decorator that remembers tag -> manifest lookups (and absent tags, for
//! less long), so a NAR GET or HEAD after the first costs one registry request (the blob),
//! not two. One bounded cache is shared by every client of the server; entries are keyed by
//! registry, credentials digest, repository and tag, so a client never sees a manifest
//! through someone else's access. Writes through the decorator drop the tag's entries for
//! every client.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use oranc_core::registry::{Backpressure, Reclaimed};
use oranc_core::{
    BlobBody, BlobInfo, ByteRange, Registry, RepositoryName, Result, Sha256Hash, StoredManifest,
    Tag, UploadSlot,
};
use tokio::io::AsyncRead;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    registry: String,
    credentials: [u8; 32],
    repository: RepositoryName,
    tag: Tag,
}

type Entry = Option<StoredManifest>;

struct TtlByPresence {
    present: Duration,
    absent: Duration,
}

impl moka::Expiry<Key, Entry> for TtlByPresence {
    fn expire_after_create(&self, _key: &Key, value: &Entry, _now: Instant) -> Option<Duration> {
        Some(if value.is_some() {
            self.present
        } else {
            self.absent
        })
    }
}

/// The cache every decorated client shares.
#[derive(Clone)]
pub struct ManifestCache {
    entries: moka::future::Cache<Key, Entry>,
    /// Writes through any client so far: a lookup that saw one land while it ran drops the
    /// absence it found (the registry may have answered before the write, and the entry
    /// gone in before the write's `forget`).
    writes: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for ManifestCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManifestCache")
            .field("entries", &self.entries.entry_count())
            .finish()
    }
}

impl ManifestCache {
    pub fn new(config: &oranc_config::ResponseCacheConfig) -> Self {
        Self {
            entries: moka::future::Cache::builder()
                .max_capacity(config.max_bytes / 4)
                .weigher(|key: &Key, value: &Entry| {
                    let size = value
                        .as_ref()
                        .map_or(0, |m| m.bytes.len() + m.media_type.len());
                    u32::try_from(
                        size + key.repository.as_str().len() + key.tag.as_str().len() + 128,
                    )
                    .unwrap_or(u32::MAX)
                })
                .expire_after(TtlByPresence {
                    present: Duration::from_secs(config.ttl_secs),
                    absent: Duration::from_secs(config.negative_ttl_secs),
                })
                .support_invalidation_closures()
                .build(),
            writes: Arc::default(),
        }
    }

    /// `inner` with manifest lookups cached under `credentials`' digest, as `lookups` says.
    /// Its writes drop every client's entries.
    pub fn wrap(
        &self,
        inner: Arc<dyn Registry>,
        credentials: [u8; 32],
        lookups: Lookups,
    ) -> Arc<dyn Registry> {
        Arc::new(CachingRegistry {
            inner,
            credentials,
            lookups,
            cache: self.clone(),
        })
    }
}

/// What a wrapped client's manifest lookups may answer from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookups {
    /// What was found, and what was not (for less long).
    Cached,
    /// What was found only: every absence is the registry's answer of the moment. A
    /// mirror's: its word that the registry lacks a file sends the file's next request
    /// upstream alone for a while (`mirror/registry_word.rs`), which a remembered absence
    /// would stretch by the negative TTL past another replica's storing it.
    FoundOnly,
    /// Nothing: a writing client's existence checks must not trust a remembered absence.
    ReadThrough,
}

/// A copy of a failure several lookups share, of the same kind (so a refusal stays a 401/403
/// and an absence a 404, not a 503).
fn same_failure(error: &oranc_core::Error) -> oranc_core::Error {
    use oranc_core::Error as E;
    match error {
        E::NotFound { what } => E::NotFound { what: what.clone() },
        E::Denied { what, hint } => E::Denied {
            what: what.clone(),
            hint: hint.clone(),
        },
        E::Unavailable { what, reason } => E::Unavailable {
            what: what.clone(),
            reason: reason.clone(),
        },
        E::TimedOut { what, reason } => E::TimedOut {
            what: what.clone(),
            reason: reason.clone(),
        },
        E::Protocol { what, reason } => E::Protocol {
            what: what.clone(),
            reason: reason.clone(),
        },
        E::InvalidManifest { reason } => E::InvalidManifest {
            reason: reason.clone(),
        },
        E::PushedBack { what, retry_after } => E::PushedBack {
            what: what.clone(),
            retry_after: *retry_after,
        },
        other => E::Protocol {
            what: "a manifest lookup".into(),
            reason: other.to_string(),
        },
    }
}

#[derive(Debug)]
struct CachingRegistry {
    inner: Arc<dyn Registry>,
    credentials: [u8; 32],
    lookups: Lookups,
    cache: ManifestCache,
}

impl CachingRegistry {
    fn key(&self, repository: &RepositoryName, tag: &Tag) -> Key {
        Key {
            registry: self.inner.name().to_owned(),
            credentials: self.credentials,
            repository: repository.clone(),
            tag: tag.clone(),
        }
    }

    /// Drops every client's entries for `tag` in `repository` (all its tags when `None`):
    /// after a write, nobody's view of them is current.
    fn forget(&self, repository: &RepositoryName, tag: Option<&Tag>) {
        self.cache
            .writes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let (registry, repository, tag) = (
            self.inner.name().to_owned(),
            repository.clone(),
            tag.cloned(),
        );
        let _ = self.cache.entries.invalidate_entries_if(move |key, _| {
            key.registry == registry
                && key.repository == repository
                && tag.as_ref().is_none_or(|tag| key.tag == *tag)
        });
    }
}

#[async_trait]
impl Registry for CachingRegistry {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn repository(&self, name: &str) -> Result<RepositoryName> {
        self.inner.repository(name)
    }

    async fn ping(&self) -> Result<()> {
        self.inner.ping().await
    }

    async fn checks_credentials(&self) -> Result<bool> {
        self.inner.checks_credentials().await
    }

    async fn head_blob(&self, repo: &RepositoryName, digest: &Sha256Hash) -> Result<Option<u64>> {
        self.inner.head_blob(repo, digest).await
    }

    async fn get_blob(
        &self,
        repo: &RepositoryName,
        digest: &Sha256Hash,
        range: Option<ByteRange>,
    ) -> Result<BlobBody> {
        self.inner.get_blob(repo, digest, range).await
    }

    async fn get_blob_or_redirect(
        &self,
        repo: &RepositoryName,
        digest: &Sha256Hash,
        range: Option<ByteRange>,
    ) -> Result<BlobBody> {
        self.inner.get_blob_or_redirect(repo, digest, range).await
    }

    async fn put_blob(
        &self,
        repo: &RepositoryName,
        body: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<BlobInfo> {
        self.inner.put_blob(repo, body).await
    }

    async fn put_blob_bytes(&self, repo: &RepositoryName, bytes: Bytes) -> Result<BlobInfo> {
        self.inner.put_blob_bytes(repo, bytes).await
    }

    async fn get_manifest(
        &self,
        repo: &RepositoryName,
        tag: &Tag,
    ) -> Result<Option<StoredManifest>> {
        let key = self.key(repo, tag);
        match self.lookups {
            Lookups::ReadThrough => return self.inner.get_manifest(repo, tag).await,
            Lookups::FoundOnly => {
                if let Some(Some(found)) = self.cache.entries.get(&key).await {
                    return Ok(Some(found));
                }
                let found = self.inner.get_manifest(repo, tag).await?;
                if let Some(found) = &found {
                    self.cache.entries.insert(key, Some(found.clone())).await;
                }
                return Ok(found);
            }
            Lookups::Cached => {}
        }
        let inner = self.inner.clone();
        let (repository, wanted) = (repo.clone(), tag.clone());
        let writes_before = self.cache.writes.load(std::sync::atomic::Ordering::SeqCst);
        // Concurrent lookups of one tag wait for a single registry request; errors are not
        // cached (and are shared only with the requests that waited for them).
        let found = self
            .cache
            .entries
            .try_get_with(key.clone(), async move {
                inner.get_manifest(&repository, &wanted).await
            })
            .await
            .map_err(|shared| {
                Arc::try_unwrap(shared).unwrap_or_else(|shared| same_failure(&shared))
            })?;
        // An absence found while a write landed may be older than the write: not kept (a
        // mirror's copy would otherwise be fetched again by the next request for it).
        if found.is_none()
            && self.cache.writes.load(std::sync::atomic::Ordering::SeqCst) != writes_before
        {
            self.cache.entries.invalidate(&key).await;
        }
        Ok(found)
    }

    /// Answered from a cached lookup when there is one, else asked of the registry (and
    /// not cached: a probe carries no manifest to keep).
    async fn has_manifest(&self, repo: &RepositoryName, tag: &Tag) -> Result<bool> {
        if self.lookups == Lookups::ReadThrough {
            return self.inner.has_manifest(repo, tag).await;
        }
        if let Some(cached) = self.cache.entries.get(&self.key(repo, tag)).await {
            if cached.is_some() || self.lookups == Lookups::Cached {
                return Ok(cached.is_some());
            }
        }
        self.inner.has_manifest(repo, tag).await
    }

    async fn put_manifest(
        &self,
        repo: &RepositoryName,
        tag: &Tag,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<Sha256Hash> {
        let result = self.inner.put_manifest(repo, tag, media_type, bytes).await;
        self.forget(repo, Some(tag));
        result
    }

    async fn list_tags(&self, repo: &RepositoryName) -> Result<Vec<Tag>> {
        self.inner.list_tags(repo).await
    }

    fn backpressure(&self) -> Backpressure {
        self.inner.backpressure()
    }

    async fn open_upload(&self, repo: &RepositoryName) -> Result<UploadSlot> {
        self.inner.open_upload(repo).await
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
        self.inner.put_blob_via(repo, slot, body).await
    }

    /// Frees only blobs no manifest names: no cached manifest changes.
    async fn reclaim_space(
        &self,
        repo: &RepositoryName,
        older_than: Duration,
    ) -> Result<Option<Reclaimed>> {
        self.inner.reclaim_space(repo, older_than).await
    }

    async fn has_tags(&self, repo: &RepositoryName) -> Result<bool> {
        self.inner.has_tags(repo).await
    }

    async fn delete_manifest(&self, repo: &RepositoryName, digest: &Sha256Hash) -> Result<()> {
        let result = self.inner.delete_manifest(repo, digest).await;
        // Which tags named the manifest is not known here.
        self.forget(repo, None);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metered::MeteredRegistry;
    use crate::metrics::Metrics;
    use oranc_backends::registry::OciLayoutRegistry;
    use oranc_core::{CacheKey, RegistryCache, TagEncoding};

    struct Fixture {
        _dir: tempfile::TempDir,
        metered: Arc<dyn Registry>,
        metrics: Metrics,
        cache: ManifestCache,
        repository: RepositoryName,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let backend: Arc<dyn Registry> = Arc::new(OciLayoutRegistry::new(dir.path()).unwrap());
        let repository = backend.repository("o/c").unwrap();
        let metrics = Metrics::new(None);
        Fixture {
            metered: MeteredRegistry::wrap(backend, metrics.clone(), true),
            metrics,
            cache: ManifestCache::new(&oranc_config::ResponseCacheConfig::default()),
            repository,
            _dir: dir,
        }
    }

    impl Fixture {
        fn manifest_lookups(&self) -> u64 {
            self.metrics
                .registry_requests
                .with_label_values(&[
                    crate::metrics::registry_label(self.metered.name()),
                    "get_manifest",
                ])
                .get()
        }

        fn cache_for(&self, credentials: u8) -> RegistryCache {
            self.cache_with(credentials, Lookups::Cached)
        }

        fn cache_with(&self, credentials: u8, lookups: Lookups) -> RegistryCache {
            RegistryCache::new(
                self.cache
                    .wrap(self.metered.clone(), [credentials; 32], lookups),
                self.repository.clone(),
                TagEncoding::Custom,
                vec![],
            )
        }
    }

    /// Stores a `nix-cache-info` through `cache`.
    async fn store_cache_info(cache: &RegistryCache) {
        let key: CacheKey = "nix-cache-info".parse().unwrap();
        cache
            .put_bytes(
                &key,
                "text/x-nix-cache-info",
                Bytes::from("StoreDir: /nix/store\n"),
            )
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn concurrent_and_repeated_lookups_make_one_registry_request() {
        let fixture = fixture();
        let cache = fixture.cache_for(1);
        let key: CacheKey = "nix-cache-info".parse().unwrap();
        store_cache_info(&cache).await;
        let lookups = (0..50).map(|_| cache.get(&key));
        let found = futures::future::join_all(lookups).await;
        assert!(found.iter().all(|f| matches!(f, Ok(Some(_)))));
        cache.get(&key).await.unwrap().unwrap();
        assert_eq!(fixture.manifest_lookups(), 1);
    }

    #[tokio::test]
    async fn credentials_keep_separate_entries_and_a_put_refreshes_everyone() {
        let fixture = fixture();
        let (alice, bob) = (fixture.cache_for(1), fixture.cache_for(2));
        let key: CacheKey = "nix-cache-info".parse().unwrap();
        assert!(alice.get(&key).await.unwrap().is_none());
        assert!(bob.get(&key).await.unwrap().is_none());
        assert!(
            bob.get(&key).await.unwrap().is_none(),
            "absent is cached too"
        );
        assert_eq!(fixture.manifest_lookups(), 2, "one per credentials");

        store_cache_info(&alice).await;
        assert!(
            bob.get(&key).await.unwrap().is_some(),
            "bob sees alice's write"
        );
        assert!(alice.get(&key).await.unwrap().is_some());
        assert_eq!(fixture.manifest_lookups(), 4);
    }

    #[tokio::test]
    async fn a_mirror_asks_the_registry_for_every_absence_but_remembers_what_it_found() {
        let fixture = fixture();
        let (reader, mirror) = (
            fixture.cache_for(1),
            fixture.cache_with(1, Lookups::FoundOnly),
        );
        let key: CacheKey = "nix-cache-info".parse().unwrap();
        assert!(reader.get(&key).await.unwrap().is_none());
        assert!(mirror.get(&key).await.unwrap().is_none());
        assert!(mirror.get(&key).await.unwrap().is_none());
        assert_eq!(
            fixture.manifest_lookups(),
            3,
            "neither the reader's remembered absence nor its own answers the mirror"
        );
        store_cache_info(&mirror).await;
        assert!(mirror.get(&key).await.unwrap().is_some());
        assert!(mirror.get(&key).await.unwrap().is_some());
        assert_eq!(fixture.manifest_lookups(), 4, "what it found is remembered");
    }
}
