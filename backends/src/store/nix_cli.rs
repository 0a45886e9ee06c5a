//! `nix path-info --json --sigs`: the source for users without access to the Nix DB, or
//! whose paths live in another store (`--store URL`). Slower (a process per batch), but it
//! asks Nix itself.

use std::collections::HashMap;

use async_trait::async_trait;
use oranc_core::{Error, PathInfo, Result, StoreDir, StorePath};
use serde::Deserialize;

#[derive(Debug, Clone)]
pub struct NixCliSource {
    store_dir: StoreDir,
    /// `--store` for nix, when not the default store.
    store: Option<String>,
    nix: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    path: Option<String>,
    nar_hash: Option<String>,
    nar_size: Option<u64>,
    #[serde(default)]
    references: Vec<String>,
    deriver: Option<String>,
    #[serde(default)]
    signatures: Vec<String>,
    ca: Option<String>,
    /// Nix marks a path it does not have with `valid: false`.
    valid: Option<bool>,
}

/// Nix 2.8 prints a list of entries with a `path`; newer Nix prints an object keyed by path.
#[derive(Deserialize)]
#[serde(untagged)]
enum Output {
    List(Vec<Entry>),
    Map(HashMap<String, Option<Entry>>),
}

impl NixCliSource {
    pub fn new(store_dir: StoreDir, store: Option<String>) -> Self {
        Self {
            store_dir,
            store,
            nix: "nix".to_owned(),
        }
    }

    fn entry_to_info(&self, path: &str, entry: Entry) -> Result<PathInfo> {
        let invalid = |reason: String| Error::Protocol {
            what: format!("nix path-info for {path}"),
            reason,
        };
        let parse = |p: &str| {
            self.store_dir
                .parse_path(p)
                .map_err(|e| invalid(e.to_string()))
        };
        let mut references = entry
            .references
            .iter()
            .map(|r| parse(r))
            .collect::<Result<Vec<_>>>()?;
        references.sort();
        Ok(PathInfo {
            path: parse(path)?,
            nar_hash: entry
                .nar_hash
                .ok_or_else(|| invalid("no narHash".into()))?
                .parse()
                .map_err(|e: Error| invalid(e.to_string()))?,
            nar_size: entry.nar_size.ok_or_else(|| invalid("no narSize".into()))?,
            references,
            deriver: entry.deriver.as_deref().map(parse).transpose()?,
            signatures: entry
                .signatures
                .iter()
                .map(|s| s.parse())
                .collect::<Result<_>>()
                .map_err(|e| invalid(e.to_string()))?,
            ca: entry.ca,
        })
    }
}

#[async_trait]
impl oranc_core::StoreSource for NixCliSource {
    fn store_dir(&self) -> &StoreDir {
        &self.store_dir
    }

    async fn path_infos(&self, paths: &[StorePath]) -> Result<Vec<PathInfo>> {
        if paths.is_empty() {
            return Ok(Vec::new());
        }
        let mut command = tokio::process::Command::new(&self.nix);
        command
            .args(["path-info", "--json", "--sigs"])
            .args(["--extra-experimental-features", "nix-command"]);
        if let Some(store) = &self.store {
            command.args(["--store", store]);
        }
        command.args(paths.iter().map(|p| self.store_dir.display(p)));
        let output = command.output().await.map_err(|source| Error::Io {
            what: format!("running {} path-info (is Nix installed?)", self.nix),
            source,
        })?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let first_line = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            return Err(
                if stderr.contains("is not valid") || stderr.contains("does not exist") {
                    Error::NotFound {
                        what: format!("store path ({})", first_line.trim()),
                    }
                } else {
                    Error::Unavailable {
                        what: "nix path-info".into(),
                        reason: first_line.trim().to_owned(),
                    }
                },
            );
        }
        let parsed: Output =
            serde_json::from_slice(&output.stdout).map_err(|e| Error::Protocol {
                what: "nix path-info --json".into(),
                reason: e.to_string(),
            })?;
        let mut by_path: HashMap<String, Entry> = match parsed {
            Output::List(entries) => entries
                .into_iter()
                .filter_map(|e| Some((e.path.clone()?, e)))
                .collect(),
            Output::Map(map) => map.into_iter().filter_map(|(p, e)| Some((p, e?))).collect(),
        };
        paths
            .iter()
            .map(|path| {
                let absolute = self.store_dir.display(path);
                match by_path.remove(&absolute) {
                    Some(entry) if entry.valid != Some(false) => {
                        self.entry_to_info(&absolute, entry)
                    }
                    _ => Err(Error::NotFound {
                        what: format!("{absolute} in the Nix store"),
                    }),
                }
            })
            .collect()
    }
}
