//! What the cache holds, read for gc: every tag that stands for a cache key, its manifest
//! (digest, size, push time) and, for narinfos, the facts gc follows (the path, its
//! references, the NAR it names), for debuginfo entries the NAR they name, for realisations
//! and build-trace entries the path they resolve to. One tag listing, one manifest GET per
//! tag, one blob GET per narinfo, debuginfo entry, realisation and build-trace entry,
//! `parallel` at a time.

use std::collections::HashMap;
use std::time::SystemTime;

use futures::{StreamExt as _, TryStreamExt as _};
use indicatif::ProgressBar;
use oranc_core::cache_key::KeyKind;
use oranc_core::{CacheKey, NarInfo, RegistryCache, Sha256Hash, StoreDir, StorePath, Tag};

/// A narinfo larger than this is not one (Nix's own are a few hundred bytes).
const NARINFO_LIMIT: u64 = 1 << 20;
/// Nor is a debuginfo entry, realisation or build-trace entry larger than this (Nix's are
/// a few hundred bytes).
const SMALL_ENTRY_LIMIT: u64 = 64 << 10;

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

/// What gc read from a small object.
enum Facts {
    Narinfo(NarinfoFacts),
    /// The key of the NAR a debuginfo entry names.
    DebugInfo(String),
    /// The path a realisation or build-trace entry resolves its output to.
    Resolves(StorePath),
}

#[derive(Debug, Default)]
pub struct Inventory {
    pub objects: Vec<Object>,
    /// By the narinfo's tag (a key may have more than one: see plan.rs).
    pub narinfos: HashMap<String, NarinfoFacts>,
    /// By debuginfo key: the key of the NAR it names.
    pub debug_infos: HashMap<String, String>,
    /// By realisation or build-trace key: the path it resolves the output to.
    pub resolutions: HashMap<String, StorePath>,
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

/// Asks the registry for the narinfos of `paths` by the tags they would be stored under,
/// not through its tag listing, and reads those it has: what gc does before trusting a
/// listing that leaves out a narinfo the kept closure needs (a registry's bug, a lying
/// proxy), which would otherwise cost that narinfo its NAR.
pub async fn read_paths(
    cache: &RegistryCache,
    store_dir: &StoreDir,
    paths: &[StorePath],
    parallel: usize,
) -> oranc_core::Result<Inventory> {
    // `get` tries every tag encoding the cache reads, as any lookup does.
    let probe = |path: &StorePath| {
        let key = CacheKey::narinfo(path);
        async move {
            let found = cache.get(&key).await?;
            oranc_core::Result::Ok(found.map(|object| (object.tag, key)))
        }
    };
    let found: Vec<Option<(Tag, CacheKey)>> = futures::stream::iter(paths)
        .map(probe)
        .buffer_unordered(parallel)
        .try_collect()
        .await?;
    let found = found.into_iter().flatten().collect();
    read_tags(cache, store_dir, found, parallel, &ProgressBar::hidden()).await
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
        let facts = match key.kind() {
            KeyKind::NarInfo => Some(
                read_narinfo(cache, store_dir, &object.layer)
                    .await
                    .map(Facts::Narinfo)
                    .map_err(|e| e.to_string()),
            ),
            KeyKind::DebugInfo => Some(
                read_debug_info(cache, &object.layer)
                    .await
                    .map(Facts::DebugInfo)
                    .map_err(|e| e.to_string()),
            ),
            KeyKind::Realisation | KeyKind::BuildTrace => Some(
                read_resolution(cache, &object.layer)
                    .await
                    .map(Facts::Resolves)
                    .map_err(|e| e.to_string()),
            ),
            _ => None,
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
        let key = object.key.as_str().to_owned();
        match facts {
            Some(Ok(Facts::Narinfo(facts))) => {
                inventory
                    .narinfos
                    .insert(object.tag.as_str().to_owned(), facts);
            }
            Some(Ok(Facts::DebugInfo(nar_key))) => {
                inventory.debug_infos.insert(key, nar_key);
            }
            Some(Ok(Facts::Resolves(path))) => {
                inventory.resolutions.insert(key, path);
            }
            // An entry gc cannot read is left alone; it names no NAR gc must keep.
            Some(Err(_)) if object.key.kind() != KeyKind::NarInfo => {}
            Some(Err(reason)) => inventory.unreadable.push((key, reason)),
            None => {}
        }
        inventory.objects.push(object);
    }
    Ok(inventory)
}

impl Inventory {
    /// Adds what `other` found (objects gc did not know of).
    pub fn extend(&mut self, other: Inventory) {
        self.objects.extend(other.objects);
        self.narinfos.extend(other.narinfos);
        self.debug_infos.extend(other.debug_infos);
        self.resolutions.extend(other.resolutions);
        self.unreadable.extend(other.unreadable);
    }
}

async fn read_debug_info(
    cache: &RegistryCache,
    blob: &oranc_core::BlobInfo,
) -> anyhow::Result<String> {
    let bytes = cache.read_small(blob, SMALL_ENTRY_LIMIT).await?;
    Ok(oranc_core::DebugInfoEntry::parse(&bytes)?
        .nar_key()?
        .as_str()
        .to_owned())
}

/// The `outPath` of a realisation or build-trace entry (a store path's base name in both).
async fn read_resolution(
    cache: &RegistryCache,
    blob: &oranc_core::BlobInfo,
) -> anyhow::Result<StorePath> {
    let bytes = cache.read_small(blob, SMALL_ENTRY_LIMIT).await?;
    let value: serde_json::Value = serde_json::from_slice(&bytes)?;
    let out_path = value["outPath"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("it has no outPath"))?;
    Ok(StorePath::from_base_name(out_path)?)
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
