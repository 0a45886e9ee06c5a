//! What Nix does through the server, with a newer Nix (Debian trixie's 2.26, in the chroot
//! `.ci/newer-nix` makes) beside Debian 12's 2.8, which every other test runs: the
//! conformance subset README's table claims per version. Substituting, `nix store info`,
//! `nix copy --to` with NAR listings, `nix store copy-log`, and realisations. (The mirror
//! with upstream gone is in `mirror_hostile.rs`, run with both.)

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: helpers outside #[test] panic on purpose"
)]

use oranc_tests::newer_nix::NixClient;
use oranc_tests::nix::{hash_part, SignedClosure};
use oranc_tests::registry::RegistryProcess;
use oranc_tests::server::{allow_plain_http, ServerProcess};
use oranc_tests::{curl, fresh_repo, release_oranc_command, unique_suffix};

/// A server with one cache anyone may write, `open`, over a fresh repository; and that
/// repository.
fn open_cache(registry: &RegistryProcess) -> (ServerProcess, String) {
    let repository = fresh_repo("newer-nix");
    let config = format!(
        "{}[caches.open]\nregistry = \"{}\"\nrepository = \"{repository}\"\nallow_write = true\n",
        allow_plain_http(&registry.host()),
        registry.host(),
    );
    let server = ServerProcess::start_logged(release_oranc_command(), &config, &[]);
    (server, repository)
}

/// A closure Nix 2.8 copied (`nix copy --to URL?QUERY`) into the `open` cache of a fresh
/// server; the cache's URL.
fn closure_copied_by_nix_2_8(
    query: &str,
) -> (RegistryProcess, ServerProcess, SignedClosure, String) {
    let registry = RegistryProcess::start();
    let (server, _) = open_cache(&registry);
    let url = server.url("open");
    let closure = SignedClosure::build(30_000);
    succeeded(
        &NixClient::Machine
            .command("nix")
            .args(["copy", "--to"])
            .arg(format!("{url}{query}"))
            .arg(&closure.root)
            .output()
            .unwrap(),
        "nix 2.8 copy --to",
    );
    (registry, server, closure, url)
}

