//! Pushing one path in the safe order: NAR blob, check NarHash/NarSize, NAR tag, then the
//! narinfo's tag. A crash at any point leaves either nothing visible or a NAR without
//! narinfo, which a rerun reuses; never a narinfo pointing at a missing NAR. Work that does
//! not change that order (opening upload sessions, the narinfo's blob) runs alongside.

use std::collections::HashSet;

use anyhow::{bail, Context as _};
use futures::TryStreamExt as _;
use oranc_backends::BinaryCache;
use oranc_core::registry::BlobBody;
use oranc_core::{
    BlobInfo, CacheKey, DebugInfoEntry, NarInfo, PathInfo, RegistryCache, Signature, StoreDir,
    UploadSlot,
};

use super::listing::NarContents;
use super::nar;
use crate::cli::Compression;

/// For tests of the crash-safety guarantee: `ORANC_TEST_EXIT_AT=STAGE` exits (code 75) at
/// that point of the first path pushed, as a crash or a kill there would. Only in builds
/// with the `test-hooks` feature (the test harness's; never a release users run).
const EXIT_AT_ENV: &str = "ORANC_TEST_EXIT_AT";

/// The points a push may be interrupted at, in order.
#[derive(Debug, Clone, Copy)]
enum Stage {
    /// The NAR's blob is uploaded and checked, not yet tagged.
    NarBlob,
    /// The NAR is tagged (visible), its narinfo not yet tagged (its blob may be on the way).
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
    if cfg!(feature = "test-hooks")
        && std::env::var(EXIT_AT_ENV).is_ok_and(|wanted| wanted == stage.name())
    {
        tracing::warn!(path = %info.path, "{EXIT_AT_ENV}: exiting at {}", stage.name());
        std::process::exit(75);
    }
}

#[derive(Debug, Clone)]
pub struct UploadSettings {
    pub store_dir: StoreDir,
    pub compression: Compression,
    pub zstd_level: i32,
    pub write_nar_listing: bool,
    pub index_debug_info: bool,
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

/// Whether `keys` (what a cache listing found) hold the NAR of `info`, for [`push_path`]'s
/// `nar_is_stored`.
pub fn nar_is_listed(keys: &HashSet<String>, info: &PathInfo, compression: Compression) -> bool {
    nar_key(info, compression).is_ok_and(|key| keys.contains(key.as_str()))
}

/// Where a NAR copied from another binary cache is stored: named like a pushed one
/// ([`nar_key`]), in the compression it is stored in there (which must be one oranc writes
/// and can check: zstd, xz or none).
pub fn copied_nar_key(info: &PathInfo, narinfo: &NarInfo) -> anyhow::Result<CacheKey> {
    nar_key(info, copied_compression(narinfo)?)
}

/// The compression of a NAR file copied as it is, from its narinfo (Nix means bzip2 when
/// there is none).
fn copied_compression(narinfo: &NarInfo) -> anyhow::Result<Compression> {
    let name = narinfo.compression.as_deref().unwrap_or("bzip2");
    Compression::from_nix_name(name).with_context(|| {
        format!(
            "{}: its NAR is {name}-compressed; only zstd, xz and none can be copied (and checked against its NarHash)",
            narinfo.store_path
        )
    })
}

/// Pushes one path of the local store in about four round trips for a small one: both
/// upload sessions open at once; the NAR's bytes; the NAR's tag while the narinfo's bytes go
/// up (they are known once the NAR is); the narinfo's tag last, only after the NAR's tag
/// exists. With `nar_is_stored` the NAR already in the cache under [`nar_key`] is reused.
pub async fn push_path(
    cache: &RegistryCache,
    settings: &UploadSettings,
    nar_is_stored: bool,
    info: &PathInfo,
    signatures: Vec<Signature>,
) -> anyhow::Result<()> {
    let nar_key = nar_key(info, settings.compression)?;
    let stored = NarToStore {
        key: &nar_key,
        compression: settings.compression.nix_name(),
        is_stored: nar_is_stored,
    };
    store_path(cache, settings, info, signatures, stored, |slot| {
        upload_nar(cache, settings, info, slot)
    })
    .await
}

/// [`push_path`] for a path of another binary cache (`push --from`): its NAR file is copied
/// as that cache stores it (`narinfo`), and the NAR inside checked against the signed
/// NarHash before anything names it ([`copy_nar`]).
pub async fn copy_path(
    cache: &RegistryCache,
    settings: &UploadSettings,
    nar_is_stored: bool,
    info: &PathInfo,
    signatures: Vec<Signature>,
    from: &BinaryCache,
    narinfo: &NarInfo,
) -> anyhow::Result<()> {
    let compression = copied_compression(narinfo)?;
    let nar_key = nar_key(info, compression)?;
    let stored = NarToStore {
        key: &nar_key,
        compression: compression.nix_name(),
        is_stored: nar_is_stored,
    };
    store_path(
        cache,
        settings,
        info,
        signatures,
        stored,
        |slot| async move { Ok((copy_nar(cache, from, narinfo, slot).await?, None)) },
    )
    .await
}

/// The NAR a path is stored with.
struct NarToStore<'a> {
    key: &'a CacheKey,
    /// As a narinfo's `Compression` says it.
    compression: &'a str,
    /// Already in the cache under `key` (an earlier run's): reused, not uploaded.
    is_stored: bool,
}

