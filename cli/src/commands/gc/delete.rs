//! Carrying out a gc plan in the safe order: the narinfos first; then, after listing the
//! cache again (a push may have written narinfos since the plan), the NARs, listings and
//! logs that no narinfo still there names. Killed at any point, no remaining narinfo points
//! at a missing NAR, and a rerun finishes the job.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context as _;
use futures::{StreamExt as _, TryStreamExt as _};
use indicatif::ProgressBar;
use oranc_core::cache_key::KeyKind;
use oranc_core::{RegistryCache, StoreDir};

use super::inventory::{self, Inventory, Object};
use super::plan::{names_of, Plan};

/// For tests of the order: `ORANC_TEST_GC_EXIT_AFTER=N` exits (code 75) after N deletions,
/// as a kill there would. Only in builds with the `test-hooks` feature.
const EXIT_AFTER_ENV: &str = "ORANC_TEST_GC_EXIT_AFTER";

#[derive(Debug, Default)]
pub struct Outcome {
    pub removed: usize,
    pub removed_bytes: u64,
    pub failed: Vec<(Object, String)>,
}

/// How manifests are deleted: through the registry, or on ghcr.io (which refuses the OCI
/// DELETE) as package versions through GitHub's API.
pub enum Manifests<'a> {
    Registry,
    GithubVersions(&'a super::github::Versions),
}

pub async fn execute(
    cache: &RegistryCache,
    store_dir: &StoreDir,
    plan: Plan,
    inventory: &Inventory,
    parallel: usize,
    manifests: Manifests<'_>,
) -> anyhow::Result<Outcome> {
    let progress = super::progress_bar(plan.deletions().count() as u64, "deleted");
    let exit_after = std::env::var(EXIT_AFTER_ENV)
        .ok()
        .filter(|_| cfg!(feature = "test-hooks"))
        .and_then(|n| n.parse::<usize>().ok());
    let deletions = AtomicUsize::new(0);
    let deleter = Deleter {
        cache,
        manifests,
        progress: &progress,
        exit_after,
        deletions: &deletions,
    };
    let mut outcome = Outcome::default();
    let deleted_narinfos: HashSet<String> = plan
        .narinfos
        .iter()
        .map(|o| o.tag.as_str().to_owned())
        .collect();
    // Everything that names a NAR or a path goes before the NARs: narinfos, debuginfo
    // entries, realisations and build-trace entries.
    let pointers = plan
        .narinfos
        .into_iter()
        .chain(plan.debug_infos)
        .chain(plan.resolutions)
        .collect();
    deleter.delete_all(pointers, parallel, &mut outcome).await?;

    // Anything a narinfo still in the cache names stays: the ones that failed to go, and
    // any a push wrote since the plan was made.
    let still_named = names_still_used(
        cache,
        store_dir,
        inventory,
        &deleted_narinfos,
        &outcome,
        parallel,
    )
    .await
    .context("listing the cache again before deleting NARs")?;
    let files = plan
        .files
        .into_iter()
        .filter(|o| !still_named.contains(o.key.as_str()))
        .collect();
    deleter.delete_all(files, parallel, &mut outcome).await?;
    progress.finish_and_clear();
    Ok(outcome)
}

struct Deleter<'a> {
    cache: &'a RegistryCache,
    manifests: Manifests<'a>,
    progress: &'a ProgressBar,
    exit_after: Option<usize>,
    deletions: &'a AtomicUsize,
}