fn succeeded(output: &std::process::Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A closure Nix 2.8 wrote substitutes into the newer Nix's store; both ask the cache what
/// it is (2.8's `nix store ping`, the newer `nix store info`).
#[test]
fn a_newer_nix_substitutes_what_nix_2_8_wrote() {
    let newer = NixClient::newer();
    let (_registry, _server, closure, url) = closure_copied_by_nix_2_8("");
    let ping = NixClient::Machine
        .command("nix")
        .args(["store", "ping", "--store", &url])
        .output()
        .unwrap();
    succeeded(&ping, "nix 2.8 store ping");
    let info = newer
        .command("nix")
        .args(["store", "info", "--json", "--store", &url])
        .output()
        .unwrap();
    let info = succeeded(&info, "nix store info");
    assert!(info.contains(&format!("\"url\":\"{url}\"")), "{info}");
    let copied = newer
        .command("nix")
        .args(["copy", "--from", &url, &closure.root])
        .args(["--option", "trusted-public-keys", &closure.public_key])
        .output()
        .unwrap();
    succeeded(&copied, "newer nix copy --from");
    let paths = newer
        .command("nix-store")
        .args(["-qR", &closure.root])
        .output()
        .unwrap();
    assert_eq!(
        succeeded(&paths, "nix-store -qR").lines().count(),
        closure.paths.len()
    );
}

/// The newer Nix writes a path it built (zstd, with its NAR listing), its build log and a
/// content-addressed output's realisation; Nix 2.8 and the newer Nix read them back.
#[test]
fn a_newer_nix_writes_paths_listings_logs_and_realisations() {
    let newer = NixClient::newer();
    let registry = RegistryProcess::start();
    let (server, repository) = open_cache(&registry);
    let url = server.url("open");
    let scratch = newer.scratch();
    let nonce = unique_suffix();
    oranc_tests::nix::write_ca_expression(scratch.host_dir(), "oranc-newer", &nonce);
    let expression = scratch.client_path("ca.nix");
    let ca = ["--extra-experimental-features", "ca-derivations"];
    let out = newer
        .command("nix-build")
        .arg("--no-out-link")
        .args(ca)
        .arg(&expression)
        .output()
        .unwrap();
    let path = succeeded(&out, "nix-build").trim().to_owned();

    let copied = newer
        .command("nix")
        .args(ca)
        .args(["copy", "--to"])
        .arg(format!("{url}?compression=zstd&write-nar-listing=true"))
        .args(["-f", &expression])
        .output()
        .unwrap();
    succeeded(&copied, "newer nix copy --to");
    let (status, listing, _) = curl(&[&format!("{url}/{}.ls", hash_part(&path))]);
    assert_eq!(status, "200", "{listing}");
    let tags = registry.tag_list(&repository);
    assert!(
        tags.contains("realisations"),
        "no realisation stored: {tags}"
    );

    // Nix 2.8 reads the path back (it is unsigned: what matters is that it is whole).
    let store = tempfile::tempdir().unwrap();
    let back = NixClient::Machine
        .command("nix")
        .args(["copy", "--no-check-sigs", "--from", &url, "--to"])
        .arg(store.path())
        .arg(&path)
        .output()
        .unwrap();
    succeeded(&back, "nix 2.8 copy --from");
    // The newer Nix finds the output by its realisation.
    let other_store = newer.scratch();
    let found = newer
        .command("nix")
        .args(ca)
        .args(["copy", "--no-check-sigs", "--from", &url, "--to"])
        .arg(other_store.client_path("store"))
        .args(["-f", &expression])
        .output()
        .unwrap();
    succeeded(&found, "newer nix copy --from by realisation");

    let drv = newer
        .command("nix-instantiate")
        .args(ca)
        .arg(&expression)
        .output()
        .unwrap();
    let drv = succeeded(&drv, "nix-instantiate").trim().to_owned();
    let log = newer
        .command("nix")
        .args(ca)
        .args(["store", "copy-log", "--to", &url, &drv])
        .output()
        .unwrap();
    succeeded(&log, "nix store copy-log");
    let name = drv.trim_start_matches("/nix/store/");
    let (status, log, _) = curl(&["--compressed", &format!("{url}/log/{name}")]);
    assert_eq!(status, "200", "{log}");
    assert!(log.contains(&format!("building {nonce}")), "{log}");
}

/// GET requests the server answered for `route` (`ls`, `nar`), from its `/metrics`.
fn gets(server: &ServerProcess, route: &str) -> f64 {
    server
        .metrics()
        .lines()
        .filter(|line| {
            line.starts_with("oranc_http_requests_total{")
                && line.contains(&format!("route=\"{route}\""))
                && line.contains("method=\"GET\"")
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// What `nix store ls --store URL PATH` asks the server for, as README says it: each Nix
/// here lists a path's files by downloading its NAR, and never asks for the `.ls` listing
/// stored beside it (Lix 2.94 reads it; not tested here).
#[test]
fn nix_store_ls_reads_the_nar_not_the_listing() {
    let (_registry, server, closure, url) = closure_copied_by_nix_2_8("?write-nar-listing=true");
    let (status, _, _) = curl(&[&format!("{url}/{}.ls", hash_part(&closure.root))]);
    assert_eq!(status, "200", "the listing is stored");
    for client in NixClient::both() {
        let version = client.version();
        let (listings, nars) = (gets(&server, "ls"), gets(&server, "nar"));
        let listed = client
            .command("nix")
            .args(["store", "ls", "--store", &url, &closure.root])
            .output()
            .unwrap();
        let listed = succeeded(&listed, &format!("{version}: nix store ls"));
        assert!(listed.contains("deps"), "{version}: {listed}");
        let (listings, nars) = (gets(&server, "ls") - listings, gets(&server, "nar") - nars);
        eprintln!("{version}: nix store ls asked for {listings} listings and {nars} NARs");
        assert_eq!(listings, 0.0, "{version} asked for the listing");
        assert!(nars >= 1.0, "{version} read the NAR");
    }
}

/// The newer Nix uploads a path's debug info index (`?index-debug-info=true`) through the
/// server, and the entry is served as Nix wrote it.
#[test]
fn a_newer_nix_uploads_debug_info_indexes() {
    let newer = NixClient::newer();
    let registry = RegistryProcess::start();
    let (server, _) = open_cache(&registry);
    let url = server.url("open");
    let scratch = newer.scratch();
    let build_id = &oranc_core::Sha256Hash::of(unique_suffix().as_bytes()).to_hex()[..40];
    let (dir, file) = build_id.split_at(2);
    let debug = scratch
        .host_path("with-debug/lib/debug/.build-id")
        .join(dir);
    std::fs::create_dir_all(&debug).unwrap();
    std::fs::write(debug.join(format!("{file}.debug")), b"\x7fELF debug").unwrap();
    std::fs::write(scratch.host_path("with-debug/README"), unique_suffix()).unwrap();
    let added = newer
        .command("nix-store")
        .args(["--add", &scratch.client_path("with-debug")])
        .output()
        .unwrap();
    let path = succeeded(&added, "nix-store --add").trim().to_owned();
    let copied = newer
        .command("nix")
        .args(["copy", "--to"])
        .arg(format!("{url}?compression=zstd&index-debug-info=true"))
        .arg(&path)
        .output()
        .unwrap();
    succeeded(&copied, "newer nix copy --to with index-debug-info");
    let (status, entry, _) = curl(&[&format!("{url}/debuginfo/{build_id}.debug")]);
    assert_eq!(status, "200", "{entry}");
    let entry: serde_json::Value = serde_json::from_str(&entry).unwrap();
    assert_eq!(
        entry["member"],
        format!("lib/debug/.build-id/{dir}/{file}.debug")
    );
}
