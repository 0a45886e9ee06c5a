//! `oranc watch-store`: pushes store paths as they become valid, for CI jobs that want
//! everything they build in the cache without listing the store before and after.
//!
//! New paths are found by polling the Nix DB for `ValidPaths` rows newer than the last one
//! seen (one indexed query per look). A filesystem notification on the DB would fire on
//! every write Nix makes (temporary roots, build logs, the WAL) and still need that query
//! to learn which paths are new, so polling at a short interval is both simpler and as
//! cheap while idle. Each new path, and what of its closure the cache lacks, goes through
//! the same decision (signatures, exclusions) and upload code as `oranc push`.

mod metrics;
mod queue;
mod signals;

use std::collections::HashSet;
use std::sync::Arc;

use anyhow::Context as _;
use oranc_backends::store::SqliteSource;
use oranc_core::{CacheKey, RegistryCache, StoreDir, StorePath, StoreSource};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::cli::{Compression, StoreSourceKind, WatchStoreArgs};
use crate::pushing::options::{self, buffer_cost_mib, BUFFER_BUDGET_MIB};
use crate::pushing::plan::{self, SigningPolicy};
use crate::pushing::summary::Summary;
use crate::pushing::upload::{self, UploadSettings};
use queue::{Job, PushQueue};
use signals::StopSignals;

