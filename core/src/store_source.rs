//! The `StoreSource` trait: where push learns about store paths (the Nix SQLite DB, or
//! `nix path-info --json`). Both sources must give the same [`PathInfo`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use async_trait::async_trait;

use crate::error::Result;
use crate::path_info::PathInfo;
use crate::store_path::{StoreDir, StorePath};

#[async_trait]
pub trait StoreSource: Send + Sync + fmt::Debug {
    fn store_dir(&self) -> &StoreDir;

    /// Facts about each of `paths`, in the same order; [`crate::Error::NotFound`] when one is
    /// not a valid path of the store.
    async fn path_infos(&self, paths: &[StorePath]) -> Result<Vec<PathInfo>>;

    /// `roots` and everything they reference, directly or not, sorted by path. Sources that
    /// can do it in one query override this; the default asks level by level.
    async fn closure(&self, roots: &[StorePath]) -> Result<Vec<PathInfo>> {
        let mut found: BTreeMap<StorePath, PathInfo> = BTreeMap::new();
        let mut frontier: BTreeSet<StorePath> = roots.iter().cloned().collect();
        while !frontier.is_empty() {
            let batch: Vec<StorePath> = frontier.into_iter().collect();
            let infos = self.path_infos(&batch).await?;
            frontier = infos
                .iter()
                .flat_map(|info| info.references.iter())
                .filter(|r| !found.contains_key(*r) && !batch.contains(r))
                .cloned()
                .collect();
            found.extend(infos.into_iter().map(|info| (info.path.clone(), info)));
        }
        Ok(found.into_values().collect())
    }
}