impl Deleter<'_> {
    /// Deletes `objects`, `parallel` at a time. A registry that does not delete at all
    /// stops the run with an error saying what to do.
    async fn delete_all(
        &self,
        objects: Vec<Object>,
        parallel: usize,
        outcome: &mut Outcome,
    ) -> anyhow::Result<()> {
        let mut results = futures::stream::iter(objects)
            .map(|object| async move {
                let result = match &self.manifests {
                    Manifests::Registry => self.cache.delete_manifest(&object.manifest).await,
                    Manifests::GithubVersions(versions) => {
                        versions.delete_manifest(&object.manifest).await
                    }
                };
                (object, result)
            })
            .buffer_unordered(parallel);
        while let Some((object, result)) = results.next().await {
            self.progress.inc(1);
            match result {
                // Gone already (an earlier run, another tag on the same manifest): done.
                Ok(()) | Err(oranc_core::Error::NotFound { .. }) => {
                    outcome.removed += 1;
                    outcome.removed_bytes += object.size;
                    self.progress
                        .suspend(|| eprintln!("deleted {}", object.key.as_str()));
                    let done = self.deletions.fetch_add(1, Ordering::SeqCst) + 1;
                    if self.exit_after == Some(done) {
                        eprintln!("{EXIT_AFTER_ENV}: exiting after {done} deletions");
                        std::process::exit(75);
                    }
                }
                Err(error @ oranc_core::Error::Denied { .. }) => {
                    self.progress.finish_and_clear();
                    anyhow::bail!(
                        "{error}\ngc stopped ({} deleted before this, in the safe order); a rerun with the right credentials finishes.",
                        outcome.removed
                    );
                }
                Err(error @ oranc_core::Error::Unsupported { .. }) => {
                    self.progress.finish_and_clear();
                    anyhow::bail!(
                        "{error}\nThe registry does not delete manifests, so gc stopped ({} deleted before this, in the safe order). On a CNCF distribution registry turn deletion on (REGISTRY_STORAGE_DELETE_ENABLED=true, or `storage: delete: enabled: true` in its config). On ghcr.io gc deletes through GitHub's packages API by itself; another host that is a GitHub container registry (GitHub Enterprise Server) needs --registry-kind ghcr and --github-api-url.",
                        outcome.removed
                    );
                }
                Err(error) => {
                    self.progress.suspend(|| {
                        eprintln!("failed to delete {}: {error}", object.key.as_str());
                    });
                    outcome.failed.push((object, error.to_string()));
                }
            }
        }
        Ok(())
    }
}

/// The keys named by the narinfos in the cache now: those whose deletion failed, those
/// written since `inventory` was read, and those pushed again under a tag gc deleted.
async fn names_still_used(
    cache: &RegistryCache,
    store_dir: &StoreDir,
    inventory: &Inventory,
    deleted: &HashSet<String>,
    outcome: &Outcome,
    parallel: usize,
) -> anyhow::Result<HashSet<String>> {
    let mut named: HashSet<String> = outcome
        .failed
        .iter()
        .filter_map(|(object, _)| inventory.narinfos.get(object.tag.as_str()))
        .flat_map(names_of)
        .chain(
            outcome
                .failed
                .iter()
                .filter_map(|(object, _)| inventory.debug_infos.get(object.key.as_str()))
                .cloned(),
        )
        .collect();
    let now = cache.tagged_keys().await?;
    let known: HashSet<&str> = inventory.objects.iter().map(|o| o.tag.as_str()).collect();
    let listed: HashSet<&str> = now.iter().map(|(tag, _)| tag.as_str()).collect();
    // The narinfos gc deleted are asked for by tag too, not only looked for in the listing:
    // one pushed again meanwhile that a listing leaves out must keep its NAR.
    let unlisted_deleted: Vec<_> = inventory
        .objects
        .iter()
        .filter(|o| deleted.contains(o.tag.as_str()) && !listed.contains(o.tag.as_str()))
        .map(|o| (o.tag.clone(), o.key.clone()))
        .collect();
    let back: Vec<_> = futures::stream::iter(unlisted_deleted)
        .map(|(tag, key)| async move {
            let present = cache.has_tag(&tag).await?;
            Ok::<_, oranc_core::Error>(present.then_some((tag, key)))
        })
        .buffer_unordered(parallel)
        .try_collect::<Vec<_>>()
        .await?;
    let new_narinfos: Vec<_> = now
        .into_iter()
        .filter(|(tag, key)| {
            key.kind() == KeyKind::NarInfo
                && (!known.contains(tag.as_str()) || deleted.contains(tag.as_str()))
        })
        .chain(back.into_iter().flatten())
        .collect();
    if new_narinfos.is_empty() {
        return Ok(named);
    }
    let fresh = inventory::read_tags(
        cache,
        store_dir,
        new_narinfos,
        parallel,
        &ProgressBar::hidden(),
    )
    .await?;
    if !fresh.unreadable.is_empty() {
        anyhow::bail!(
            "a narinfo written during gc cannot be read ({}), so no NAR is deleted this time",
            fresh.unreadable[0].0
        );
    }
    named.extend(fresh.narinfos.values().flat_map(names_of));
    Ok(named)
}
