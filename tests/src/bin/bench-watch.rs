//! `cargo run --release -p oranc-tests --bin bench-watch [PATHS]`: `oranc watch-store` into
//! a local registry at each round-trip time in `BENCH_RTT_MS` (default `0,20`) and the poll interval in `BENCH_POLL` (default `500ms`): the time from
//! a `nix-store --add` returning to watch-store reporting the path pushed (its narinfo
//! tagged), for single paths one at a time; paths/s when PATHS (default 200) small paths
//! become valid at once; and its CPU time and resident memory while idle for 10 s.
//! `BENCH_ORANC` benchmarks another build.

#![allow(
    clippy::print_stdout,
    reason = "a benchmark reports its figures on stdout"
)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use oranc_tests::latency::DistantRegistry;
use oranc_tests::unique_suffix;

/// Adds `names` as small store paths in one `nix-store --add`; their store paths.
fn add_paths(dir: &Path, names: &[String]) -> Vec<String> {
    oranc_tests::nix::add_files(
        dir,
        names
            .iter()
            .map(|name| (name.clone(), format!("{name}\n").repeat(100))),
    )
}

/// Waits until watch-store's log says each of `paths` was pushed.
fn wait_pushed(log: &Path, paths: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if paths.iter().all(|p| text.contains(&format!("pushed {p} "))) {
            return;
        }
        assert!(Instant::now() < deadline, "not pushed in time:\n{text}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// utime + stime of `pid`, in clock ticks, and its resident memory.
fn cpu_and_rss(pid: u32) -> (u64, String) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc stat");
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks = fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .map_or("?".into(), |l| {
            l.trim_start_matches("VmRSS:").trim().to_owned()
        });
    (ticks, rss)
}

fn start_watch(oranc: &Path, host: &str, key: &Path, log: &Path, poll: &str) -> Child {
    let child = Command::new(oranc)
        .args(["watch-store", "--no-ssl", "--registry", host])
        .args(["--repository", "bench/watch", "--poll-interval", poll])
        .arg("--signing-key")
        .arg(key)
        .stderr(std::fs::File::create(log).expect("a log file"))
        .stdout(Stdio::null())
        .spawn()
        .expect("starting oranc watch-store");
    while !std::fs::read_to_string(log)
        .unwrap_or_default()
        .contains("watching")
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

fn main() {
    let many: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let oranc = oranc_tests::bench_oranc();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let key = oranc_tests::bench_signing_key(dir.path());
    let rtts = oranc_tests::latency::bench_rtts();
    let poll = std::env::var("BENCH_POLL").unwrap_or_else(|_| "500ms".into());
    println!("bench-watch: --poll-interval {poll}, {many} paths at once");
    for rtt in rtts {
        let distant = DistantRegistry::start(rtt);
        let host = distant.host();
        let log = dir.path().join(format!("watch-{rtt}.log"));
        let mut watcher = start_watch(&oranc, &host, &key, &log, &poll);

        let mut latencies = Vec::new();
        for i in 0..10_u64 {
            let name = format!("one-{}-{i}", unique_suffix());
            let path = add_paths(dir.path(), &[name]);
            let added = Instant::now();
            wait_pushed(&log, &path);
            latencies.push(added.elapsed());
            // Spread the next path over the poll interval rather than just after a look.
            std::thread::sleep(Duration::from_millis(i * 379 % 1000));
        }
        latencies.sort();
        let nonce = unique_suffix();
        let names: Vec<String> = (0..many).map(|i| format!("many-{nonce}-{i}")).collect();
        let started = Instant::now();
        let paths = add_paths(dir.path(), &names);
        let added = started.elapsed();
        wait_pushed(&log, &paths);
        let all = started.elapsed();

        let (before, _) = cpu_and_rss(watcher.id());
        std::thread::sleep(Duration::from_secs(10));
        let (after, rss) = cpu_and_rss(watcher.id());
        println!(
            "RTT {rtt:>3} ms: valid -> pushed p50 {:4} ms, max {:4} ms; {many} at once {:.2} s ({:.0} paths/s, nix-store --add took {:.2} s); idle 10 s: {} ms CPU, RSS {rss}",
            latencies[latencies.len() / 2].as_millis(),
            latencies[latencies.len() - 1].as_millis(),
            all.as_secs_f64(),
            many as f64 / all.as_secs_f64(),
            added.as_secs_f64(),
            (after - before) * 10,
        );
        oranc_tests::send_signal(watcher.id(), "-TERM");
        let status = watcher.wait().expect("watch-store exits");
        assert!(
            status.success(),
            "{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
}
