//! `cargo run --release -p oranc-tests --bin bench-server [SECONDS]`: a load generator (Debian's
//! `wrk`) on loopback against `oranc server` in front of a real registry: narinfo requests/s
//! and p50/p99 latency for hits and misses (and what the registry itself answers for the
//! manifest and blob GETs a narinfo costs without oranc), cold narinfo hits and misses with
//! the registry 20 ms away (through a delaying proxy), NAR MB/s through the server next to a
//! direct blob GET from the registry (alternating, on loopback and 20 ms away), and the
//! server's peak memory. Prints figures; asserts nothing.

#![allow(
    clippy::print_stdout,
    reason = "a benchmark reports its figures on stdout"
)]

use std::process::Command;
use std::time::Instant;

use oranc_tests::latency::LatencyProxy;
use oranc_tests::nix::{hash_part, nix_command};
use oranc_tests::oci::skopeo_raw_manifest;
use oranc_tests::registry::RegistryProcess;
use oranc_tests::server::ServerProcess;
use oranc_tests::{run_ok, unique_suffix};

/// A throughput run: 16 connections from 2 threads (wrk shares the machine's cores).
const LOADED: &str = "-c16";
/// A latency run: one connection, so a request's time is its own, not a queue's.
const SINGLE: &str = "-c1";

fn wrk(url: &str, seconds: u32, headers: &[&str]) -> String {
    wrk_with(LOADED, url, seconds, headers)
}

fn wrk_with(connections: &str, url: &str, seconds: u32, headers: &[&str]) -> String {
    let threads = if connections == SINGLE { "-t1" } else { "-t2" };
    let mut command = Command::new("wrk");
    command.args([
        threads,
        connections,
        &format!("-d{seconds}s"),
        "--latency",
        url,
    ]);
    for header in headers {
        command.args(["-H", header]);
    }
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("running wrk: {e} (apt-get install wrk)"));
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let field = |prefix: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("?")
            .to_owned()
    };
    let requests = text
        .lines()
        .find(|l| l.starts_with("Requests/sec:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?");
    let non_2xx = text
        .lines()
        .find(|l| l.contains("Non-2xx"))
        .map(|l| l.trim().to_owned())
        .unwrap_or_default();
    format!(
        "{requests:>10} req/s   p50 {:>8}   p99 {:>8}   {non_2xx}",
        field("50%"),
        field("99%")
    )
}

fn curl_mb_per_s(url: &str, bytes: u64) -> f64 {
    let best = (0..3)
        .map(|_| {
            let started = Instant::now();
            run_ok(Command::new("curl").args(["-sf", "-o", "/dev/null", url]));
            started.elapsed()
        })
        .min()
        .unwrap_or_default();
    bytes as f64 / 1e6 / best.as_secs_f64()
}

/// NAR MB/s through the server and straight from the registry, alternating `runs` times so
/// the machine's noise hits both sides alike.
fn compare_nar(label: &str, through_url: &str, direct_url: &str, size: u64, runs: usize) {
    for _ in 0..runs {
        let through = curl_mb_per_s(through_url, size);
        let direct = curl_mb_per_s(direct_url, size);
        println!(
            "NAR {} MB, {label}: through oranc server {through:8.1} MB/s, straight from the registry {direct:8.1} MB/s ({:.2}x)",
            size / 1_000_000,
            through / direct
        );
    }
}

