//! `oranc push`: plan (paths, closure, signatures, what is there already), then push the
//! rest concurrently, with progress and a summary; non-zero exit when anything failed.

mod listing;
mod nar;
mod plan;
mod progress;
mod upload;

use std::collections::HashSet;
use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use futures::StreamExt as _;
use oranc_backends::store::{NixCliSource, SqliteSource};
use oranc_core::{
    CacheKey, NixCacheInfo, PathInfo, PublicKey, RegistryCache, SecretKey, StoreDir, StoreSource,
};
use regex::Regex;

use crate::cli::{PushArgs, PushCommand, StoreSourceKind};
use plan::{Decision, SigningPolicy};
use upload::UploadSettings;

const SIGNING_KEY_ENV: &str = "ORANC_SIGNING_KEY";

pub async fn run(args: PushArgs) -> anyhow::Result<()> {
    let (cache, description) = args.registry.open_cache()?;
    if let Some(PushCommand::Initialize {
        priority,
        no_mass_query,
    }) = args.command
    {
        return initialize(
            &cache,
            &description,
            &args.store_dir,
            priority,
            !no_mass_query,
            args.dry_run,
        )
        .await;
    }
    let store_dir = StoreDir::new(&args.store_dir)?;
    let policy = signing_policy(&args)?;
    // Paths first, store second: in `nix-store --add X | oranc push` on a machine where Nix
    // never ran, the DB exists only once the command before the pipe has finished.
    let roots = read_roots(&args, &store_dir)?;
    if roots.is_empty() {
        anyhow::bail!("no store paths given (as arguments or on standard input)");
    }
    let source = open_source(&args, &store_dir)?;
    let infos = if args.no_closure {
        source.path_infos(&roots).await?
    } else {
        source.closure(&roots).await?
    };
    let existing = cache
        .keys()
        .await
        .with_context(|| format!("listing what {description} holds"))?;

    if !args.dry_run && !existing.contains(CacheKey::CACHE_INFO) {
        // Nix will not use a cache without nix-cache-info; the first push makes one with
        // the defaults `push initialize` would write.
        initialize(
            &cache,
            &description,
            &args.store_dir,
            oranc_core::cache_info::DEFAULT_PRIORITY,
            true,
            false,
        )
        .await?;
    }

    let mut summary = Summary::default();
    let mut to_push: Vec<(PathInfo, Vec<oranc_core::Signature>)> = Vec::new();
    for info in infos {
        let decision = if plan::present_narinfos(&existing, &info) {
            Decision::AlreadyThere
        } else {
            policy.decide(&store_dir, &info)
        };
        let absolute = store_dir.display(&info.path);
        match decision {
            Decision::Push(signatures) => to_push.push((info, signatures)),
            Decision::AlreadyThere => summary.already_there += 1,
            Decision::Excluded(key) => {
                summary.excluded += 1;
                tracing::info!(path = %absolute, key, "signed by an excluded key, not pushed");
            }
            Decision::Unsigned => {
                summary.unsigned += 1;
                eprintln!("skipped (no trusted signature): {absolute}");
            }
            Decision::BadSignature(key) => {
                summary.failed += 1;
                eprintln!("failed: {absolute}: its signature by {key} does not verify");
            }
        }
    }

    if args.dry_run {
        let mut out = std::io::stdout().lock();
        for (info, _) in &to_push {
            let path = store_dir.display(&info.path);
            writeln!(out, "would push {path} ({} bytes)", info.nar_size)?;
        }
        summary.would_push = to_push.len();
        summary.print(&description, true);
        return summary.result();
    }

    let settings = UploadSettings {
        store_dir: store_dir.clone(),
        compression: args.compression,
        zstd_level: args.zstd_level,
        write_nar_listing: args.write_nar_listing,
    };
    let total = to_push.len();
    let progress = progress::Progress::new(to_push.iter().map(|(i, _)| i.nar_size).sum(), total);
    let buffers = tokio::sync::Semaphore::new(BUFFER_BUDGET_MIB as usize);
    let mut results = futures::stream::iter(to_push)
        .map(|(info, signatures)| {
            let (cache, settings, existing, buffers) = (&cache, &settings, &existing, &buffers);
            async move {
                let _buffers = buffers.acquire_many(buffer_cost_mib(&info)).await;
                let outcome = upload::push_path(cache, settings, existing, &info, signatures).await;
                (info, outcome)
            }
        })
        .buffer_unordered(usize::from(args.parallel));
    let mut done = 0;
    while let Some((info, outcome)) = results.next().await {
        done += 1;
        let absolute = store_dir.display(&info.path);
        match outcome {
            Ok(()) => {
                summary.pushed += 1;
                summary.pushed_bytes += info.nar_size;
                progress.finished(info.nar_size, done, total, &format!("pushed {absolute}"));
            }
            Err(error) => {
                summary.failed += 1;
                progress.finished(
                    info.nar_size,
                    done,
                    total,
                    &format!("failed: {absolute}: {error:#}"),
                );
            }
        }
    }
    progress.finish();
    summary.print(&description, false);
    summary.result()
}

