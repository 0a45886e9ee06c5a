//! Store paths (`/nix/store/<hash>-<name>`) and the store directory they live in.
//! Every path that reaches a narinfo, a cache key or a registry tag is checked here first,
//! so a malformed path is refused before it can name anything.

use std::fmt;

use crate::error::{Error, Result};
use crate::hash::is_nix32_char;

/// Length of a store path's hash part in nix32 characters.
pub const HASH_PART_LEN: usize = 32;
/// Longest name Nix accepts after the hash part.
pub const MAX_NAME_LEN: usize = 211;

/// The directory store paths live in, `/nix/store` unless a store was set up elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StoreDir(String);

impl StoreDir {
    pub fn new(dir: &str) -> Result<Self> {
        let trimmed = dir.trim_end_matches('/');
        if !trimmed.starts_with('/') || trimmed.is_empty() {
            return Err(Error::InvalidStorePath {
                path: dir.to_owned(),
                reason: "the store directory must be an absolute path".into(),
            });
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses an absolute path that names a store path exactly (no trailing components).
    pub fn parse_path(&self, absolute: &str) -> Result<StorePath> {
        let base = absolute
            .strip_prefix(self.0.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
            .ok_or_else(|| Error::InvalidStorePath {
                path: absolute.to_owned(),
                reason: format!("not inside the store directory {}", self.0),
            })?;
        StorePath::from_base_name(base).map_err(|e| match e {
            Error::InvalidStorePath { reason, .. } => Error::InvalidStorePath {
                path: absolute.to_owned(),
                reason,
            },
            other => other,
        })
    }

    /// Renders `path` as an absolute path in this store.
    pub fn display(&self, path: &StorePath) -> String {
        format!("{}/{}", self.0, path)
    }
}

impl Default for StoreDir {
    fn default() -> Self {
        Self("/nix/store".to_owned())
    }
}

impl fmt::Display for StoreDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A store path without its store directory: `<32 nix32 chars>-<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorePath(String);

impl StorePath {
    /// Parses the base name of a store path, e.g. `5kk4mwqi310s9ssry90al6mxrb47vdiw-app`.
    pub fn from_base_name(base: &str) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidStorePath {
            path: base.to_owned(),
            reason,
        };
        if base.len() < HASH_PART_LEN + 2 {
            return Err(invalid(format!(
                "too short: expected {HASH_PART_LEN} nix32 characters, '-' and a name"
            )));
        }
        // Not `split_at`: untrusted input may have a multi-byte character across the cut.
        let (hash, rest) = base
            .split_at_checked(HASH_PART_LEN)
            .ok_or_else(|| invalid("the hash part is not nix32".into()))?;
        validate_hash_part(hash).map_err(|e| invalid(e.to_string()))?;
        let name = rest
            .strip_prefix('-')
            .ok_or_else(|| invalid("expected '-' after the hash part".into()))?;
        validate_name(name).map_err(invalid)?;
        Ok(Self(base.to_owned()))
    }

    pub fn hash_part(&self) -> &str {
        &self.0[..HASH_PART_LEN]
    }

    pub fn name(&self) -> &str {
        &self.0[HASH_PART_LEN + 1..]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks that `hash` is a store path hash part: 32 nix32 characters.
pub fn validate_hash_part(hash: &str) -> Result<()> {
    let invalid = |reason: String| Error::InvalidStorePath {
        path: hash.to_owned(),
        reason,
    };
    if hash.len() != HASH_PART_LEN {
        return Err(invalid(format!(
            "hash part has {} characters, expected {HASH_PART_LEN}",
            hash.len()
        )));
    }
    if let Some(bad) = hash.chars().find(|c| !is_nix32_char(*c)) {
        return Err(invalid(format!(
            "hash part has {bad:?}, not a nix32 character"
        )));
    }
    Ok(())
}

fn validate_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err("the name is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("the name is longer than {MAX_NAME_LEN} characters"));
    }
    if name.starts_with('.') {
        return Err("the name starts with '.'".into());
    }
    if let Some(bad) = name.chars().find(|c| !is_name_char(*c)) {
        return Err(format!(
            "the name has {bad:?}, allowed are A-Z a-z 0-9 + - . _ ? ="
        ));
    }
    Ok(())
}

/// A character a store path name (and so a derivation output's name) may hold.
pub(crate) fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.' | '_' | '?' | '=')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_absolute_store_path_into_hash_and_name() {
        let path = StoreDir::default()
            .parse_path("/nix/store/5kk4mwqi310s9ssry90al6mxrb47vdiw-app-1.0")
            .unwrap();
        assert_eq!(path.hash_part(), "5kk4mwqi310s9ssry90al6mxrb47vdiw");
        assert_eq!(path.name(), "app-1.0");
        assert_eq!(
            StoreDir::default().display(&path),
            "/nix/store/5kk4mwqi310s9ssry90al6mxrb47vdiw-app-1.0"
        );
    }

    #[test]
    fn custom_store_dir_with_trailing_slash_is_normalised() {
        let dir = StoreDir::new("/tmp/store/").unwrap();
        let path = dir
            .parse_path("/tmp/store/5kk4mwqi310s9ssry90al6mxrb47vdiw-x")
            .unwrap();
        assert_eq!(path.name(), "x");
    }

    #[test]
    fn a_multi_byte_character_across_the_hash_boundary_is_an_error_not_a_panic() {
        // Found by the url_router fuzz target.
        let base = "5555555555555555555555555555UZ9\u{31c}/nar/UUUU";
        assert!(StorePath::from_base_name(base).is_err());
        assert!("log/5555555555555555555555555555UZ9\u{31c}-x"
            .parse::<crate::CacheKey>()
            .is_err());
    }

    #[test]
    fn rejects_malformed_store_paths_with_reasons() {
        let dir = StoreDir::default();
        for (input, needle) in [
            ("/nix/store/5kk4mwqi310s9ssry90al6mxrb47vdiw", "too short"),
            (
                "/nix/store/5kk4mwqi310s9ssry90al6mxrb47vdie-app",
                "not a nix32",
            ),
            (
                "/nix/store/5kk4mwqi310s9ssry90al6mxrb47vdiwxapp",
                "expected '-'",
            ),
            (
                "/nix/store/5kk4mwqi310s9ssry90al6mxrb47vdiw-.app",
                "starts with '.'",
            ),
            (
                "/nix/store/5kk4mwqi310s9ssry90al6mxrb47vdiw-a/b",
                "the name has '/'",
            ),
            ("/usr/5kk4mwqi310s9ssry90al6mxrb47vdiw-app", "not inside"),
            (
                "/nix/store/5kk4mwqi310s9ssry90al6mxrb47vdiw-a b",
                "the name has ' '",
            ),
        ] {
            let err = dir.parse_path(input).unwrap_err().to_string();
            assert!(err.contains(needle), "{input}: {err}");
            assert!(err.contains(input), "error names the input: {err}");
        }
    }

    #[test]
    fn rejects_names_longer_than_nix_allows() {
        let long = format!("5kk4mwqi310s9ssry90al6mxrb47vdiw-{}", "a".repeat(212));
        assert!(StorePath::from_base_name(&long).is_err());
        let ok = format!("5kk4mwqi310s9ssry90al6mxrb47vdiw-{}", "a".repeat(211));
        assert!(StorePath::from_base_name(&ok).is_ok());
    }
}
