//! The server behind a real nginx: as a CDN would, a caching proxy answers repeated NAR and
//! narinfo requests from what the server's `Cache-Control` and `ETag` let it keep; as a
//! load balancer over two replicas, one of which dies, it still serves Nix a closure.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: helpers outside #[test] panic on purpose"
)]

use oranc_tests::nginx::NginxProcess;
use oranc_tests::nix::{assert_same_closure, copy_from, hash_part, SignedClosure};
use oranc_tests::registry::RegistryProcess;
use oranc_tests::server::{allow_plain_http, ServerProcess};
use oranc_tests::{oranc_command, push_closure, run_ok};

fn allow(registry: &RegistryProcess) -> String {
    allow_plain_http(&registry.host())
}

/// The response headers of a GET (the body is dropped), lower-cased names.
fn head_of_get(url: &str, extra: &[&str]) -> String {
    run_ok(
        std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-D", "-"])
            .args(extra)
            .arg(url),
    )
    .to_ascii_lowercase()
}

fn served_by_server(server: &ServerProcess) -> f64 {
    let text = server.metrics();
    text.lines()
        .filter(|l| l.starts_with("oranc_http_requests_total{") && !l.contains("metrics"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn a_caching_proxy_keeps_nars_and_narinfos_and_nix_substitutes_through_it() {
    let registry = RegistryProcess::start();
    let closure = SignedClosure::build(300_000);
    let pushed = push_closure(oranc_command(), &registry.host(), "cdn/cache", &closure);
    assert!(pushed.status.success());
    let server = ServerProcess::start(&allow(&registry), &[]);
    let nginx = NginxProcess::start(&format!(
        "  proxy_cache_path {{dir}}/cache keys_zone=oranc:10m;\n  server {{\n    listen {{listen}};\n    location / {{\n      proxy_pass http://{};\n      proxy_cache oranc;\n      add_header X-Cache-Status $upstream_cache_status;\n    }}\n  }}\n",
        server.addr
    ));
    let cache_path = format!("{}/cdn/cache", registry.host());
    let store = tempfile::tempdir().unwrap();
    let copied = copy_from(
        &nginx.url(&cache_path),
        store.path(),
        &closure.root,
        &closure.public_key,
    );
    assert!(
        copied.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&copied.stderr),
        nginx.error_log()
    );
    assert_same_closure(store.path(), &closure.root);

    // Nix fetched every narinfo and NAR once through nginx; now they come from nginx alone.
    let narinfo_url = nginx.url(&format!(
        "{cache_path}/{}.narinfo",
        hash_part(&closure.root)
    ));
    let narinfo = run_ok(std::process::Command::new("curl").args(["-sf", &narinfo_url]));
    let nar_url = nginx.url(&format!(
        "{cache_path}/{}",
        narinfo
            .lines()
            .find_map(|l| l.strip_prefix("URL: "))
            .unwrap()
    ));
    let before = served_by_server(&server);
    for url in [&narinfo_url, &nar_url] {
        let head = head_of_get(url, &[]);
        assert!(head.contains("x-cache-status: hit"), "{url}: {head}");
    }
    let nar_head = head_of_get(&nar_url, &[]);
    assert!(nar_head.contains("immutable"), "{nar_head}");
    assert_eq!(served_by_server(&server), before, "nginx answered alone");

    // Revalidation straight at the server: the ETag gives a 304 without the blob.
    let direct = server.url(&format!(
        "{cache_path}/{}",
        nar_url
            .split(&cache_path)
            .nth(1)
            .unwrap()
            .trim_start_matches('/')
    ));
    let etag = head_of_get(&direct, &[])
        .lines()
        .find_map(|l| l.strip_prefix("etag: ").map(str::trim).map(str::to_owned))
        .unwrap();
    let revalidated = head_of_get(&direct, &["-H", &format!("If-None-Match: {etag}")]);
    assert!(revalidated.starts_with("http/1.1 304"), "{revalidated}");
    // An absence is kept only briefly.
    let missing = head_of_get(
        &nginx.url(&format!(
            "{cache_path}/00000000000000000000000000000000.narinfo"
        )),
        &[],
    );
    assert!(missing.contains("max-age=30"), "{missing}");
}

#[test]
fn two_replicas_behind_a_load_balancer_survive_losing_one() {
    let registry = RegistryProcess::start();
    let closure = SignedClosure::build(2_000_000);
    let pushed = push_closure(oranc_command(), &registry.host(), "ha/cache", &closure);
    assert!(pushed.status.success());
    let mut first = ServerProcess::start(&allow(&registry), &[]);
    let second = ServerProcess::start(&allow(&registry), &[]);
    let nginx = NginxProcess::start(&format!(
        "  upstream oranc {{\n    server {};\n    server {};\n  }}\n  server {{\n    listen {{listen}};\n    location / {{\n      proxy_pass http://oranc;\n      proxy_next_upstream error timeout http_502 http_503;\n    }}\n  }}\n",
        first.addr, second.addr
    ));
    let cache_url = nginx.url(&format!("{}/ha/cache", registry.host()));
    let store = tempfile::tempdir().unwrap();
    let substitute = oranc_tests::nix::copy_from_command(
        &cache_url,
        store.path(),
        &closure.root,
        &closure.public_key,
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    // One replica is stopped (SIGTERM, as a rolling restart does) as soon as it has
    // answered Nix; nginx sends what follows to the other.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while served_by_server(&first) == 0.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "nginx never used the first replica"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(first.terminate(), "the first replica stopped cleanly");
    let finished = substitute.wait_with_output().unwrap();
    assert!(
        finished.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&finished.stderr),
        nginx.error_log()
    );
    assert_same_closure(store.path(), &closure.root);
    assert!(
        served_by_server(&second) > 0.0,
        "the second replica served the rest"
    );
}
