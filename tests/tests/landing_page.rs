//! The landing page (issue 38): `GET /` in a real browser (headless Chromium) shows every
//! named cache with the `nix.conf` lines to copy and which key is the cache's own, under a
//! strict CSP that the page breaks nowhere; `curl` gets the same as text; `GET /NAME` gives
//! tools JSON; nothing secret shows, and a hostile `Host` cannot inject markup.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: helpers outside #[test] panic on purpose"
)]

use oranc_tests::nix::generate_key;
use oranc_tests::registry::RegistryProcess;
use oranc_tests::server::ServerProcess;
use oranc_tests::{curl, unique_suffix};

/// Headless Chromium, as Debian names it (`chromium-headless-shell`, or `chromium`).
fn chromium() -> Option<std::process::Command> {
    ["chromium-headless-shell", "chromium"]
        .into_iter()
        .find(|name| {
            std::process::Command::new("which")
                .arg(name)
                .output()
                .is_ok_and(|out| out.status.success())
        })
        .map(|name| {
            let mut command = std::process::Command::new(name);
            command.args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--enable-logging=stderr",
                "--v=0",
            ]);
            command
        })
}

fn server_with_two_caches() -> (RegistryProcess, ServerProcess, tempfile::TempDir, String) {
    let registry = RegistryProcess::start();
    let dir = tempfile::tempdir().unwrap();
    let (secret, public) = generate_key(dir.path(), "landing-1");
    let writers = dir.path().join("writers");
    let hash = oranc_tests::abuse::argon2_default_hash("s3cret");
    std::fs::write(&writers, format!("ci:{hash}\n")).unwrap();
    let repo = format!("landing/{}", unique_suffix().replace('-', "."));
    let config = format!(
        "[registries.\"{host}\"]\nplain_http = true\n\
         [caches.ci]\nregistry = \"{host}\"\nrepository = \"{repo}-ci\"\nwriters_file = \"{writers}\"\nsigning_key_file = \"{secret}\"\n\
         [caches.nixpkgs]\nregistry = \"{host}\"\nrepository = \"{repo}-mirror\"\nupstreams = [\"http://127.0.0.1:9/\"]\nupstream_public_keys = [\"cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=\"]\n",
        host = registry.host(),
        writers = writers.display(),
        secret = secret.display(),
    );
    let server = ServerProcess::start_binary(oranc_tests::release_oranc_command(), &config, &[]);
    (registry, server, dir, public)
}

#[test]
fn the_landing_page_lists_each_cache_with_the_lines_to_copy_in_a_real_browser() {
    let (registry, server, dir, public) = server_with_two_caches();
    let page_url = server.url("");
    let host = page_url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();

    // curl: the same as text, without a registry, repository or path of the server's.
    let (status, text, _) = curl(&[&page_url]);
    assert_eq!(status, "200", "{text}");
    assert!(
        text.contains(&format!("extra-substituters = http://{host}/ci")),
        "{text}"
    );
    assert!(
        text.contains(&format!("extra-trusted-public-keys = {public}")),
        "{text}"
    );
    assert!(text.contains("this cache's own"), "{text}");
    assert!(
        text.contains("mirror of") && text.contains("cache.nixos.org-1:"),
        "{text}"
    );
    assert!(
        !text.contains(&registry.host()),
        "no registry shows: {text}"
    );
    assert!(!text.contains("landing/"), "no repository shows: {text}");
    assert!(
        !text.contains(&dir.path().display().to_string()),
        "no file shows: {text}"
    );

    // JSON for tools.
    let (status, json, _) = curl(&["-H", "Accept: application/json", &server.url("ci")]);
    assert_eq!(status, "200", "{json}");
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["name"], "ci");
    assert_eq!(json["url"], format!("http://{host}/ci"));
    assert_eq!(json["public_keys"][0], public.as_str());
    assert_eq!(
        json["priority"], 41,
        "oranc's default, no nix-cache-info being stored"
    );
    assert_eq!(json["want_mass_query"], true);
    assert!(json["writes"].as_str().unwrap().contains("writers_file"));
    assert!(json.get("registry").is_none());
    // A one-segment path that names no cache is no page.
    assert!(curl(&[&server.url("nosuchcache")]).0.starts_with('4'));

    // A hostile Host header is not reflected.
    let (_, hostile, _) = curl(&[
        "-H",
        "Accept: text/html",
        "-H",
        "Host: <script>x",
        &page_url,
    ]);
    assert!(!hostile.contains("<script>"), "{hostile}");

    // The page in a real browser: what it renders, and no CSP violation on the way.
    let Some(mut browser) = chromium() else {
        panic!("headless Chromium is needed (apt-get install chromium-headless-shell; .ci/setup installs it)");
    };
    let shot = dir.path().join("landing.png");
    let rendered = browser
        .arg("--window-size=1000,900")
        .arg(format!("--screenshot={}", shot.display()))
        .arg("--dump-dom")
        .arg(&page_url)
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&rendered.stdout);
    let log = String::from_utf8_lossy(&rendered.stderr);
    assert!(
        dom.contains(&format!("extra-substituters = http://{host}/nixpkgs")),
        "{dom}"
    );
    assert!(dom.contains(&public), "{dom}");
    assert!(!dom.contains("<script"), "{dom}");
    assert!(
        !log.contains("Content Security Policy") && !log.contains("Refused to"),
        "the page breaks its own CSP: {log}"
    );
    let shot_bytes = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(
        shot_bytes > 10_000,
        "a screenshot with the page on it: {shot_bytes} bytes"
    );
    if let Some(keep) = std::env::var_os("ORANC_TEST_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
    let (_, head, _) = curl(&[
        "-H",
        "Accept: text/html",
        "-D",
        "-",
        "-o",
        "/dev/null",
        &page_url,
    ]);
    let head = head.to_ascii_lowercase();
    assert!(
        head.contains("content-security-policy: default-src 'none'"),
        "{head}"
    );
    assert!(head.contains("cache-control: no-store"), "{head}");
}
