//! The one seam push, the server and `initialize` share: a Nix binary cache kept in one
//! repository of any [`Registry`]. It owns the key -> tag encoding (with fallbacks for
//! reading older caches, and long-key tags for keys no tag holds), the one-layer manifest
//! layout and the write order; callers never build tags or manifests themselves.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::Either;
use futures::{StreamExt as _, TryStreamExt as _};
use tokio::io::AsyncRead;

use crate::cache_key::CacheKey;
use crate::error::{Error, Result};
use crate::layout::{self, StoredObject};
use crate::registry::{
    BlobBody, BlobInfo, ByteRange, Registry, RepositoryName, StoredManifest, UploadSlot,
};
use crate::tag::{is_long_key_tag, Tag, TagEncoding};

/// Manifests read at once to learn the keys of long-key tags (few in any cache).
const LONG_KEY_READS: usize = 8;

/// A cache object found in the registry: what it is and where its bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheObject {
    pub content_type: String,
    pub blob: BlobInfo,
    /// The tag it was found under (which encoding matched).
    pub tag: Tag,
}

#[derive(Debug, Clone)]
pub struct RegistryCache {
    registry: Arc<dyn Registry>,
    repository: RepositoryName,
    encoding: TagEncoding,
    fallbacks: Vec<TagEncoding>,
    /// The repository's shared config blob, once it is known to be stored (shared by
    /// clones, so one push checks it once).
    shared_config: Arc<tokio::sync::OnceCell<BlobInfo>>,
}

impl RegistryCache {
    /// A cache that writes with `encoding` and reads with it, then each of `fallbacks`.
    pub fn new(
        registry: Arc<dyn Registry>,
        repository: RepositoryName,
        encoding: TagEncoding,
        fallbacks: Vec<TagEncoding>,
    ) -> Self {
        let fallbacks = fallbacks.into_iter().filter(|f| *f != encoding).collect();
        Self {
            registry,
            repository,
            encoding,
            fallbacks,
            shared_config: Arc::default(),
        }
    }

    /// This cache, sharing with others of the same repository (a server's requests) what is
    /// known of the repository's shared config blob, so that it is looked for once.
    #[must_use]
    pub fn sharing_config(mut self, known: Arc<tokio::sync::OnceCell<BlobInfo>>) -> Self {
        self.shared_config = known;
        self
    }

    pub fn registry(&self) -> &Arc<dyn Registry> {
        &self.registry
    }

    pub fn repository(&self) -> &RepositoryName {
        &self.repository
    }

    /// Whether `key` is stored under its own tag in the encoding this cache writes, as the
    /// original oranc stores it, rather than under a [`long_key_tag`] (tags are at most 128
    /// characters, which a long key outgrows).
    pub fn has_own_tag(&self, key: &CacheKey) -> bool {
        self.encoding.encode(key.as_str()).is_ok()
    }

