//! Pushing one path in the safe order: NAR blob, check NarHash/NarSize, NAR tag, then the
//! narinfo. A crash at any point leaves either nothing visible or a NAR without narinfo,
//! which a rerun reuses; never a narinfo pointing at a missing NAR.

use std::collections::HashSet;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use oranc_core::cache_key::KeyKind;
use oranc_core::{BlobInfo, CacheKey, NarInfo, PathInfo, RegistryCache, Signature, StoreDir};

use super::nar;
use crate::cli::Compression;

/// For tests of the crash-safety guarantee: `ORANC_TEST_EXIT_AT=STAGE` exits (code 75) at
/// that point of the first path pushed, as a crash or a kill there would.
const EXIT_AT_ENV: &str = "ORANC_TEST_EXIT_AT";

/// The points a push may be interrupted at, in order.
#[derive(Debug, Clone, Copy)]
enum Stage {
    /// The NAR's blob is uploaded and checked, not yet tagged.
    NarBlob,
    /// The NAR is tagged (visible), its narinfo not yet uploaded.
    NarTag,
    /// The narinfo's blob is uploaded, not yet tagged.
    NarinfoBlob,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Self::NarBlob => "nar-blob",
            Self::NarTag => "nar-tag",
            Self::NarinfoBlob => "narinfo-blob",
        }
    }
}

fn exit_if_asked(stage: Stage, info: &PathInfo) {
    if std::env::var(EXIT_AT_ENV).is_ok_and(|wanted| wanted == stage.name()) {
        tracing::warn!(path = %info.path, "{EXIT_AT_ENV}: exiting at {}", stage.name());
        std::process::exit(75);
    }
}

#[derive(Debug, Clone)]
pub struct UploadSettings {
    pub store_dir: StoreDir,
    pub compression: Compression,
    pub zstd_level: i32,
}

/// Where the NAR of `info` is stored: named by NarHash, as the original oranc names it.
pub fn nar_key(info: &PathInfo, compression: Compression) -> anyhow::Result<CacheKey> {
    Ok(format!(
        "nar/{}.nar{}",
        info.nar_hash.to_nix32(),
        compression.extension()
    )
    .parse()?)
}

pub async fn push_path(
    cache: &RegistryCache,
    settings: &UploadSettings,
    existing: &HashSet<String>,
    info: &PathInfo,
    signatures: Vec<Signature>,
) -> anyhow::Result<()> {
    let nar_key = nar_key(info, settings.compression)?;
    let file = if existing.contains(nar_key.as_str()) {
        reuse_nar(cache, &nar_key).await?
    } else {
        upload_nar(cache, settings, info, &nar_key).await?
    };
    exit_if_asked(Stage::NarTag, info);
    let mut narinfo = NarInfo::for_path(&settings.store_dir, info, nar_key.to_string());
    narinfo.compression = Some(settings.compression.nix_name().to_owned());
    narinfo.file_hash = Some(file.digest);
    narinfo.file_size = Some(file.size);
    narinfo.signatures = signatures;
    let key = CacheKey::narinfo(&info.path);
    let blob = cache
        .upload_bytes(Bytes::from(narinfo.to_string()))
        .await
        .with_context(|| format!("uploading {key}"))?;
    exit_if_asked(Stage::NarinfoBlob, info);
    cache
        .tag_blob(&key, key.content_type(), &blob)
        .await
        .with_context(|| format!("storing {key}"))?;
    Ok(())
}

/// A NAR stored by an earlier run (or by the original oranc): its blob is the file.
async fn reuse_nar(cache: &RegistryCache, key: &CacheKey) -> anyhow::Result<BlobInfo> {
    let object = cache
        .get(key)
        .await?
        .with_context(|| format!("{key} was listed but is gone"))?;
    Ok(object.blob)
}

async fn upload_nar(
    cache: &RegistryCache,
    settings: &UploadSettings,
    info: &PathInfo,
    key: &CacheKey,
) -> anyhow::Result<BlobInfo> {
    let path = std::path::PathBuf::from(settings.store_dir.display(&info.path));
    let (mut reader, digest) = nar::stream(path, settings.compression, settings.zstd_level);
    let uploaded = cache.upload_blob(&mut reader).await;
    drop(reader);
    // The serialiser's error says more than the upload's "stream ended", so it goes first.
    let measured = digest
        .await
        .context("the NAR serialiser stopped")?
        .with_context(|| format!("serialising {}", info.path))?;
    let blob = uploaded.with_context(|| format!("uploading the NAR of {}", info.path))?;
    if measured.hash != info.nar_hash || measured.size != info.nar_size {
        bail!(
            "the NAR of {} does not match the store's record (NarHash {} size {}, measured {} size {}); the store may be corrupt (try `nix-store --verify-path`)",
            info.path,
            info.nar_hash,
            info.nar_size,
            measured.hash,
            measured.size
        );
    }
    debug_assert_eq!(key.kind(), KeyKind::Nar);
    exit_if_asked(Stage::NarBlob, info);
    cache
        .tag_blob(key, key.content_type(), &blob)
        .await
        .with_context(|| format!("storing {key}"))?;
    Ok(blob)
}
