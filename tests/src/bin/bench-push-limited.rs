//! `cargo run --release -p oranc-tests --bin bench-push-limited [PATHS] [RATES]`: `oranc
//! push` of PATHS (default 300) small store paths at `--parallel 16` through nginx
//! `limit_req` (burst 20, `nodelay`; past it 429 with `Retry-After: 1`) in front of a local
//! registry, at each rate of RATES requests a second (default `20,400`). Prints the requests
//! nginx saw, the share answered 429, the push's time and the floor it cannot beat (the
//! requests accepted, at the rate), next to the targets: at most 10% 429 at 20 r/s, within
//! 1.25x the floor, no path lost. Another build with `BENCH_ORANC`; the last push's stderr
//! in the file `BENCH_PUSH_LOG` names. Asserts nothing.

#![allow(
    clippy::print_stdout,
    reason = "a benchmark reports its figures on stdout"
)]

use std::time::Instant;

use oranc_tests::nginx::NginxProcess;
use oranc_tests::nix::small_paths;
use oranc_tests::registry::RegistryProcess;
use oranc_tests::{bench_oranc, bench_signing_key, clean_command, push_signed_in_parallel};

fn main() {
    let mut args = std::env::args().skip(1);
    let count: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(300);
    let rates: Vec<u64> = args
        .next()
        .unwrap_or_else(|| "20,400".to_owned())
        .split(',')
        .filter_map(|rate| rate.trim().parse().ok())
        .collect();
    let oranc = bench_oranc();
    let keys = tempfile::tempdir().expect("a temporary directory");
    let key = bench_signing_key(keys.path());
    let registry = RegistryProcess::start();
    println!(
        "oranc push of {count} small paths at --parallel 16 through nginx limit_req (burst 20)"
    );
    println!("targets at 20 r/s: at most 10% answered 429, within 1.25x the floor; no loss at any rate\n");
    println!(
        "{:>6} {:>9} {:>6} {:>7} {:>8} {:>8} {:>7}  summary",
        "r/s", "requests", "429", "429 %", "time s", "floor s", "x floor"
    );
    for rate in rates {
        // Fresh paths each time: nothing is there yet.
        let paths = small_paths(count);
        let nginx = NginxProcess::rate_limiting(&registry.base_url(), rate, 20);
        let started = Instant::now();
        let output = push_signed_in_parallel(
            clean_command(oranc.clone()),
            &nginx.addr.to_string(),
            "limited",
            &key,
            &paths,
        );
        let elapsed = started.elapsed().as_secs_f64();
        let said = String::from_utf8_lossy(&output.stderr).into_owned();
        if let Some(file) = std::env::var_os("BENCH_PUSH_LOG") {
            let _ = std::fs::write(file, &said);
        }
        let summary = said
            .lines()
            .rev()
            .find(|line| line.contains("pushed"))
            .unwrap_or("(no summary)")
            .to_owned();
        let (requests, refused) = nginx.requests_and_429s();
        let floor = (requests - refused) as f64 / rate as f64;
        println!(
            "{rate:>6} {requests:>9} {refused:>6} {:>6.1}% {elapsed:>8.1} {floor:>8.1} {:>7.2}  {}{summary}",
            100.0 * refused as f64 / requests.max(1) as f64,
            elapsed / floor.max(f64::EPSILON),
            if output.status.success() { "" } else { "FAILED: " },
        );
    }
}
