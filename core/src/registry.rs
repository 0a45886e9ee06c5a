//! The `Registry` trait: the few verbs of the OCI distribution API that oranc needs, with
//! blob bodies as streams. Backends (distribution, ghcr.io, Docker Hub, an OCI layout
//! directory) implement it; retries, caching and limits wrap it.

use std::fmt;
use std::pin::Pin;
use std::str::FromStr;

use async_trait::async_trait;
use bytes::Bytes;
use futures_core::Stream;
use tokio::io::AsyncRead;

use crate::error::{Error, Result};
use crate::hash::Sha256Hash;
use crate::tag::Tag;

/// A blob body arriving in chunks; never a whole NAR in memory.
pub type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// Which backend speaks to a registry: the one table of them, shared by the config (`kind`)
/// and the backends, which open each kind in one exhaustive match (`open_handle`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RegistryKind {
    /// Any OCI distribution registry (distribution, Harbor, Zot, ...).
    Distribution,
    Ghcr,
    DockerHub,
    /// A local directory in the OCI image layout.
    OciLayout,
}

/// Whether a registry location names a local OCI-layout directory (`/abs`, `./rel`,
/// `oci-layout:DIR`) rather than a `host[:port]`: the one rule that config validation, the
/// backends and the server's labels share.
pub fn is_directory_location(location: &str) -> bool {
    location.starts_with('/') || location.starts_with("./") || location.starts_with("oci-layout:")
}

/// A repository inside a registry, e.g. `owner/cache`, checked against the distribution
/// spec's grammar (lower-case path components separated by `/`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepositoryName(String);

impl RepositoryName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn validate_repository_component(component: &str) -> std::result::Result<(), String> {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    match (bytes.first(), bytes.last()) {
        (Some(&first), Some(&last)) if alnum(first) && alnum(last) => {}
        (None, _) | (_, None) => return Err("it has an empty path component".into()),
        _ => {
            return Err(format!(
                "component {component:?} must start and end with a lower-case letter or digit"
            ))
        }
    }
    let mut previous_separator: Option<u8> = None;
    let mut underscores = 0;
    for &b in bytes {
        if alnum(b) {
            previous_separator = None;
            underscores = 0;
            continue;
        }
        match b {
            b'-' if matches!(previous_separator, None | Some(b'-')) => {}
            b'_' if underscores < 2 && matches!(previous_separator, None | Some(b'_')) => {
                underscores += 1
            }
            b'.' if previous_separator.is_none() => {}
            _ => {
                return Err(format!(
                    "component {component:?} has {:?} where it is not allowed (lower-case letters, digits and single separators . _ __ -)",
                    b as char
                ))
            }
        }
        previous_separator = Some(b);
    }
    Ok(())
}

impl FromStr for RepositoryName {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidRepository {
            name: name.to_owned(),
            reason,
        };
        if name.len() > 255 {
            return Err(invalid("longer than 255 characters".into()));
        }
        for component in name.split('/') {
            validate_repository_component(component).map_err(invalid)?;
        }
        Ok(Self(name.to_owned()))
    }
}

impl fmt::Display for RepositoryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A blob's content address and size, as in an OCI descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlobInfo {
    pub digest: Sha256Hash,
    pub size: u64,
}

/// An inclusive byte range of a blob, as in an HTTP `Range: bytes=start-end` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    /// Inclusive; `None` reads to the end.
    pub end: Option<u64>,
}

/// How a blob can be fetched.
pub enum BlobBody {
    /// The bytes, streamed. `range` is what was actually served when a range was asked
    /// for and honoured (start, inclusive end, total size).
    Stream {
        size: Option<u64>,
        range: Option<(u64, u64, u64)>,
        body: ByteStream,
    },
    /// The registry handed the blob to another host; a client may be sent there directly.
    Redirect { url: String },
}

impl fmt::Debug for BlobBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stream { size, range, .. } => f
                .debug_struct("Stream")
                .field("size", size)
                .field("range", range)
                .finish_non_exhaustive(),
            Self::Redirect { .. } => f.write_str("Redirect"),
        }
    }
}

/// A manifest as the registry stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredManifest {
    pub digest: Sha256Hash,
    pub media_type: String,
    pub bytes: Bytes,
}

/// An upload opened before its bytes are ready (a registry's upload session, by its
/// `Location`), so the round trip that opens it overlaps other work. Empty for backends
/// that have no sessions; used once.
#[derive(Debug, Default)]
pub struct UploadSlot(Option<String>);

impl UploadSlot {
    pub fn new(location: String) -> Self {
        Self(Some(location))
    }

    /// The session's location, if the backend opened one.
    pub fn into_location(self) -> Option<String> {
        self.0
    }
}

/// The registry operations oranc needs, object-safe so the backend can be chosen at run time.
///
/// No method has a default body. A wrapper (metrics, a manifest cache) that left one out
/// would silently replace the backend's own version with the default behind it, as two
/// once did for upload sessions; with every method required, a new one is a compile error
/// in every implementation until each says what it does. Backends without a feature say
/// so in one line (an empty [`UploadSlot`], `Ok(None)` from `reclaim_space`).
///
/// Absence is an `Ok(None)` where the verb asks "is it there?" and [`Error::NotFound`]
/// where the caller needs the thing; [`Error::Denied`] and [`Error::Unavailable`] are never
/// turned into absence.
#[async_trait]
pub trait Registry: Send + Sync + fmt::Debug {
    /// A short name for logs and metrics (the registry host, or `oci-layout`); never
    /// carries credentials.
    fn name(&self) -> &str;

