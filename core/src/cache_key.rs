//! Cache keys: the names of the files a Nix binary cache serves (`nix-cache-info`,
//! `<hash>.narinfo`, `nar/<file>`, `<hash>.ls`, `log/<drv>`, `realisations/<id>.doi`,
//! `build-trace-v2/<drv>/<output>.doi`, `debuginfo/<build-id>[.debug]`).
//!
//! Every key that comes from a URL or a narinfo is parsed here before it names a registry
//! tag, so odd encodings, empty segments and path traversal never reach a backend.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::store_path::{is_name_char, validate_hash_part, StorePath};

/// Longest file name accepted under `nar/` and `realisations/`, and longest output name:
/// what most file systems allow in a name, and Nix writes these as files in `file://`
/// caches. (A key whose tag would be too long is stored under a long-key tag; see
/// `tag.rs`.)
const MAX_FILE_NAME_LEN: usize = 255;
const BUILD_TRACE_PREFIX: &str = "build-trace-v2/";
const DEBUG_INFO_PREFIX: &str = "debuginfo/";
/// ELF build ids are 8 to 64 bytes by convention; GNU ld's default (SHA-1) is 20, which is
/// 40 hex digits, what Nix indexes.
const BUILD_ID_HEX_LEN: std::ops::RangeInclusive<usize> = 8..=64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    CacheInfo,
    NarInfo,
    Nar,
    Listing,
    Log,
    Realisation,
    /// `build-trace-v2/<drv base name>/<output>.doi` (Nix 2.35+): the successor of
    /// realisations, keyed by the derivation's store path; its body is the value
    /// (`{"outPath": …, "signatures": […]}`).
    BuildTrace,
    /// `debuginfo/<build-id>[.debug]`: which NAR holds the ELF debug file with that build id
    /// (JSON `{"archive": "../nar/…", "member": "lib/debug/.build-id/…"}`), written by
    /// `nix copy --to …?index-debug-info=true` and read by debuginfod servers.
    DebugInfo,
}

impl KeyKind {
    /// The Content-Type Nix expects for this kind of file.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::CacheInfo => crate::cache_info::CONTENT_TYPE,
            Self::NarInfo => crate::narinfo::CONTENT_TYPE,
            Self::Nar => "application/x-nix-nar",
            Self::Listing | Self::Realisation | Self::BuildTrace | Self::DebugInfo => {
                "application/json"
            }
            Self::Log => "text/plain; charset=utf-8",
        }
    }

    /// A short stable label, for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::CacheInfo => "nix-cache-info",
            Self::NarInfo => "narinfo",
            Self::Nar => "nar",
            Self::Listing => "ls",
            Self::Log => "log",
            Self::Realisation => "realisation",
            Self::BuildTrace => "build-trace",
            Self::DebugInfo => "debuginfo",
        }
    }
}

/// A validated cache key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    kind: KeyKind,
    key: String,
}

impl CacheKey {
    pub const CACHE_INFO: &'static str = "nix-cache-info";

    pub fn cache_info() -> Self {
        Self {
            kind: KeyKind::CacheInfo,
            key: Self::CACHE_INFO.to_owned(),
        }
    }

    pub fn narinfo(path: &StorePath) -> Self {
        Self {
            kind: KeyKind::NarInfo,
            key: format!("{}.narinfo", path.hash_part()),
        }
    }

    /// The build id a debuginfo key is for.
    pub fn build_id(&self) -> Option<&str> {
        (self.kind == KeyKind::DebugInfo).then(|| {
            self.key
                .trim_start_matches(DEBUG_INFO_PREFIX)
                .trim_end_matches(".debug")
        })
    }

    /// The debuginfo entry for the ELF build id `build_id` (lowercase hex), named as Nix
    /// names it (`debuginfo/<build id>.debug`).
    pub fn debug_info(build_id: &str) -> Result<Self> {
        format!("{DEBUG_INFO_PREFIX}{build_id}.debug").parse()
    }

    /// The derivation (store path base name) and output name a build-trace key is for.
    pub fn drv_output(&self) -> Option<(&str, &str)> {
        if self.kind != KeyKind::BuildTrace {
            return None;
        }
        self.key
            .strip_prefix(BUILD_TRACE_PREFIX)?
            .strip_suffix(".doi")?
            .split_once('/')
    }

    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    pub fn as_str(&self) -> &str {
        &self.key
    }

