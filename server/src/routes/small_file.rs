//! What a narinfo, `nix-cache-info`, debuginfo, realisation or build-trace body must be,
//! whether a client uploads it or the registry hands it back: one check for both directions.

use oranc_core::cache_key::KeyKind;
use oranc_core::{CacheKey, NarInfo, NixCacheInfo};

/// A small file that passed its check, with what was parsed for the caller to use.
#[derive(Debug)]
pub enum SmallFile {
    NarInfo(Box<NarInfo>),
    CacheInfo(NixCacheInfo),
    /// A realisation or build-trace entry: checked, its signatures are the caller's to
    /// check.
    Realisation,
    /// A debuginfo entry: checked, nothing more to use.
    Other,
}

/// Checks a small file's body, from a client or from the registry: UTF-8 and parsed as
/// its kind; a narinfo stored under its own path's key, a debuginfo entry about its own
/// build id, a realisation with its own id.
pub fn check_small_file(key: &CacheKey, bytes: &[u8]) -> Result<SmallFile, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| format!("{key} is not UTF-8"))?;
    match key.kind() {
        KeyKind::NarInfo => {
            let narinfo = NarInfo::parse(text).map_err(|e| e.to_string())?;
            if CacheKey::narinfo(&narinfo.store_path) != *key {
                return Err(format!("{key} holds the narinfo of {}", narinfo.store_path));
            }
            Ok(SmallFile::NarInfo(Box::new(narinfo)))
        }
        KeyKind::Realisation | KeyKind::BuildTrace => {
            check_realisation(key, bytes)?;
            Ok(SmallFile::Realisation)
        }
        KeyKind::DebugInfo => {
            let entry = oranc_core::DebugInfoEntry::parse(bytes).map_err(|e| e.to_string())?;
            if !key.build_id().is_some_and(|id| entry.is_for(id)) {
                return Err(format!(
                    "{key} names the debug file {}, of another build id",
                    entry.member
                ));
            }
            Ok(SmallFile::Other)
        }
        _ => text
            .parse::<NixCacheInfo>()
            .map(SmallFile::CacheInfo)
            .map_err(|e| e.to_string()),
    }
}

/// Checks a small file a client uploads: as [`check_small_file`], and a `nix-cache-info`
/// as strictly as Nix reads one ([`NixCacheInfo::parse_upload`]), with the text to store
/// in its place.
pub fn check_upload(key: &CacheKey, bytes: &[u8]) -> Result<(SmallFile, Option<String>), String> {
    if key.kind() != KeyKind::CacheInfo {
        return Ok((check_small_file(key, bytes)?, None));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| format!("{key} is not UTF-8"))?;
    let (info, rendered) = NixCacheInfo::parse_upload(text).map_err(|e| e.to_string())?;
    Ok((SmallFile::CacheInfo(info), Some(rendered)))
}

/// A realisation as Nix writes it: a JSON object whose `id` is the one its key names and
/// with an `outPath`; a build-trace entry: a JSON object whose `outPath` is a store path
/// (its key is the file's path). Signatures are checked where it is uploaded or mirrored.
fn check_realisation(key: &CacheKey, bytes: &[u8]) -> Result<(), String> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("{key} is not JSON: {e}"))?;
    if key.kind() == KeyKind::BuildTrace {
        let out_path = value["outPath"].as_str().unwrap_or_default();
        return oranc_core::StorePath::from_base_name(out_path)
            .map(|_| ())
            .map_err(|_| {
                format!(
                    "{key} is not a build-trace entry (a JSON object with an outPath store path)"
                )
            });
    }
    let id = key
        .as_str()
        .trim_start_matches("realisations/")
        .trim_end_matches(".doi");
    if value["id"].as_str() != Some(id) || !value["outPath"].is_string() {
        return Err(format!(
            "{key} is not a realisation of {id} (a JSON object with that id and an outPath)"
        ));
    }
    Ok(())
}
