//! `oranc server` with real Nix (Debian's nix-bin) and a real registry: substituting what
//! `oranc push` stored, uploading with `nix copy --to`, refusing what it must refuse, and
//! serving the cache the original oranc wrote.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: helpers outside #[test] panic on purpose"
)]

use oranc_tests::auth::{PASSWORD, USERNAME};
use oranc_tests::nix::{
    assert_same_closure, closure_hashes, copy_from as nix_copy_from, copy_from_command, hash_part,
    hashes_of, nix_command, SignedClosure,
};
use oranc_tests::registry::{RegistryAuth, RegistryProcess};
use oranc_tests::server::{allow_plain_http, metric, ServerProcess};
use oranc_tests::{fixture, fresh_repo, oranc_command};

fn allow(registry: &RegistryProcess) -> String {
    allow_plain_http(&registry.host())
}

fn http_status(method: &str, url: &str, extra: &[&str]) -> String {
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", method])
        .args(extra)
        .arg(url)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn nix_substitutes_what_oranc_push_stored_and_refuses_a_wrong_key() {
    let registry = RegistryProcess::start();
    let closure = SignedClosure::build(200_000);
    let repo = fresh_repo("srv");
    for extra in [
        vec!["initialize"],
        vec!["--trusted-public-key", &closure.public_key, &closure.root],
    ] {
        let out = oranc_command()
            .args([
                "push",
                "--no-ssl",
                "--registry",
                &registry.host(),
                "--repository",
                &repo,
            ])
            .args(&extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let server = ServerProcess::start(&allow(&registry), &[]);
    let cache_url = server.url(&format!("{}/{repo}", registry.host()));

    let store = tempfile::tempdir().unwrap();
    let copied = nix_copy_from(&cache_url, store.path(), &closure.root, &closure.public_key);
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    assert_same_closure(store.path(), &closure.root);

    // Another key: Nix refuses the paths.
    let stranger = SignedClosure::build(10);
    let other_store = tempfile::tempdir().unwrap();
    let refused = nix_copy_from(
        &cache_url,
        other_store.path(),
        &closure.root,
        &stranger.public_key,
    );
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("signature"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // HTTP behaviour Nix relies on.
    let hash = hash_part(&closure.root);
    assert_eq!(
        http_status("GET", &format!("{cache_url}/{hash}.narinfo"), &[]),
        "200"
    );
    assert_eq!(
        http_status("HEAD", &format!("{cache_url}/{hash}.narinfo"), &["-I"]),
        "200"
    );
    assert_eq!(
        http_status(
            "GET",
            &format!("{cache_url}/00000000000000000000000000000000.narinfo"),
            &[]
        ),
        "404"
    );
    assert_eq!(
        http_status("GET", &format!("{cache_url}/..%2f..%2fetc/passwd"), &[]),
        "400"
    );
    assert_eq!(
        http_status(
            "GET",
            &server.url("registry.example.com/a/b/nix-cache-info"),
            &[]
        ),
        "403"
    );
    assert_eq!(
        http_status(
            "PUT",
            &format!("{cache_url}/nix-cache-info"),
            &["--data-binary", "StoreDir: /nix/store\n"]
        ),
        "401"
    );
}

#[test]
fn nar_range_requests_are_answered_with_partial_content() {
    let registry = RegistryProcess::start();
    let closure = SignedClosure::build(100_000);
    let repo = fresh_repo("range");
    let out = oranc_command()
        .args([
            "push",
            "--no-ssl",
            "--registry",
            &registry.host(),
            "--repository",
            &repo,
        ])
        .args([
            "--trusted-public-key",
            &closure.public_key,
            "--no-closure",
            &closure.root,
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let server = ServerProcess::start(&allow(&registry), &[]);
    let cache_url = server.url(&format!("{}/{repo}", registry.host()));
    let hash = hash_part(&closure.root);
    let narinfo = std::process::Command::new("curl")
        .arg("-sf")
        .arg(format!("{cache_url}/{hash}.narinfo"))
        .output()
        .unwrap();
    let narinfo =
        oranc_core::NarInfo::parse(std::str::from_utf8(&narinfo.stdout).unwrap()).unwrap();
    let whole = std::process::Command::new("curl")
        .arg("-sf")
        .arg(format!("{cache_url}/{}", narinfo.url))
        .output()
        .unwrap();
    assert_eq!(whole.stdout.len() as u64, narinfo.file_size.unwrap());
    let part = std::process::Command::new("curl")
        .args(["-s", "-D", "-", "-H", "Range: bytes=10-19"])
        .arg(format!("{cache_url}/{}", narinfo.url))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&part.stdout);
    assert!(text.starts_with("HTTP/1.1 206"), "{text}");
    assert!(part.stdout.ends_with(&whole.stdout[10..20]));
}

#[test]
fn nix_copy_to_the_server_uploads_a_cache_that_substitutes_back() {
    let registry = RegistryProcess::start();
    let closure = SignedClosure::build(50_000);
    let config = format!(
        "{}[caches.team]\nregistry = \"{}\"\nrepository = \"team/cache\"\nallow_write = true\n",
        allow(&registry),
        registry.host()
    );
    let server = ServerProcess::start(&config, &[]);
    let uploaded = nix_command("nix")
        .args([
            "copy",
            "--to",
            &format!("{}?compression=zstd", server.url("team")),
            &closure.root,
        ])
        .output()
        .unwrap();
    assert!(
        uploaded.status.success(),
        "{}",
        String::from_utf8_lossy(&uploaded.stderr)
    );
    // The repository's shared config blob is looked for once per server, not once per file.
    let metrics = server.metrics();
    let registry_calls = |operation: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with("oranc_registry_requests_total{"))
            .filter(|l| l.contains(&format!("operation=\"{operation}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(
        registry_calls("head_blob"),
        1.0,
        "one look for the config blob for 3 paths' files (it was one per file)"
    );

    let store = tempfile::tempdir().unwrap();
    let copied = nix_copy_from(
        &server.url("team"),
        store.path(),
        &closure.root,
        &closure.public_key,
    );
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    assert_eq!(closure_hashes(Some(store.path()), &closure.root).len(), 3);

    // A narinfo whose NAR was never uploaded is refused, and nothing is written.
    let bogus = "StorePath: /nix/store/5kk4mwqi310s9ssry90al6mxrb47vdiw-app\nURL: nar/1n7bp8gfz80mjraq5jq1qghh5dcsbb5gfi3rkp2b6v1pr8i7gbcf.nar.zst\nNarHash: sha256:13zkh9mx7kkmdiz0wx9arwvkx0ss3ixkmhill5dx2j682ibp8v8x\nNarSize: 1\n";
    let url = server.url("team/5kk4mwqi310s9ssry90al6mxrb47vdiw.narinfo");
    assert_eq!(http_status("PUT", &url, &["--data-binary", bogus]), "400");
    assert_eq!(http_status("GET", &url, &[]), "404");
}

#[test]
fn client_credentials_from_netrc_are_forwarded_to_the_registry() {
    let registry = RegistryProcess::start_with_auth(RegistryAuth::Htpasswd);
    let closure = SignedClosure::build(10_000);
    let server = ServerProcess::start(&allow(&registry), &[]);
    let netrc = closure.work_dir().join("netrc");
    std::fs::write(
        &netrc,
        format!("machine 127.0.0.1 login {USERNAME} password {PASSWORD}\n"),
    )
    .unwrap();
    let cache_url = server.url(&format!("{}/private/cache", registry.host()));
    let uploaded = nix_command("nix")
        .args([
            "copy",
            "--to",
            &format!("{cache_url}?compression=zstd"),
            &closure.root,
        ])
        .args(["--option", "netrc-file"])
        .arg(&netrc)
        .output()
        .unwrap();
    assert!(
        uploaded.status.success(),
        "{}",
        String::from_utf8_lossy(&uploaded.stderr)
    );
    // Without credentials the server challenges (not a 404); wrong ones are refused.
    assert_eq!(
        http_status("GET", &format!("{cache_url}/nix-cache-info"), &[]),
        "401"
    );
    assert_eq!(
        http_status(
            "GET",
            &format!("{cache_url}/nix-cache-info"),
            &["-u", "x:wrong"]
        ),
        "403"
    );
    let store = tempfile::tempdir().unwrap();
    let copied = copy_from_command(&cache_url, store.path(), &closure.root, &closure.public_key)
        .args(["--option", "netrc-file"])
        .arg(&netrc)
        .output()
        .unwrap();
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
}

#[test]
fn a_registry_that_is_down_is_a_5xx_never_a_404() {
    let port = oranc_tests::free_loopback_addr();
    let server = ServerProcess::start(
        &format!("max_retry = 0\n[registries.\"{port}\"]\nplain_http = true\n"),
        &[],
    );
    let url = server.url(&format!("{port}/a/b/nix-cache-info"));
    assert_eq!(http_status("GET", &url, &[]), "503");
}

#[test]
fn the_cache_the_original_oranc_wrote_is_substituted_by_real_nix() {
    let registry =
        RegistryProcess::start_with_data_from(&fixture("original-oranc/registry-data.tar.gz"));
    let server = ServerProcess::start(&allow(&registry), &[]);
    let key = std::fs::read_to_string(fixture("original-oranc/public-key")).unwrap();
    let root = std::fs::read_to_string(fixture("original-oranc/root-path")).unwrap();
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("original-oranc/path-info.json")).unwrap())
            .unwrap();
    let store = tempfile::tempdir().unwrap();
    let copied = nix_copy_from(
        &server.url(&format!("{}/fixture/cache", registry.host())),
        store.path(),
        root.trim(),
        key.trim(),
    );
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    assert_eq!(
        closure_hashes(Some(store.path()), root.trim()),
        hashes_of(&expected)
    );
}

#[test]
fn upstreams_redirect_query_parameters_address_and_old_encodings_read() {
    let registry = RegistryProcess::start();
    let closure = SignedClosure::build(5_000);
    // Pushed with the older tag encoding: readers find it through the fallback.
    let out = oranc_command()
        .args([
            "push",
            "--no-ssl",
            "--registry",
            &registry.host(),
            "--repository",
            "old/cache",
        ])
        .args([
            "--tag-encoding",
            "base32-dnssec",
            "--trusted-public-key",
            &closure.public_key,
            &closure.root,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let has_it = ServerProcess::start(&allow(&registry), &[]);
    let hash = hash_part(&closure.root);
    let old_cache = has_it.url(&format!("{}/old/cache", registry.host()));
    assert_eq!(
        http_status("GET", &format!("{old_cache}/{hash}.narinfo"), &[]),
        "200",
        "base32-dnssec fallback"
    );
    let store = tempfile::tempdir().unwrap();
    let copied = nix_copy_from(&old_cache, store.path(), &closure.root, &closure.public_key);
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );

    // registry and repository as query parameters, as the original accepts them.
    let by_query = has_it.url(&format!(
        "{hash}.narinfo?registry={}&repository=old%2Fcache",
        registry.host()
    ));
    assert_eq!(http_status("GET", &by_query, &[]), "200");

    // A server whose own repository is empty redirects to the upstream that has the file.
    let config = format!("{}[upstream]\nurls = [\"{old_cache}\"]\n", allow(&registry));
    let front = ServerProcess::start(&config, &[]);
    let empty = front.url(&format!("{}/empty/cache", registry.host()));
    let answer = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{redirect_url}",
        ])
        .arg(format!("{empty}/{hash}.narinfo"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&answer.stdout),
        format!("302 {old_cache}/{hash}.narinfo")
    );
    // nix-cache-info is never taken from upstream (the default --ignore-upstream).
    assert_eq!(
        http_status("GET", &format!("{empty}/nix-cache-info"), &[]),
        "404"
    );
}

#[test]
fn a_warm_narinfo_is_served_without_the_registry() {
    let mut registry = Some(RegistryProcess::start());
    let host = registry.as_ref().unwrap().host();
    let closure = SignedClosure::build(1_000);
    let out = oranc_command()
        .args([
            "push",
            "--no-ssl",
            "--registry",
            &host,
            "--repository",
            "warm/cache",
        ])
        .args([
            "--trusted-public-key",
            &closure.public_key,
            "--no-closure",
            &closure.root,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = ServerProcess::start(&allow(registry.as_ref().unwrap()), &[]);
    let hash = hash_part(&closure.root);
    let narinfo = server.url(&format!("{host}/warm/cache/{hash}.narinfo"));
    let absent = server.url(&format!(
        "{host}/warm/cache/00000000000000000000000000000000.narinfo"
    ));
    assert_eq!(http_status("GET", &narinfo, &[]), "200");
    assert_eq!(http_status("GET", &absent, &[]), "404");
    registry.take(); // stops the registry
    assert_eq!(
        http_status("GET", &narinfo, &[]),
        "200",
        "a hit costs no registry round trip"
    );
    assert_eq!(
        http_status("GET", &absent, &[]),
        "404",
        "a recent 404 is remembered"
    );
    let other = server.url(&format!(
        "{host}/warm/cache/11111111111111111111111111111111.narinfo"
    ));
    assert_eq!(
        http_status("GET", &other, &[]),
        "503",
        "a cold lookup still says the registry is down"
    );
}

/// The server's `/metrics` text.
#[test]
fn metrics_count_requests_cache_hits_and_registry_calls_and_pass_promtool() {
    let registry = RegistryProcess::start();
    let closure = SignedClosure::build(1_000);
    let out = oranc_command()
        .args([
            "push",
            "--no-ssl",
            "--registry",
            &registry.host(),
            "--repository",
            "metrics/cache",
        ])
        .args([
            "--trusted-public-key",
            &closure.public_key,
            "--no-closure",
            &closure.root,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = ServerProcess::start(&allow(&registry), &[]);
    let hash = hash_part(&closure.root);
    let narinfo = server.url(&format!("{}/metrics/cache/{hash}.narinfo", registry.host()));
    for _ in 0..3 {
        assert_eq!(http_status("GET", &narinfo, &[]), "200");
    }
    let text = server.metrics();
    let value = |prefix: &str| metric(&text, prefix);
    assert_eq!(
        value(
            "oranc_http_requests_total{cache=\"url\",method=\"GET\",route=\"narinfo\",status=\"200\"}"
        ),
        3.0
    );
    assert_eq!(value("oranc_response_cache_hits_total"), 2.0);
    assert_eq!(value("oranc_response_cache_misses_total"), 1.0);
    assert_eq!(
        value(&format!(
            "oranc_registry_requests_total{{operation=\"get_manifest\",registry=\"{}\"}}",
            registry.host()
        )),
        1.0,
        "two of three lookups cost the registry nothing"
    );
    assert!(!text.contains(&hash), "no keys or paths in labels");

    // The NAR: two GETs and a HEAD cost one manifest lookup; each GET fetches the blob.
    let body = std::process::Command::new("curl")
        .args(["-sf", &narinfo])
        .output()
        .unwrap();
    let parsed = oranc_core::NarInfo::parse(std::str::from_utf8(&body.stdout).unwrap()).unwrap();
    let nar = server.url(&format!("{}/metrics/cache/{}", registry.host(), parsed.url));
    assert_eq!(http_status("GET", &nar, &[]), "200");
    assert_eq!(http_status("GET", &nar, &[]), "200");
    assert_eq!(http_status("HEAD", &nar, &["-I"]), "200");
    let after = server.metrics();
    let registry_ops = |operation: &str| {
        metric(
            &after,
            &format!(
                "oranc_registry_requests_total{{operation=\"{operation}\",registry=\"{}\"}}",
                registry.host()
            ),
        )
    };
    assert_eq!(
        registry_ops("get_manifest"),
        2.0,
        "one lookup for the narinfo, one for the NAR"
    );
    assert_eq!(
        registry_ops("get_blob"),
        3.0,
        "the narinfo once, the NAR per GET"
    );

    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (apt-get install prometheus; .ci/setup does)");
    use std::io::Write as _;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}

#[test]
fn the_rate_limit_answers_429_with_retry_after_and_readiness_follows_the_registry() {
    let mut registry = Some(RegistryProcess::start());
    let host = registry.as_ref().unwrap().host();
    let config = format!(
        "{}[rate_limit]\nrequests_per_second = 1\nburst = 3\n",
        allow(registry.as_ref().unwrap())
    );
    let server = ServerProcess::start(&config, &[]);
    assert_eq!(http_status("GET", &server.url("readyz"), &[]), "200");
    let url = server.url(&format!("{host}/limited/cache/nix-cache-info"));
    let statuses: Vec<String> = (0..6).map(|_| http_status("GET", &url, &[])).collect();
    assert_eq!(
        &statuses[..3],
        ["404", "404", "404"],
        "the burst passes: {statuses:?}"
    );
    assert!(
        statuses[3..].iter().all(|s| s == "429"),
        "then the limit: {statuses:?}"
    );
    let answer = std::process::Command::new("curl")
        .args(["-s", "-D", "-", "-o", "/dev/null", &url])
        .output()
        .unwrap();
    let headers = String::from_utf8_lossy(&answer.stdout).to_lowercase();
    assert!(headers.contains("retry-after: 1"), "{headers}");
    assert_eq!(
        http_status("GET", &server.url("metrics"), &[]),
        "200",
        "metrics are never limited"
    );

    registry.take();
    // A verdict is reused for a few seconds (probes must not each ping the registry).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while http_status("GET", &server.url("readyz"), &[]) != "503" {
        assert!(
            std::time::Instant::now() < deadline,
            "readyz never saw the registry go"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert_eq!(http_status("GET", &server.url("healthz"), &[]), "200");
}

#[tokio::test]
async fn a_registry_that_never_answers_gets_a_504_in_bounded_time() {
    let faults = oranc_tests::faults::FaultServer::start(0, bytes::Bytes::new()).await;
    let config = format!(
        "response_timeout_secs = 1\n[registries.\"{}\"]\nplain_http = true\n",
        faults.host()
    );
    let server = ServerProcess::start(&config, &[]);
    let url = server.url(&format!(
        "{}/{}/nix-cache-info",
        faults.host(),
        oranc_tests::faults::HANGING
    ));
    let started = std::time::Instant::now();
    let status = tokio::task::spawn_blocking(move || http_status("GET", &url, &[]))
        .await
        .unwrap();
    assert_eq!(status, "504");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn sigterm_lets_an_in_flight_nar_download_finish_and_it_counts_as_in_flight() {
    let registry = RegistryProcess::start();
    let closure = SignedClosure::build(32 << 20);
    let out = oranc_command()
        .args([
            "push",
            "--no-ssl",
            "--registry",
            &registry.host(),
            "--repository",
            "drain/cache",
        ])
        .args([
            "--trusted-public-key",
            &closure.public_key,
            "--compression",
            "none",
        ])
        .arg(&closure.root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut server = ServerProcess::start(&allow(&registry), &[]);
    let cache = server.url(&format!("{}/drain/cache", registry.host()));
    let lib = closure
        .paths
        .iter()
        .find(|p| p.ends_with("oranc-test-lib"))
        .unwrap();
    let hash = hash_part(lib);
    let narinfo = std::process::Command::new("curl")
        .arg("-sf")
        .arg(format!("{cache}/{hash}.narinfo"))
        .output()
        .unwrap();
    let narinfo =
        oranc_core::NarInfo::parse(std::str::from_utf8(&narinfo.stdout).unwrap()).unwrap();
    // About 4 s at 8 MB/s, far more than loopback socket buffers hold; SIGTERM after 1 s.
    let target = closure.work_dir().join("downloaded.nar");
    let download = std::process::Command::new("curl")
        .args([
            "-sSf",
            "--limit-rate",
            "8M",
            "-w",
            "%{http_code} %{size_download}",
            "-o",
        ])
        .arg(&target)
        .arg(format!("{cache}/{}", narinfo.url))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(1));
    // A streaming NAR is in flight until its body ends, not only until its headers went.
    let in_flight = metric(&server.metrics(), "oranc_http_requests_in_flight");
    assert_eq!(in_flight, 2.0, "the NAR and this scrape");
    let started = std::time::Instant::now();
    assert!(server.terminate(), "the server exits cleanly");
    let output = download.wait_with_output().unwrap();
    assert!(output.status.success(), "the download finished");
    let received = std::fs::metadata(&target).map(|m| m.len()).unwrap_or(0);
    assert_eq!(
        received,
        narinfo.file_size.unwrap(),
        "every byte arrived (curl: {})",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(1),
        "the server kept streaming after SIGTERM"
    );
}

#[test]
fn a_panic_is_a_500_and_every_answer_carries_a_request_id_that_the_log_shows() {
    let registry = RegistryProcess::start();
    let mut command = oranc_command();
    command.env("ORANC_TEST_PANIC_PATH", "/panic-now");
    let server = ServerProcess::start_logged(command, &allow(&registry), &[]);
    let base = server.url(&format!("{}/ids/cache", registry.host()));

    // A real panic in the handler: a 500 with a body, not a dropped connection.
    assert_eq!(http_status("GET", &format!("{base}/panic-now"), &[]), "500");
    assert_eq!(
        http_status("GET", &format!("{base}/nix-cache-info"), &[]),
        "404"
    );
    assert!(
        server.log().contains("a handler panicked"),
        "{}",
        server.log()
    );
    let metrics = server.metrics();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("oranc_http_requests_total{") && l.contains("status=\"500\"")),
        "{metrics}"
    );

    // An id is made when the client sends none, and the client's own is kept; both are
    // answered and appear in the server's log lines for the request.
    let head = |extra: &[&str]| {
        let out = std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-D", "-"])
            .args(extra)
            .arg(format!("{base}/nix-cache-info"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_ascii_lowercase()
    };
    let made = head(&[]);
    let made_id = made
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no request id in {made}"))
        .to_owned();
    assert!(
        made_id.len() > 16,
        "a process prefix and a number: {made_id}"
    );
    assert_ne!(
        head(&[]).lines().find(|l| l.starts_with("x-request-id: ")),
        made.lines().find(|l| l.starts_with("x-request-id: ")),
        "every request has its own id"
    );
    let kept = head(&["-H", "x-request-id: nix-run-42"]);
    assert!(kept.contains("x-request-id: nix-run-42"), "{kept}");
    let log = server.log();
    assert!(log.contains("nix-run-42"), "{log}");
    assert!(log.contains(&made_id), "{log}");
}

/// Found following the README (issue 38): a URL naming a registry the server does not serve
/// got a 403 that named only the config; the flags that serve it are named too.
#[test]
fn an_unlisted_registry_is_refused_with_every_way_to_serve_it() {
    let server = ServerProcess::start("", &[]);
    let (status, body, _) =
        oranc_tests::curl(&[&server.url("registry.example.org/owner/repo/nix-cache-info")]);
    assert_eq!(status, "403", "{body}");
    for way in [
        "[registries]",
        "--registry registry.example.org",
        "--allow-any-registry",
    ] {
        assert!(body.contains(way), "{way}: {body}");
    }
}

/// Found following the README (issue 38): an error whose message says its cause had the
/// cause printed twice ("No such file or directory (os error 2): No such file or directory
/// (os error 2)").
#[test]
fn an_error_says_its_cause_once() {
    let output = oranc_command()
        .args(["server", "--config", "/nonexistent/oranc.toml"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        said.matches("No such file or directory").count(),
        1,
        "{said}"
    );
}

/// `--version` names the commit the binary was built from (issue 38).
#[test]
fn the_version_names_the_commit() {
    let version = oranc_tests::run_ok(oranc_command().arg("--version"));
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&head.stdout).trim().to_owned();
    assert!(
        !head.is_empty() && version.contains(&format!("(commit {head})")),
        "{version} (HEAD {head})"
    );
}