    pub fn content_type(&self) -> &'static str {
        self.kind.content_type()
    }
}

fn validate_file_name(name: &str, extra: &[char]) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err("the file name is empty".into());
    }
    if name.len() > MAX_FILE_NAME_LEN {
        return Err(format!(
            "the file name is longer than {MAX_FILE_NAME_LEN} characters"
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err("the file name must start with a letter or digit".into());
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._+-".contains(*c) || extra.contains(c)))
    {
        return Err(format!("the file name has {bad:?}"));
    }
    Ok(())
}

/// A derivation output's name as Nix allows it in a store path name: letters, digits and
/// `+-._?=`, not starting with a dot.
fn validate_output_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() || name.len() > MAX_FILE_NAME_LEN {
        return Err(format!(
            "an output name has 1 to {MAX_FILE_NAME_LEN} characters"
        ));
    }
    if name.starts_with('.') {
        return Err("an output name does not start with '.'".into());
    }
    if let Some(bad) = name.chars().find(|c| !is_name_char(*c)) {
        return Err(format!("the output name has {bad:?}"));
    }
    Ok(())
}

impl FromStr for CacheKey {
    type Err = Error;

    fn from_str(key: &str) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidCacheKey {
            key: key.to_owned(),
            reason,
        };
        let hash_file = |hash: &str| validate_hash_part(hash).map_err(|e| invalid(e.to_string()));
        let kind = if key == Self::CACHE_INFO {
            KeyKind::CacheInfo
        } else if let Some(hash) = key.strip_suffix(".narinfo") {
            hash_file(hash)?;
            KeyKind::NarInfo
        } else if let Some(hash) = key.strip_suffix(".ls") {
            hash_file(hash)?;
            KeyKind::Listing
        } else if let Some(file) = key.strip_prefix("nar/") {
            validate_file_name(file, &[]).map_err(invalid)?;
            KeyKind::Nar
        } else if let Some(drv) = key.strip_prefix("log/") {
            StorePath::from_base_name(drv).map_err(|e| invalid(e.to_string()))?;
            KeyKind::Log
        } else if let Some(name) = key.strip_prefix(DEBUG_INFO_PREFIX) {
            // Nix names them `<build id>.debug`, Hydra's indexer `<build id>`.
            let build_id = name.strip_suffix(".debug").unwrap_or(name);
            let hex = build_id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !hex || !BUILD_ID_HEX_LEN.contains(&build_id.len()) {
                return Err(invalid(
                    "a debuginfo key is debuginfo/<ELF build id: 8 to 64 lowercase hex digits>[.debug]"
                        .into(),
                ));
            }
            // Both spellings are one entry, stored as Nix names it: otherwise a second
            // writer could shadow Nix's entry under the other name.
            return Ok(Self {
                kind: KeyKind::DebugInfo,
                key: format!("{DEBUG_INFO_PREFIX}{build_id}.debug"),
            });
        } else if let Some(entry) = key.strip_prefix(BUILD_TRACE_PREFIX) {
            let (drv, output) = entry
                .strip_suffix(".doi")
                .and_then(|entry| entry.split_once('/'))
                .ok_or_else(|| {
                    invalid("a build trace is named build-trace-v2/<drv>/<output>.doi".into())
                })?;
            let drv_path = StorePath::from_base_name(drv).map_err(|e| invalid(e.to_string()))?;
            if !drv_path.name().ends_with(".drv") {
                return Err(invalid(format!("{drv} is not a derivation (.drv)")));
            }
            validate_output_name(output).map_err(invalid)?;
            KeyKind::BuildTrace
        } else if let Some(id) = key.strip_prefix("realisations/") {
            let stem = id
                .strip_suffix(".doi")
                .ok_or_else(|| invalid("a realisation key ends in .doi".into()))?;
            if !stem.contains('!') {
                return Err(invalid(
                    "a realisation is named <drv hash>!<output>.doi".into(),
                ));
            }
            validate_file_name(id, &[':', '!', '?', '=']).map_err(invalid)?;
            KeyKind::Realisation
        } else {
            return Err(invalid(
                "not a binary-cache file (nix-cache-info, <hash>.narinfo, <hash>.ls, nar/..., log/..., realisations/..., build-trace-v2/..., debuginfo/...)".into(),
            ));
        };
        Ok(Self {
            kind,
            key: key.to_owned(),
        })
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_every_binary_cache_file() {
        for (key, kind) in [
            ("nix-cache-info", KeyKind::CacheInfo),
            ("5kk4mwqi310s9ssry90al6mxrb47vdiw.narinfo", KeyKind::NarInfo),
            ("5kk4mwqi310s9ssry90al6mxrb47vdiw.ls", KeyKind::Listing),
            (
                "nar/1n7bp8gfz80mjraq5jq1qghh5dcsbb5gfi3rkp2b6v1pr8i7gbcf.nar.zst",
                KeyKind::Nar,
            ),
            ("log/v873jj33sxxhc8d6jf84lbn85p09wm3i-app.drv", KeyKind::Log),
            (
                "debuginfo/0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c.debug",
                KeyKind::DebugInfo,
            ),
            (
                "realisations/sha256:67890abcdef1234567890abcdef1234567890abcdef1234567890abcdef12345!libgcc.doi",
                KeyKind::Realisation,
            ),
            (
                "build-trace-v2/v873jj33sxxhc8d6jf84lbn85p09wm3i-app.drv/out.doi",
                KeyKind::BuildTrace,
            ),
        ] {
            let parsed: CacheKey = key.parse().unwrap();
            assert_eq!(parsed.kind(), kind, "{key}");
            assert_eq!(parsed.as_str(), key);
        }
        assert_eq!(
            CacheKey::from_str("nar/x.nar").unwrap().content_type(),
            "application/x-nix-nar"
        );
        let trace: CacheKey = "build-trace-v2/v873jj33sxxhc8d6jf84lbn85p09wm3i-app.drv/dev.doi"
            .parse()
            .unwrap();
        assert_eq!(
            trace.drv_output(),
            Some(("v873jj33sxxhc8d6jf84lbn85p09wm3i-app.drv", "dev"))
        );
        // Hydra's spelling of a debuginfo key is the same entry as Nix's.
        let hydra: CacheKey = "debuginfo/0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c"
            .parse()
            .unwrap();
        assert_eq!(
            hydra.as_str(),
            "debuginfo/0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c.debug"
        );
        assert_eq!(
            hydra.build_id(),
            Some("0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c")
        );
    }

    #[test]
    fn refuses_traversal_odd_names_and_unknown_files() {
        for (key, needle) in [
            ("nar/../secret", "must start with a letter"),
            ("nar/a/b", "has '/'"),
            ("nar/", "empty"),
            ("nar/a%2e", "has '%'"),
            ("debuginfo/../nar", "lowercase hex"),
            ("debuginfo/0F1E2D3C4B5A6978", "lowercase hex"),
            ("debuginfo/0f1e", "lowercase hex"),
            ("../nix-cache-info", "not a binary-cache file"),
            ("5kk4mwqi310s9ssry90al6mxrb47vdie.narinfo", "not a nix32"),
            ("short.narinfo", "hash part has 5"),
            ("realisations/x.doi", "<drv hash>!<output>"),
            (
                "build-trace-v2/v873jj33sxxhc8d6jf84lbn85p09wm3i-app.drv/out",
                "build-trace-v2/<drv>/<output>.doi",
            ),
            (
                "build-trace-v2/v873jj33sxxhc8d6jf84lbn85p09wm3i-app/out.doi",
                "not a derivation",
            ),
            ("build-trace-v2/../../x.drv/out.doi", "invalid store path"),
            (
                "build-trace-v2/v873jj33sxxhc8d6jf84lbn85p09wm3i-app.drv/a/b.doi",
                "has '/'",
            ),
            (
                "build-trace-v2/v873jj33sxxhc8d6jf84lbn85p09wm3i-app.drv/..doi",
                "does not start with '.'",
            ),
            ("log/../../etc/passwd", "invalid store path"),
            ("", "not a binary-cache file"),
        ] {
            let err = key.parse::<CacheKey>().unwrap_err().to_string();
            assert!(err.contains(needle), "{key:?}: {err}");
        }
    }
}
