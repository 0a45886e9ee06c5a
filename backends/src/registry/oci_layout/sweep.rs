//! Freeing the space of the local layout after gc: a deleted manifest leaves its blobs
//! (and its own blob) behind, as on any registry; a registry has its own garbage collector,
//! the layout has this. Under the index lock it reads which blobs the tagged manifests
//! name and removes the others, except those written within `older_than` (a push may have
//! uploaded blobs it has not tagged yet).

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, SystemTime};

use oci_spec::image::ImageManifest;
use oranc_core::registry::Reclaimed;
use oranc_core::{Error, Result};

use super::{descriptor_digest, io, lock_index, parse_index, INDEX_FILE};

pub fn sweep_blocking(dir: &Path, older_than: Duration) -> Result<Reclaimed> {
    let blobs = dir.join("blobs/sha256");
    if !blobs.is_dir() {
        return Ok(Reclaimed::default());
    }
    let _lock = lock_index(dir)?;
    let index_path = dir.join(INDEX_FILE);
    let index = match std::fs::read(&index_path) {
        Ok(bytes) => parse_index(&index_path, &bytes)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Reclaimed::default()),
        Err(e) => return Err(io(format!("reading {}", index_path.display()))(e)),
    };
    let mut named: HashSet<String> = HashSet::new();
    for descriptor in index.manifests() {
        let digest = descriptor_digest(descriptor)?.to_hex();
        let manifest_path = blobs.join(&digest);
        named.insert(digest);
        let bytes = std::fs::read(&manifest_path)
            .map_err(io(format!("reading {}", manifest_path.display())))?;
        // A manifest that cannot be read names blobs we cannot know: sweep nothing.
        let manifest: ImageManifest =
            serde_json::from_slice(&bytes).map_err(|e| Error::Protocol {
                what: format!("manifest {}", manifest_path.display()),
                reason: e.to_string(),
            })?;
        for blob in std::iter::once(manifest.config()).chain(manifest.layers()) {
            named.insert(descriptor_digest(blob)?.to_hex());
        }
    }
    let cutoff = SystemTime::now()
        .checked_sub(older_than)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut reclaimed = Reclaimed::default();
    let entries = std::fs::read_dir(&blobs).map_err(io(format!("listing {}", blobs.display())))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        // Only finished blobs (64 hex digits); uploads in progress have other names.
        let is_blob = name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit());
        if !is_blob || named.contains(&name) {
            continue;
        }
        let Ok(metadata) = entry.metadata() else {
            continue;
        };
        if metadata.modified().map_or(true, |at| at > cutoff) {
            continue;
        }
        std::fs::remove_file(entry.path())
            .map_err(io(format!("removing {}", entry.path().display())))?;
        reclaimed.blobs += 1;
        reclaimed.bytes += metadata.len();
    }
    Ok(reclaimed)
}
