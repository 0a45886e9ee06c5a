//! `cargo run --release -p oranc-tests --bin bench-push [SMALL] [LARGE_MIB]`: `oranc push`
//! of many small and a few large store paths into a local registry, at each round-trip time
//! in `BENCH_RTT_MS` (default `0,20`: loopback, then through a proxy that delays every
//! packet), with the registry requests per path from its access log; next to
//! `nix copy --to file://` of the same paths as the floor; the time of a second push where
//! everything is there; and peak memory for a small and a large path, to show it does not
//! grow with size.

#![allow(
    clippy::print_stdout,
    reason = "a benchmark reports its figures on stdout"
)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use oranc_tests::latency::DistantRegistry;
use oranc_tests::nix::{add_random_path, nix_command};
use oranc_tests::registry::RegistryProcess;
use oranc_tests::{run_ok, unique_suffix};

struct PushRun {
    elapsed: Duration,
    peak: String,
    summary: String,
}

fn push(oranc: &Path, registry_host: &str, repo: &str, key: &Path, paths: &[String]) -> PushRun {
    let started = Instant::now();
    let output = Command::new(oranc)
        .args([
            "push",
            "--no-ssl",
            "--registry",
            registry_host,
            "--repository",
            repo,
            "--no-closure",
        ])
        .args(
            std::env::var("BENCH_PUSH_ARGS")
                .unwrap_or_default()
                .split_whitespace(),
        )
        .arg("--signing-key")
        .arg(key)
        .args(paths)
        .output()
        .expect("running oranc push");
    let elapsed = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    let summary = stderr.lines().last().unwrap_or_default().to_owned();
    let peak = summary
        .rsplit("peak memory ")
        .next()
        .unwrap_or("?")
        .to_owned();
    PushRun {
        elapsed,
        peak,
        summary,
    }
}

fn nar_bytes(paths: &[String]) -> u64 {
    let out = run_ok(nix_command("nix").args(["path-info", "--json"]).args(paths));
    let infos: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    infos
        .as_array()
        .expect("a list")
        .iter()
        .map(|i| i["narSize"].as_u64().unwrap_or(0))
        .sum()
}

fn main() {
    let small = oranc_tests::bench_arg(1, 200);
    let large_mib = oranc_tests::bench_arg(2, 44);
    let oranc = oranc_tests::bench_oranc();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let nonce = unique_suffix();
    let key = oranc_tests::bench_signing_key(dir.path());

    let mut paths: Vec<String> = (0..small)
        .map(|i| add_random_path(dir.path(), &format!("small-{nonce}-{i}"), 4096))
        .collect();
    paths.extend(
        (0..3).map(|i| add_random_path(dir.path(), &format!("large-{nonce}-{i}"), large_mib << 20)),
    );
    let bytes = nar_bytes(&paths);
    println!(
        "bench-push: {small} paths of 4 KiB + 3 of {large_mib} MiB = {} paths, {:.1} MB of NAR, zstd level 3, extra flags {:?}",
        paths.len(),
        bytes as f64 / 1e6,
        std::env::var("BENCH_PUSH_ARGS").unwrap_or_default()
    );

    let rtts = oranc_tests::latency::bench_rtts();
    for rtt in rtts {
        let distant = DistantRegistry::start(rtt);
        let (registry, host) = (&distant.registry, distant.host());
        let first = push(&oranc, &host, "bench/push", &key, &paths);
        let requests = registry.requests().len();
        println!(
            "oranc push, RTT {rtt:>3} ms      : {:6.2} s  {:7.1} paths/s  {:7.1} MB/s  {:4.1} requests/path  peak RSS {}",
            first.elapsed.as_secs_f64(),
            paths.len() as f64 / first.elapsed.as_secs_f64(),
            bytes as f64 / 1e6 / first.elapsed.as_secs_f64(),
            requests as f64 / paths.len() as f64,
            first.peak
        );
        let second = push(&oranc, &host, "bench/push", &key, &paths);
        println!(
            "oranc push again (all there)  : {:6.2} s  ({})",
            second.elapsed.as_secs_f64(),
            second.summary
        );
    }
    let registry = RegistryProcess::start();

    let file_cache = dir.path().join("file-cache");
    let started = Instant::now();
    run_ok(
        nix_command("nix")
            .args(["copy", "--to"])
            .arg(format!("file://{}?compression=zstd", file_cache.display()))
            .args(&paths),
    );
    let nix_copy = started.elapsed();
    println!(
        "nix copy --to file://?compression=zstd: {:6.2} s  {:7.1} paths/s  {:7.1} MB/s",
        nix_copy.as_secs_f64(),
        paths.len() as f64 / nix_copy.as_secs_f64(),
        bytes as f64 / 1e6 / nix_copy.as_secs_f64()
    );

    // Peak memory against path size: one path past the upload chunk size, then one 8 times
    // larger.
    let tiny = add_random_path(dir.path(), &format!("rss-small-{nonce}"), 64 << 20);
    let huge = add_random_path(dir.path(), &format!("rss-large-{nonce}"), 512 << 20);
    let small_run = push(&oranc, &registry.host(), "bench/rss-small", &key, &[tiny]);
    let large_run = push(&oranc, &registry.host(), "bench/rss-large", &key, &[huge]);
    println!("peak RSS pushing one 64 MiB path   : {}", small_run.peak);
    println!(
        "peak RSS pushing one 512 MiB path  : {}  ({:.1} MB/s)",
        large_run.peak,
        (512u64 << 20) as f64 / 1e6 / large_run.elapsed.as_secs_f64()
    );
}
