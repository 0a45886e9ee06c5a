//! The registry wrappers (metrics, manifest cache) hand every operation to the registry
//! they wrap, each to its own method: a wrapper that let the trait's plumbing answer
//! instead once replaced the backend's upload sessions with slower ones. A recording
//! registry notes which of its methods ran.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use oranc_core::registry::{Backpressure, Reclaimed};
use oranc_core::{
    BlobBody, BlobInfo, ByteRange, Registry, RepositoryName, Result, Sha256Hash, StoredManifest,
    Tag, UploadSlot,
};
use tokio::io::AsyncRead;

use crate::manifest_cache::{Lookups, ManifestCache};
use crate::metered::MeteredRegistry;
use crate::metrics::Metrics;

/// Notes the name of each method called, and answers with nothing in particular.
#[derive(Debug, Default)]
struct Recording(Mutex<Vec<&'static str>>);

impl Recording {
    fn note(&self, method: &'static str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(method);
    }

    fn take(&self) -> Vec<&'static str> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

fn blob() -> BlobInfo {
    BlobInfo {
        digest: Sha256Hash::of(b""),
        size: 0,
    }
}

#[async_trait]
impl Registry for Recording {
    fn name(&self) -> &str {
        self.note("name");
        "recording"
    }
    fn repository(&self, name: &str) -> Result<RepositoryName> {
        self.note("repository");
        name.parse()
    }
    async fn ping(&self) -> Result<()> {
        self.note("ping");
        Ok(())
    }
    async fn checks_credentials(&self) -> Result<bool> {
        self.note("checks_credentials");
        Ok(true)
    }
    async fn head_blob(&self, _: &RepositoryName, _: &Sha256Hash) -> Result<Option<u64>> {
        self.note("head_blob");
        Ok(None)
    }
    async fn get_blob(
        &self,
        _: &RepositoryName,
        _: &Sha256Hash,
        _: Option<ByteRange>,
    ) -> Result<BlobBody> {
        self.note("get_blob");
        Ok(BlobBody::Redirect { url: String::new() })
    }
    async fn get_blob_or_redirect(
        &self,
        _: &RepositoryName,
        _: &Sha256Hash,
        _: Option<ByteRange>,
    ) -> Result<BlobBody> {
        self.note("get_blob_or_redirect");
        Ok(BlobBody::Redirect { url: String::new() })
    }
    async fn put_blob(
        &self,
        _: &RepositoryName,
        _: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<BlobInfo> {
        self.note("put_blob");
        Ok(blob())
    }
    async fn open_upload(&self, _: &RepositoryName) -> Result<UploadSlot> {
        self.note("open_upload");
        Ok(UploadSlot::default())
    }
    async fn cancel_upload(&self, _: &RepositoryName, _: UploadSlot) {
        self.note("cancel_upload");
    }
    async fn put_blob_via(
        &self,
        _: &RepositoryName,
        _: UploadSlot,
        _: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<BlobInfo> {
        self.note("put_blob_via");
        Ok(blob())
    }
    async fn put_blob_bytes(&self, _: &RepositoryName, _: Bytes) -> Result<BlobInfo> {
        self.note("put_blob_bytes");
        Ok(blob())
    }
    async fn get_manifest(&self, _: &RepositoryName, _: &Tag) -> Result<Option<StoredManifest>> {
        self.note("get_manifest");
        Ok(None)
    }
    async fn has_manifest(&self, _: &RepositoryName, _: &Tag) -> Result<bool> {
        self.note("has_manifest");
        Ok(false)
    }
    async fn put_manifest(
        &self,
        _: &RepositoryName,
        _: &Tag,
        _: &str,
        _: Bytes,
    ) -> Result<Sha256Hash> {
        self.note("put_manifest");
        Ok(Sha256Hash::of(b""))
    }
    async fn list_tags(&self, _: &RepositoryName) -> Result<Vec<Tag>> {
        self.note("list_tags");
        Ok(Vec::new())
    }
    async fn has_tags(&self, _: &RepositoryName) -> Result<bool> {
        self.note("has_tags");
        Ok(false)
    }
    async fn delete_manifest(&self, _: &RepositoryName, _: &Sha256Hash) -> Result<()> {
        self.note("delete_manifest");
        Ok(())
    }
    fn backpressure(&self) -> Backpressure {
        self.note("backpressure");
        Backpressure::default()
    }
    async fn reclaim_space(&self, _: &RepositoryName, _: Duration) -> Result<Option<Reclaimed>> {
        self.note("reclaim_space");
        Ok(None)
    }
}

/// Calls every method of `wrapper` once, checking after each that `inner` saw that method
/// itself (metering may also ask for `name` and `backpressure`).
async fn assert_forwards_everything(wrapper: &dyn Registry, inner: &Recording) {
    let repo: RepositoryName = "o/c".parse().unwrap_or_else(|_| unreachable!());
    let tag: Tag = "t".parse().unwrap_or_else(|_| unreachable!());
    let digest = Sha256Hash::of(b"");
    inner.take();
    let seen = |method: &'static str| {
        let calls = inner.take();
        assert!(
            calls.contains(&method),
            "{method} was not forwarded: {calls:?}"
        );
    };
    let _ = wrapper.repository("o/c");
    seen("repository");
    let _ = wrapper.ping().await;
    seen("ping");
    let _ = wrapper.checks_credentials().await;
    seen("checks_credentials");
    let _ = wrapper.head_blob(&repo, &digest).await;
    seen("head_blob");
    let _ = wrapper.get_blob(&repo, &digest, None).await;
    seen("get_blob");
    let _ = wrapper.get_blob_or_redirect(&repo, &digest, None).await;
    seen("get_blob_or_redirect");
    let _ = wrapper.put_blob(&repo, &mut &b""[..]).await;
    seen("put_blob");
    let _ = wrapper.open_upload(&repo).await;
    seen("open_upload");
    wrapper.cancel_upload(&repo, UploadSlot::default()).await;
    seen("cancel_upload");
    let _ = wrapper
        .put_blob_via(&repo, UploadSlot::default(), &mut &b""[..])
        .await;
    seen("put_blob_via");
    let _ = wrapper.put_blob_bytes(&repo, Bytes::new()).await;
    seen("put_blob_bytes");
    let _ = wrapper.get_manifest(&repo, &tag).await;
    seen("get_manifest");
    let _ = wrapper
        .has_manifest(&repo, &"u".parse().unwrap_or_else(|_| unreachable!()))
        .await;
    seen("has_manifest");
    let _ = wrapper.put_manifest(&repo, &tag, "x", Bytes::new()).await;
    seen("put_manifest");
    let _ = wrapper.list_tags(&repo).await;
    seen("list_tags");
    let _ = wrapper.has_tags(&repo).await;
    seen("has_tags");
    let _ = wrapper.delete_manifest(&repo, &digest).await;
    seen("delete_manifest");
    let _ = wrapper.backpressure();
    seen("backpressure");
    let _ = wrapper.reclaim_space(&repo, Duration::ZERO).await;
    seen("reclaim_space");
}

#[tokio::test]
async fn the_metering_wrapper_forwards_every_method() {
    let inner = Arc::new(Recording::default());
    let wrapper = MeteredRegistry::wrap(inner.clone(), Metrics::new(None), true);
    assert_forwards_everything(wrapper.as_ref(), &inner).await;
}

#[tokio::test]
async fn the_manifest_cache_forwards_every_method() {
    let inner = Arc::new(Recording::default());
    let cache = ManifestCache::new(&oranc_config::ResponseCacheConfig::default());
    for lookups in [Lookups::Cached, Lookups::FoundOnly, Lookups::ReadThrough] {
        let wrapper = cache.wrap(inner.clone(), [0; 32], lookups);
        assert_forwards_everything(wrapper.as_ref(), &inner).await;
    }
}
