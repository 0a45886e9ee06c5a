//! The shipped monitoring (deploy/prometheus/alerts.yml, deploy/grafana/oranc.json) against a
//! real Prometheus scraping a real server and watch-store: after real traffic (Nix
//! substitutes a closure, misses, a rate-limited burst, a wrong writer password, a registry
//! that goes away), every dashboard expression returns series, every alert rule loads and
//! evaluates, and every metric an alert reads exists. A renamed metric fails here.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: helpers outside #[test] panic on purpose"
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use oranc_tests::abuse::argon2_default_hash;
use oranc_tests::nix::{copy_from, SignedClosure};
use oranc_tests::registry::RegistryProcess;
use oranc_tests::server::{allow_plain_http, ServerProcess};
use oranc_tests::{
    bench_signing_key, curl, free_loopback_addr, fresh_repo, push_closure, release_oranc_command,
    run_ok, wait_for_port,
};

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(file)
}

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Prometheus scraping `server` (job `oranc`) and `watch_store` (job `oranc-watch-store`)
/// every second, with the shipped alert rules; its API address.
fn prometheus(dir: &Path, server: &str, watch_store: &str) -> (Killed, String) {
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {rules}\nscrape_configs:\n  - job_name: oranc\n    static_configs:\n      - targets: ['{server}']\n  - job_name: oranc-watch-store\n    static_configs:\n      - targets: ['{watch_store}']\n",
            rules = deploy("prometheus/alerts.yml").display(),
        ),
    )
    .unwrap();
    let address = free_loopback_addr();
    let mut child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={address}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start prometheus ({e}); .ci/setup installs it"));
    wait_for_port(address, Duration::from_secs(30), || {
        child.try_wait().ok().flatten()
    })
    .unwrap_or_else(|e| panic!("prometheus {e}"));
    (Killed(child), format!("http://{address}"))
}

/// Prometheus's answer to an instant `query`.
fn query(api: &str, query: &str) -> serde_json::Value {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", "--data-urlencode"])
        .arg(format!("query={query}"))
        .arg(format!("{api}/api/v1/query"))
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{query}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// Whether `query` is valid and returns at least one series; else why not.
fn has_series(api: &str, expression: &str) -> Result<(), String> {
    let answer = query(api, expression);
    if answer["status"] != "success" {
        return Err(format!("{expression}: {}", answer["error"]));
    }
    match answer["data"]["result"].as_array() {
        Some(result) if !result.is_empty() => Ok(()),
        _ => Err(format!("{expression}: no series")),
    }
}

/// The metric names an expression reads.
fn metric_names(expression: &str) -> Vec<String> {
    let names = regex::Regex::new(r"\b(oranc_[a-z_]+|process_[a-z_]+|up)\b").unwrap();
    let mut found: Vec<String> = names
        .find_iter(expression)
        .map(|m| m.as_str().to_owned())
        .collect();
    found.sort();
    found.dedup();
    found
}

/// The alert rules once Prometheus has loaded and evaluated every one.
fn loaded_rules(api: &str) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = Command::new("curl")
            .args(["-s", &format!("{api}/api/v1/rules")])
            .output()
            .unwrap();
        let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let rules: Vec<serde_json::Value> = answer["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        if !rules.is_empty() && rules.iter().all(|r| r["health"] == "ok") {
            break rules;
        }
        assert!(
            Instant::now() < deadline,
            "rules not all healthy: {rules:#?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Every expression of the dashboard's panels, with its variables filled in.
fn panel_expressions() -> Vec<(String, String)> {
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(deploy("grafana/oranc.json")).unwrap())
            .unwrap();
    let mut expressions = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expression = target["expr"]
                .as_str()
                .unwrap()
                .replace("$instance", ".*")
                .replace("$cache", ".*")
                .replace("$__rate_interval", "1m");
            expressions.push((panel["title"].to_string(), expression));
        }
    }
    expressions
}

