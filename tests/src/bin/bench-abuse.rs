//! `cargo run --release -p oranc-tests --bin bench-abuse`: each attack of the load review at
//! full size against a fresh release `oranc server` (another build with `BENCH_ORANC`), from
//! 127.0.0.2, while a legitimate client on 127.0.0.1 asks for a narinfo every 10 ms. Prints,
//! per attack, the server's peak RSS, the legitimate client's p99 and its failures, next to
//! the targets (peak RSS < 150 MB, p99 < 50 ms, no failure). Asserts nothing; loopback only,
//! every loop bounded. `BENCH_ATTACK=crowd` runs only the crowding addresses, `h2` only
//! HTTP/2's attacks.

#![allow(
    clippy::print_stdout,
    reason = "a benchmark reports its figures on stdout"
)]

use std::time::Duration;

use oranc_tests::abuse::{
    attacker_connection, attacker_requests, crowding_addresses, during, half_sent_connections,
    hot_url, new_clients, peak_rss_mb, pipelined, target_server, Seen,
};
use oranc_tests::h2_frames;
use oranc_tests::server::ServerProcess;
use oranc_tests::{bench_oranc, clean_command};

fn get(url: String, credentials: Option<(String, String)>) -> oranc_tests::abuse::AttackRequest {
    (reqwest::Method::GET, url, credentials)
}

/// One attack on a fresh server with `extra` config; what the legitimate client saw.
fn measure(
    name: &str,
    extra: &str,
    attack: impl FnOnce(&ServerProcess) -> String,
) -> (String, Seen, String) {
    let (_registry, server, _dir) = target_server(clean_command(bench_oranc()), extra);
    let mut note = String::new();
    let seen = during(&server, &hot_url(&server), || note = attack(&server));
    (name.to_owned(), seen, note)
}

