//! `oranc gc`: keeps what the roots (and recent pushes) need and deletes the rest, or
//! removes given paths on purpose, never leaving a narinfo whose NAR is gone.
//!
//! Read everything (inventory), decide (plan, no I/O), then print the plan or carry it out
//! (delete, narinfos first). Each step in its own module.

mod delete;
mod github;
mod inventory;
mod plan;

use std::io::{IsTerminal as _, Write as _};
use std::time::SystemTime;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use oranc_core::{StoreDir, StorePath};

use crate::cli::GcArgs;
use crate::commands::plural;
use plan::Policy;

pub async fn run(args: GcArgs) -> anyhow::Result<()> {
    if args.keep_closure_of.is_empty() && args.keep_newer_than.is_none() && args.remove.is_empty() {
        anyhow::bail!(
            "say what to keep (--keep-closure-of PATH..., --keep-newer-than DURATION) or what to remove (--remove PATH...); gc never deletes a whole cache"
        );
    }
    let store_dir = StoreDir::new(&args.store_dir)?;
    let roots = read_paths(&store_dir, &args.keep_closure_of)?;
    let remove = read_paths(&store_dir, &args.remove)?;
    let (cache, description) = args.registry.open_cache()?;
    let parallel = usize::from(args.parallel);
    let mut inventory = inventory::read(&cache, &store_dir, parallel, |tags| {
        progress_bar(tags as u64, "objects read")
    })
    .await
    .with_context(|| format!("reading what {description} holds"))?;
    let policy = Policy {
        roots,
        keep_newer_than: args.keep_newer_than,
        remove,
        grace: args.grace,
        now: SystemTime::now(),
    };
    let plan = complete_plan(&cache, &store_dir, &mut inventory, &policy, parallel)
        .await
        .with_context(|| format!("asking {description} for narinfos its listing left out"))?;

    for root in &plan.missing_roots {
        eprintln!(
            "warning: {} is not in the cache (nothing of it to keep)",
            store_dir.display(root)
        );
    }
    for path in &plan.missing_removals {
        eprintln!(
            "warning: {} is not in the cache (nothing of it to remove)",
            store_dir.display(path)
        );
    }
    for (kept, removed) in &plan.broken_by_removal {
        eprintln!(
            "warning: {} stays but references {}, which is removed: substituting it will fail",
            store_dir.display(kept),
            store_dir.display(removed)
        );
    }
    for (key, reason) in &inventory.unreadable {
        eprintln!(
            "warning: {key} cannot be read ({reason}); it is left alone, and so are all NARs"
        );
    }
    let summary = format!(
        "{description}: {}; keeping {}; {}, {}, {} and {} ({}) {}; {} left alone",
        plural(inventory.objects.len(), "object", "objects"),
        plural(plan.kept_paths, "path", "paths"),
        plural(plan.narinfos.len(), "narinfo", "narinfos"),
        plural(
            plan.debug_infos.len(),
            "debuginfo entry",
            "debuginfo entries"
        ),
        plural(
            plan.resolutions.len(),
            "realisation or build trace",
            "realisations and build traces"
        ),
        plural(plan.files.len(), "other file", "other files"),
        plural(plan.bytes(), "byte", "bytes"),
        if args.delete {
            "to delete"
        } else {
            "would be deleted (dry run: pass --delete)"
        },
        plan.left_alone,
    );

    let kind = args.registry.effective_kind();
    // On ghcr.io, manifests are package versions deleted through GitHub's API.
    let github = if kind == oranc_core::RegistryKind::Ghcr {
        let token = args
            .github_token
            .clone()
            .or_else(|| args.registry.password.clone())
            .context("gc on ghcr.io deletes through GitHub's packages API: give a token with read:packages and delete:packages (--github-token, GITHUB_TOKEN or ORANC_PASSWORD)")?;
        Some(
            github::Versions::list(&args.github_api_url, cache.repository().as_str(), &token)
                .await
                .with_context(|| {
                    format!(
                        "reading {description}'s package versions from {}",
                        args.github_api_url
                    )
                })?,
        )
    } else {
        None
    };
    let untagged = github
        .as_ref()
        .map(|versions| versions.untagged(args.grace, policy.now))
        .unwrap_or_default();

    if !args.delete {
        let mut out = std::io::stdout().lock();
        for version in &untagged {
            writeln!(
                out,
                "would delete untagged version {} ({})",
                version.id, version.name
            )?;
        }
        for object in plan.deletions() {
            // A narinfo is named by the store path it describes, which is what a user knows.
            let path = inventory
                .narinfos
                .get(object.tag.as_str())
                .map(|facts| format!(": {}", store_dir.display(&facts.path)))
                .unwrap_or_default();
            writeln!(
                out,
                "would delete {} ({}){path}",
                object.key.as_str(),
                plural(object.size, "byte", "bytes"),
            )?;
        }
        eprintln!("{summary}");
        return Ok(());
    }
    eprintln!("{summary}");
    let manifests = match &github {
        Some(versions) => delete::Manifests::GithubVersions(versions),
        None => delete::Manifests::Registry,
    };
    let outcome = delete::execute(&cache, &store_dir, plan, &inventory, parallel, manifests)
        .await
        .map_err(|error| {
            if kind == oranc_core::RegistryKind::DockerHub {
                error.context(DOCKER_HUB_DELETES)
            } else {
                error
            }
        })?;
    let mut failures = outcome.failed.len();
    eprintln!(
        "{description}: deleted {} ({}), failed {}",
        plural(outcome.removed, "object", "objects"),
        plural(outcome.removed_bytes, "byte", "bytes"),
        outcome.failed.len()
    );
    if let Some(versions) = &github {
        let (deleted, refused) = versions.delete_untagged(&untagged).await;
        for refusal in &refused {
            eprintln!("failed to delete {refusal}");
        }
        eprintln!(
            "{description}: deleted {} untagged, failed {}; GitHub frees the space at once, and deleted versions can be restored for 30 days (the package's settings page)",
            plural(deleted, "version", "versions"),
            refused.len()
        );
        failures += refused.len();
        if failures > 0 {
            anyhow::bail!(
                "{failures} deletion(s) failed or were refused; a rerun finishes what can be done"
            );
        }
        return Ok(());
    }
    let reclaimed = cache
        .registry()
        .reclaim_space(cache.repository(), args.grace)
        .await
        .with_context(|| format!("freeing the space of deleted objects in {description}"))?;
    match reclaimed {
        Some(freed) => eprintln!(
            "{description}: freed {} unreferenced blobs ({} bytes)",
            freed.blobs, freed.bytes
        ),
        None => eprintln!(
            "the registry frees the deleted objects' blobs in its own garbage collection (distribution: `registry garbage-collect`)"
        ),
    }
    if failures > 0 {
        anyhow::bail!("{failures} deletion(s) failed; a rerun finishes the job");
    }
    Ok(())
}

