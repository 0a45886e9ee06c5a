//! `nix-cache-info`, the first file Nix fetches from a cache: which store directory the cache
//! serves, whether Nix may query it in bulk, and its priority against other substituters.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::store_path::StoreDir;

pub const CONTENT_TYPE: &str = "text/x-nix-cache-info";
/// The priority the original oranc and `oranc push initialize` use unless told otherwise.
pub const DEFAULT_PRIORITY: u32 = 41;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NixCacheInfo {
    pub store_dir: StoreDir,
    pub want_mass_query: bool,
    pub priority: Option<u32>,
}

impl Default for NixCacheInfo {
    fn default() -> Self {
        Self {
            store_dir: StoreDir::default(),
            want_mass_query: true,
            priority: Some(DEFAULT_PRIORITY),
        }
    }
}

impl FromStr for NixCacheInfo {
    type Err = Error;

    /// Unknown fields are ignored, as Nix ignores them.
    fn from_str(text: &str) -> Result<Self> {
        let mut store_dir = None;
        let mut want_mass_query = false;
        let mut priority = None;
        for field in fields(text) {
            let Field { line, key, value } = field?;
            let invalid = |reason: String| Error::InvalidCacheInfo { line, reason };
            match key {
                "StoreDir" => {
                    store_dir = Some(StoreDir::new(value).map_err(|e| invalid(e.to_string()))?)
                }
                "WantMassQuery" => want_mass_query = value == "1",
                "Priority" => {
                    priority = Some(value.parse().map_err(|_| {
                        invalid(format!("Priority {value:?} is not a whole number"))
                    })?)
                }
                _ => {}
            }
        }
        Ok(Self {
            store_dir: store_dir.ok_or(Error::InvalidCacheInfo {
                line: text.lines().count(),
                reason: "required field StoreDir is missing".into(),
            })?,
            want_mass_query,
            priority,
        })
    }
}

/// One `Field: value` line (value trimmed), with its line number.
struct Field<'a> {
    line: usize,
    key: &'a str,
    value: &'a str,
}

/// The fields of `text`, blank lines skipped; an error for a line that is not one.
fn fields(text: &str) -> impl Iterator<Item = Result<Field<'_>>> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| {
            let (key, value) = line
                .split_once(':')
                .ok_or_else(|| Error::InvalidCacheInfo {
                    line: index + 1,
                    reason: format!("expected 'Field: value', found {line:?}"),
                })?;
            Ok(Field {
                line: index + 1,
                key,
                value: value.trim(),
            })
        })
}

impl NixCacheInfo {
    /// Parses an uploaded `nix-cache-info` as strictly as Nix reads one, so that what is
    /// stored can never lock a client out: exactly one `StoreDir` (Nix refuses the cache at
    /// the first one that is not its store, so a second line cannot undo a first), a
    /// `Priority` Nix's `stoi` takes (0 to 2^31-1; a larger one throws in every client),
    /// `WantMassQuery` 0 or 1, and no unknown or repeated field. Returns it with the text
    /// to store: each field it read, as `Field: value` in the order given (blank lines and
    /// stray spaces go), never the uploaded bytes as such. A file already in that form
    /// comes back byte for byte, as an S3 client that reads back what it wrote expects.
    pub fn parse_upload(text: &str) -> Result<(Self, String)> {
        let mut seen: Vec<&str> = Vec::new();
        for field in fields(text) {
            let Field { line, key, value } = field?;
            let invalid = |reason: String| Error::InvalidCacheInfo { line, reason };
            match key {
                "StoreDir" => {}
                "WantMassQuery" if value == "0" || value == "1" => {}
                "WantMassQuery" => {
                    return Err(invalid(format!(
                        "WantMassQuery {value:?} is neither 0 nor 1"
                    )))
                }
                "Priority" if value.parse::<i32>().is_ok_and(|p| p >= 0) => {}
                "Priority" => {
                    return Err(invalid(format!(
                        "Priority {value:?} is not a whole number from 0 to {}",
                        i32::MAX
                    )))
                }
                other => return Err(invalid(format!("unknown field {other:?}"))),
            }
            if seen.contains(&key) {
                return Err(invalid(format!("{key} is given twice")));
            }
            seen.push(key);
        }
        let info: Self = text.parse()?;
        let mut rendered = String::new();
        // Each value as parsed, not as sent: `StoreDir: /nix/store/` parses as `/nix/store`,
        // but stored as sent it is a store Nix 2.8 compares byte for byte, and refuses.
        for key in seen {
            match key {
                "StoreDir" => rendered.push_str(&format!("StoreDir: {}\n", info.store_dir)),
                "WantMassQuery" => rendered.push_str(&format!(
                    "WantMassQuery: {}\n",
                    u8::from(info.want_mass_query)
                )),
                _ => {
                    if let Some(priority) = info.priority {
                        rendered.push_str(&format!("Priority: {priority}\n"));
                    }
                }
            }
        }
        Ok((info, rendered))
    }
}

