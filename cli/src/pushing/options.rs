//! Turning the flags `push` and `watch-store` share into what pushing needs: the signing
//! policy, the store source, the upload settings and the memory budget.

use std::sync::Arc;

use anyhow::Context as _;
use oranc_backends::store::{NixCliSource, SqliteSource};
use oranc_core::{PathInfo, PublicKey, SecretKey, StoreDir, StoreSource};
use regex::Regex;

use super::plan::SigningPolicy;
use super::upload::UploadSettings;
use crate::cli::{PushOptions, StoreSourceKind};

const SIGNING_KEY_ENV: &str = "ORANC_SIGNING_KEY";

/// Memory that paths being pushed may hold in buffers at once, in MiB. Many small paths
/// fit side by side (round trips, not bytes, bound them); a large one holds up to two
/// upload chunks, the NAR channel and the compressor's window, so only a few large ones
/// stream at a time, whatever --parallel says.
pub const BUFFER_BUDGET_MIB: u32 = 56;

/// What one path may hold: about twice its NAR (read-ahead), up to a large path's worth.
pub fn buffer_cost_mib(info: &PathInfo) -> u32 {
    let nar_mib = u32::try_from(info.nar_size >> 20).unwrap_or(u32::MAX);
    nar_mib.saturating_mul(2).clamp(1, 24)
}

pub fn upload_settings(options: &PushOptions, store_dir: &StoreDir) -> UploadSettings {
    UploadSettings {
        store_dir: store_dir.clone(),
        compression: options.compression,
        zstd_level: options.zstd_level,
        write_nar_listing: options.write_nar_listing,
        index_debug_info: options.index_debug_info,
    }
}

pub fn signing_policy(options: &PushOptions) -> anyhow::Result<SigningPolicy> {
    let key = if let Some(file) = &options.signing_key {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading the signing key {}", file.display()))?;
        Some(
            text.parse::<SecretKey>()
                .with_context(|| format!("the signing key {}", file.display()))?,
        )
    } else if let Ok(text) = std::env::var(SIGNING_KEY_ENV) {
        Some(
            text.parse::<SecretKey>()
                .with_context(|| format!("the key in {SIGNING_KEY_ENV}"))?,
        )
    } else {
        None
    };
    let mut trusted = options
        .trusted_public_keys
        .iter()
        .filter(|k| !k.trim().is_empty())
        .map(|k| {
            k.parse::<PublicKey>()
                .with_context(|| format!("--trusted-public-key {k:?}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    // --already-signed is the original's "push signed paths too", which oranc always does;
    // only --no-sign keeps the key from signing.
    let signer = match key {
        Some(key) if options.no_sign => {
            trusted.push(key.to_public());
            None
        }
        key => key,
    };
    if signer.is_none() && trusted.is_empty() {
        anyhow::bail!(
            "nothing to sign or verify with: pass --signing-key FILE (or set {SIGNING_KEY_ENV}) to sign while pushing, or --trusted-public-key KEY to push paths already signed by that key"
        );
    }
    let excluded = Regex::new(&options.excluded_signing_key_pattern).with_context(|| {
        format!(
            "--excluded-signing-key-pattern {:?}",
            options.excluded_signing_key_pattern
        )
    })?;
    Ok(SigningPolicy {
        signer,
        trusted,
        excluded,
    })
}

pub fn open_source(
    options: &PushOptions,
    store_dir: &StoreDir,
) -> anyhow::Result<Arc<dyn StoreSource>> {
    Ok(match options.store_source {
        StoreSourceKind::Sqlite => Arc::new(SqliteSource::open(
            store_dir.clone(),
            &options.nix_db,
            options.allow_immutable_db,
        )?),
        StoreSourceKind::Nix => {
            Arc::new(NixCliSource::new(store_dir.clone(), options.store.clone()))
        }
    })
}