fn main() {
    let seconds: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
    let oranc = oranc_tests::bench_oranc();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let key = oranc_tests::bench_signing_key(dir.path());
    let content = dir.path().join(format!("bench-server-{}", unique_suffix()));
    std::fs::create_dir(&content).expect("a directory");
    run_ok(
        Command::new("head")
            .args(["-c", &(256u64 << 20).to_string(), "/dev/urandom"])
            .stdout(std::fs::File::create(content.join("data")).expect("a file")),
    );
    let path = run_ok(nix_command("nix-store").arg("--add").arg(&content))
        .trim()
        .to_owned();

    let registry = RegistryProcess::start();
    run_ok(
        Command::new(&oranc)
            .args([
                "push",
                "--no-ssl",
                "--registry",
                &registry.host(),
                "--repository",
                "bench/server",
                "--signing-key",
            ])
            .arg(&key)
            .arg(&path),
    );
    let allow = oranc_tests::server::allow_plain_http(&registry.host());
    let hash = hash_part(&path);
    println!(
        "bench-server: wrk -t2 -c16 (or -t1 -c1) -d{seconds}s on loopback, distribution registry"
    );
    for (label, extra) in [
        // `[cache]`, the response cache's older name, so that older builds (BENCH_ORANC) read it too.
        ("no response cache", "[cache]\nmax_bytes = 0\n"),
        ("response cache  ", ""),
    ] {
        let server =
            ServerProcess::start_binary(Command::new(&oranc), &format!("{allow}{extra}"), &[]);
        let cache = server.url(&format!("{}/bench/server", registry.host()));
        println!(
            "{label}  narinfo hit : {}",
            wrk(&format!("{cache}/{hash}.narinfo"), seconds, &[])
        );
        println!(
            "{label}  narinfo hit, 1 connection: {}",
            wrk_with(SINGLE, &format!("{cache}/{hash}.narinfo"), seconds, &[])
        );
        println!(
            "{label}  narinfo miss: {}",
            wrk(
                &format!("{cache}/00000000000000000000000000000000.narinfo"),
                seconds,
                &[]
            )
        );
    }
    // What a narinfo costs a client that asks the registry itself: a manifest GET, then a
    // blob GET, each a separate round trip.
    let tag = oranc_core::TagEncoding::Custom
        .encode(&format!("{hash}.narinfo"))
        .expect("a tag");
    let manifest = skopeo_raw_manifest(&registry.host(), "bench/server", tag.as_str());
    let narinfo_blob = oranc_core::layout::read_manifest(&manifest)
        .expect("our manifest")
        .layer
        .digest
        .to_oci_digest();
    let v2 = format!("{}/v2/bench/server", registry.base_url());
    println!(
        "registry directly  manifest GET: {}",
        wrk(
            &format!("{v2}/manifests/{}", tag.as_str()),
            seconds,
            &[&format!(
                "Accept: {}",
                oranc_core::layout::MANIFEST_MEDIA_TYPE
            )]
        )
    );
    println!(
        "registry directly  blob GET    : {}",
        wrk(&format!("{v2}/blobs/{narinfo_blob}"), seconds, &[])
    );

    // Cold lookups (no caches) with the registry 20 ms away: what a first request waits.
    let rtt = std::time::Duration::from_millis(20);
    let proxy = LatencyProxy::start(registry.addr(), rtt);
    let far = ServerProcess::start_binary(
        Command::new(&oranc),
        &format!(
            "[registries.\"{}\"]\nplain_http = true\n[cache]\nmax_bytes = 0\n",
            proxy.host()
        ),
        &[],
    );
    let far_cache = far.url(&format!("{}/bench/server", proxy.host()));
    for (label, key) in [
        ("hit ", format!("{hash}.narinfo")),
        (
            "miss",
            "00000000000000000000000000000000.narinfo".to_owned(),
        ),
    ] {
        let url = format!("{far_cache}/{key}");
        run_ok(Command::new("curl").args(["-s", "-o", "/dev/null", &url]));
        let started = Instant::now();
        let rounds = 20;
        for _ in 0..rounds {
            run_ok(Command::new("curl").args(["-s", "-o", "/dev/null", &url]));
        }
        println!(
            "cold narinfo {label}, registry RTT {} ms: {:6.1} ms per request",
            rtt.as_millis(),
            started.elapsed().as_secs_f64() * 1000.0 / f64::from(rounds)
        );
    }

    let server = ServerProcess::start_binary(Command::new(&oranc), &allow, &[]);
    let cache = server.url(&format!("{}/bench/server", registry.host()));
    let narinfo = run_ok(Command::new("curl").args(["-sf", &format!("{cache}/{hash}.narinfo")]));
    let narinfo = oranc_core::NarInfo::parse(&narinfo).expect("a narinfo");
    let size = narinfo.file_size.unwrap_or_default();
    let digest = narinfo.file_hash.expect("a FileHash").to_oci_digest();
    let direct_url = format!("{}/v2/bench/server/blobs/{digest}", registry.base_url());
    compare_nar(
        "on loopback",
        &format!("{cache}/{}", narinfo.url),
        &direct_url,
        size,
        3,
    );
    // The same with the registry 20 ms away, as users' registries are.
    let far_direct = format!("http://{}/v2/bench/server/blobs/{digest}", proxy.host());
    let far_nar = format!("{far_cache}/{}", narinfo.url);
    compare_nar("registry RTT 20 ms", &far_nar, &far_direct, size, 2);
    println!(
        "server peak RSS: {}",
        server.peak_memory().unwrap_or_else(|| "?".into())
    );
}
