//! Writes that must not poison a cache anyone may add to (`allow_write`), found in review
//! (issue 40) and replayed here against the release binary with a real registry and real
//! Nix. Each succeeded before its fix.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: helpers outside #[test] panic on purpose"
)]

use oranc_core::{realisation, CacheKey, SecretKey, Sha256Hash};
use oranc_tests::nix::{copy_from, SignedClosure};
use oranc_tests::registry::RegistryProcess;
use oranc_tests::server::{allow_plain_http, ServerProcess};
use oranc_tests::{curl, release_oranc_command, unique_suffix};

/// A realisation as Nix 2.4-2.34 writes one, for the output `out` of a made-up derivation:
/// its key and its JSON.
fn realisation_json(nonce: &str) -> (CacheKey, String) {
    let id = format!("sha256:{}!out", Sha256Hash::of(nonce.as_bytes()).to_hex());
    let json = format!(
        r#"{{"dependentRealisations":{{}},"id":"{id}","outPath":"a6d0a82k145airx8md9l4v42d8fq0xjz-rt-ca","signatures":[]}}"#
    );
    (format!("realisations/{id}.doi").parse().unwrap(), json)
}

/// A build-trace entry as Nix 2.35 writes one (`build-trace-v2/<drv>/<output>.doi`, its body
/// the entry's value), for the output `out` of a made-up derivation.
fn build_trace_json(nonce: &str) -> (CacheKey, String) {
    let hash = &Sha256Hash::of(nonce.as_bytes()).to_nix32()[..32];
    let json = r#"{"outPath":"a6d0a82k145airx8md9l4v42d8fq0xjz-rt-ca","signatures":[]}"#;
    (
        format!("build-trace-v2/{hash}-rt-ca.drv/out.doi")
            .parse()
            .unwrap(),
        json.to_owned(),
    )
}

fn put(url: &str, body: &[u8], user: Option<&str>) -> (String, String) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), body).unwrap();
    let data = format!("@{}", file.path().display());
    let mut args = vec!["-X", "PUT", "--data-binary", data.as_str(), url];
    if let Some(user) = user {
        args.extend(["-u", user]);
    }
    let (status, body, _) = curl(&args);
    (status, body)
}

