//! `oranc gc` against a real registry with deletion on, real store paths and real Nix: it
//! keeps what the roots need (substitutable), deletes the rest (404), changes nothing
//! without --delete, leaves no narinfo without its NAR when killed half-way, lets the
//! registry reclaim the space, refuses clearly where the registry does not delete, and
//! collects a cache the original oranc wrote.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: helpers outside #[test] panic on purpose"
)]

use std::collections::HashSet;
use std::process::Output;

use oranc_core::{CacheKey, NarInfo, RegistryCache, TagEncoding};
use oranc_tests::nix::{assert_same_closure, copy_from, narinfo_key, SignedClosure};
use oranc_tests::registry::RegistryProcess;
use oranc_tests::server::{allow_plain_http, ServerProcess};
use oranc_tests::{fixture, fresh_repo, oranc_command, push_closure};

fn gc(registry: &RegistryProcess, repo: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    oranc_command()
        .args([
            "gc",
            "--no-ssl",
            "--registry",
            &registry.host(),
            "--repository",
            repo,
        ])
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn cache(registry: &RegistryProcess, repo: &str) -> RegistryCache {
    oranc_tests::anonymous_cache(&registry.host(), repo)
}

/// The cache's keys, after checking that every narinfo's NAR is there.
async fn keys_without_dangling_narinfos(registry: &RegistryProcess, repo: &str) -> HashSet<String> {
    checked_keys(&cache(registry, repo)).await
}

/// [`keys_without_dangling_narinfos`] of any cache; each NAR's blob is read too.
async fn checked_keys(cache: &RegistryCache) -> HashSet<String> {
    let keys = cache.keys().await.unwrap();
    for key in keys.iter().filter(|k| k.ends_with(".narinfo")) {
        let object = cache.get(&key.parse().unwrap()).await.unwrap().unwrap();
        let bytes = cache.read_small(&object.blob, 1 << 20).await.unwrap();
        let narinfo = NarInfo::parse(std::str::from_utf8(&bytes).unwrap()).unwrap();
        assert!(
            keys.contains(&narinfo.url),
            "{key} names {} which is gone",
            narinfo.url
        );
        let nar = cache
            .get(&narinfo.url.parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        let body = cache.open(&nar, None).await.unwrap();
        let bytes = oranc_tests::read_blob(body).await.unwrap();
        assert_eq!(
            bytes.len() as u64,
            nar.blob.size,
            "{} reads back whole",
            narinfo.url
        );
    }
    keys
}

fn push(registry: &RegistryProcess, repo: &str, closure: &SignedClosure) {
    let output = push_closure(oranc_command(), &registry.host(), repo, closure);
    assert!(output.status.success(), "{}", text(&output.stderr));
}

#[tokio::test]
async fn keeps_one_closure_deletes_the_other_and_the_registry_reclaims_the_space() {
    let mut registry = RegistryProcess::start();
    let repo = fresh_repo("gc");
    let kept = SignedClosure::build(100_000);
    let dropped = SignedClosure::build(3_000_000);
    push(&registry, &repo, &kept);
    push(&registry, &repo, &dropped);
    let all = keys_without_dangling_narinfos(&registry, &repo).await;

    // Without --delete: the plan, and not one tag changes.
    let plan = gc(
        &registry,
        &repo,
        &["--keep-closure-of", &kept.root, "--grace", "0"],
        &[],
    );
    assert!(plan.status.success(), "{}", text(&plan.stderr));
    for path in &dropped.paths {
        // Each narinfo named by its key and by the store path it describes.
        let line = text(&plan.stdout)
            .lines()
            .find(|line| line.starts_with(&format!("would delete {}", narinfo_key(path))))
            .map(str::to_owned);
        assert!(
            line.as_ref()
                .is_some_and(|line| line.ends_with(&format!(": {path}"))),
            "{line:?} in {}",
            text(&plan.stdout)
        );
    }
    assert_eq!(keys_without_dangling_narinfos(&registry, &repo).await, all);

    // The default grace period keeps what was just pushed.
    let graced = gc(
        &registry,
        &repo,
        &["--keep-closure-of", &kept.root, "--delete"],
        &[],
    );
    assert!(graced.status.success(), "{}", text(&graced.stderr));
    assert_eq!(keys_without_dangling_narinfos(&registry, &repo).await, all);

    let before = registry.disk_usage();
    let run = gc(
        &registry,
        &repo,
        &["--keep-closure-of", &kept.root, "--grace", "0", "--delete"],
        &[],
    );
    assert!(run.status.success(), "{}", text(&run.stderr));
    let left = keys_without_dangling_narinfos(&registry, &repo).await;
    assert!(left.contains(CacheKey::CACHE_INFO));
    for path in &kept.paths {
        assert!(left.contains(&narinfo_key(path)), "{path} kept");
    }
    for path in &dropped.paths {
        assert!(!left.contains(&narinfo_key(path)), "{path} deleted");
    }
    assert_eq!(left.len(), 1 + 2 * kept.paths.len(), "{left:?}");

    registry.garbage_collect();
    let after = registry.disk_usage();
    assert!(
        after + 2_500_000 < before,
        "the registry reclaims the dropped closure's ~3 MB: {before} -> {after} bytes"
    );

    let server = ServerProcess::start(&allow_plain_http(&registry.host()), &[]);
    let url = server.url(&format!("{}/{repo}", registry.host()));
    let store = tempfile::tempdir().unwrap();
    let copied = copy_from(&url, store.path(), &kept.root, &kept.public_key);
    assert!(copied.status.success(), "{}", text(&copied.stderr));
    assert_same_closure(store.path(), &kept.root);
    let hash = oranc_tests::nix::hash_part(&dropped.root);
    let status = reqwest::get(format!("{url}/{hash}.narinfo"))
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_gc_killed_half_way_leaves_no_dangling_narinfo_and_a_rerun_completes() {
    let registry = RegistryProcess::start();
    let repo = fresh_repo("gc");
    let kept = SignedClosure::build(10_000);
    let dropped = SignedClosure::build(10_000);
    push(&registry, &repo, &kept);
    push(&registry, &repo, &dropped);
    let args = [
        "--keep-closure-of",
        &kept.root,
        "--grace",
        "0",
        "--delete",
        "--parallel",
        "1",
    ];
    // Killed among the narinfos, then among the NARs (three narinfos go first).
    for exit_after in ["1", "4"] {
        let killed = gc(
            &registry,
            &repo,
            &args,
            &[("ORANC_TEST_GC_EXIT_AFTER", exit_after)],
        );
        assert_eq!(killed.status.code(), Some(75), "{}", text(&killed.stderr));
        keys_without_dangling_narinfos(&registry, &repo).await;
    }
    let rerun = gc(&registry, &repo, &args, &[]);
    assert!(rerun.status.success(), "{}", text(&rerun.stderr));
    let left = keys_without_dangling_narinfos(&registry, &repo).await;
    assert_eq!(left.len(), 1 + 2 * kept.paths.len(), "{left:?}");
}

#[tokio::test]
async fn remove_deletes_a_path_pushed_by_mistake_and_a_refusing_registry_is_named() {
    let registry = RegistryProcess::start();
    let repo = fresh_repo("gc");
    let closure = SignedClosure::build(10_000);
    push(&registry, &repo, &closure);
    let run = gc(
        &registry,
        &repo,
        &["--remove", &closure.root, "--delete"],
        &[],
    );
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert!(
        text(&run.stderr).contains("deleted 2 objects"),
        "{}",
        text(&run.stderr)
    );
    let left = keys_without_dangling_narinfos(&registry, &repo).await;
    assert!(!left.contains(&narinfo_key(&closure.root)));
    assert_eq!(left.len(), 1 + 2 * (closure.paths.len() - 1), "{left:?}");

    let refusing = RegistryProcess::start_without_delete();
    push(&refusing, &repo, &closure);
    let before = keys_without_dangling_narinfos(&refusing, &repo).await;
    let refused = gc(
        &refusing,
        &repo,
        &["--remove", &closure.root, "--delete"],
        &[],
    );
    let stderr = text(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains("does not delete") && stderr.contains("REGISTRY_STORAGE_DELETE_ENABLED"),
        "{stderr}"
    );
    assert_eq!(
        keys_without_dangling_narinfos(&refusing, &repo).await,
        before
    );

    let nothing_said = gc(&registry, &repo, &["--delete"], &[]);
    assert!(!nothing_said.status.success());
    assert!(text(&nothing_said.stderr).contains("say what to keep"));
}

#[tokio::test]
async fn collects_a_cache_the_original_oranc_wrote() {
    let registry =
        RegistryProcess::start_with_data_from(&fixture("original-oranc/registry-data.tar.gz"));
    let repo = "fixture/cache";
    let infos: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("original-oranc/path-info.json")).unwrap())
            .unwrap();
    let paths: Vec<&str> = infos
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    let tool = paths
        .iter()
        .find(|p| p.ends_with("-fixture-tool-shared"))
        .unwrap();
    let app = paths
        .iter()
        .find(|p| p.ends_with("-fixture-app-shared"))
        .unwrap();
    let before = keys_without_dangling_narinfos(&registry, repo).await;

    let run = gc(
        &registry,
        repo,
        &["--keep-closure-of", tool, "--delete"],
        &[],
    );
    assert!(run.status.success(), "{}", text(&run.stderr));
    let left = keys_without_dangling_narinfos(&registry, repo).await;
    assert!(!left.contains(&narinfo_key(app)), "{left:?}");
    for path in paths.iter().filter(|p| *p != app) {
        assert!(
            left.contains(&narinfo_key(path)),
            "{path} is in the kept closure"
        );
    }
    assert!(left.contains(CacheKey::CACHE_INFO));
    assert_eq!(
        left.len(),
        before.len() - 2,
        "the app's narinfo and NAR: {before:?} -> {left:?}"
    );
}

#[tokio::test]
async fn the_local_oci_layout_deletes_too() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let closure = SignedClosure::build(10_000);
    let location = layout.to_str().unwrap();
    let pushed = oranc_command()
        .args([
            "push",
            "--registry",
            location,
            "--repository",
            "owner/cache",
        ])
        .args(["--trusted-public-key", &closure.public_key, &closure.root])
        .output()
        .unwrap();
    assert!(pushed.status.success(), "{}", text(&pushed.stderr));
    let blob_files = || {
        std::fs::read_dir(layout.join("owner/cache/blobs/sha256"))
            .unwrap()
            .count()
    };
    let before = blob_files();
    let run = oranc_command()
        .args(["gc", "--registry", location, "--repository", "owner/cache"])
        .args(["--remove", &closure.root, "--delete"])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert_eq!(
        blob_files(),
        before,
        "the default grace period keeps blobs written just now"
    );
    let swept = oranc_command()
        .args(["gc", "--registry", location, "--repository", "owner/cache"])
        .args(["--remove", &closure.root, "--delete", "--grace", "0"])
        .output()
        .unwrap();
    assert!(swept.status.success(), "{}", text(&swept.stderr));
    // The root's narinfo and NAR: their manifests and layers, four files.
    assert_eq!(blob_files(), before - 4, "{}", text(&swept.stderr));
    let backend: std::sync::Arc<dyn oranc_core::Registry> =
        std::sync::Arc::new(oranc_backends::registry::OciLayoutRegistry::new(&layout).unwrap());
    let cache = RegistryCache::new(
        backend,
        "owner/cache".parse().unwrap(),
        TagEncoding::Custom,
        vec![],
    );
    let keys = checked_keys(&cache).await;
    assert!(!keys.contains(&narinfo_key(&closure.root)), "{keys:?}");
    assert_eq!(keys.len(), 1 + 2 * (closure.paths.len() - 1), "{keys:?}");
}
