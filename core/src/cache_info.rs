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
        for (index, line) in text.lines().enumerate() {
            let invalid = |reason: String| Error::InvalidCacheInfo {
                line: index + 1,
                reason,
            };
            if line.trim().is_empty() {
                continue;
            }
            let (key, value) = line
                .split_once(':')
                .ok_or_else(|| invalid(format!("expected 'Field: value', found {line:?}")))?;
            let value = value.trim();
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
