//! Paths from another binary cache (`oranc push --from URL`): their metadata read from its
//! narinfos, closures followed through their `References`. The narinfos are kept, so the
//! upload can copy each NAR file as that cache stores it.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use futures::StreamExt as _;
use oranc_core::{Error, NarInfo, PathInfo, Result, StoreDir, StorePath, StoreSource};

use crate::binary_cache::BinaryCache;

/// Narinfos asked for at once.
const CONCURRENT_LOOKUPS: usize = 32;

#[derive(Debug)]
pub struct BinaryCacheSource {
    cache: BinaryCache,
    store_dir: StoreDir,
    narinfos: Mutex<HashMap<StorePath, NarInfo>>,
}

impl BinaryCacheSource {
    pub fn new(cache: BinaryCache, store_dir: StoreDir) -> Self {
        Self {
            cache,
            store_dir,
            narinfos: Mutex::default(),
        }
    }

    pub fn cache(&self) -> &BinaryCache {
        &self.cache
    }

    /// The narinfo [`StoreSource::path_infos`] read for `path`.
    pub fn narinfo(&self, path: &StorePath) -> Option<NarInfo> {
        self.narinfos
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(path)
            .cloned()
    }
}

#[async_trait]
impl StoreSource for BinaryCacheSource {
    fn store_dir(&self) -> &StoreDir {
        &self.store_dir
    }

    async fn path_infos(&self, paths: &[StorePath]) -> Result<Vec<PathInfo>> {
        let lookups: Vec<_> = futures::stream::iter(paths.iter().cloned())
            .map(|path| async move {
                let narinfo = self.cache.narinfo(&self.store_dir, &path).await;
                (path, narinfo)
            })
            .buffered(CONCURRENT_LOOKUPS)
            .collect()
            .await;
        let mut infos = Vec::with_capacity(lookups.len());
        for (path, lookup) in lookups {
            let narinfo = lookup?.ok_or_else(|| Error::NotFound {
                what: format!("{}/{path} in {}", self.store_dir, self.cache.url()),
            })?;
            infos.push(PathInfo {
                path: narinfo.store_path.clone(),
                nar_hash: narinfo.nar_hash,
                nar_size: narinfo.nar_size,
                references: narinfo.references.clone(),
                deriver: narinfo.deriver.clone(),
                signatures: narinfo.signatures.clone(),
                ca: narinfo.ca.clone(),
            });
            self.narinfos
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(path, narinfo);
        }
        Ok(infos)
    }
}
