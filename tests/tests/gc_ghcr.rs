//! `oranc gc` on ghcr.io, which refuses the OCI manifest DELETE (405 UNSUPPORTED): against
//! a stand-in for ghcr.io and api.github.com (`tests/standins/ghcr.py`) in front of a real
//! registry, gc makes the same plan as on distribution, deletes every garbage tag through
//! GitHub's packages API (never the OCI DELETE), keeps the kept closures substitutable by
//! Nix, reports GitHub's refusals and goes on, waits out secondary rate limits, names a
//! missing scope, deletes untagged versions past the grace period, and finishes an
//! interrupted run on a rerun.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: helpers outside #[test] panic on purpose"
)]

use std::process::Output;

use oranc_tests::ghcr::{GhcrStandIn, OWNER, TOKEN};
use oranc_tests::nix::{assert_same_closure, copy_from, narinfo_key, SignedClosure};
use oranc_tests::registry::RegistryProcess;
use oranc_tests::server::{allow_plain_http, ServerProcess};
use oranc_tests::{oranc_command, unique_suffix};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `oranc ARGS` against the stand-in as ghcr.io, with its token.
fn oranc_on(standin: &GhcrStandIn, args: &[&str], env: &[(&str, &str)]) -> Output {
    oranc_command()
        .args(args)
        .args(["--no-ssl", "--registry", &standin.host()])
        .args(["--registry-kind", "ghcr"])
        .env("GITHUB_TOKEN", TOKEN)
        .env("ORANC_GITHUB_API_URL", standin.api())
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn push(standin: &GhcrStandIn, repo: &str, closure: &SignedClosure) {
    let out = oranc_on(
        standin,
        &[
            "push",
            "--repository",
            repo,
            "--trusted-public-key",
            &closure.public_key,
            &closure.root,
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// What gc would delete (its dry run's lines about tags), sorted.
fn planned(out: &Output) -> Vec<String> {
    let mut lines: Vec<String> = text(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("would delete ") && !l.contains("untagged version"))
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

fn gc(standin: &GhcrStandIn, repo: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut all = vec!["gc", "--repository", repo, "--grace", "0"];
    all.extend_from_slice(args);
    oranc_on(standin, &all, env)
}

/// A repository of the stand-in's owner with two closures pushed through it; the one to
/// keep, the one to drop. Nested (`OWNER/nix/cache-…`): the package is `nix/cache-…`, which
/// the API names percent-encoded.
fn two_closures(standin: &GhcrStandIn) -> (String, SignedClosure, SignedClosure) {
    let repo = format!("{OWNER}/nix/cache-{}", unique_suffix().replace('-', "."));
    let kept = SignedClosure::build(10_000);
    let dropped = SignedClosure::build(10_000);
    push(standin, &repo, &kept);
    push(standin, &repo, &dropped);
    (repo, kept, dropped)
}

#[test]
fn gc_deletes_through_the_packages_api_and_kept_closures_still_substitute() {
    let registry = RegistryProcess::start();
    // Pages of 3 versions: the listing follows GitHub's Link headers.
    let standin = GhcrStandIn::start(&registry, &["--max-per-page", "3"]);
    let (repo, kept, dropped) = two_closures(&standin);
    let keep = ["--keep-closure-of", kept.root.as_str()];
    // A nix-cache-info written again leaves the old one untagged: a version that still
    // takes space.
    let initialized = oranc_command()
        .args(["push", "--no-ssl", "--registry", &standin.host()])
        .args(["--registry-kind", "ghcr", "--repository", &repo])
        .args(["initialize", "--priority", "30"])
        .output()
        .unwrap();
    assert!(
        initialized.status.success(),
        "{}",
        text(&initialized.stderr)
    );

    // The same plan as distribution makes of the same repository.
    let on_ghcr = gc(&standin, &repo, &keep, &[]);
    assert!(on_ghcr.status.success(), "{}", text(&on_ghcr.stderr));
    let on_distribution = oranc_command()
        .args(["gc", "--no-ssl", "--registry", &registry.host()])
        .args(["--repository", &repo, "--grace", "0"])
        .args(keep)
        .output()
        .unwrap();
    assert!(on_distribution.status.success());
    assert_eq!(planned(&on_ghcr), planned(&on_distribution));
    assert_eq!(planned(&on_ghcr).len(), 2 * dropped.paths.len());
    assert!(
        text(&on_ghcr.stdout).contains("would delete untagged version"),
        "{}",
        text(&on_ghcr.stdout)
    );

    // Killed after 2 deletions, then rerun: it finishes.
    let killed = gc(
        &standin,
        &repo,
        &[keep[0], keep[1], "--delete"],
        &[("ORANC_TEST_GC_EXIT_AFTER", "2")],
    );
    assert_eq!(killed.status.code(), Some(75), "{}", text(&killed.stderr));
    let rerun = gc(&standin, &repo, &[keep[0], keep[1], "--delete"], &[]);
    let said = text(&rerun.stderr);
    assert!(rerun.status.success(), "{said}");
    assert!(said.contains("restored for 30 days"), "{said}");

    // Every deletion went through the API; nothing was tried with the OCI DELETE.
    let stats = standin.stats();
    assert_eq!(stats["manifest_delete_attempts"], 0, "{stats}");
    assert_eq!(
        stats["api_deletes"].as_u64().unwrap(),
        2 * dropped.paths.len() as u64 + 1,
        "{stats}: the dropped paths' narinfos and NARs, and the untagged nix-cache-info"
    );
    let tags = registry.tag_list(&repo);
    for path in &dropped.paths {
        assert!(!tags.contains(&narinfo_key(path)), "{path} stays: {tags}");
    }
    // What is kept substitutes with Nix.
    let server = ServerProcess::start(
        &format!(
            "repository_parts = 3\n{}",
            allow_plain_http(&registry.host())
        ),
        &[],
    );
    let url = server.url(&format!("{}/{repo}", registry.host()));
    let store = tempfile::tempdir().unwrap();
    let copied = copy_from(&url, store.path(), &kept.root, &kept.public_key);
    assert!(copied.status.success(), "{}", text(&copied.stderr));
    assert_same_closure(store.path(), &kept.root);
}

#[test]
fn github_s_refusals_and_limits_are_reported_and_waited_out() {
    let registry = RegistryProcess::start();
    // Secondary limit: at most 2 deletes a second (gc paces itself to 3).
    let standin = GhcrStandIn::start(&registry, &["--deletes-per-second", "2"]);
    let (repo, kept, dropped) = two_closures(&standin);
    let keep = ["--keep-closure-of", kept.root.as_str(), "--delete"];
    let done = gc(&standin, &repo, &keep, &[]);
    assert!(done.status.success(), "{}", text(&done.stderr));
    let stats = standin.stats();
    assert!(
        stats["secondary_limited"].as_u64().unwrap() > 0,
        "the limit was met: {stats}"
    );
    assert_eq!(
        stats["api_deletes"].as_u64().unwrap(),
        2 * dropped.paths.len() as u64,
        "{stats}"
    );

    // A token without delete:packages: gc says which scope is missing.
    let read_only = GhcrStandIn::start(&registry, &["--scopes", "read:packages"]);
    let more = SignedClosure::build(10_000);
    push(&read_only, &repo, &more);
    let refused = gc(&read_only, &repo, &keep, &[]);
    let said = text(&refused.stderr);
    assert!(!refused.status.success(), "{said}");
    assert!(said.contains("delete:packages"), "{said}");
    drop(read_only);

    // A popular version (downloaded more than 5,000 times) is reported in GitHub's words,
    // and the rest goes.
    let narinfo_digest = {
        let (_, headers, _) = oranc_tests::curl(&[
            "-sI",
            "-H",
            "Accept: application/vnd.oci.image.manifest.v1+json",
            &format!(
                "{}/v2/{repo}/manifests/{}",
                registry.base_url(),
                narinfo_key(&more.root)
            ),
        ]);
        headers
            .lines()
            .find_map(|l| {
                l.strip_prefix("Docker-Content-Digest: ")
                    .or_else(|| l.strip_prefix("docker-content-digest: "))
            })
            .unwrap()
            .trim()
            .to_owned()
    };
    let popular = GhcrStandIn::start(&registry, &["--popular", &narinfo_digest]);
    let partly = gc(&popular, &repo, &keep, &[]);
    let said = text(&partly.stderr);
    assert!(!partly.status.success(), "{said}");
    assert!(said.contains("more than 5000 downloads"), "{said}");
    let tags = registry.tag_list(&repo);
    assert!(tags.contains(&narinfo_key(&more.root)), "{tags}");
    assert!(popular.stats()["api_deletes"].as_u64().unwrap() > 0);
}

/// Docker Hub, as its registry API reference documents the manifest DELETE (a stand-in:
/// 403 while a tag points at the manifest, 405 by tag): gc plans as anywhere, and with
/// --delete stops at the first refusal, deleting nothing, and says why and what to do.
#[test]
fn on_docker_hub_gc_stops_at_a_tagged_manifest_and_says_why() {
    let registry = RegistryProcess::start();
    let standin = GhcrStandIn::start(&registry, &["--docker-hub"]);
    let repo = format!("{OWNER}/cache-{}", unique_suffix().replace('-', "."));
    let closure = SignedClosure::build(10_000);
    let on_hub = |args: &[&str]| {
        oranc_command()
            .args(args)
            .args(["--no-ssl", "--registry", &standin.host()])
            .args(["--registry-kind", "docker-hub", "--repository", &repo])
            .output()
            .unwrap()
    };
    let pushed = on_hub(&[
        "push",
        "--trusted-public-key",
        &closure.public_key,
        &closure.root,
    ]);
    assert!(pushed.status.success(), "{}", text(&pushed.stderr));
    let tags = registry.tag_list(&repo);
    let refused = on_hub(&["gc", "--remove", &closure.root, "--grace", "0", "--delete"]);
    let said = text(&refused.stderr);
    assert!(!refused.status.success(), "{said}");
    assert!(said.contains("only once no tag points at it"), "{said}");
    assert_eq!(registry.tag_list(&repo), tags, "nothing was deleted");
    assert_eq!(standin.stats()["manifest_delete_attempts"], 1);
}
