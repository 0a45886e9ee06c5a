//! `debuginfo/<build-id>.debug` entries: which NAR holds the separate debug file of an ELF
//! build id. Nix writes them with `nix copy --to …?index-debug-info=true` for every
//! `lib/debug/.build-id/xx/<rest>.debug` in a path (a `-debug` output; Hydra's indexer
//! names them without `.debug`), and debuginfod servers read them from the cache to find
//! debug symbols.
//!
//! The entry is JSON: `{"archive": "../nar/<file>", "member": "lib/debug/.build-id/…"}`,
//! the archive relative to the `debuginfo/` directory.

use serde::{Deserialize, Serialize};

use crate::cache_key::{CacheKey, KeyKind};
use crate::error::{Error, Result};

/// Where the debug files of a path live inside its NAR.
const BUILD_ID_DIR: &str = "lib/debug/.build-id/";

/// Nix's entries are about 150 bytes; nothing honest comes near this.
pub const MAX_ENTRY_BYTES: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebugInfoEntry {
    pub archive: String,
    pub member: String,
}

impl DebugInfoEntry {
    /// The entry for `member` of the NAR stored as `nar`.
    pub fn new(nar: &CacheKey, member: String) -> Self {
        Self {
            archive: format!("../{nar}"),
            member,
        }
    }

    /// Parses and checks an entry: JSON of the shape above, naming a NAR key and a debug
    /// file under `lib/debug/.build-id/`.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidDebugInfo { reason };
        if bytes.len() > MAX_ENTRY_BYTES {
            return Err(invalid(format!("larger than {MAX_ENTRY_BYTES} bytes")));
        }
        // serde would take the array form `["…", "…"]` for the struct too; Nix writes an object.
        if bytes.trim_ascii_start().first() != Some(&b'{') {
            return Err(invalid("not a JSON object".into()));
        }
        let entry: Self = serde_json::from_slice(bytes)
            .map_err(|e| invalid(format!("not {{\"archive\", \"member\"}} JSON: {e}")))?;
        entry.nar_key()?;
        let plain = |c: char| c.is_ascii_alphanumeric() || "._+-/".contains(c);
        let member_ok = entry.member.chars().all(plain)
            && entry
                .member
                .strip_prefix(BUILD_ID_DIR)
                .is_some_and(|rest| !rest.split('/').any(|part| part.is_empty() || part == ".."));
        if !member_ok {
            return Err(invalid(format!(
                "its member {:?} is not a file under {BUILD_ID_DIR}",
                entry.member
            )));
        }
        Ok(entry)
    }

    /// Whether the entry is about `build_id`: its member is exactly the debug file Nix
    /// indexes for that build id (`lib/debug/.build-id/xx/<rest>.debug`, lowercase, no
    /// `.` segments), so an entry stored under one build id never points at another's.
    pub fn is_for(&self, build_id: &str) -> bool {
        Self::build_id_of(&self.member).is_some_and(|member| member == build_id)
    }

    /// The key of the NAR the entry names.
    pub fn nar_key(&self) -> Result<CacheKey> {
        self.archive
            .strip_prefix("../")
            .and_then(|key| key.parse::<CacheKey>().ok())
            .filter(|key| key.kind() == KeyKind::Nar)
            .ok_or_else(|| Error::InvalidDebugInfo {
                reason: format!("its archive {:?} is not ../nar/<file>", self.archive),
            })
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_else(|_| unreachable!("two strings serialise"))
    }

    /// The build id of a file in a NAR (its path from the NAR's root) that Nix indexes:
    /// `lib/debug/.build-id/<2 hex>/<38 hex>.debug`, the 40 hex digits of GNU ld's
    /// default build id.
    pub fn build_id_of(member: &str) -> Option<String> {
        let rest = member.strip_prefix(BUILD_ID_DIR)?;
        let (dir, file) = rest.split_once('/')?;
        let file = file.strip_suffix(".debug")?;
        let hex = |s: &str, len: usize| {
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        (hex(dir, 2) && hex(file, 38)).then(|| format!("{dir}{file}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMBER: &str = "lib/debug/.build-id/0f/1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c.debug";

    #[test]
    fn reads_what_nix_writes_and_writes_the_same() {
        let nix = br#"{"archive":"../nar/1n7b.nar.xz","member":"lib/debug/.build-id/0f/1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c.debug"}"#;
        let entry = DebugInfoEntry::parse(nix).unwrap();
        assert_eq!(entry.nar_key().unwrap().as_str(), "nar/1n7b.nar.xz");
        assert_eq!(entry.to_json(), nix.to_vec());
        let ours = DebugInfoEntry::new(&"nar/1n7b.nar.xz".parse().unwrap(), MEMBER.into());
        assert_eq!(ours, entry);
    }

    #[test]
    fn refuses_entries_that_name_other_things() {
        for bad in [
            r#"{"archive":"../1n7b.narinfo","member":"lib/debug/.build-id/0f/x.debug"}"#,
            r#"{"archive":"nar/1n7b.nar","member":"lib/debug/.build-id/0f/x.debug"}"#,
            r#"{"archive":"../nar/1n7b.nar","member":"etc/passwd"}"#,
            r#"{"archive":"../nar/1n7b.nar","member":"lib/debug/.build-id/../../x"}"#,
            r#"{"archive":"../nar/1n7b.nar"}"#,
            r#"["../nar/1n7b.nar","lib/debug/.build-id/0f/x.debug"]"#,
            r#"{"archive":"../nar/1n7b.nar","member":"lib/debug/.build-id/0f/x.debug","html":"<script>"}"#,
            r#"{"archive":"../nar/1n7b.nar","member":"lib/debug/.build-id/0f/a\\b.debug"}"#,
            r#"{"archive":"../nar/1n7b.nar","member":"lib/debug/.build-id/0f/a\u0000.debug"}"#,
            "<html>",
        ] {
            assert!(DebugInfoEntry::parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn finds_the_build_ids_nix_indexes() {
        assert_eq!(
            DebugInfoEntry::build_id_of(MEMBER).as_deref(),
            Some("0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c")
        );
        for other in [
            "lib/debug/.build-id/0f/1e2d.debug",
            "lib/debug/.build-id/0f/1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c",
            "lib/debug/foo.debug",
            "bin/hello",
        ] {
            assert_eq!(DebugInfoEntry::build_id_of(other), None, "{other}");
        }
    }
}