pub async fn run(args: WatchStoreArgs) -> anyhow::Result<()> {
    let options = &args.options;
    let store_dir = StoreDir::new(&options.store_dir)?;
    let policy = options::signing_policy(options)?;
    let mut signals = StopSignals::install().context("installing the signal handlers")?;
    let db = Arc::new(open_db(&store_dir, options)?);
    let metadata: Arc<dyn StoreSource> = match options.store_source {
        StoreSourceKind::Sqlite => db.clone(),
        StoreSourceKind::Nix => options::open_source(options, &store_dir)?,
    };
    // Where the store is now: everything valid before this point is left alone.
    let newest_id = db.newest_path_id().await?;

    let metrics = metrics::WatchMetrics::new();
    if let Some(address) = args.metrics_listen {
        oranc_server::connections::listener::raise_open_file_limit();
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("listening for metrics on {address}"))?;
        let render = metrics.clone();
        tokio::spawn(oranc_server::metrics_endpoint::serve(
            listener,
            Arc::new(move || render.render()),
        ));
        eprintln!("metrics at http://{address}/metrics");
    }
    let (cache, description) = options.registry.open_cache()?;
    let registry = cache.registry().clone();
    // Nothing is pushed before watching begins, so a signal while the registry is slow
    // to answer (or never does) stops at once.
    let starting = async {
        let existing = cache
            .keys()
            .await
            .with_context(|| format!("listing what {description} holds"))?;
        crate::pushing::initialize::initialize_if_missing(
            &cache,
            &description,
            &existing,
            &options.store_dir,
        )
        .await?;
        anyhow::Ok(existing)
    };
    let existing = tokio::select! {
        started = starting => started?,
        signal = signals.next() => anyhow::bail!(
            "stopped by {signal} before watching began (reading what {description} holds); nothing was pushed"
        ),
    };
    eprintln!(
        "watching {} for new store paths, pushing them to {description}; SIGTERM or Ctrl-C pushes what is left and stops",
        options.nix_db.display()
    );

    let mut watch = Watch {
        db,
        metadata,
        newest_id,
        policy,
        with_closure: !args.no_closure,
        store_dir: store_dir.clone(),
        compression: options.compression,
        existing,
        queue: PushQueue::default(),
        pushing: HashSet::new(),
        unresolved: Vec::new(),
        summary: Summary::default(),
        metrics,
    };
    let pusher = Pusher {
        cache,
        settings: Arc::new(options::upload_settings(options, &store_dir)),
        buffers: Arc::new(Semaphore::new(BUFFER_BUDGET_MIB as usize)),
    };
    let parallel = usize::from(options.parallel);
    let mut in_flight: JoinSet<(Job, anyhow::Result<()>)> = JoinSet::new();
    let mut ticker = tokio::time::interval(args.poll_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut draining = false;

    loop {
        watch
            .metrics
            .queued
            .set((watch.queue.len() + watch.pushing.len()) as i64);
        while in_flight.len() < parallel {
            let Some(job) = watch.queue.next_ready(Instant::now()) else {
                break;
            };
            let nar_is_stored = watch.nar_is_stored(&job);
            watch.pushing.insert(job.info.path.clone());
            in_flight.spawn(pusher.push(job, nar_is_stored));
        }
        if draining && in_flight.is_empty() && watch.queue.len() == 0 {
            break;
        }
        let next_retry = watch.queue.next_retry_at();
        tokio::select! {
            _ = ticker.tick(), if !draining => watch.look().await,
            signal = signals.next() => {
                if draining {
                    in_flight.abort_all();
                    let left: Vec<String> = watch
                        .pushing
                        .iter()
                        .chain(watch.queue.paths())
                        .map(|p| store_dir.display(p))
                        .collect();
                    watch.summary.backpressure = registry.backpressure();
                    watch.summary.print(&description, false);
                    anyhow::bail!(
                        "stopped by a second {signal}: {} path(s) being pushed and {} queued were not pushed (a rerun of `oranc push` with them finishes the job){}{}",
                        watch.pushing.len(),
                        watch.queue.len(),
                        if left.is_empty() { "" } else { ": " },
                        left.join(" ")
                    );
                }
                eprintln!(
                    "{signal}: one last look at the store, then pushing what is queued; {signal} again stops at once"
                );
                watch.look().await;
                watch.queue.retry_all_now();
                draining = true;
            }
            Some(joined) = in_flight.join_next() => {
                let (job, outcome) = joined.context("a push task failed")?;
                watch.finished(job, outcome, draining);
            }
            () = sleep_until(next_retry), if next_retry.is_some() => {}
        }
    }
    if !watch.unresolved.is_empty() {
        watch.summary.failed += watch.unresolved.len();
        for path in &watch.unresolved {
            eprintln!(
                "failed: {}: its metadata could not be read from the store",
                store_dir.display(path)
            );
        }
    }
    watch.summary.backpressure = registry.backpressure();
    watch.summary.print(&description, false);
    watch.summary.result(false)
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Opens the Nix DB for watching: read-only and seeing every write, so not `immutable=1`
/// (that mode assumes the file never changes and reads no WAL).
fn open_db(
    store_dir: &StoreDir,
    options: &crate::cli::PushOptions,
) -> anyhow::Result<SqliteSource> {
    SqliteSource::open_read_only(store_dir.clone(), &options.nix_db).with_context(|| {
        format!(
            "watch-store finds new paths in the Nix DB and needs to read it as Nix writes it (read-only, with its WAL: the user must be able to write to {}); run it as the user that owns the store (root on a multi-user install)",
            options
                .nix_db
                .parent()
                .map_or_else(|| ".".into(), |d| d.display().to_string())
        )
    })
}

/// What is known and what is left: the watching half of the command.
struct Watch {
    db: Arc<SqliteSource>,
    metadata: Arc<dyn StoreSource>,
    /// The newest `ValidPaths` row already looked at.
    newest_id: i64,
    policy: SigningPolicy,
    with_closure: bool,
    store_dir: StoreDir,
    compression: Compression,
    /// Cache keys known to be stored: listed at the start, added to as paths are pushed.
    existing: HashSet<String>,
    queue: PushQueue,
    /// Paths whose push is under way.
    pushing: HashSet<StorePath>,
    /// New paths whose metadata could not be read yet (the DB was busy): asked again at
    /// the next look.
    unresolved: Vec<StorePath>,
    metrics: metrics::WatchMetrics,
    summary: Summary,
}

impl Watch {
    /// Queues the paths that became valid since the last look (and their closures).
    async fn look(&mut self) {
        let (found, newest) = match self.db.paths_registered_after(self.newest_id).await {
            Ok(found) => found,
            Err(error) => {
                tracing::warn!(%error, "could not read new paths from the Nix DB; trying again");
                return;
            }
        };
        self.newest_id = newest;
        let found_at = Instant::now();
        let mut new: Vec<StorePath> = std::mem::take(&mut self.unresolved);
        new.extend(
            found
                .into_iter()
                .filter(|p| !p.name().ends_with(".drv") && !self.queue.has_seen(p)),
        );
        if new.is_empty() {
            return;
        }
        // All of a look's paths in one closure walk; only if that fails (a path deleted
        // before it was read, by a GC) one at a time, so one path cannot hide the others.
        match self.infos_of(&new).await {
            Ok(infos) => {
                for info in infos {
                    self.consider(info, found_at);
                }
                return;
            }
            Err(error) if new.len() == 1 => {
                self.give_up_or_retry(new.remove(0), &error);
                return;
            }
            Err(_) => {}
        }
        for path in new {
            match self.infos_of(std::slice::from_ref(&path)).await {
                Ok(infos) => {
                    for info in infos {
                        self.consider(info, found_at);
                    }
                }
                Err(error) => self.give_up_or_retry(path, &error),
            }
        }
    }

    /// The metadata of `paths` and, by default, of their closures.
    async fn infos_of(&self, paths: &[StorePath]) -> oranc_core::Result<Vec<oranc_core::PathInfo>> {
        if self.with_closure {
            self.metadata.closure(paths).await
        } else {
            self.metadata.path_infos(paths).await
        }
    }

    /// A path whose metadata could not be read: gone from the store (nothing to push), or
    /// asked again at the next look.
    fn give_up_or_retry(&mut self, path: StorePath, error: &oranc_core::Error) {
        let absolute = self.store_dir.display(&path);
        if matches!(error, oranc_core::Error::NotFound { .. }) {
            tracing::warn!(path = %absolute, %error, "gone from the store before it could be pushed");
        } else {
            tracing::warn!(path = %absolute, %error, "could not read its metadata; trying again");
            self.unresolved.push(path);
        }
    }

    fn consider(&mut self, info: oranc_core::PathInfo, found_at: Instant) {
        if self.queue.has_seen(&info.path) {
            return;
        }
        if plan::present_narinfos(&self.existing, &info) {
            self.queue.mark_seen(info.path);
            return;
        }
        let absolute = self.store_dir.display(&info.path);
        let decision = self.policy.decide(&self.store_dir, &info);
        match self.summary.record(&absolute, decision) {
            Some(signatures) => self.queue.push(Job {
                info,
                signatures,
                failures: 0,
                found_at,
            }),
            None => self.queue.mark_seen(info.path),
        }
    }

    fn nar_is_stored(&self, job: &Job) -> bool {
        upload::nar_is_listed(&self.existing, &job.info, self.compression)
    }

    fn finished(&mut self, job: Job, outcome: anyhow::Result<()>, draining: bool) {
        self.pushing.remove(&job.info.path);
        let absolute = self.store_dir.display(&job.info.path);
        match outcome {
            Ok(()) => {
                self.summary.pushed += 1;
                self.summary.pushed_bytes += job.info.nar_size;
                self.metrics.pushed.inc();
                self.metrics.pushed_bytes.inc_by(job.info.nar_size);
                self.existing
                    .insert(CacheKey::narinfo(&job.info.path).to_string());
                if let Ok(key) = upload::nar_key(&job.info, self.compression) {
                    self.existing.insert(key.to_string());
                }
                eprintln!(
                    "pushed {absolute} ({} ms after it was found)",
                    job.found_at.elapsed().as_millis()
                );
            }
            Err(error) if draining => {
                self.summary.failed += 1;
                self.metrics.failures.inc();
                eprintln!("failed: {absolute}: {error:#}");
            }
            Err(error) => {
                self.metrics.failures.inc();
                let delay = queue::retry_delay(job.failures + 1);
                eprintln!(
                    "failed (retrying in {} s): {absolute}: {error:#}",
                    delay.as_secs()
                );
                self.queue.retry_later(job, Instant::now());
            }
        }
    }
}

/// The pushing half: what each spawned push needs, cheap to clone into a task.
struct Pusher {
    cache: RegistryCache,
    settings: Arc<UploadSettings>,
    buffers: Arc<Semaphore>,
}

impl Pusher {
    fn push(
        &self,
        job: Job,
        nar_is_stored: bool,
    ) -> impl std::future::Future<Output = (Job, anyhow::Result<()>)> + Send + 'static {
        let (cache, settings, buffers) = (
            self.cache.clone(),
            self.settings.clone(),
            self.buffers.clone(),
        );
        async move {
            let _buffers = buffers.acquire_many(buffer_cost_mib(&job.info)).await;
            let outcome = upload::push_path(
                &cache,
                &settings,
                nar_is_stored,
                &job.info,
                job.signatures.clone(),
            )
            .await;
            (job, outcome)
        }
    }
}
