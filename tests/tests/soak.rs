//! A bounded soak: a load generator on loopback keeps `oranc server` busy with narinfo hits,
//! NAR downloads and misses while the registry behind it is killed and restarted. It
//! reports requests served, errors by phase and the server's peak RSS, and asserts that
//! nothing failed before the outage, that the server recovered after it, that a stored path
//! was never answered 404, and that memory stayed bounded.
//! `ORANC_SOAK_SECS` (default 20) sets its length.

#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    reason = "an integration test that reports its figures"
)]

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use oranc_tests::nix::{hash_part, SignedClosure};
use oranc_tests::registry::RegistryProcess;
use oranc_tests::server::ServerProcess;
use oranc_tests::{fresh_repo, oranc_command, push_closure};

const WORKERS: usize = 8;

/// Phases of the run, by what the registry is doing.
const BEFORE: usize = 0;
const OUTAGE: usize = 1;
const RECOVERING: usize = 2;
const AFTER: usize = 3;
const PHASES: [&str; 4] = ["before", "outage", "recovering", "after"];

#[derive(Default)]
struct Tally {
    served: [AtomicU64; 4],
    errors: [AtomicU64; 4],
    false_404: AtomicU64,
    bytes: AtomicU64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_rides_out_a_registry_restart_under_load() {
    let seconds: u64 = std::env::var("ORANC_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
        .max(8);
    let mut registry = RegistryProcess::start();
    let closure = tokio::task::block_in_place(|| SignedClosure::build(64_000));
    let repo = fresh_repo("soak");
    let pushed = tokio::task::block_in_place(|| {
        push_closure(oranc_command(), &registry.host(), &repo, &closure)
    });
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    let config = format!(
        "max_retry = 1\nrequest_timeout_secs = 3\nread_timeout_secs = 3\n[registries.\"{}\"]\nplain_http = true\n",
        registry.host()
    );
    let mut server = ServerProcess::start(&config, &[]);
    let cache = server.url(&format!("{}/{repo}", registry.host()));

    // What the load asks for: every narinfo and NAR of the closure, and misses.
    let http = reqwest::Client::new();
    let mut present = vec![format!("{cache}/nix-cache-info")];
    for path in &closure.paths {
        let hash = hash_part(path);
        let narinfo = format!("{cache}/{hash}.narinfo");
        let text = http
            .get(&narinfo)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let url = oranc_core::NarInfo::parse(&text).unwrap().url;
        present.push(narinfo);
        present.push(format!("{cache}/{url}"));
    }
    let present = Arc::new(present);

    let tally = Arc::new(Tally::default());
    let phase = Arc::new(AtomicUsize::new(BEFORE));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..WORKERS)
        .map(|worker| {
            let (http, present, tally, phase, cache) = (
                http.clone(),
                present.clone(),
                tally.clone(),
                phase.clone(),
                cache.clone(),
            );
            tokio::spawn(async move {
                let mut round = 0usize;
                while Instant::now() < deadline {
                    round += 1;
                    let (url, stored) = if round.is_multiple_of(5) {
                        (
                            format!("{cache}/{:032}.narinfo", worker * 1_000_000 + round),
                            false,
                        )
                    } else {
                        (present[(worker + round) % present.len()].clone(), true)
                    };
                    let at = phase.load(Ordering::Relaxed);
                    let outcome = match http.get(&url).timeout(Duration::from_secs(10)).send().await
                    {
                        Ok(response) => {
                            let status = response.status();
                            match response.bytes().await {
                                Ok(body) if status.is_success() || status == 404 => {
                                    tally.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                                    if status == 404 && stored {
                                        tally.false_404.fetch_add(1, Ordering::Relaxed);
                                    }
                                    true
                                }
                                _ => false,
                            }
                        }
                        Err(_) => false,
                    };
                    // A request that began before the outage and failed in it is the
                    // outage's.
                    let counter = if outcome {
                        &tally.served[at]
                    } else {
                        &tally.errors[at.max(phase.load(Ordering::Relaxed).min(OUTAGE))]
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    // The registry goes away for a while in the middle of the run, then comes back.
    let third = Duration::from_secs(seconds / 3);
    tokio::time::sleep(third).await;
    phase.store(OUTAGE, Ordering::Relaxed);
    tokio::task::block_in_place(|| registry.stop());
    tokio::time::sleep(Duration::from_secs(3)).await;
    tokio::task::block_in_place(|| registry.restart());
    phase.store(RECOVERING, Ordering::Relaxed);
    // Requests already waiting on the dead registry finish within their timeouts.
    tokio::time::sleep(Duration::from_secs(4)).await;
    phase.store(AFTER, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }

    let peak = server.peak_memory().unwrap_or_default();
    println!("soak: {seconds} s, {WORKERS} clients, registry down for 3 s after {third:?}");
    for (index, name) in PHASES.iter().enumerate() {
        println!(
            "  {name:>10}: {:>8} served {:>6} errors",
            tally.served[index].load(Ordering::Relaxed),
            tally.errors[index].load(Ordering::Relaxed)
        );
    }
    println!(
        "  {} MB sent, server peak RSS {peak}",
        tally.bytes.load(Ordering::Relaxed) / 1_000_000
    );

    assert!(server.is_running(), "the server is up");
    assert_eq!(
        tally.errors[BEFORE].load(Ordering::Relaxed),
        0,
        "no errors before the outage"
    );
    assert_eq!(
        tally.errors[AFTER].load(Ordering::Relaxed),
        0,
        "recovered after the restart"
    );
    assert!(
        tally.served[AFTER].load(Ordering::Relaxed) > 0,
        "served after the restart"
    );
    assert!(
        tally.served[OUTAGE].load(Ordering::Relaxed) > 0,
        "cached answers kept coming in the outage"
    );
    assert_eq!(
        tally.false_404.load(Ordering::Relaxed),
        0,
        "a stored path is never a 404"
    );
    let peak_kb: u64 = peak.trim_end_matches(" kB").parse().unwrap();
    assert!(peak_kb < 150_000, "peak RSS {peak_kb} kB");
}
