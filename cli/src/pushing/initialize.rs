//! `nix-cache-info`, which Nix needs before it uses a cache: written by `push initialize`,
//! and by the first push or watch-store into a cache without one.

use std::collections::HashSet;
use std::io::Write as _;

use anyhow::Context as _;
use bytes::Bytes;
use oranc_core::{CacheKey, NixCacheInfo, RegistryCache, StoreDir};

/// Nix will not use a cache without nix-cache-info; the first push makes one with the
/// defaults `push initialize` would write.
pub async fn initialize_if_missing(
    cache: &RegistryCache,
    description: &str,
    existing: &HashSet<String>,
    store_dir: &str,
) -> anyhow::Result<()> {
    if existing.contains(CacheKey::CACHE_INFO) {
        return Ok(());
    }
    initialize(
        cache,
        description,
        store_dir,
        oranc_core::cache_info::DEFAULT_PRIORITY,
        true,
        false,
    )
    .await
}

pub async fn initialize(
    cache: &RegistryCache,
    description: &str,
    store_dir: &str,
    priority: u32,
    want_mass_query: bool,
    dry_run: bool,
) -> anyhow::Result<()> {
    let info = NixCacheInfo {
        store_dir: StoreDir::new(store_dir)?,
        want_mass_query,
        priority: Some(priority),
    };
    if dry_run {
        write!(std::io::stdout().lock(), "{info}")?;
        return Ok(());
    }
    let key = CacheKey::cache_info();
    cache
        .put_bytes(&key, key.content_type(), Bytes::from(info.to_string()))
        .await
        .with_context(|| format!("writing nix-cache-info to {description}"))?;
    eprintln!("initialized {description}");
    Ok(())
}
