//! Binary-cache features real Nix (2.8) uses, through `oranc server` with a real registry:
//! debug info indexes (`nix copy --to '…?index-debug-info=true'`, `oranc push
//! --index-debug-info`, and gc of them), caches without `nix-cache-info` (what the original
//! oranc pushed without `initialize`), and what an anonymous uploader is told.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: helpers outside #[test] panic on purpose"
)]

use oranc_core::{CacheKey, RegistryCache, TagEncoding};
use oranc_tests::nix::{copy_from, hash_part, nix_command, SignedClosure};
use oranc_tests::registry::RegistryProcess;
use oranc_tests::server::{allow_plain_http, ServerProcess};
use oranc_tests::{curl, fresh_repo, push_closure, release_oranc_command, run_ok, unique_suffix};

/// A store path with one ELF debug file where Nix indexes them; its path and build id.
fn path_with_debug_info() -> (String, String) {
    let build_id: String = oranc_core::Sha256Hash::of(unique_suffix().as_bytes())
        .to_oci_digest()
        .trim_start_matches("sha256:")[..40]
        .to_owned();
    let (dir, file) = build_id.split_at(2);
    let dir_tree = tempfile::tempdir().unwrap();
    let root = dir_tree.path().join("with-debug");
    let debug = root.join("lib/debug/.build-id").join(dir);
    std::fs::create_dir_all(&debug).unwrap();
    std::fs::write(debug.join(format!("{file}.debug")), b"\x7fELF debug").unwrap();
    std::fs::write(root.join("README"), unique_suffix()).unwrap();
    let path = run_ok(nix_command("nix-store").arg("--add").arg(&root))
        .trim()
        .to_owned();
    (path, build_id)
}

fn cache_of(registry: &RegistryProcess, repo: &str) -> RegistryCache {
    oranc_tests::anonymous_cache(&registry.host(), repo)
}

/// Nix's upload of debug info indexes was refused (400: not a binary-cache file), so the
/// copy failed and the narinfo was never stored.
#[test]
fn debug_info_indexes_are_stored_served_pushed_and_collected() {
    let registry = RegistryProcess::start();
    let (path, build_id) = path_with_debug_info();
    let repo = fresh_repo("debuginfo");
    let config = format!(
        "{}[caches.ci]\nregistry = \"{}\"\nrepository = \"{repo}\"\nallow_write = true\n",
        allow_plain_http(&registry.host()),
        registry.host()
    );
    let server = ServerProcess::start_logged(release_oranc_command(), &config, &[]);
    let copied = nix_command("nix")
        .args(["copy", "--to"])
        .arg(format!(
            "{}?compression=zstd&index-debug-info=true",
            server.url("ci")
        ))
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    // Nix names the entry `<build id>.debug`.
    let entry_url = server.url(&format!("ci/debuginfo/{build_id}.debug"));
    let (status, body, _) = curl(&["-i", &entry_url]);
    assert_eq!(status, "200", "{body}");
    assert!(body.contains("application/json"), "{body}");
    let (_, narinfo, _) = curl(&[&server.url(&format!("ci/{}.narinfo", hash_part(&path)))]);
    let nar_url = narinfo
        .lines()
        .find_map(|l| l.strip_prefix("URL: "))
        .unwrap()
        .to_owned();
    let (_, entry, _) = curl(&[&entry_url]);
    let entry: serde_json::Value = serde_json::from_str(&entry).unwrap();
    assert_eq!(entry["archive"], format!("../{nar_url}"));
    assert_eq!(
        entry["member"],
        format!(
            "lib/debug/.build-id/{}/{}.debug",
            &build_id[..2],
            &build_id[2..]
        )
    );
    let (status, _, _) = curl(&["-X", "PUT", "--data-binary", "<html>", &entry_url]);
    assert_eq!(status, "400", "an entry that is not Nix's JSON is refused");

    // oranc push writes the same entry from the NAR as it streams.
    let pushed_repo = fresh_repo("debuginfo-push");
    let keys = tempfile::tempdir().unwrap();
    let key_file = oranc_tests::bench_signing_key(keys.path());
    let out = release_oranc_command()
        .args(["push", "--no-ssl", "--registry", &registry.host()])
        .args(["--repository", &pushed_repo, "--index-debug-info"])
        .arg("--signing-key")
        .arg(&key_file)
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cache = cache_of(&registry, &pushed_repo);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let key = CacheKey::debug_info(&build_id).unwrap();
    let stored = runtime.block_on(cache.get(&key)).unwrap().unwrap();
    let bytes = runtime
        .block_on(cache.read_small(&stored.blob, 1 << 16))
        .unwrap();
    let pushed: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(pushed["member"], entry["member"]);
    let nar = pushed["archive"]
        .as_str()
        .unwrap()
        .trim_start_matches("../");
    assert!(runtime
        .block_on(cache.get(&nar.parse().unwrap()))
        .unwrap()
        .is_some());

    // gc removes the entry with the NAR it names.
    let out = release_oranc_command()
        .args(["gc", "--no-ssl", "--registry", &registry.host()])
        .args(["--repository", &pushed_repo, "--grace", "0", "--delete"])
        .args(["--remove", &path])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains(&format!("deleted debuginfo/{build_id}")),
        "{said}"
    );
    assert!(runtime.block_on(cache.get(&key)).unwrap().is_none());
}