/// 17 addresses holding 250 kept-alive connections each (each within its cap of 256,
/// together more than the 4,096 the server allows), and new clients arriving meanwhile: 50
/// requests from 127.0.0.1, each on a new connection given 5 s.
fn measure_crowd() -> (String, Seen, String) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let (_registry, server, _dir) = target_server(clean_command(bench_oranc()), "");
    let running = AtomicBool::new(true);
    let (made, answered) = std::thread::scope(|scope| {
        let crowd = scope
            .spawn(|| crowding_addresses(server.addr, 17, 250, Duration::from_secs(8), &running));
        std::thread::sleep(Duration::from_secs(15));
        let answered = new_clients(
            &hot_url(&server),
            50,
            Duration::from_millis(100),
            Duration::from_secs(5),
        );
        running.store(false, Ordering::SeqCst);
        (crowd.join().unwrap_or_default(), answered)
    });
    let mut latencies: Vec<Duration> = answered.iter().flatten().copied().collect();
    latencies.sort();
    let seen = Seen {
        peak_rss_mb: peak_rss_mb(&server),
        requests: answered.len(),
        failures: answered.len() - latencies.len(),
        p99: latencies
            .get((latencies.len() * 99 / 100).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default(),
    };
    (
        "17 addresses x 250 kept-alive connections; new clients".to_owned(),
        seen,
        format!("{made} attacker connections made"),
    )
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

fn main() {
    // The legitimate client asks 100 times a second: a rate limit it stays under, the
    // attacker not.
    let limited = "[rate_limit]\nrequests_per_second = 200\nburst = 400";
    // `BENCH_ATTACK=crowd` runs only the crowding addresses, `h2` only HTTP/2's attacks.
    let results = match std::env::var("BENCH_ATTACK").as_deref() {
        Ok("crowd") => vec![measure_crowd()],
        Ok("h2") => h2_attacks(limited),
        _ => {
            let mut all = every_attack(limited);
            all.extend(h2_attacks(limited));
            all
        }
    };
    print(results);
}

fn every_attack(limited: &str) -> Vec<(String, Seen, String)> {
    vec![
        measure("idle (no attack)", "", |_| {
            std::thread::sleep(Duration::from_secs(3));
            String::new()
        }),
        measure(
            "2,000 password guesses, 200 at once (argon2id 19 MiB)",
            "",
            |server| {
                let guesses = (0..2_000)
                    .map(|n| {
                        let user = if n % 2 == 0 { "ci" } else { "stranger" };
                        let url = server.url("ci/nix-cache-info");
                        get(url, Some((user.to_owned(), format!("guess{n}"))))
                    })
                    .collect();
                let statuses = attacker_requests(guesses, 200);
                format!(
                    "{} checked (404), {} limited (429), {} busy (503)",
                    count(&statuses, 404),
                    count(&statuses, 429),
                    count(&statuses, 503)
                )
            },
        ),
        measure("100,000 made-up HTTP methods", "", |server| {
            let requests =
                (0..100_000).map(|n| format!("M{n} /healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
            let answered = pipelined(server.addr, requests);
            format!(
                "{answered} answered; /metrics {} KB",
                server.metrics().len() / 1024
            )
        }),
        measure("100,000 made-up credential pairs", limited, |server| {
            let flood = (0..100_000)
                .map(|n| get(hot_url(server), Some((format!("u{n}"), "p".to_owned()))))
                .collect();
            let statuses = attacker_requests(flood, 64);
            format!(
                "{} passed, {} limited",
                count(&statuses, 200),
                count(&statuses, 429)
            )
        }),
        measure(
            "1,000 half-sent connections for 5 s",
            "[clients]\nheader_read_timeout_secs = 3",
            |server| {
                let held = half_sent_connections(server.addr, 1_000);
                std::thread::sleep(Duration::from_secs(5));
                format!("{} connections held", held.len())
            },
        ),
        measure("10,000 /readyz", "", |server| {
            let checks = (0..10_000)
                .map(|_| get(server.url("readyz"), None))
                .collect();
            let statuses = attacker_requests(checks, 64);
            format!("{} answered 200", count(&statuses, 200))
        }),
        measure(
            "20,000 unique misses and junk queries",
            "[cache]\nmax_bytes = 1048576",
            |server| {
                let flood = (0..10_000)
                    .flat_map(|n| {
                        [
                            server.url(&format!("ci/{n:0>32}.narinfo")),
                            format!("{}?junk={n}", hot_url(server)),
                        ]
                    })
                    .map(|url| get(url, None))
                    .collect();
                let statuses = attacker_requests(flood, 32);
                format!("{} answered", statuses.iter().filter(|s| **s != 0).count())
            },
        ),
        measure_crowd(),
    ]
}

/// HTTP/2's own attacks, over h2c (after its preface, the same code as h2 over TLS).
fn h2_attacks(limited: &str) -> Vec<(String, Seen, String)> {
    vec![
        measure(
            "HTTP/2 rapid resets (CVE-2023-44487), 10 s",
            limited,
            |server| h2_flood(server, Duration::from_secs(10), h2_frames::rapid_resets),
        ),
        measure("HTTP/2 CONTINUATION floods, 10 s", "", |server| {
            h2_flood(
                server,
                Duration::from_secs(10),
                h2_frames::endless_header_block,
            )
        }),
    ]
}

/// 8 attacker connections at a time (h2c, from the attacker's address) sending what
/// `attack` makes until the server closes each, then a new one, for `length`; how many
/// connections it took and how much they sent.
fn h2_flood(
    server: &ServerProcess,
    length: Duration,
    attack: for<'a> fn(&'a [u8]) -> h2_frames::Rounds<'a>,
) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let block = h2_frames::get_block(&server.addr.to_string(), "/ci/nix-cache-info");
    let started = std::time::Instant::now();
    let (connections, bytes) = (AtomicUsize::new(0), AtomicUsize::new(0));
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                while started.elapsed() < length {
                    let Ok(stream) = attacker_connection(server.addr) else {
                        continue;
                    };
                    let sent = h2_frames::flood_until_closed(stream, attack(&block), 256 << 20);
                    connections.fetch_add(1, Ordering::Relaxed);
                    bytes.fetch_add(sent, Ordering::Relaxed);
                }
            });
        }
    });
    let connections = connections.into_inner();
    format!(
        "{connections} connections closed by the server, {} KB sent each on average",
        bytes.into_inner() / connections.max(1) / 1024
    )
}

fn print(results: Vec<(String, Seen, String)>) {
    println!("targets: peak RSS < 150 MB, legitimate p99 < 50 ms, 0 failed\n");
    println!(
        "{:<55} {:>9} {:>9} {:>9} {:>7}  attack",
        "attack", "peak MB", "p99 ms", "requests", "failed"
    );
    for (name, seen, note) in results {
        println!(
            "{:<55} {:>9.0} {:>9.1} {:>9} {:>7}  {note}",
            name,
            seen.peak_rss_mb,
            seen.p99.as_secs_f64() * 1000.0,
            seen.requests,
            seen.failures
        );
    }
}
