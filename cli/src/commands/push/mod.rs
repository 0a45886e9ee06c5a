//! `oranc push`: plan (paths, closure, signatures, what is there already), then push the
//! rest concurrently, with progress and a summary; non-zero exit when anything failed. With
//! `--from URL` the paths, their closures and their NAR files come from another binary
//! cache instead of the local store.

use std::collections::HashSet;
use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::sync::Arc;

use anyhow::Context as _;
use futures::StreamExt as _;
use oranc_backends::store::BinaryCacheSource;
use oranc_backends::{BinaryCache, BinaryCacheTimeouts};
use oranc_core::{PathInfo, StoreDir, StoreSource};

use crate::cli::{PushArgs, PushCommand};
use crate::pushing::initialize::{initialize, initialize_if_missing};
use crate::pushing::options::{buffer_cost_mib, BUFFER_BUDGET_MIB};
use crate::pushing::plan::{self, Decision};
use crate::pushing::summary::Summary;
use crate::pushing::{options, progress, upload};

pub async fn run(args: PushArgs) -> anyhow::Result<()> {
    let options = &args.options;
    let (cache, description) = options.registry.open_cache()?;
    if let Some(PushCommand::Initialize {
        priority,
        no_mass_query,
    }) = args.command
    {
        return initialize(
            &cache,
            &description,
            &options.store_dir,
            priority,
            !no_mass_query,
            args.dry_run,
        )
        .await;
    }
    let store_dir = StoreDir::new(&options.store_dir)?;
    let mut policy = options::signing_policy(options)?;
    if args.from.is_some() {
        // Another cache's claims (NarHash, References) are not ours to vouch for: from it,
        // only paths a trusted key signed are copied, and the signing key only trusts.
        if let Some(key) = policy.signer.take() {
            policy.trusted.push(key.to_public());
        }
    }
    // Paths first, store second: in `nix-store --add X | oranc push` on a machine where Nix
    // never ran, the DB exists only once the command before the pipe has finished.
    let roots = read_roots(&args, &store_dir)?;
    if roots.is_empty() {
        anyhow::bail!("no store paths given (as arguments or on standard input)");
    }
    let from = match &args.from {
        Some(url) => Some(open_binary_cache(url, &store_dir, options).await?),
        None => None,
    };
    let source: Arc<dyn StoreSource> = match &from {
        Some(from) => from.clone(),
        None => options::open_source(options, &store_dir)?,
    };
    let infos = if args.no_closure {
        source.path_infos(&roots).await?
    } else {
        source.closure(&roots).await?
    };
    let existing = cache
        .keys()
        .await
        .with_context(|| format!("listing what {description} holds"))?;

    if !args.dry_run {
        initialize_if_missing(&cache, &description, &existing, &options.store_dir).await?;
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
        if let Some(signatures) = summary.record(&absolute, decision) {
            to_push.push((info, signatures));
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
        return summary.result(args.fail_on_skipped);
    }

    let settings = options::upload_settings(options, &store_dir);
    let total = to_push.len();
    let progress = progress::Progress::new(to_push.iter().map(|(i, _)| i.nar_size).sum(), total);
    let buffers = tokio::sync::Semaphore::new(BUFFER_BUDGET_MIB as usize);
    let mut results = futures::stream::iter(to_push)
        .map(|(info, signatures)| {
            let (cache, settings, buffers, existing) = (&cache, &settings, &buffers, &existing);
            let from = from.as_deref();
            async move {
                let _buffers = buffers.acquire_many(buffer_cost_mib(&info)).await;
                let outcome = match from {
                    Some(from) => {
                        copy_from(cache, settings, existing, from, &info, signatures).await
                    }
                    None => {
                        let nar_is_stored =
                            upload::nar_is_listed(existing, &info, settings.compression);
                        upload::push_path(cache, settings, nar_is_stored, &info, signatures).await
                    }
                };
                (info, outcome)
            }
        })
        .buffer_unordered(usize::from(options.parallel));
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
    summary.backpressure = cache.registry().backpressure();
    summary.print(&description, false);
    summary.result(args.fail_on_skipped)
}

/// The binary cache `push --from` reads, checked to be for this store directory.
async fn open_binary_cache(
    url: &str,
    store_dir: &StoreDir,
    options: &crate::cli::PushOptions,
) -> anyhow::Result<Arc<BinaryCacheSource>> {
    if options.write_nar_listing || options.index_debug_info {
        anyhow::bail!(
            "--from copies NAR files as they are, so it makes no listings or debuginfo entries; leave out --write-nar-listing and --index-debug-info"
        );
    }
    let cache = BinaryCache::open(url, BinaryCacheTimeouts::default())?;
    match cache
        .cache_info()
        .await
        .with_context(|| format!("reading {url}/nix-cache-info"))?
    {
        Some(info) if info.store_dir != *store_dir => anyhow::bail!(
            "{url} is a cache for {}, not {store_dir} (see --store-dir)",
            info.store_dir
        ),
        Some(_) => {}
        None => eprintln!("{url} has no nix-cache-info; taking it to be a cache for {store_dir}"),
    }
    Ok(Arc::new(BinaryCacheSource::new(cache, store_dir.clone())))
}

/// One path of `push --from`: its NAR file copied from `from` unless the cache has it.
async fn copy_from(
    cache: &oranc_core::RegistryCache,
    settings: &upload::UploadSettings,
    existing: &HashSet<String>,
    from: &BinaryCacheSource,
    info: &PathInfo,
    signatures: Vec<oranc_core::Signature>,
) -> anyhow::Result<()> {
    let narinfo = from
        .narinfo(&info.path)
        .with_context(|| format!("no narinfo was read for {}", info.path))?;
    let nar_is_stored = existing.contains(upload::copied_nar_key(info, &narinfo)?.as_str());
    upload::copy_path(
        cache,
        settings,
        nar_is_stored,
        info,
        signatures,
        from.cache(),
        &narinfo,
    )
    .await
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
        .map(|line| crate::store_paths::resolve_path(store_dir, line))
        .filter(|path| path.as_ref().map_or(true, |p| seen.insert(p.clone())))
        .collect()
}