/// The safe order for one path, whichever way its NAR's bytes are made (`upload`).
async fn store_path<F, Fut>(
    cache: &RegistryCache,
    settings: &UploadSettings,
    info: &PathInfo,
    signatures: Vec<Signature>,
    nar: NarToStore<'_>,
    upload: F,
) -> anyhow::Result<()>
where
    F: FnOnce(UploadSlot) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(BlobInfo, Option<NarContents>)>>,
{
    let (nar_key, nar_is_stored) = (nar.key, nar.is_stored);
    let key = CacheKey::narinfo(&info.path);
    let open_narinfo_upload = async {
        cache
            .open_upload()
            .await
            .with_context(|| format!("opening the upload of {key}"))
    };
    let open_nar_upload = || async {
        cache
            .open_upload()
            .await
            .with_context(|| format!("opening the upload of {nar_key}"))
    };
    let (reused, narinfo_slot, nar_slot) = if nar_is_stored {
        let (reused, narinfo_slot) = tokio::try_join!(
            reusable_nar(cache, &settings.store_dir, nar_key, info, nar.compression),
            open_narinfo_upload
        )?;
        (reused, narinfo_slot, None)
    } else {
        let (nar_slot, narinfo_slot) = tokio::try_join!(open_nar_upload(), open_narinfo_upload)?;
        (None, narinfo_slot, Some(nar_slot))
    };
    let uploads_nar = reused.is_none();
    let uploaded = async {
        match (reused, nar_slot) {
            (Some(file), _) => Ok((file, None)),
            (None, Some(slot)) => upload(slot).await,
            (None, None) => upload(open_nar_upload().await?).await,
        }
    }
    .await;
    let (file, contents) = match uploaded {
        Ok(uploaded) => uploaded,
        Err(error) => {
            // The narinfo's session was opened ahead for nothing.
            cache.cancel_upload(narinfo_slot).await;
            return Err(error);
        }
    };

    let mut narinfo = NarInfo::for_path(&settings.store_dir, info, nar_key.to_string());
    narinfo.compression = Some(nar.compression.to_owned());
    narinfo.file_hash = Some(file.digest);
    narinfo.file_size = Some(file.size);
    narinfo.signatures = signatures;
    let narinfo_bytes = narinfo.to_string().into_bytes();
    let tag_nar = async {
        if uploads_nar {
            cache
                .tag_blob(nar_key, nar_key.content_type(), &file)
                .await
                .with_context(|| format!("storing {nar_key}"))?;
        }
        if let Some(contents) = contents {
            store_contents(cache, settings, info, nar_key, contents).await?;
        }
        exit_if_asked(Stage::NarTag, info);
        anyhow::Ok(())
    };
    let upload_narinfo = async {
        cache
            .upload_blob_via(narinfo_slot, &mut narinfo_bytes.as_slice())
            .await
            .with_context(|| format!("uploading {key}"))
    };
    let ((), blob) = tokio::try_join!(tag_nar, upload_narinfo)?;
    exit_if_asked(Stage::NarinfoBlob, info);
    cache
        .tag_blob(&key, key.content_type(), &blob)
        .await
        .with_context(|| format!("storing {key}"))?;
    Ok(())
}

/// The NAR's `.ls` and `debuginfo/` entries, as asked for: after the NAR (they name it),
/// before the narinfo.
async fn store_contents(
    cache: &RegistryCache,
    settings: &UploadSettings,
    info: &PathInfo,
    nar_key: &CacheKey,
    contents: NarContents,
) -> anyhow::Result<()> {
    if settings.write_nar_listing {
        let listing_key: CacheKey = format!("{}.ls", info.path.hash_part()).parse()?;
        cache
            .put_bytes(
                &listing_key,
                listing_key.content_type(),
                contents.listing.into(),
            )
            .await
            .with_context(|| format!("storing {listing_key}"))?;
    }
    if settings.index_debug_info {
        let entries = contents
            .debug_files
            .into_iter()
            .map(|(build_id, member)| async move {
                let key = CacheKey::debug_info(&build_id)?;
                let entry = DebugInfoEntry::new(nar_key, member).to_json();
                cache
                    .put_bytes(&key, key.content_type(), entry.into())
                    .await
                    .with_context(|| format!("storing {key}"))?;
                anyhow::Ok(())
            });
        futures::future::try_join_all(entries).await?;
    }
    Ok(())
}