/// A cache the original oranc pushed without `initialize` has no `nix-cache-info`: Nix
/// tried to PUT one, got 401 and called it "not a binary cache". The server answers oranc's
/// defaults for a repository that exists (and stores nothing), and Nix 2.8 and the newer Nix
/// substitute from it; a name nothing was pushed to stays a 404.
#[test]
fn a_cache_without_nix_cache_info_substitutes() {
    let registry = RegistryProcess::start();
    let closure = SignedClosure::build(10_000);
    let repo = fresh_repo("uninitialised");
    let out = push_closure(release_oranc_command(), &registry.host(), &repo, &closure);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cache = cache_of(&registry, &repo);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let tag = TagEncoding::Custom.encode("nix-cache-info").unwrap();
    let (manifest, _) = runtime.block_on(cache.describe(&tag)).unwrap().unwrap();
    runtime.block_on(cache.delete_manifest(&manifest)).unwrap();

    let config = allow_plain_http(&registry.host());
    let server = ServerProcess::start_logged(release_oranc_command(), &config, &[]);
    let url = server.url(&format!("{}/{repo}", registry.host()));
    let (status, head, _) = curl(&["-i", &format!("{url}/nix-cache-info")]);
    assert_eq!(status, "200", "{head}");
    assert!(head.contains("x-oranc-cache-info: default"), "{head}");
    assert!(head.contains("StoreDir: /nix/store"), "{head}");
    let store = tempfile::tempdir().unwrap();
    let copied = copy_from(&url, store.path(), &closure.root, &closure.public_key);
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    // The newer Nix substitutes from it too.
    let newer = oranc_tests::newer_nix::NixClient::newer();
    let scratch = newer.scratch();
    run_ok(
        newer
            .command("nix")
            .args([
                "copy",
                "--from",
                &url,
                "--to",
                &scratch.client_path("store"),
            ])
            .arg(&closure.root)
            .args(["--option", "trusted-public-keys", &closure.public_key]),
    );
    assert!(
        runtime.block_on(cache.describe(&tag)).unwrap().is_none(),
        "a read stores nothing"
    );
    let (status, _, _) =
        curl(&[&server.url(&format!("{}/never/pushed/nix-cache-info", registry.host()))]);
    assert_eq!(status, "404");
}

