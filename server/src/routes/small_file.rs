//! What a narinfo, `nix-cache-info` or debuginfo body must be, whether a client uploads it
//! or the registry hands it back: one check for both directions.

use oranc_core::cache_key::KeyKind;
use oranc_core::{CacheKey, NarInfo, NixCacheInfo};

/// Checks a narinfo, nix-cache-info or debuginfo body, from a client or from the registry:
/// UTF-8, parsed, and a narinfo stored under its own path's key. Returns the narinfo, if it
/// is one.
pub fn check_small_file(key: &CacheKey, bytes: &[u8]) -> Result<Option<NarInfo>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| format!("{key} is not UTF-8"))?;
    match key.kind() {
        KeyKind::NarInfo => {}
        KeyKind::DebugInfo => {
            let entry = oranc_core::DebugInfoEntry::parse(bytes).map_err(|e| e.to_string())?;
            if !key.build_id().is_some_and(|id| entry.is_for(id)) {
                return Err(format!(
                    "{key} names the debug file {}, of another build id",
                    entry.member
                ));
            }
            return Ok(None);
        }
        _ => {
            text.parse::<NixCacheInfo>().map_err(|e| e.to_string())?;
            return Ok(None);
        }
    }
    let narinfo = NarInfo::parse(text).map_err(|e| e.to_string())?;
    if CacheKey::narinfo(&narinfo.store_path) != *key {
        return Err(format!("{key} holds the narinfo of {}", narinfo.store_path));
    }
    Ok(Some(narinfo))
}