/// Copies the NAR file `narinfo` names from `from` into `slot`, unchanged. Only the
/// narinfo's signature is trusted, and it does not cover `URL`, `FileHash` or `FileSize`:
/// the file is decompressed on the side and its NAR checked against the signed `NarHash`
/// and `NarSize` (`nar_check`), and the copy stops once it outgrows `FileSize`. The blob is
/// not tagged yet; it is returned only when it passed.
async fn copy_nar(
    cache: &RegistryCache,
    from: &BinaryCache,
    narinfo: &NarInfo,
    slot: UploadSlot,
) -> anyhow::Result<BlobInfo> {
    let path = &narinfo.store_path;
    let body = from.open_file(&narinfo.url).await?.with_context(|| {
        format!(
            "{}/{} (the NAR of {path}) is missing",
            from.url(),
            narinfo.url
        )
    })?;
    let (body, verdict) =
        oranc_backends::nar_check::checked(body, narinfo).map_err(anyhow::Error::msg)?;
    // The upload's last chunk waits for the check: a file that fails it (junk at its very
    // end) is never committed as a blob, and its upload is cancelled.
    let verdict = verdict.shared();
    let body = oranc_backends::nar_check::last_chunk_after(body, verdict.wait());
    let mut reader = tokio_util::io::StreamReader::new(Box::pin(body));
    let uploaded = cache.upload_blob_via(slot, &mut reader).await;
    drop(reader);
    let uploaded = match uploaded {
        // The upload failed before it read a byte: its error is the whole story.
        Err(error) if !verdict.was_read() => {
            return Err(anyhow::Error::new(error)
                .context(format!("copying the NAR of {path} from {}", from.url())))
        }
        uploaded => uploaded,
    };
    // The check's reason says more than the upload's "stream ended", so it goes first.
    if let Err(reason) = verdict.wait().await {
        bail!(
            "the NAR file of {path} from {} is not the one its narinfo describes: {reason}; nothing was stored",
            from.url()
        );
    }
    let blob =
        uploaded.with_context(|| format!("copying the NAR of {path} from {}", from.url()))?;
    if narinfo.file_hash.is_some_and(|hash| hash != blob.digest) {
        bail!(
            "the NAR file of {path} from {} is not the one its narinfo describes: its sha256 is {}, not the FileHash; nothing was stored",
            from.url(),
            blob.digest
        );
    }
    Ok(blob)
}

/// A NAR this run finds stored under `key` (an earlier run's, the original oranc's, or
/// bytes anyone who could write the cache put there under a name that is predictable from
/// the public NarHash): its blob, once the NAR inside has been checked against the store's
/// record (NarHash, NarSize), as `push --from` checks a copied one. `None` when it is gone
/// or is not that NAR: then this run uploads its own and re-tags `key`, so a signed
/// narinfo never names junk. Reading it back costs a download, but only where a NAR was
/// stored without its narinfo (an interrupted run, or a planted file).
async fn reusable_nar(
    cache: &RegistryCache,
    store_dir: &StoreDir,
    key: &CacheKey,
    info: &PathInfo,
    compression: &str,
) -> anyhow::Result<Option<BlobInfo>> {
    let Some(object) = cache.get(key).await? else {
        return Ok(None);
    };
    let mut expected = NarInfo::for_path(store_dir, info, key.to_string());
    expected.compression = Some(compression.to_owned());
    expected.file_size = Some(object.blob.size);
    let checked = async {
        let BlobBody::Stream { body, .. } = cache.open(&object, None).await? else {
            anyhow::bail!("the registry redirected the read");
        };
        let (body, verdict) =
            oranc_backends::nar_check::checked(body, &expected).map_err(anyhow::Error::msg)?;
        let drained = body.try_for_each(|_| std::future::ready(Ok(()))).await;
        verdict.wait().await.map_err(anyhow::Error::msg)?;
        drained?;
        anyhow::Ok(())
    };
    match checked.await {
        Ok(()) => Ok(Some(object.blob)),
        Err(reason) => {
            tracing::warn!(path = %info.path, key = %key, "the stored NAR is not this path's ({reason:#}); uploading it again");
            Ok(None)
        }
    }
}

/// Streams the NAR of `info` into `slot` and checks it against the store's record. The blob
/// is not tagged yet: nothing is visible. Returns it, and its contents when asked for.
async fn upload_nar(
    cache: &RegistryCache,
    settings: &UploadSettings,
    info: &PathInfo,
    slot: UploadSlot,
) -> anyhow::Result<(BlobInfo, Option<NarContents>)> {
    let path = std::path::PathBuf::from(settings.store_dir.display(&info.path));
    let (mut reader, digest) = nar::stream(
        path,
        settings.compression,
        settings.zstd_level,
        settings.write_nar_listing || settings.index_debug_info,
    );
    let uploaded = cache.upload_blob_via(slot, &mut reader).await;
    drop(reader);
    let serialised = digest.await.context("the NAR serialiser stopped")?;
    // The serialiser's error says more than the upload's "stream ended", so it goes first,
    // unless it only stopped because the upload did (then the upload's error is the cause).
    let upload_gave_up = matches!(
        &serialised,
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe
    );
    if upload_gave_up {
        if let Err(error) = uploaded {
            return Err(anyhow::Error::from(error))
                .with_context(|| format!("uploading the NAR of {}", info.path));
        }
    }
    let measured = serialised.with_context(|| format!("serialising {}", info.path))?;
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
    exit_if_asked(Stage::NarBlob, info);
    Ok((blob, measured.contents))
}