/// Why gc cannot delete on Docker Hub, as its registry API reference documents it.
const DOCKER_HUB_DELETES: &str = "Docker Hub deletes a manifest by digest (with a token holding the `delete` scope) only once no tag points at it, and answers 403 while one does; removing a tag is not part of its registry API, and oranc does not use Hub's own API for it, which could not be confirmed without a live account. Remove the tags `oranc gc` without --delete lists on hub.docker.com (nothing was deleted out of order: narinfos go first)";

/// The plan, once every narinfo the kept closure needs and the tag listing did not show
/// has been asked for by its own tag (and added where the registry has it): a listing that
/// leaves one out must not cost it its NAR. Each path is asked for once.
async fn complete_plan(
    cache: &oranc_core::RegistryCache,
    store_dir: &StoreDir,
    inventory: &mut inventory::Inventory,
    policy: &Policy,
    parallel: usize,
) -> oranc_core::Result<plan::Plan> {
    let mut asked = std::collections::HashSet::new();
    loop {
        let plan = plan::plan(inventory, policy);
        let ask: Vec<StorePath> = plan
            .unresolved
            .iter()
            .filter(|path| asked.insert((*path).clone()))
            .cloned()
            .collect();
        if ask.is_empty() {
            return Ok(plan);
        }
        let found = inventory::read_paths(cache, store_dir, &ask, parallel).await?;
        if found.objects.is_empty() {
            return Ok(plan);
        }
        for object in &found.objects {
            eprintln!(
                "warning: the registry's tag listing left out {}, which gc found by asking for it; it is judged like the rest",
                object.key.as_str()
            );
        }
        inventory.extend(found);
    }
}

/// A bar counting to `total` on a terminal (`pos/len what`); hidden in logs and pipes,
/// where the summary lines say what happened.
fn progress_bar(total: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} [{{elapsed_precise}}] {{wide_bar}} {{pos}}/{{len}} {what}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// Store paths from the values of --keep-closure-of / --remove: store paths (or links to
/// them, like ./result), or files listing them one per line.
fn read_paths(store_dir: &StoreDir, values: &[String]) -> anyhow::Result<Vec<StorePath>> {
    let mut paths = Vec::new();
    for value in values {
        let is_list = !value.starts_with(store_dir.as_str())
            && std::fs::symlink_metadata(value).is_ok_and(|m| m.is_file());
        if is_list {
            let text = std::fs::read_to_string(value)
                .with_context(|| format!("reading the list of store paths {value}"))?;
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                paths.push(
                    crate::store_paths::resolve_path(store_dir, line)
                        .with_context(|| format!("in {value}"))?,
                );
            }
        } else {
            paths.push(crate::store_paths::resolve_path(store_dir, value)?);
        }
    }
    Ok(paths)
}
