//! `cargo run --release -p oranc-tests --bin bench-gc-ghcr [PATHS]`: `oranc gc` on ghcr.io
//! through GitHub's packages API, against the stand-in (`tests/standins/ghcr.py`) in front of
//! a real registry, with GitHub's secondary limit on deletes as documented (900 points a
//! minute per endpoint, 5 a DELETE: 3 a second). A cache of PATHS small paths (default
//! 2,000), gc keeping half: the time it took against the floor that limit sets, and the API
//! requests per deleted path. Prints figures; asserts nothing.

#![allow(
    clippy::print_stdout,
    reason = "a benchmark reports its figures on stdout"
)]

use std::time::Instant;

use oranc_tests::ghcr::{GhcrStandIn, OWNER, TOKEN};
use oranc_tests::registry::RegistryProcess;
use oranc_tests::{
    bench_arg, bench_oranc, bench_signing_key, clean_command, run_ok, unique_suffix,
};

fn main() {
    let count = bench_arg(1, 2000);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let key = bench_signing_key(dir.path());
    let paths = oranc_tests::nix::small_paths(count);
    let registry = RegistryProcess::start();
    let repo = format!("{OWNER}/bench-{}", unique_suffix().replace('-', "."));
    run_ok(
        clean_command(bench_oranc())
            .args(["push", "--no-ssl", "--registry", &registry.host()])
            .args(["--repository", &repo, "--parallel", "16", "--signing-key"])
            .arg(&key)
            .args(&paths),
    );
    let standin = GhcrStandIn::start(&registry, &["--deletes-per-second", "3"]);
    let keep = dir.path().join("keep");
    std::fs::write(&keep, paths[..count / 2].join("\n")).expect("writing the roots");
    let started = Instant::now();
    let out = clean_command(bench_oranc())
        .args(["gc", "--no-ssl", "--registry", &standin.host()])
        .args(["--registry-kind", "ghcr", "--repository", &repo])
        .args(["--grace", "0", "--delete", "--keep-closure-of"])
        .arg(&keep)
        .env("GITHUB_TOKEN", TOKEN)
        .env("ORANC_GITHUB_API_URL", standin.api())
        .output()
        .expect("running oranc gc");
    let took = started.elapsed();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "gc failed: {said}");
    let stats = standin.stats();
    let deletes = stats["api_deletes"].as_u64().unwrap_or(0);
    let requests = stats["api_requests"].as_u64().unwrap_or(0);
    let removed_paths = (count - count / 2) as f64;
    let floor = deletes as f64 / 3.0;
    println!(
        "bench-gc-ghcr: {count} paths, gc keeping {}, GitHub's secondary limit at 3 deletes/s",
        count / 2
    );
    println!(
        "deleted {deletes} versions in {:.1} s; the limit's floor {floor:.1} s ({:.2}x)",
        took.as_secs_f64(),
        took.as_secs_f64() / floor.max(0.001)
    );
    println!(
        "API requests {requests} ({:.2} per deleted path); secondary limits met {}",
        requests as f64 / removed_paths,
        stats["secondary_limited"]
    );
}