    /// Turns a repository name as a user typed it into this registry's form (ghcr.io
    /// lower-cases, Docker Hub adds `library/` to one-segment names).
    fn repository(&self, name: &str) -> Result<RepositoryName>;

    /// Checks that the registry answers (`GET /v2/` or its equivalent).
    async fn ping(&self) -> Result<()>;

    /// Whether the registry checks the credentials it is sent: it refuses an anonymous
    /// `GET /v2/` (401). A local layout and a registry without auth check none, so
    /// credentials a client forwards through the server prove nothing there.
    async fn checks_credentials(&self) -> Result<bool>;

    /// The size of the blob, or `None` when the repository does not have it.
    async fn head_blob(&self, repo: &RepositoryName, digest: &Sha256Hash) -> Result<Option<u64>>;

    /// The blob's bytes (or part of them); a redirect to other storage is followed (without
    /// our credentials).
    async fn get_blob(
        &self,
        repo: &RepositoryName,
        digest: &Sha256Hash,
        range: Option<ByteRange>,
    ) -> Result<BlobBody>;

    /// Like [`Self::get_blob`], but where the registry hands the blob to other storage (a
    /// redirect to its CDN or a presigned object-store URL), that redirect is returned for
    /// the client to follow instead of the bytes. Backends without redirects stream.
    async fn get_blob_or_redirect(
        &self,
        repo: &RepositoryName,
        digest: &Sha256Hash,
        range: Option<ByteRange>,
    ) -> Result<BlobBody>;

    /// Uploads everything `body` yields as one blob, hashing while it streams.
    async fn put_blob(
        &self,
        repo: &RepositoryName,
        body: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<BlobInfo>;

    /// Opens an upload ahead of its bytes, for [`Self::put_blob_via`]. Backends without
    /// upload sessions hand back an empty slot.
    async fn open_upload(&self, repo: &RepositoryName) -> Result<UploadSlot>;

    /// Gives up a slot from [`Self::open_upload`] that will not be used (the work it was
    /// opened for failed), so the registry need not keep its session until its purge (a
    /// week, for distribution). Best effort: a failure is only logged.
    async fn cancel_upload(&self, repo: &RepositoryName, slot: UploadSlot);

    /// [`Self::put_blob`] into a slot from [`Self::open_upload`], saving the round trip that
    /// would open it.
    async fn put_blob_via(
        &self,
        repo: &RepositoryName,
        slot: UploadSlot,
        body: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<BlobInfo>;

    /// Uploads a small blob held in memory (configs, narinfo); backends may skip the upload
    /// when the registry already has it.
    async fn put_blob_bytes(&self, repo: &RepositoryName, bytes: Bytes) -> Result<BlobInfo>;

    /// The manifest a tag points at, or `None` when the tag does not exist.
    async fn get_manifest(
        &self,
        repo: &RepositoryName,
        tag: &Tag,
    ) -> Result<Option<StoredManifest>>;

    /// Whether a tag exists, without fetching its manifest: a HEAD where the registry has
    /// one (cheaper, and not counted against pull quotas such as Docker Hub's).
    async fn has_manifest(&self, repo: &RepositoryName, tag: &Tag) -> Result<bool>;

    /// Stores a manifest under a tag; every blob it names must already be uploaded.
    async fn put_manifest(
        &self,
        repo: &RepositoryName,
        tag: &Tag,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<Sha256Hash>;

    /// Every tag of the repository (all pages); empty when the repository does not exist.
    async fn list_tags(&self, repo: &RepositoryName) -> Result<Vec<Tag>>;

    /// Whether the repository holds any tag (one page of one tag where the registry pages):
    /// tells a repository that exists from a name nothing was pushed to.
    async fn has_tags(&self, repo: &RepositoryName) -> Result<bool>;

    /// Deletes a manifest by digest, where the registry allows it.
    async fn delete_manifest(&self, repo: &RepositoryName, digest: &Sha256Hash) -> Result<()>;

    /// How often the registry asked to slow down, and for how long requests waited.
    fn backpressure(&self) -> Backpressure;

    /// Frees the space of blobs no manifest names any more and that were written more
    /// than `older_than` ago (an upload in progress has blobs not tagged yet). `None`
    /// where the registry does that itself (distribution's `garbage-collect`, ghcr.io).
    async fn reclaim_space(
        &self,
        repo: &RepositoryName,
        older_than: std::time::Duration,
    ) -> Result<Option<Reclaimed>>;
}

/// How much a registry pushed back (429) since the client was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backpressure {
    /// Answers asking to slow down.
    pub slowdowns: u64,
    /// Wall time every request to it was held back.
    pub paused: std::time::Duration,
}

/// What [`Registry::reclaim_space`] freed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reclaimed {
    pub blobs: usize,
    pub bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names_follow_the_distribution_grammar() {
        for ok in [
            "fixture/cache",
            "a",
            "owner/my-cache",
            "a__b/c.d",
            "x/y/z",
            "a--b",
        ] {
            assert!(ok.parse::<RepositoryName>().is_ok(), "{ok}");
        }
        for (bad, needle) in [
            ("Owner/cache", "must start and end"),
            ("a//b", "empty path component"),
            ("a/", "empty path component"),
            ("a..b", "'.'"),
            ("a___b", "'_'"),
            ("a/b c", "' '"),
            ("-a", "must start"),
        ] {
            let err = bad.parse::<RepositoryName>().unwrap_err().to_string();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }
}