#[test]
fn every_dashboard_panel_and_alert_rule_has_its_series() {
    let registry = RegistryProcess::start();
    let closure = SignedClosure::build(20_000);
    let repo = fresh_repo("monitoring");
    let pushed = push_closure(release_oranc_command(), &registry.host(), &repo, &closure);
    assert!(pushed.status.success());
    let dir = tempfile::tempdir().unwrap();
    let writers = dir.path().join("writers");
    std::fs::write(&writers, format!("ci:{}\n", argon2_default_hash("s3cret"))).unwrap();
    let config = format!(
        "[rate_limit]\nrequests_per_second = 20\nburst = 20\n{}[caches.main]\nregistry = \"{host}\"\nrepository = \"{repo}\"\nwriters_file = \"{writers}\"\n",
        allow_plain_http(&registry.host()),
        host = registry.host(),
        writers = writers.display(),
    );
    let server = ServerProcess::start_logged(release_oranc_command(), &config, &[]);

    let metrics_address = free_loopback_addr();
    let key = bench_signing_key(dir.path());
    let watch_store = Killed(
        release_oranc_command()
            .args(["watch-store", "--no-ssl", "--registry", &registry.host()])
            .args(["--repository", &fresh_repo("monitoring-watch")])
            .arg("--signing-key")
            .arg(&key)
            .arg("--metrics-listen")
            .arg(metrics_address.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_port(metrics_address, Duration::from_secs(30), || None)
        .unwrap_or_else(|e| panic!("watch-store metrics {e}"));
    let server_address = server
        .url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let (_prometheus, api) = prometheus(dir.path(), &server_address, &metrics_address.to_string());

    // Before any traffic, every metric a rule or panel reads is exported (at 0 where it
    // counts events): `rate()` and the alerts see no series of one that appears only after
    // its first event. Only the families labelled by what requests bring (route, method,
    // status) start with the first request.
    let fresh = format!(
        "{}{}",
        server.metrics(),
        run_ok(Command::new("curl").args(["-s", &format!("http://{metrics_address}/metrics")]))
    );
    let expressions = loaded_rules(&api)
        .iter()
        .map(|rule| rule["query"].as_str().unwrap().to_owned())
        .chain(
            panel_expressions()
                .into_iter()
                .map(|(_, expression)| expression),
        )
        .collect::<Vec<_>>();
    let mut missing: Vec<String> = expressions
        .iter()
        .flat_map(|expression| metric_names(expression))
        .filter(|name| {
            name != "up"
                && ![
                    "oranc_http_requests_total",
                    "oranc_http_request_duration_seconds_bucket",
                    "oranc_http_response_bytes_total",
                ]
                .contains(&name.as_str())
        })
        .filter(|name| {
            !fresh.lines().any(|line| {
                line.starts_with(&format!("{name}{{")) || line.starts_with(&format!("{name} "))
            })
        })
        .collect();
    missing.sort();
    missing.dedup();
    assert!(
        missing.is_empty(),
        "not exported before any traffic: {missing:?}"
    );

    // Traffic: a substitution, misses, a burst over the rate limit, a wrong password, and
    // a registry that goes away (registry errors, 5xx answers).
    let store = tempfile::tempdir().unwrap();
    let copied = copy_from(
        &server.url("main"),
        store.path(),
        &closure.root,
        &closure.public_key,
    );
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    for i in 0..5 {
        curl(&[&server.url(&format!("main/{}.narinfo", "0".repeat(31) + &i.to_string()))]);
    }
    let (status, _, _) = curl(&[
        "-u",
        "ci:wrong",
        "-X",
        "PUT",
        "--data-binary",
        "x",
        &server.url("main/nix-cache-info"),
    ]);
    assert_eq!(status, "401");
    for _ in 0..60 {
        curl(&[&server.url("main/nix-cache-info")]);
    }
    drop(registry);
    std::thread::sleep(Duration::from_secs(2));
    for i in 0..3 {
        curl(&[&server.url(&format!("main/{}.narinfo", "1".repeat(31) + &i.to_string()))]);
    }
    // A few scrapes after the traffic, so every rate has two samples.
    std::thread::sleep(Duration::from_secs(4));

    // Every rule loaded and evaluated.
    let rules = loaded_rules(&api);
    assert_eq!(rules.len(), 10, "every rule in alerts.yml loaded");

    let mut problems = Vec::new();
    for rule in &rules {
        let expression = rule["query"].as_str().unwrap();
        let answer = query(&api, expression);
        if answer["status"] != "success" {
            problems.push(format!("alert {}: {}", rule["name"], answer["error"]));
        }
        for name in metric_names(expression) {
            if let Err(why) = has_series(&api, &name) {
                problems.push(format!("alert {}: {why}", rule["name"]));
            }
        }
    }
    for (title, expression) in panel_expressions() {
        if let Err(why) = has_series(&api, &expression) {
            problems.push(format!("panel {title}: {why}"));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    drop(watch_store);
}