    fn read_encodings(&self) -> impl Iterator<Item = TagEncoding> + '_ {
        std::iter::once(self.encoding).chain(self.fallbacks.iter().copied())
    }

    /// Finds `key` under the write encoding, else under the first fallback that has it.
    /// The write encoding's manifest is fetched while the fallbacks are only probed (HEAD),
    /// all at once: a miss costs one round trip rather than one per encoding, and a hit
    /// costs the registry one manifest GET, as before. A hit drops the probes still running.
    pub async fn get(&self, key: &CacheKey) -> Result<Option<CacheObject>> {
        let tags = self.read_tags(key);
        let Some((primary, fallbacks)) = tags.split_first() else {
            return Ok(None);
        };
        let lookup = std::pin::pin!(self.registry.get_manifest(&self.repository, primary));
        let probes = std::pin::pin!(futures::future::join_all(
            fallbacks
                .iter()
                .map(|tag| self.registry.has_manifest(&self.repository, tag))
        ));
        let probed = match futures::future::select(lookup, probes).await {
            Either::Left((found, probes)) => match found? {
                Some(manifest) => return self.object(key, primary, &manifest).map(Some),
                None => probes.await,
            },
            Either::Right((probed, lookup)) => match lookup.await? {
                Some(manifest) => return self.object(key, primary, &manifest).map(Some),
                None => probed,
            },
        };
        for (tag, present) in fallbacks.iter().zip(probed) {
            if !present? {
                continue;
            }
            if let Some(manifest) = self.registry.get_manifest(&self.repository, tag).await? {
                return self.object(key, tag, &manifest).map(Some);
            }
        }
        Ok(None)
    }

    /// The tags [`Self::get`] looks for `key` under, in order: one per read encoding, its
    /// long-key tag where that encoding has none (every encoding a key outgrows gives the
    /// same one, looked for once).
    fn read_tags(&self, key: &CacheKey) -> Vec<Tag> {
        let mut tags: Vec<Tag> = Vec::new();
        for tag in self
            .read_encodings()
            .map(|encoding| encoding.tag_for(key.as_str()))
        {
            if !tags.contains(&tag) {
                tags.push(tag);
            }
        }
        tags
    }

    /// What a manifest found under `tag` says about the object `key`. Under a long-key tag,
    /// only a manifest that names `key` is its: the tag is a hash, and whoever can push may
    /// put any manifest under it.
    fn object(&self, key: &CacheKey, tag: &Tag, manifest: &StoredManifest) -> Result<CacheObject> {
        let StoredObject {
            content_type,
            layer,
            key: annotated,
            ..
        } = self.read_stored(key, manifest)?;
        if is_long_key_tag(tag) && annotated.as_deref() != Some(key.as_str()) {
            return Err(Error::Protocol {
                what: format!("{key} in {}", self.repository),
                reason: format!(
                    "the manifest under its long-key tag {tag} is for {}",
                    annotated.as_deref().unwrap_or("no key")
                ),
            });
        }
        Ok(CacheObject {
            content_type,
            blob: layer,
            tag: tag.clone(),
        })
    }

    /// The bytes of an object found by [`Self::get`], or part of them.
    pub async fn open(&self, object: &CacheObject, range: Option<ByteRange>) -> Result<BlobBody> {
        self.registry
            .get_blob(&self.repository, &object.blob.digest, range)
            .await
    }

    /// [`Self::open`], or the registry's redirect to the storage holding the bytes, for a
    /// client to fetch them there.
    pub async fn open_or_redirect(
        &self,
        object: &CacheObject,
        range: Option<ByteRange>,
    ) -> Result<BlobBody> {
        self.registry
            .get_blob_or_redirect(&self.repository, &object.blob.digest, range)
            .await
    }

    /// Stores a small object held in memory (nix-cache-info, narinfo).
    pub async fn put_bytes(
        &self,
        key: &CacheKey,
        content_type: &str,
        bytes: Bytes,
    ) -> Result<BlobInfo> {
        let blob = self.upload_bytes(bytes).await?;
        self.tag_blob(key, content_type, &blob).await?;
        Ok(blob)
    }

    /// Uploads a small object's bytes as a blob without tagging it yet, as
    /// [`Self::upload_blob`] does for streamed ones.
    pub async fn upload_bytes(&self, bytes: Bytes) -> Result<BlobInfo> {
        self.registry.put_blob_bytes(&self.repository, bytes).await
    }

    /// Uploads a streamed object's bytes as a blob, without tagging it yet: the caller checks
    /// what it uploaded, then calls [`Self::tag_blob`]. Nothing is visible until then.
    pub async fn upload_blob(&self, body: &mut (dyn AsyncRead + Unpin + Send)) -> Result<BlobInfo> {
        self.registry.put_blob(&self.repository, body).await
    }

    /// Opens an upload before its bytes are ready, so opening it overlaps other work; see
    /// [`Registry::open_upload`].
    pub async fn open_upload(&self) -> Result<UploadSlot> {
        self.registry.open_upload(&self.repository).await
    }

    /// Gives up a slot from [`Self::open_upload`] that will not be used (best effort).
    pub async fn cancel_upload(&self, slot: UploadSlot) {
        self.registry.cancel_upload(&self.repository, slot).await;
    }

    /// [`Self::upload_blob`] through a slot from [`Self::open_upload`].
    pub async fn upload_blob_via(
        &self,
        slot: UploadSlot,
        body: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<BlobInfo> {
        self.registry
            .put_blob_via(&self.repository, slot, body)
            .await
    }

    /// Makes an uploaded blob visible as the object `key`.
    pub async fn tag_blob(
        &self,
        key: &CacheKey,
        content_type: &str,
        blob: &BlobInfo,
    ) -> Result<()> {
        let tag = self.encoding.tag_for(key.as_str());
        let config = self.shared_config().await?;
        let manifest = layout::manifest_created_at(
            key.as_str(),
            content_type,
            blob,
            &config,
            std::time::SystemTime::now(),
        )?;
        self.registry
            .put_manifest(
                &self.repository,
                &tag,
                layout::MANIFEST_MEDIA_TYPE,
                Bytes::from(manifest),
            )
            .await?;
        Ok(())
    }

    /// The config blob every manifest names ([`layout::shared_config`]): looked for once,
    /// uploaded when the repository lacks it.
    async fn shared_config(&self) -> Result<BlobInfo> {
        let config = self
            .shared_config
            .get_or_try_init(|| async {
                let bytes = Bytes::from(layout::shared_config());
                let blob = BlobInfo {
                    digest: crate::Sha256Hash::of(&bytes),
                    size: bytes.len() as u64,
                };
                let stored = self
                    .registry
                    .head_blob(&self.repository, &blob.digest)
                    .await?;
                if stored != Some(blob.size) {
                    self.registry
                        .put_blob_bytes(&self.repository, bytes)
                        .await?;
                }
                Ok::<_, Error>(blob)
            })
            .await?;
        Ok(*config)
    }

    /// Every key in the cache, from one (paginated) tag listing. Tags no encoding can
    /// decode, or that decode to something that is not a cache key, are left out.
    pub async fn keys(&self) -> Result<HashSet<String>> {
        Ok(self
            .tagged_keys()
            .await?
            .into_iter()
            .map(|(_, key)| key.as_str().to_owned())
            .collect())
    }

    /// Every tag that stands for a cache key, with the key (by the first encoding that
    /// decodes it, or for a long-key tag by its manifest); other tags are left out, so tools
    /// that change the cache never touch them.
    pub async fn tagged_keys(&self) -> Result<Vec<(Tag, CacheKey)>> {
        let tags = self.registry.list_tags(&self.repository).await?;
        let (long, own): (Vec<Tag>, Vec<Tag>) = tags.into_iter().partition(is_long_key_tag);
        let mut tagged: Vec<(Tag, CacheKey)> = own
            .into_iter()
            .filter_map(|tag| {
                let key = self
                    .read_encodings()
                    .filter_map(|encoding| encoding.decode(&tag).ok())
                    .find_map(|key| key.parse::<CacheKey>().ok())?;
                Some((tag, key))
            })
            .collect();
        let named = futures::stream::iter(long)
            .map(|tag| async move { self.long_key_of(&tag).await.map(|key| Some((tag, key?))) })
            .buffer_unordered(LONG_KEY_READS)
            .try_collect::<Vec<_>>()
            .await?;
        tagged.extend(named.into_iter().flatten());
        Ok(tagged)
    }

    /// The key a long-key tag stands for, from its manifest's key annotation when that key
    /// hashes to the tag and some read encoding has no tag for it (so that [`Self::get`]
    /// reads it there); `None` when the tag is gone or stands for no such key.
    async fn long_key_of(&self, tag: &Tag) -> Result<Option<CacheKey>> {
        let Some(manifest) = self.registry.get_manifest(&self.repository, tag).await? else {
            return Ok(None);
        };
        let Ok(StoredObject { key: Some(key), .. }) = layout::read_manifest(&manifest.bytes) else {
            return Ok(None);
        };
        let Ok(key) = key.parse::<CacheKey>() else {
            return Ok(None);
        };
        // Only where a reader looks for it (which is only the key's own long-key tag): a key
        // every read encoding has a tag for is never read under its long-key tag (found by
        // the red team: gc followed such a forged narinfo and deleted the NAR of the one
        // clients are served).
        Ok(self.read_tags(&key).contains(tag).then_some(key))
    }

    /// Whether a manifest is stored under `tag`, asked of the registry directly (one HEAD),
    /// whatever its tag listing says.
    pub async fn has_tag(&self, tag: &Tag) -> Result<bool> {
        self.registry.has_manifest(&self.repository, tag).await
    }

    /// The object stored under `tag` and its manifest's digest; `None` when the tag is gone.
    pub async fn describe(&self, tag: &Tag) -> Result<Option<(crate::Sha256Hash, StoredObject)>> {
        let Some(manifest) = self.registry.get_manifest(&self.repository, tag).await? else {
            return Ok(None);
        };
        let object = self.read_stored(format_args!("tag {tag}"), &manifest)?;
        Ok(Some((manifest.digest, object)))
    }

    /// Reads a manifest of this repository as an oranc object; `what` names it in errors.
    fn read_stored(
        &self,
        what: impl std::fmt::Display,
        manifest: &StoredManifest,
    ) -> Result<StoredObject> {
        layout::read_manifest(&manifest.bytes).map_err(|e| Error::Protocol {
            what: format!("{what} in {}", self.repository),
            reason: e.to_string(),
        })
    }

    /// The bytes of a small object (a narinfo), refusing more than `limit`.
    pub async fn read_small(&self, blob: &BlobInfo, limit: u64) -> Result<Bytes> {
        let what = || {
            format!(
                "blob {} in {}",
                blob.digest.to_oci_digest(),
                self.repository
            )
        };
        let too_large = || Error::Protocol {
            what: what(),
            reason: format!("larger than {limit} bytes"),
        };
        if blob.size > limit {
            return Err(too_large());
        }
        let body = self
            .registry
            .get_blob(&self.repository, &blob.digest, None)
            .await?;
        let BlobBody::Stream { mut body, .. } = body else {
            return Err(Error::Protocol {
                what: what(),
                reason: "answered with a redirect".into(),
            });
        };
        let mut bytes = Vec::new();
        while let Some(chunk) = body.try_next().await.map_err(|source| Error::Io {
            what: format!("reading {}", what()),
            source,
        })? {
            if bytes.len() + chunk.len() > limit as usize {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        if crate::Sha256Hash::of(&bytes) != blob.digest {
            return Err(Error::Protocol {
                what: what(),
                reason: "its bytes do not match their digest".into(),
            });
        }
        Ok(Bytes::from(bytes))
    }

    /// Deletes the manifest `digest` (every tag on it goes with it; its blobs stay until
    /// the registry's own garbage collection).
    pub async fn delete_manifest(&self, digest: &crate::Sha256Hash) -> Result<()> {
        self.registry
            .delete_manifest(&self.repository, digest)
            .await
    }
}
