//! The CI recipe of docs/ci.md, run as its script runs in a CI job: a build with the cache
//! as substituter while watch-store pushes what it makes, then a second job that finds
//! everything in the cache and substitutes instead of building.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: helpers outside #[test] panic on purpose"
)]

use std::path::Path;
use std::process::{Command, Output};

use oranc_core::{StoreDir, TagEncoding};
use oranc_tests::nix::{closure_expression, nix_command, NIX_CONFIG};
use oranc_tests::oci::RawRegistry;
use oranc_tests::registry::RegistryProcess;
use oranc_tests::{free_loopback_addr, fresh_repo, oranc_binary, run_ok, unique_suffix};

struct Job<'a> {
    registry: &'a RegistryProcess,
    repo: &'a str,
    secret_key: &'a str,
    public_key: &'a str,
}

impl Job<'_> {
    /// Runs the recipe's script around `nix-build --no-out-link EXPR`.
    fn run(&self, expression: &Path) -> Output {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/ci-build-with-cache.sh");
        let port = free_loopback_addr().port().to_string();
        Command::new("bash")
            .arg(script)
            .args(["nix-build", "--no-out-link"])
            .arg(expression)
            .env("NIX_CONFIG", NIX_CONFIG)
            .env("ORANC", oranc_binary())
            .env("ORANC_PORT", port)
            .env("ORANC_NO_SSL", "1")
            .env("ORANC_REGISTRY", self.registry.host())
            .env("ORANC_REPOSITORY", self.repo)
            .env("ORANC_SIGNING_KEY", self.secret_key)
            .env("ORANC_PUBLIC_KEY", self.public_key)
            .env_remove("ORANC_USERNAME")
            .env_remove("ORANC_PASSWORD")
            .output()
            .unwrap()
    }
}

#[tokio::test]
async fn the_ci_script_pushes_what_a_job_builds_and_the_next_job_substitutes_it() {
    let registry = RegistryProcess::start();
    let repo = fresh_repo("ci");
    let nonce = unique_suffix();
    let secret_key = run_ok(nix_command("nix").args([
        "key",
        "generate-secret",
        "--key-name",
        &format!("oranc-ci-{nonce}"),
    ]));
    let public_key = run_ok(
        nix_command("sh")
            .arg("-c")
            .arg("printf %s \"$1\" | nix key convert-secret-to-public")
            .arg("sh")
            .arg(&secret_key),
    )
    .trim()
    .to_owned();
    let dir = tempfile::tempdir().unwrap();
    let expression = dir.path().join("default.nix");
    std::fs::write(&expression, closure_expression(&nonce, 20_000)).unwrap();
    let job = Job {
        registry: &registry,
        repo: &repo,
        secret_key: &secret_key,
        public_key: &public_key,
    };

    // First job: nothing in the cache; it builds, and watch-store pushes the closure.
    let first = job.run(&expression);
    let first_log = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "{first_log}");
    let root = String::from_utf8_lossy(&first.stdout).trim().to_owned();
    let closure: Vec<String> = run_ok(nix_command("nix-store").args(["-qR", &root]))
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(closure.len(), 3, "{closure:?}");
    let raw = RawRegistry::new(&registry.base_url());
    for path in &closure {
        let hash = StoreDir::default().parse_path(path).unwrap();
        let tag = TagEncoding::Custom
            .encode(&format!("{}.narinfo", hash.hash_part()))
            .unwrap();
        assert!(
            raw.get_manifest(&repo, tag.as_str()).await.is_some(),
            "{path} was built in the job and must be in the cache:\n{first_log}"
        );
    }

    // Second job on a machine without the closure: it substitutes from the cache.
    run_ok(nix_command("nix-store").arg("--delete").args(&closure));
    let second = job.run(&expression);
    let second_log = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{second_log}");
    assert_eq!(String::from_utf8_lossy(&second.stdout).trim(), root);
    for path in &closure {
        assert!(
            second_log.contains(&format!("copying path '{path}' from 'http://127.0.0.1:")),
            "{path} must come from the cache, not a build:\n{second_log}"
        );
    }
}