/// A cache anyone may add to that requires signatures by `trusted` (`name:base64`), and
/// `/team` beside it whose writer `ci` (password `writer-pass`) gets the server's key.
fn open_cache_server(
    registry: &RegistryProcess,
    trusted: &[String],
    dir: &std::path::Path,
) -> (ServerProcess, String, SecretKey) {
    let repo = format!("open/{}", unique_suffix().replace('-', "."));
    let server_key = SecretKey::from_seed("server-1", [9; 32]);
    let key_file = dir.join("server.sk");
    std::fs::write(&key_file, server_key.to_nix_string()).unwrap();
    let writers = dir.join("writers");
    std::fs::write(
        &writers,
        format!("ci:{}\n", bcrypt::hash("writer-pass", 4).unwrap()),
    )
    .unwrap();
    let keys = trusted
        .iter()
        .map(|key| format!("\"{key}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let host = registry.host();
    let config = format!(
        "{plain}[caches.open]\nregistry = \"{host}\"\nrepository = \"{repo}\"\nallow_write = true\n\
         trusted_public_keys = [{keys}]\n\
         [caches.team]\nregistry = \"{host}\"\nrepository = \"{repo}.team\"\n\
         writers_file = \"{writers}\"\nsigning_key_file = \"{key}\"\ntrusted_public_keys = [{keys}]\n",
        plain = allow_plain_http(&host),
        writers = writers.display(),
        key = key_file.display(),
    );
    let server = ServerProcess::start_logged(release_oranc_command(), &config, &[]);
    (server, repo, server_key)
}

/// Nix 2.8 used an unsigned realisation a client PUT into such a cache: a content-addressed
/// derivation resolved to another path. An anonymous realisation, or build-trace entry
/// (Nix 2.35), must now be signed by a trusted key, over its own key (an entry signed for
/// one derivation is refused under another); a writer's is signed by the server.
#[test]
fn an_anonymous_realisation_must_carry_a_trusted_signature() {
    let registry = RegistryProcess::start();
    let dir = tempfile::tempdir().unwrap();
    let trusted = SecretKey::from_seed("rt-1", [3; 32]);
    let stranger = SecretKey::from_seed("rt-1", [4; 32]);
    let (server, _, server_key) =
        open_cache_server(&registry, &[trusted.to_public().to_string()], dir.path());

    for format in [realisation_json, build_trace_json] {
        let (key, unsigned) = format(&unique_suffix());
        let url = server.url(&format!("open/{key}"));
        let (status, body) = put(&url, unsigned.as_bytes(), None);
        assert_eq!(status, "403", "{key} unsigned: {body}");
        let by_stranger = realisation::signed(&key, unsigned.as_bytes(), &stranger).unwrap();
        let (status, body) = put(&url, &by_stranger, None);
        assert_eq!(status, "403", "{key} signed by an unknown key: {body}");
        // Another derivation's, signed by a trusted key: a realisation names its id (400),
        // a build-trace entry's signature covers its key (403).
        let (elsewhere, theirs) = format(&unique_suffix());
        let for_another = realisation::signed(&elsewhere, theirs.as_bytes(), &trusted).unwrap();
        let (status, body) = put(&url, &for_another, None);
        assert!(
            ["400", "403"].contains(&status.as_str()),
            "{key} given {elsewhere}'s entry: {status} {body}"
        );
        assert_eq!(curl(&[&url]).0, "404", "{key}: nothing was stored");
        let by_trusted = realisation::signed(&key, unsigned.as_bytes(), &trusted).unwrap();
        let (status, body) = put(&url, &by_trusted, None);
        assert_eq!(status, "200", "{key} signed by a trusted key: {body}");
        let (status, served, _) = curl(&[&url]);
        assert_eq!(status, "200", "{key}: {served}");
        assert!(realisation::is_signed_by_any(
            &key,
            served.as_bytes(),
            &[trusted.to_public()]
        ));

        // A writer's is stored signed by the server's key.
        let (key, unsigned) = format(&unique_suffix());
        let url = server.url(&format!("team/{key}"));
        let (status, body) = put(&url, unsigned.as_bytes(), Some("ci:writer-pass"));
        assert_eq!(status, "200", "{key}: {body}");
        let (status, stored, _) = curl(&[&url]);
        assert_eq!(status, "200", "{key}: {stored}");
        assert!(realisation::is_signed_by_any(
            &key,
            stored.as_bytes(),
            &[server_key.to_public()]
        ));
    }
}

/// A `nix-cache-info` of two `StoreDir` lines (the first a foreign store) or a `Priority`
/// past what Nix's `stoi` reads was stored on a fresh cache, and add-only kept it: every
/// Nix client then failed on every request. An upload is now read as strictly as Nix reads
/// it, and stored as rendered from what was parsed.
#[test]
fn a_nix_cache_info_nix_cannot_use_is_never_stored() {
    let registry = RegistryProcess::start();
    let dir = tempfile::tempdir().unwrap();
    let (server, _, _) = open_cache_server(&registry, &[], dir.path());
    let url = server.url("open/nix-cache-info");
    for poison in [
        "StoreDir: /evil\nStoreDir: /nix/store\n",
        "StoreDir: /nix/store\nPriority: 4294967295\n",
        "StoreDir: /nix/store\nStoreDir: /nix/store\n",
        "StoreDir: /nix/store\nX-Junk: 1\n",
    ] {
        let (status, body) = put(&url, poison.as_bytes(), None);
        assert_eq!(status, "400", "{poison:?}: {body}");
    }
    // The red team's: a trailing slash parsed as /nix/store, but was stored as sent, and
    // Nix compares it byte for byte ("is for Nix stores with prefix '/nix/store/'").
    let (status, body) = put(
        &url,
        b"StoreDir:   /nix/store/\n\nWantMassQuery: 1\nPriority: +30\n",
        None,
    );
    assert_eq!(status, "200", "{body}");
    let (status, stored, _) = curl(&[&url]);
    assert_eq!(status, "200");
    assert_eq!(
        stored, "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n",
        "stored as parsed, not as sent"
    );
    let pinged = oranc_tests::nix::nix_command("nix")
        .args(["store", "ping", "--store", &server.url("open")])
        .output()
        .unwrap();
    assert!(
        pinged.status.success(),
        "{}",
        String::from_utf8_lossy(&pinged.stderr)
    );
}

/// An anonymous PUT of junk under the NAR name `oranc push` would use (it names a NAR by
/// its NarHash, public for a reproducible path) got 200; the real push then reused the junk
/// and signed a narinfo naming it, and Nix could never substitute that path. The server now
/// takes an anonymous NAR only under the SHA-256 of its bytes, and a push checks a NAR it
/// finds stored before it reuses one.
#[test]
fn a_planted_nar_is_refused_and_never_reused_by_a_push() {
    let registry = RegistryProcess::start();
    let dir = tempfile::tempdir().unwrap();
    let closure = SignedClosure::build(20_000);
    let (server, repo, _) = open_cache_server(
        &registry,
        std::slice::from_ref(&closure.public_key),
        dir.path(),
    );
    let infos = closure.path_info_json();
    let root = infos
        .as_array()
        .and_then(|infos| {
            infos
                .iter()
                .find(|info| info["path"] == closure.root.as_str())
        })
        .unwrap_or_else(|| panic!("the root in {infos}"));
    let nar_hash: Sha256Hash = root["narHash"].as_str().unwrap().parse().unwrap();
    let push_name = format!("nar/{}.nar.zst", nar_hash.to_nix32());
    let junk: Vec<u8> = (0..1000u32).map(|n| (n * 7919 % 251) as u8).collect();
    let (status, body) = put(&server.url(&format!("open/{push_name}")), &junk, None);
    assert_eq!(status, "403", "{body}");
    // Nix's own name for a NAR (the SHA-256 of its file) is still taken.
    let file_name = format!("nar/{}.nar", Sha256Hash::of(&junk).to_nix32());
    let (status, body) = put(&server.url(&format!("open/{file_name}")), &junk, None);
    assert_eq!(status, "200", "{body}");

    // Junk planted under that name around the server (the registry checks nobody): the
    // push checks it, uploads its own NAR, and Nix substitutes the path.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let cache = oranc_tests::anonymous_cache(&registry.host(), &repo);
        let key = push_name.parse().unwrap();
        cache
            .put_bytes(&key, "application/x-nix-nar", junk.clone().into())
            .await
            .unwrap();
    });
    let pushed = release_oranc_command()
        .args(oranc_tests::push_args(&registry.host(), &repo))
        .args(["--trusted-public-key", &closure.public_key, &closure.root])
        .output()
        .unwrap();
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    let store = tempfile::tempdir().unwrap();
    let copied = copy_from(
        &server.url("open"),
        store.path(),
        &closure.root,
        &closure.public_key,
    );
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
}
