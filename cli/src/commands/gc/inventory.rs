//! What the cache holds, read for gc: every tag that stands for a cache key, its manifest
//! (digest, size, push time) and, for narinfos, the facts gc follows (the path, its
//! references, the NAR it names). One tag listing, one manifest GET per tag, one blob GET
//! per narinfo, `parallel` at a time.

use std::collections::HashMap;
use std::time::SystemTime;

use futures::{StreamExt as _, TryStreamExt as _};
use indicatif::ProgressBar;
use oranc_core::cache_key::KeyKind;
use oranc_core::{CacheKey, NarInfo, RegistryCache, Sha256Hash, StoreDir, StorePath, Tag};

/// A narinfo larger than this is not one (Nix's own are a few hundred bytes).
const NARINFO_LIMIT: u64 = 1 << 20;

/// One stored object.
#[derive(Debug, Clone)]
pub struct Object {
    pub tag: Tag,
    pub key: CacheKey,
    /// The manifest's digest: what a delete names.
    pub manifest: Sha256Hash,
    /// The object's bytes (its layer).
    pub size: u64,
    pub created: Option<SystemTime>,
}

/// What gc follows in a narinfo.
#[derive(Debug, Clone)]
pub struct NarinfoFacts {
    pub path: StorePath,
    pub references: Vec<StorePath>,
    /// The key of its NAR (`nar/...`).
    pub nar_key: String,
    pub deriver: Option<StorePath>,
}

#[derive(Debug, Default)]
pub struct Inventory {
    pub objects: Vec<Object>,
    /// By narinfo key.
    pub narinfos: HashMap<String, NarinfoFacts>,
    /// Narinfo keys whose narinfo could not be read or parsed: never deleted, and
    /// their NARs are not judged either.
    pub unreadable: Vec<(String, String)>,
}

/// Reads the whole cache, showing progress on the bar `progress` makes for the number of
/// tags listed.
pub async fn read(
    cache: &RegistryCache,
    store_dir: &StoreDir,
    parallel: usize,
    progress: impl FnOnce(usize) -> ProgressBar,
) -> oranc_core::Result<Inventory> {
    let tagged = cache.tagged_keys().await?;
    let bar = progress(tagged.len());
    let inventory = read_tags(cache, store_dir, tagged, parallel, &bar).await;
    bar.finish_and_clear();
    inventory
}

/// Reads the objects under `tagged`, a tick of `bar` each.
pub async fn read_tags(
    cache: &RegistryCache,
    store_dir: &StoreDir,
    tagged: Vec<(Tag, CacheKey)>,
    parallel: usize,
    bar: &ProgressBar,
) -> oranc_core::Result<Inventory> {
    let read_one = |(tag, key): (Tag, CacheKey)| async move {
        let Some((manifest, object)) = cache.describe(&tag).await? else {
            return Ok(None); // deleted since the listing
        };
        let facts = if key.kind() == KeyKind::NarInfo {
            Some(
                read_narinfo(cache, store_dir, &object.layer)
                    .await
                    .map_err(|e| e.to_string()),
            )
        } else {
            None
        };
        let object = Object {
            tag,
            key,
            manifest,
            size: object.layer.size,
            created: object.created,
        };
        oranc_core::Result::Ok(Some((object, facts)))
    };
    let found: Vec<_> = futures::stream::iter(tagged)
        .map(read_one)
        .buffer_unordered(parallel)
        .inspect(|_| bar.inc(1))
        .try_collect()
        .await?;
    let mut inventory = Inventory::default();
    for (object, facts) in found.into_iter().flatten() {
        match facts {
            Some(Ok(facts)) => {
                inventory
                    .narinfos
                    .insert(object.key.as_str().to_owned(), facts);
            }
            Some(Err(reason)) => inventory
                .unreadable
                .push((object.key.as_str().to_owned(), reason)),
            None => {}
        }
        inventory.objects.push(object);
    }
    Ok(inventory)
}

async fn read_narinfo(
    cache: &RegistryCache,
    store_dir: &StoreDir,
    blob: &oranc_core::BlobInfo,
) -> anyhow::Result<NarinfoFacts> {
    let bytes = cache.read_small(blob, NARINFO_LIMIT).await?;
    let narinfo = NarInfo::parse(std::str::from_utf8(&bytes)?)?;
    if narinfo.store_dir != *store_dir {
        anyhow::bail!("its StorePath is in {}, not {store_dir}", narinfo.store_dir);
    }
    Ok(NarinfoFacts {
        path: narinfo.store_path,
        references: narinfo.references,
        nar_key: narinfo.url,
        deriver: narinfo.deriver,
    })
}
