//! `cargo run --release -p oranc-tests --bin bench-mirror-abuse`: the hostile-client attacks
//! on a mirror at full size, against a fresh release `oranc server` (another build with
//! `BENCH_ORANC`), the attacker on 127.0.0.2, a legitimate client on 127.0.0.1. The
//! upstream is nginx serving a cache Nix wrote.
//!
//! - **Held NARs:** 80 connections with 4 KiB receive buffers, none ever read: 64 ask for one
//!   cold 64 MiB NAR that upstream sends at 1 MB/s, 16 for other cold NARs. After 40 s
//!   (past the 30 s after which waiting requests used to fetch the NAR again), how often the
//!   held NAR was fetched from upstream, whether a legitimate client gets a cold NAR of its
//!   own and how fast, and the server's peak RSS. Targets: fetched at most twice, the
//!   legitimate NAR served, under 150 MB.
//! - **Amplification:** 64 requests for cold 1 MiB NARs, each connection closed right after
//!   the status line: the bytes of requests sent against the bytes the mirror fetched and
//!   stored, with the default `store_bytes_per_client_per_hour` and with 16 MiB
//!   (`BENCH_ALLOWANCE_MIB`; 0 skips it, for a build that lacks the setting).
//!
//! Prints figures; asserts nothing.

#![allow(
    clippy::print_stdout,
    reason = "a benchmark reports its figures on stdout"
)]

use std::time::{Duration, Instant};

use oranc_tests::abuse::{peak_rss_mb, requests_left_after_the_status_line, unread_requests};
use oranc_tests::mirror::{download, mirror_config, served_nar_url, signed_random_cache};
use oranc_tests::nginx::NginxProcess;
use oranc_tests::registry::RegistryProcess;
use oranc_tests::server::{metric_or_zero, ServerProcess};
use oranc_tests::{bench_oranc, clean_command};

const MIB: usize = 1 << 20;

fn mirror_server(
    registry: &RegistryProcess,
    upstream: &str,
    key: &str,
    extra: &str,
) -> ServerProcess {
    let config = format!("{}{extra}", mirror_config(registry, upstream, key));
    ServerProcess::start_binary(clean_command(bench_oranc()), &config, &[])
}

fn nar_metric(server: &ServerProcess, name: &str, labels: &str) -> f64 {
    metric_or_zero(
        &server.metrics(),
        &format!("oranc_mirror_{name}{{cache=\"mirror\"{labels}}}"),
    )
}

fn held_nars() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut sizes = vec![64 * MIB];
    sizes.extend([256 << 10; 17]);
    let (paths, key, cache) = signed_random_cache(dir.path(), "held", &sizes);
    let nginx = NginxProcess::start(&format!(
        "server {{ listen {{listen}}; root {}; location /nar/ {{ limit_rate 1m; }} }}",
        cache.display()
    ));
    let registry = RegistryProcess::start();
    let server = mirror_server(&registry, &nginx.url(""), &key, "");
    let urls: Vec<String> = paths
        .iter()
        .map(|path| format!("/mirror/{}", served_nar_url(&server, path)))
        .collect();
    let (held, others) = urls.split_first().expect("paths");
    let (attacked, legit) = others.split_at(16);
    let attack = std::iter::repeat_n(held.clone(), 64).chain(attacked.iter().cloned());
    let connections = unread_requests(server.addr, attack);
    std::thread::sleep(Duration::from_secs(40));
    let fetches = nar_metric(
        &server,
        "upstream_lookups_total",
        ",kind=\"nar\",outcome=\"hit\"",
    );
    let started = Instant::now();
    let (code, bytes) = download(&server.url(&legit[0]));
    let legit_took = started.elapsed();
    println!(
        "held NARs: {} connections held; the held NAR fetched {} times (target at most 2); a legitimate cold NAR: curl {code}, {} KiB in {:.2} s; peak RSS {:.0} MB (target < 150)",
        connections.len(),
        fetches - 16.0,
        bytes.len() / 1024,
        legit_took.as_secs_f64(),
        peak_rss_mb(&server),
    );
}

fn amplification(allowance_mib: Option<usize>) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (paths, key, cache) = signed_random_cache(dir.path(), "amplified", &[MIB; 64]);
    let nginx = NginxProcess::serving(&cache);
    let registry = RegistryProcess::start();
    let extra = allowance_mib.map_or_else(String::new, |mib| {
        format!(
            "[mirror]\nstore_bytes_per_client_per_hour = {}\n",
            mib * MIB
        )
    });
    let server = mirror_server(&registry, &nginx.url(""), &key, &extra);
    let urls: Vec<String> = paths
        .iter()
        .map(|path| format!("/mirror/{}", served_nar_url(&server, path)))
        .collect();
    let sent = requests_left_after_the_status_line(server.addr, urls);
    std::thread::sleep(Duration::from_secs(10));
    let fetched = nar_metric(&server, "fetched_bytes_total", "");
    let stored = nar_metric(&server, "stored_bytes_total", "");
    let over = nar_metric(
        &server,
        "upstream_lookups_total",
        ",kind=\"nar\",outcome=\"over_allowance\"",
    );
    println!(
        "amplification ({}): {:.1} KB of requests, each left after the status line; the mirror fetched {:.1} MiB and stored {:.1} MiB; {over} NARs past the allowance",
        allowance_mib.map_or_else(|| "default allowance".to_owned(), |mib| format!("{mib} MiB an hour")),
        sent as f64 / 1000.0,
        fetched / MIB as f64,
        stored / MIB as f64,
    );
}

fn main() {
    held_nars();
    amplification(None);
    let allowance = std::env::var("BENCH_ALLOWANCE_MIB")
        .ok()
        .and_then(|mib| mib.parse().ok())
        .unwrap_or(16);
    if allowance > 0 {
        amplification(Some(allowance));
    }
}
