//! A registry in a local directory, in the OCI image layout: one layout per repository
//! (`ROOT/<repository>/{oci-layout,index.json,blobs/sha256/...}`), tags as
//! `org.opencontainers.image.ref.name` annotations in `index.json`.
//!
//! It is oranc's embedded default, so push and server work with no registry running, and
//! what it holds moves to any registry with standard tools
//! (`skopeo copy oci:ROOT/<repository>:<tag> docker://...`).
//!
//! Every file is written to a temporary name and renamed into place, and `index.json` is
//! rewritten under an exclusive file lock, so readers never see a half-written file and
//! concurrent writers (threads or processes) never lose each other's tags.

use std::collections::HashMap;
use std::io::{ErrorKind, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use oci_spec::image::{Descriptor, ImageIndex, ImageIndexBuilder, ImageManifest, MediaType};
use oranc_core::{
    BlobBody, BlobInfo, ByteRange, Error, RepositoryName, Result, Sha256Hash, StoredManifest, Tag,
};
use tokio::io::{AsyncRead, AsyncSeekExt as _, AsyncWriteExt as _};
use tokio_util::io::ReaderStream;

use super::hashing::HashingReader;

mod sweep;

const REF_NAME: &str = "org.opencontainers.image.ref.name";
const LAYOUT_FILE: &str = "oci-layout";
const LAYOUT_CONTENT: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;
const INDEX_FILE: &str = "index.json";

#[derive(Debug)]
pub struct OciLayoutRegistry {
    root: PathBuf,
    name: String,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

impl OciLayoutRegistry {
    pub fn new(root: impl Into<PathBuf>) -> std::result::Result<Self, crate::BackendError> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(|source| crate::BackendError::LayoutDirectory {
            path: root.clone(),
            source,
        })?;
        Ok(Self {
            name: format!("oci-layout:{}", root.display()),
            root,
        })
    }

    fn repo_dir(&self, repo: &RepositoryName) -> PathBuf {
        // RepositoryName allows only [a-z0-9._-] and '/', never an empty or dot-only
        // component, so it cannot leave the root.
        self.root.join(repo.as_str())
    }

    fn blob_path(&self, repo: &RepositoryName, digest: &Sha256Hash) -> PathBuf {
        self.repo_dir(repo)
            .join("blobs/sha256")
            .join(digest.to_hex())
    }

    async fn ensure_layout(&self, repo: &RepositoryName) -> Result<()> {
        let dir = self.repo_dir(repo);
        tokio::fs::create_dir_all(dir.join("blobs/sha256"))
            .await
            .map_err(io(format!("creating {}", dir.display())))?;
        let layout = dir.join(LAYOUT_FILE);
        if tokio::fs::metadata(&layout).await.is_err() {
            write_atomically(&layout, LAYOUT_CONTENT.as_bytes()).await?;
        }
        Ok(())
    }

    async fn read_index(&self, repo: &RepositoryName) -> Result<Option<ImageIndex>> {
        let path = self.repo_dir(repo).join(INDEX_FILE);
        match tokio::fs::read(&path).await {
            Ok(bytes) => parse_index(&path, &bytes).map(Some),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(format!("reading {}", path.display()))(e)),
        }
    }

    /// Applies `change` to the index under an exclusive lock and writes it back atomically.
    async fn update_index(
        &self,
        repo: &RepositoryName,
        change: impl FnOnce(&mut Vec<Descriptor>) + Send + 'static,
    ) -> Result<()> {
        let dir = self.repo_dir(repo);
        tokio::task::spawn_blocking(move || update_index_blocking(&dir, change))
            .await
            .map_err(|e| Error::Io {
                what: "updating index.json".into(),
                source: std::io::Error::other(e),
            })?
    }

    async fn store_blob_file(
        &self,
        repo: &RepositoryName,
        body: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<BlobInfo> {
        self.ensure_layout(repo).await?;
        let blobs = self.repo_dir(repo).join("blobs/sha256");
        let temp = temp_name(&blobs.join("upload"));
        let mut file = tokio::fs::File::create(&temp)
            .await
            .map_err(io(format!("creating {}", temp.display())))?;
        let mut reader = HashingReader::new(body);
        let copied = tokio::io::copy(&mut reader, &mut file).await;
        let finished = match copied {
            Ok(_) => file.sync_all().await,
            Err(e) => Err(e),
        };
        if let Err(e) = finished {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(io(format!("writing a blob into {}", blobs.display()))(e));
        }
        let blob = reader.finish();
        tokio::fs::rename(&temp, blobs.join(blob.digest.to_hex()))
            .await
            .map_err(io(format!("storing blob {}", blob.digest.to_oci_digest())))?;
        Ok(blob)
    }
}

fn parse_index(path: &Path, bytes: &[u8]) -> Result<ImageIndex> {
    serde_json::from_slice(bytes).map_err(|e| Error::Protocol {
        what: format!("reading {}", path.display()),
        reason: format!("not an OCI image index: {e}"),
    })
}

fn temp_name(target: &Path) -> PathBuf {
    let mut name = target.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}-{}", std::process::id(), fastrand::u64(..)));
    target.with_file_name(name)
}

async fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let temp = temp_name(path);
    let write = async {
        let mut file = tokio::fs::File::create(&temp).await?;
        file.write_all(bytes).await?;
        file.sync_all().await?;
        tokio::fs::rename(&temp, path).await
    };
    if let Err(e) = write.await {
        let _ = tokio::fs::remove_file(&temp).await;
        return Err(io(format!("writing {}", path.display()))(e));
    }
    Ok(())
}

/// Takes the repository's exclusive index lock; dropping the file releases it.
fn lock_index(dir: &Path) -> Result<std::fs::File> {
    let lock_path = dir.join("index.json.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io(format!("opening {}", lock_path.display())))?;
    lock.lock()
        .map_err(io(format!("locking {}", lock_path.display())))?;
    Ok(lock)
}

fn update_index_blocking(dir: &Path, change: impl FnOnce(&mut Vec<Descriptor>)) -> Result<()> {
    let index_path = dir.join(INDEX_FILE);
    let lock = lock_index(dir)?;
    let mut manifests = match std::fs::read(&index_path) {
        Ok(bytes) => parse_index(&index_path, &bytes)?.manifests().clone(),
        Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io(format!("reading {}", index_path.display()))(e)),
    };
    change(&mut manifests);
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()
        .map_err(|e| Error::Protocol {
            what: "building index.json".into(),
            reason: e.to_string(),
        })?;
    let bytes = serde_json::to_vec(&index).map_err(|e| Error::Protocol {
        what: "serialising index.json".into(),
        reason: e.to_string(),
    })?;
    let temp = temp_name(&index_path);
    let written = std::fs::File::create(&temp)
        .and_then(|mut file| {
            file.write_all(&bytes)?;
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(&temp, &index_path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(io(format!("writing {}", index_path.display()))(e));
    }
    // Dropping the file releases the lock.
    drop(lock);
    Ok(())
}

fn tag_of(descriptor: &Descriptor) -> Option<&str> {
    descriptor
        .annotations()
        .as_ref()
        .and_then(|a| a.get(REF_NAME))
        .map(String::as_str)
}

fn descriptor_digest(descriptor: &Descriptor) -> Result<Sha256Hash> {
    Sha256Hash::parse_digest(descriptor.digest().digest())
}

#[async_trait]
impl oranc_core::Registry for OciLayoutRegistry {
    fn name(&self) -> &str {
        &self.name
    }

    fn repository(&self, name: &str) -> Result<RepositoryName> {
        name.parse()
    }

    /// Files have no storage to redirect to: the bytes come from here.
    async fn get_blob_or_redirect(
        &self,
        repo: &RepositoryName,
        digest: &Sha256Hash,
        range: Option<ByteRange>,
    ) -> Result<BlobBody> {
        self.get_blob(repo, digest, range).await
    }

    /// No upload sessions: a blob is written when its bytes come.
    async fn open_upload(&self, _repo: &RepositoryName) -> Result<oranc_core::UploadSlot> {
        Ok(oranc_core::UploadSlot::default())
    }

    /// No upload sessions, nothing to give up.
    async fn cancel_upload(&self, _repo: &RepositoryName, _slot: oranc_core::UploadSlot) {}

    async fn put_blob_via(
        &self,
        repo: &RepositoryName,
        _slot: oranc_core::UploadSlot,
        body: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<BlobInfo> {
        self.put_blob(repo, body).await
    }

    async fn put_blob_bytes(&self, repo: &RepositoryName, bytes: Bytes) -> Result<BlobInfo> {
        let mut reader: &[u8] = &bytes;
        self.put_blob(repo, &mut reader).await
    }

    async fn has_manifest(&self, repo: &RepositoryName, tag: &Tag) -> Result<bool> {
        Ok(self.get_manifest(repo, tag).await?.is_some())
    }

    async fn has_tags(&self, repo: &RepositoryName) -> Result<bool> {
        Ok(!self.list_tags(repo).await?.is_empty())
    }

    /// A directory never asks to slow down.
    fn backpressure(&self) -> oranc_core::registry::Backpressure {
        oranc_core::registry::Backpressure::default()
    }

    async fn ping(&self) -> Result<()> {
        tokio::fs::metadata(&self.root)
            .await
            .map(|_| ())
            .map_err(io(format!(
                "the OCI layout directory {}",
                self.root.display()
            )))
    }

    /// A directory has no users: whoever can reach it through the server is nobody in
    /// particular.
    async fn checks_credentials(&self) -> Result<bool> {
        Ok(false)
    }

    async fn head_blob(&self, repo: &RepositoryName, digest: &Sha256Hash) -> Result<Option<u64>> {
        match tokio::fs::metadata(self.blob_path(repo, digest)).await {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(format!("blob {} in {repo}", digest.to_oci_digest()))(e)),
        }
    }

    async fn get_blob(
        &self,
        repo: &RepositoryName,
        digest: &Sha256Hash,
        range: Option<ByteRange>,
    ) -> Result<BlobBody> {
        let what = format!("blob {} in {repo}", digest.to_oci_digest());
        let mut file = match tokio::fs::File::open(self.blob_path(repo, digest)).await {
            Ok(file) => file,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(Error::NotFound { what }),
            Err(e) => return Err(io(what)(e)),
        };
        let total = file.metadata().await.map_err(io(what.clone()))?.len();
        let Some(range) = range else {
            return Ok(BlobBody::Stream {
                size: Some(total),
                range: None,
                body: Box::pin(ReaderStream::new(file)),
            });
        };
        let end = range.end.unwrap_or(u64::MAX).min(total.saturating_sub(1));
        if range.start >= total || range.start > end {
            return Err(Error::Protocol {
                what,
                reason: format!(
                    "range {}-{end} is outside the blob's {total} bytes",
                    range.start
                ),
            });
        }
        file.seek(SeekFrom::Start(range.start))
            .await
            .map_err(io(what))?;
        let length = end - range.start + 1;
        Ok(BlobBody::Stream {
            size: Some(length),
            range: Some((range.start, end, total)),
            body: Box::pin(ReaderStream::new(tokio::io::AsyncReadExt::take(
                file, length,
            ))),
        })
    }

    async fn put_blob(
        &self,
        repo: &RepositoryName,
        body: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<BlobInfo> {
        self.store_blob_file(repo, body).await
    }

    async fn get_manifest(
        &self,
        repo: &RepositoryName,
        tag: &Tag,
    ) -> Result<Option<StoredManifest>> {
        let Some(index) = self.read_index(repo).await? else {
            return Ok(None);
        };
        let Some(descriptor) = index
            .manifests()
            .iter()
            .find(|d| tag_of(d) == Some(tag.as_str()))
        else {
            return Ok(None);
        };
        let digest = descriptor_digest(descriptor)?;
        let path = self.blob_path(repo, &digest);
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(io(format!("manifest {repo}:{tag} at {}", path.display())))?;
        Ok(Some(StoredManifest {
            digest,
            media_type: descriptor.media_type().to_string(),
            bytes: Bytes::from(bytes),
        }))
    }

    async fn put_manifest(
        &self,
        repo: &RepositoryName,
        tag: &Tag,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<Sha256Hash> {
        let what = format!("storing manifest {repo}:{tag}");
        // Like a registry, refuse a manifest whose blobs are not stored yet.
        let manifest: ImageManifest =
            serde_json::from_slice(&bytes).map_err(|e| Error::Protocol {
                what: what.clone(),
                reason: format!("not an OCI image manifest: {e}"),
            })?;
        for descriptor in std::iter::once(manifest.config()).chain(manifest.layers()) {
            let digest = descriptor_digest(descriptor)?;
            if self.head_blob(repo, &digest).await?.is_none() {
                return Err(Error::Protocol {
                    what,
                    reason: format!(
                        "MANIFEST_BLOB_UNKNOWN: blob {} is not stored",
                        digest.to_oci_digest()
                    ),
                });
            }
        }
        let size = bytes.len() as u64;
        let blob = self.store_blob_file(repo, &mut &bytes[..]).await?;
        let digest = oci_spec::image::Digest::try_from(blob.digest.to_oci_digest().as_str())
            .map_err(|e| Error::Protocol {
                what: what.clone(),
                reason: e.to_string(),
            })?;
        let mut descriptor = Descriptor::new(MediaType::from(media_type), size, digest);
        descriptor.set_annotations(Some(HashMap::from([(
            REF_NAME.to_owned(),
            tag.to_string(),
        )])));
        let tag = tag.to_string();
        self.update_index(repo, move |manifests| {
            manifests.retain(|d| tag_of(d) != Some(tag.as_str()));
            manifests.push(descriptor);
        })
        .await?;
        Ok(blob.digest)
    }

    async fn list_tags(&self, repo: &RepositoryName) -> Result<Vec<Tag>> {
        let Some(index) = self.read_index(repo).await? else {
            return Ok(Vec::new());
        };
        Ok(index
            .manifests()
            .iter()
            .filter_map(tag_of)
            .filter_map(|t| t.parse().ok())
            .collect())
    }

    async fn reclaim_space(
        &self,
        repo: &RepositoryName,
        older_than: std::time::Duration,
    ) -> Result<Option<oranc_core::registry::Reclaimed>> {
        let dir = self.repo_dir(repo);
        tokio::task::spawn_blocking(move || sweep::sweep_blocking(&dir, older_than))
            .await
            .map_err(|e| Error::Io {
                what: "sweeping unreferenced blobs".into(),
                source: std::io::Error::other(e),
            })?
            .map(Some)
    }

    async fn delete_manifest(&self, repo: &RepositoryName, digest: &Sha256Hash) -> Result<()> {
        if self.read_index(repo).await?.is_none() {
            return Err(Error::NotFound {
                what: format!("manifest {} in {repo}", digest.to_oci_digest()),
            });
        }
        let digest = *digest;
        self.update_index(repo, move |manifests| {
            manifests.retain(|d| descriptor_digest(d).ok() != Some(digest));
        })
        .await
    }
}