/// Memory that paths being pushed may hold in buffers at once, in MiB. Many small paths
/// fit side by side (round trips, not bytes, bound them); a large one holds up to two
/// upload chunks, the NAR channel and the compressor's window, so only a few large ones
/// stream at a time, whatever --parallel says.
const BUFFER_BUDGET_MIB: u32 = 56;

/// What one path may hold: about twice its NAR (read-ahead), up to a large path's worth.
fn buffer_cost_mib(info: &PathInfo) -> u32 {
    let nar_mib = u32::try_from(info.nar_size >> 20).unwrap_or(u32::MAX);
    nar_mib.saturating_mul(2).clamp(1, 24)
}

fn signing_policy(args: &PushArgs) -> anyhow::Result<SigningPolicy> {
    let key = if let Some(file) = &args.signing_key {
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
    let mut trusted = args
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
        Some(key) if args.no_sign => {
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
    let excluded = Regex::new(&args.excluded_signing_key_pattern).with_context(|| {
        format!(
            "--excluded-signing-key-pattern {:?}",
            args.excluded_signing_key_pattern
        )
    })?;
    Ok(SigningPolicy {
        signer,
        trusted,
        excluded,
    })
}

fn open_source(args: &PushArgs, store_dir: &StoreDir) -> anyhow::Result<Arc<dyn StoreSource>> {
    Ok(match args.store_source {
        StoreSourceKind::Sqlite => Arc::new(SqliteSource::open(
            store_dir.clone(),
            &args.nix_db,
            args.allow_immutable_db,
        )?),
        StoreSourceKind::Nix => Arc::new(NixCliSource::new(store_dir.clone(), args.store.clone())),
    })
}

fn read_roots(args: &PushArgs, store_dir: &StoreDir) -> anyhow::Result<Vec<oranc_core::StorePath>> {
    let given: Vec<String> = if args.paths.is_empty() {
        if std::io::stdin().is_terminal() {
            eprintln!("reading store paths from standard input (one per line, end with Ctrl-D)");
        }
        std::io::stdin()
            .lock()
            .lines()
            .collect::<Result<Vec<_>, _>>()
            .context("reading store paths from standard input")?
    } else {
        args.paths.clone()
    };
    let mut seen = HashSet::new();
    given
        .iter()
        .filter(|line| !line.trim().is_empty())
        .map(|line| plan::resolve_path(store_dir, line))
        .filter(|path| path.as_ref().map_or(true, |p| seen.insert(p.clone())))
        .collect()
}

async fn initialize(
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

#[derive(Debug, Default)]
struct Summary {
    pushed: usize,
    pushed_bytes: u64,
    would_push: usize,
    already_there: usize,
    excluded: usize,
    unsigned: usize,
    failed: usize,
}

impl Summary {
    fn print(&self, description: &str, dry_run: bool) {
        let first = if dry_run {
            format!("would push {}", self.would_push)
        } else {
            format!("pushed {} ({} NAR bytes)", self.pushed, self.pushed_bytes)
        };
        eprintln!(
            "{description}: {first}, already there {}, skipped unsigned {}, excluded {}, failed {}{}",
            self.already_there,
            self.unsigned,
            self.excluded,
            self.failed,
            peak_memory().map(|m| format!("; peak memory {m}")).unwrap_or_default()
        );
    }

    fn result(&self) -> anyhow::Result<()> {
        if self.failed > 0 {
            anyhow::bail!("{} path(s) failed", self.failed);
        }
        Ok(())
    }
}

/// The process's peak resident memory, from /proc (Linux), for the summary and benchmarks.
fn peak_memory() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(line.trim_start_matches("VmHWM:").trim().to_owned())
}