/// An anonymous `nix copy --to` to a cache that needs credentials: the 401 says how to
/// send them, and the server's log says why at `info`.
#[test]
fn an_anonymous_upload_is_told_how_to_send_credentials() {
    let registry = RegistryProcess::start();
    let repo = fresh_repo("anonymous");
    let config = format!(
        "{}[caches.ci]\nregistry = \"{}\"\nrepository = \"{repo}\"\n",
        allow_plain_http(&registry.host()),
        registry.host()
    );
    let server = ServerProcess::start_logged(release_oranc_command(), &config, &[]);
    let url = server.url("ci/nix-cache-info");
    let (status, answer, _) = curl(&[
        "-i",
        "-X",
        "PUT",
        "--data-binary",
        "StoreDir: /nix/store\n",
        &url,
    ]);
    assert_eq!(status, "401", "{answer}");
    assert!(
        answer.contains("www-authenticate: Basic realm=\"oranc\""),
        "{answer}"
    );
    assert!(answer.contains("netrc"), "{answer}");
    for _ in 0..50 {
        curl(&["-X", "PUT", "--data-binary", "x", &url]);
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let logged = server
        .log()
        .lines()
        .filter(|l| l.contains("request refused") && l.contains("401"))
        .count();
    assert!(logged >= 1, "{}", server.log());
    assert!(logged <= 20, "a flood is not logged line by line: {logged}");
}

/// Named caches `names`, each over a fresh repository of `registry`, anonymous writers
/// allowed; the config and the repositories.
fn writable_caches(registry: &RegistryProcess, names: &[&str]) -> (String, Vec<String>) {
    let mut config = allow_plain_http(&registry.host());
    let mut repositories = Vec::new();
    for name in names {
        let repository = fresh_repo("features");
        config.push_str(&format!(
            "[caches.{name}]\nregistry = \"{}\"\nrepository = \"{repository}\"\nallow_write = true\n",
            registry.host(),
        ));
        repositories.push(repository);
    }
    (config, repositories)
}

/// Every compression Nix writes, with NAR listings, uploads through the server and
/// substitutes back.
#[test]
fn every_compression_and_nar_listings_go_through_the_server() {
    let registry = RegistryProcess::start();
    let compressions = ["xz", "zstd", "bzip2", "none"];
    let (config, _) = writable_caches(&registry, &compressions);
    let server = ServerProcess::start_logged(release_oranc_command(), &config, &[]);
    let closure = SignedClosure::build(30_000);
    for compression in compressions {
        let url = server.url(compression);
        let copied = nix_command("nix")
            .args(["copy", "--to"])
            .arg(format!(
                "{url}?compression={compression}&write-nar-listing=true"
            ))
            .arg(&closure.root)
            .output()
            .unwrap();
        assert!(
            copied.status.success(),
            "{compression}: {}",
            String::from_utf8_lossy(&copied.stderr)
        );
        let (status, listing, _) = curl(&[&format!("{url}/{}.ls", hash_part(&closure.root))]);
        assert_eq!(status, "200", "{compression}: {listing}");
        assert!(listing.contains("\"version\":1"), "{listing}");
        let store = tempfile::tempdir().unwrap();
        let back = copy_from(&url, store.path(), &closure.root, &closure.public_key);
        assert!(
            back.status.success(),
            "{compression}: {}",
            String::from_utf8_lossy(&back.stderr)
        );
        oranc_tests::nix::assert_same_closure(store.path(), &closure.root);
    }
}

/// A content-addressed derivation's output with its realisation, and a build log
/// (`nix store copy-log`), through the server; Nix finds the output by its realisation, and
/// the log is served back.
#[test]
fn realisations_and_build_logs_go_through_the_server() {
    let registry = RegistryProcess::start();
    let (config, repositories) = writable_caches(&registry, &["ca"]);
    let server = ServerProcess::start_logged(release_oranc_command(), &config, &[]);
    let url = server.url("ca");
    let dir = tempfile::tempdir().unwrap();
    let expression =
        oranc_tests::nix::write_ca_expression(dir.path(), "oranc-ca", &unique_suffix());
    let ca_nix = |args: &[&str]| {
        let mut command = nix_command("nix");
        command
            .args(["--extra-experimental-features", "ca-derivations"])
            .args(args);
        command
    };
    run_ok(
        nix_command("nix-build")
            .args([
                "--no-out-link",
                "--extra-experimental-features",
                "ca-derivations",
            ])
            .arg(&expression),
    );
    run_ok(&mut ca_nix(&["copy", "--to", &url, "-f", &expression]));
    let keys = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(cache_of(&registry, &repositories[0]).keys())
        .unwrap();
    assert!(
        keys.iter()
            .any(|k| k.starts_with("realisations/") && k.ends_with("!out.doi")),
        "{keys:?}"
    );
    let store = tempfile::tempdir().unwrap();
    let store_arg = store.path().display().to_string();
    run_ok(&mut ca_nix(&[
        "copy",
        "--from",
        &url,
        "--to",
        &store_arg,
        "-f",
        &expression,
        // The realisation is unsigned (what matters: Nix found it through the server).
        "--no-check-sigs",
    ]));

    let drv = run_ok(
        nix_command("nix-instantiate")
            .args(["--extra-experimental-features", "ca-derivations"])
            .arg(&expression),
    )
    .trim()
    .to_owned();
    run_ok(&mut ca_nix(&["store", "copy-log", "--to", &url, &drv]));
    let name = drv.trim_start_matches("/nix/store/");
    let (status, log, _) = curl(&["--compressed", &format!("{url}/log/{name}")]);
    assert_eq!(status, "200", "{log}");
    assert!(log.contains("building"), "{log}");
}