impl fmt::Display for NixCacheInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "StoreDir: {}", self.store_dir)?;
        writeln!(f, "WantMassQuery: {}", u8::from(self.want_mass_query))?;
        if let Some(priority) = self.priority {
            writeln!(f, "Priority: {priority}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_renders_what_the_original_oranc_wrote() {
        // Byte for byte the nix-cache-info blob in tests/fixtures/original-oranc.
        let expected = "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 41\n";
        assert_eq!(NixCacheInfo::default().to_string(), expected);
        assert_eq!(
            expected.parse::<NixCacheInfo>().unwrap(),
            NixCacheInfo::default()
        );
    }

    #[test]
    fn no_mass_query_and_no_priority_round_trip() {
        let info = NixCacheInfo {
            want_mass_query: false,
            priority: None,
            ..Default::default()
        };
        assert_eq!(info.to_string().parse::<NixCacheInfo>().unwrap(), info);
    }

    #[test]
    fn an_upload_is_read_as_strictly_as_nix_reads_it() {
        let good = "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n";
        let (info, rendered) = NixCacheInfo::parse_upload(good).unwrap();
        assert_eq!(info, good.parse::<NixCacheInfo>().unwrap());
        assert_eq!(
            rendered, good,
            "a file in canonical form comes back as it was"
        );
        let (_, rendered) = NixCacheInfo::parse_upload("\nStoreDir:  /nix/store \n\n").unwrap();
        assert_eq!(rendered, "StoreDir: /nix/store\n");
        // Found by the red team: a trailing slash parsed as /nix/store but was stored as sent.
        let (info, rendered) =
            NixCacheInfo::parse_upload("StoreDir: /nix/store/\nPriority: +0005\n").unwrap();
        assert_eq!(info.store_dir, StoreDir::default());
        assert_eq!(rendered, "StoreDir: /nix/store\nPriority: 5\n");
        for (text, needle) in [
            (
                "StoreDir: /evil\nStoreDir: /nix/store\n",
                "StoreDir is given twice",
            ),
            ("StoreDir: /nix/store\nPriority: 4294967295\n", "Priority"),
            ("StoreDir: /nix/store\nPriority: -1\n", "Priority"),
            (
                "StoreDir: /nix/store\nWantMassQuery: yes\n",
                "WantMassQuery",
            ),
            ("StoreDir: /nix/store\nX-Junk: 1\n", "unknown field"),
            ("WantMassQuery: 1\n", "StoreDir is missing"),
        ] {
            let err = NixCacheInfo::parse_upload(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn bad_lines_name_their_line() {
        let err = "StoreDir: /nix/store\nPriority: high\n"
            .parse::<NixCacheInfo>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2") && err.contains("high"), "{err}");
        let err = "WantMassQuery: 1\n"
            .parse::<NixCacheInfo>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("StoreDir is missing"), "{err}");
    }
}
