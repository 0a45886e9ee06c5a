//! `oranc push` as a user runs it, against a real registry and real store paths: what it
//! stores reads back byte for byte, real Nix accepts it, nothing unsigned or mismatched is
//! pushed, and a push interrupted at any stage leaves nothing dangling.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: helpers outside #[test] panic on purpose"
)]

use std::io::Read as _;
use std::process::Output;

use oranc_core::{NarInfo, TagEncoding};
use oranc_tests::nix::{copy_from, narinfo_key, nix_command, SignedClosure};
use oranc_tests::oci::RawRegistry;
use oranc_tests::registry::RegistryProcess;
use oranc_tests::{fresh_repo, oranc_command, run_ok, unique_suffix};

fn push(registry: &RegistryProcess, repo: &str, extra: &[&str], paths: &[&str]) -> Output {
    push_with(oranc_command(), registry, repo, extra, paths)
}

/// [`push`] with a prepared command (e.g. with test variables set).
fn push_with(
    mut command: std::process::Command,
    registry: &RegistryProcess,
    repo: &str,
    extra: &[&str],
    paths: &[&str],
) -> Output {
    command
        .args([
            "push",
            "--no-ssl",
            "--registry",
            &registry.host(),
            "--repository",
            repo,
        ])
        .args(extra)
        .args(paths)
        .output()
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn pushed_closure_reads_back_byte_for_byte_and_real_nix_substitutes_it() {
    let registry = RegistryProcess::start();
    let closure = SignedClosure::build(300_000);
    let repo = fresh_repo("push");
    let init = oranc_command()
        .args([
            "push",
            "--no-ssl",
            "--registry",
            &registry.host(),
            "--repository",
            &repo,
            "initialize",
        ])
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", stderr(&init));
    // Sign on the fly with a second key, keeping the closure's own signatures.
    let our_key = closure.work_dir().join("ours.sk");
    std::fs::write(
        &our_key,
        run_ok(nix_command("nix").args(["key", "generate-secret", "--key-name", "oranc-push-1"])),
    )
    .unwrap();
    let output = push(
        &registry,
        &repo,
        &["--signing-key", our_key.to_str().unwrap()],
        &[&closure.root],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("pushed 3"), "{}", stderr(&output));

    let raw = RawRegistry::new(&registry.base_url());
    let trusted_by_closure_key: oranc_core::PublicKey = closure.public_key.parse().unwrap();
    for path in &closure.paths {
        let (object, bytes) = raw
            .get_object(&repo, &narinfo_key(path))
            .await
            .expect("narinfo pushed");
        assert_eq!(object.content_type, "text/x-nix-narinfo");
        let narinfo = NarInfo::parse(std::str::from_utf8(&bytes).unwrap()).unwrap();
        assert_eq!(
            narinfo.signatures.len(),
            2,
            "the existing signature is kept and ours added"
        );
        assert!(narinfo.is_signed_by_any(std::slice::from_ref(&trusted_by_closure_key)));
        assert_eq!(narinfo.compression.as_deref(), Some("zstd"));

        // The NAR, decompressed, is byte for byte what `nix-store --dump` writes.
        let nar_tag = TagEncoding::Custom.encode(&narinfo.url).unwrap();
        let (nar_object, compressed) = raw
            .get_object(&repo, nar_tag.as_str())
            .await
            .expect("NAR pushed");
        assert_eq!(nar_object.content_type, "application/x-nix-nar");
        assert_eq!(Some(compressed.len() as u64), narinfo.file_size);
        assert_eq!(
            Some(oranc_core::Sha256Hash::of(&compressed)),
            narinfo.file_hash
        );
        let mut nar = Vec::new();
        zstd::Decoder::new(&compressed[..])
            .unwrap()
            .read_to_end(&mut nar)
            .unwrap();
        let dumped = nix_command("nix-store")
            .args(["--dump", path])
            .output()
            .unwrap();
        assert!(dumped.status.success());
        assert!(
            nar == dumped.stdout,
            "NAR of {path} differs from nix-store --dump"
        );
    }

    // Real Nix: substitute the closure from what was pushed into an empty store.
    let exported = tempfile::tempdir().unwrap();
    raw.export_file_cache(&repo, &closure.paths, exported.path())
        .await;
    let store = tempfile::tempdir().unwrap();
    let file_url = format!("file://{}", exported.path().display());
    let copied = copy_from(&file_url, store.path(), &closure.root, &closure.public_key);
    assert!(
        copied.status.success(),
        "nix copy: {}",
        String::from_utf8_lossy(&copied.stderr)
    );
    let verified = nix_command("nix")
        .args(["path-info", "--store"])
        .arg(store.path())
        .args(["-r", &closure.root])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&verified.stdout).lines().count(), 3);

    // A second push finds everything there.
    let again = push(
        &registry,
        &repo,
        &["--signing-key", our_key.to_str().unwrap()],
        &[&closure.root],
    );
    assert!(again.status.success());
    assert!(
        stderr(&again).contains("pushed 0") && stderr(&again).contains("already there 3"),
        "{}",
        stderr(&again)
    );
}

/// Every narinfo in `repo` names a NAR that is there; returns how many narinfos there are.
async fn narinfos_with_their_nars(registry: &RegistryProcess, repo: &str) -> usize {
    let backend = oranc_tests::open_backend(
        &registry.host(),
        oranc_backends::Credentials::Anonymous,
        |_| {},
    );
    let cache =
        oranc_core::RegistryCache::new(backend, repo.parse().unwrap(), TagEncoding::Custom, vec![]);
    let keys = match cache.keys().await {
        Ok(keys) => keys,
        Err(oranc_core::Error::NotFound { .. }) => return 0,
        Err(error) => panic!("listing {repo}: {error}"),
    };
    let mut narinfos = 0;
    for key in keys.iter().filter(|k| k.ends_with(".narinfo")) {
        let object = cache.get(&key.parse().unwrap()).await.unwrap().unwrap();
        let body = oranc_tests::read_blob(cache.open(&object, None).await.unwrap())
            .await
            .unwrap();
        let narinfo = NarInfo::parse(std::str::from_utf8(&body).unwrap()).unwrap();
        assert!(
            keys.contains(&narinfo.url),
            "{key} points at {}, which is not stored",
            narinfo.url
        );
        narinfos += 1;
    }
    narinfos
}

#[tokio::test]
async fn a_push_interrupted_at_any_stage_leaves_no_dangling_narinfo_and_a_rerun_finishes() {
    let registry = RegistryProcess::start();
    let closure = SignedClosure::build(10_000);
    let closure_size = run_ok(nix_command("nix-store").args(["-qR", &closure.root]))
        .lines()
        .count();
    let trusted = [
        "--trusted-public-key",
        closure.public_key.as_str(),
        "--parallel",
        "1",
    ];
    for stage in ["nar-blob", "nar-tag", "narinfo-blob"] {
        let repo = fresh_repo("push");
        let mut interrupted = oranc_command();
        interrupted.env("ORANC_TEST_EXIT_AT", stage);
        let crashed = push_with(interrupted, &registry, &repo, &trusted, &[&closure.root]);
        assert_eq!(
            crashed.status.code(),
            Some(75),
            "{stage}: {}",
            stderr(&crashed)
        );
        assert_eq!(
            narinfos_with_their_nars(&registry, &repo).await,
            0,
            "{stage}: the first path's narinfo is not visible"
        );

        let output = push(&registry, &repo, &trusted, &[&closure.root]);
        assert!(output.status.success(), "{stage}: {}", stderr(&output));
        assert_eq!(
            narinfos_with_their_nars(&registry, &repo).await,
            closure_size,
            "{stage}: the rerun stored every path"
        );
        let raw = RawRegistry::new(&registry.base_url());
        assert!(raw
            .get_manifest(&repo, &narinfo_key(&closure.root))
            .await
            .is_some());
    }
}

#[test]
fn unsigned_and_badly_signed_paths_are_never_pushed() {
    let registry = RegistryProcess::start();
    let closure = SignedClosure::build(1_000);
    let repo = fresh_repo("push");

    // A key nobody signed with: every path is "unsigned" for it; skipped, exit 0.
    let stranger = SignedClosure::build(10);
    let output = push(
        &registry,
        &repo,
        &["--trusted-public-key", &stranger.public_key],
        &[&closure.root],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("skipped unsigned 3"),
        "{}",
        stderr(&output)
    );
    // The summary says so first, and CI that must notice gets an error (issue 38).
    let said = stderr(&output);
    let summary = said
        .lines()
        .find(|line| line.starts_with("push") || line.contains(": skipped "))
        .unwrap_or_default();
    assert!(summary.contains("skipped 3 path(s)"), "{said}");
    let strict = push(
        &registry,
        &repo,
        &[
            "--trusted-public-key",
            &stranger.public_key,
            "--fail-on-skipped",
        ],
        &[&closure.root],
    );
    assert!(!strict.status.success(), "{}", stderr(&strict));
    assert!(
        stderr(&strict).contains("--fail-on-skipped"),
        "{}",
        stderr(&strict)
    );

    // A key with the closure's key name but other material: its signatures do not verify.
    let key_name = closure.public_key.split(':').next().unwrap();
    let impostor = format!(
        "{key_name}:{}",
        stranger.public_key.split(':').nth(1).unwrap()
    );
    let output = push(
        &registry,
        &repo,
        &["--trusted-public-key", &impostor],
        &[&closure.root],
    );
    assert!(!output.status.success(), "a bad signature fails the push");
    assert!(
        stderr(&output).contains("does not verify"),
        "{}",
        stderr(&output)
    );

    // No key at all: a clear error before anything happens.
    let output = push(&registry, &repo, &[], &[&closure.root]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("--signing-key"),
        "{}",
        stderr(&output)
    );

    assert!(
        !registry.tag_list(&repo).contains(".narinfo"),
        "nothing was pushed"
    );
}

#[tokio::test]
async fn a_nar_that_disagrees_with_the_store_record_is_refused() {
    let registry = RegistryProcess::start();
    let closure = SignedClosure::build(1_000);
    let repo = fresh_repo("push");
    // Corrupt the leaf path behind Nix's back (the path is unique to this test).
    let leaf = closure
        .paths
        .iter()
        .find(|p| p.ends_with("oranc-test-lib"))
        .unwrap();
    let file = format!("{leaf}/lib/libfoo.so");
    run_ok(std::process::Command::new("chmod").args(["u+w", &format!("{leaf}/lib"), &file]));
    std::fs::write(&file, b"tampered").unwrap();

    let output = push(
        &registry,
        &repo,
        &["--trusted-public-key", &closure.public_key, "--no-closure"],
        &[leaf],
    );
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("does not match the store's record"),
        "{}",
        stderr(&output)
    );
    let raw = RawRegistry::new(&registry.base_url());
    assert!(raw.get_manifest(&repo, &narinfo_key(leaf)).await.is_none());
}

#[test]
fn paths_come_from_standard_input_and_symlinks_resolve() {
    let registry = RegistryProcess::start();
    let closure = SignedClosure::build(1_000);
    let repo = fresh_repo("push");
    let link = closure.work_dir().join("result");
    std::os::unix::fs::symlink(&closure.root, &link).unwrap();
    let mut child = oranc_command()
        .args([
            "push",
            "--no-ssl",
            "--registry",
            &registry.host(),
            "--repository",
            &repo,
        ])
        .args(["--trusted-public-key", &closure.public_key, "--dry-run"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    writeln!(child.stdin.take().unwrap(), "{}\n", link.display()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.starts_with("would push"))
            .count(),
        3,
        "{stdout}"
    );
}

#[tokio::test]
async fn xz_and_uncompressed_nars_are_substitutable_by_real_nix() {
    let registry = RegistryProcess::start();
    let closure = SignedClosure::build(20_000);
    for (compression, expected) in [("xz", "xz"), ("none", "none")] {
        let repo = fresh_repo("push");
        let output = push(
            &registry,
            &repo,
            &[
                "--trusted-public-key",
                &closure.public_key,
                "--compression",
                compression,
            ],
            &[&closure.root],
        );
        assert!(output.status.success(), "{}", stderr(&output));
        let raw = RawRegistry::new(&registry.base_url());
        let (_, narinfo) = raw
            .get_object(&repo, &narinfo_key(&closure.root))
            .await
            .unwrap();
        let narinfo = NarInfo::parse(std::str::from_utf8(&narinfo).unwrap()).unwrap();
        assert_eq!(narinfo.compression.as_deref(), Some(expected));
        let exported = tempfile::tempdir().unwrap();
        raw.export_file_cache(&repo, &closure.paths, exported.path())
            .await;
        let store = tempfile::tempdir().unwrap();
        let file_url = format!("file://{}", exported.path().display());
        let copied = copy_from(&file_url, store.path(), &closure.root, &closure.public_key);
        assert!(
            copied.status.success(),
            "{compression}: {}",
            String::from_utf8_lossy(&copied.stderr)
        );
    }
}

#[test]
fn a_small_path_costs_six_registry_requests() {
    // Round trips are what a push over a real network waits for: count them in the real
    // registry's access log. Per path: POST + PUT for the NAR and for the narinfo, and a
    // manifest PUT for each; nothing else (the config blob is shared by the repository).
    let registry = RegistryProcess::start();
    let dir = tempfile::tempdir().unwrap();
    let nonce = unique_suffix();
    let sources: Vec<_> = (0..200)
        .map(|i| {
            let source = dir.path().join(format!("small-{nonce}-{i}"));
            std::fs::write(&source, format!("{nonce} {i}")).unwrap();
            source
        })
        .collect();
    let paths: Vec<String> = run_ok(nix_command("nix-store").arg("--add").args(&sources))
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(paths.len(), 200);
    let key = dir.path().join("key");
    std::fs::write(
        &key,
        run_ok(nix_command("nix").args(["key", "generate-secret", "--key-name", "count-1"])),
    )
    .unwrap();
    let repo = fresh_repo("push");
    let before = registry.requests().len();
    let path_refs: Vec<&str> = paths.iter().map(String::as_str).collect();
    let output = push(
        &registry,
        &repo,
        &["--signing-key", key.to_str().unwrap(), "--no-closure"],
        &path_refs,
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("pushed 200"),
        "{}",
        stderr(&output)
    );
    let requests = &registry.requests()[before..];
    let count = |method: &str, part: &str| {
        requests
            .iter()
            .filter(|r| r.method == method && r.path.contains(part))
            .count()
    };
    let per_push = requests.len().saturating_sub(6 * paths.len());
    assert!(
        requests.len() <= 6 * paths.len() + 8,
        "{} requests for {} paths ({per_push} beyond 6 per path): {:?}",
        requests.len(),
        paths.len(),
        &requests[..requests.len().min(40)]
    );
    assert!(count("PUT", "/manifests/") >= 2 * paths.len());
    assert!(count("POST", "/blobs/uploads/") <= 2 * paths.len() + 2);
    eprintln!(
        "{} registry requests for {} paths ({per_push} per push)",
        requests.len(),
        paths.len()
    );
}

#[test]
fn nar_listings_match_what_nix_writes_and_nix_store_ls_lists_the_cache() {
    let registry = RegistryProcess::start();
    let closure = SignedClosure::build(50_000);
    let repo = fresh_repo("push");
    let output = push(
        &registry,
        &repo,
        &[
            "--trusted-public-key",
            &closure.public_key,
            "--write-nar-listing",
        ],
        &[&closure.root],
    );
    assert!(output.status.success(), "{}", stderr(&output));

    // Nix's own listings of the same paths.
    let reference = closure.work_dir().join("reference");
    run_ok(
        nix_command("nix")
            .args(["copy", "--to"])
            .arg(format!(
                "file://{}?write-nar-listing=true",
                reference.display()
            ))
            .arg(&closure.root),
    );
    let server = oranc_tests::server::ServerProcess::start(
        &oranc_tests::server::allow_plain_http(&registry.host()),
        &[],
    );
    let cache_url = server.url(&format!("{}/{repo}", registry.host()));
    for path in &closure.paths {
        let hash = oranc_tests::nix::hash_part(path);
        let ours: serde_json::Value = serde_json::from_str(&run_ok(
            std::process::Command::new("curl").args(["-sf", &format!("{cache_url}/{hash}.ls")]),
        ))
        .unwrap();
        let theirs: serde_json::Value =
            serde_json::from_slice(&std::fs::read(reference.join(format!("{hash}.ls"))).unwrap())
                .unwrap();
        assert_eq!(ours, theirs, "{path}");
    }

    // `nix store ls` against the cache lists the same tree. (Debian's Nix 2.8 still fetches
    // the NAR for it; the listings are for the Nix versions and tools that read them.)
    let listed = run_ok(
        nix_command("nix")
            .args(["store", "ls", "--store", &cache_url, "-R"])
            .arg(&closure.root),
    );
    let local = run_ok(
        nix_command("nix")
            .args(["store", "ls", "-R"])
            .arg(&closure.root),
    );
    assert_eq!(listed, local);
}

/// Found following the README (issue 38): `oranc push` to a plain-HTTP registry without
/// `--no-ssl`, or to a registry that is down, said only "cannot connect: error sending
/// request". It now names the URL and the cause, and for https hints at `--no-ssl`.
#[test]
fn a_registry_that_cannot_be_reached_is_named_with_the_cause_and_the_fix() {
    let registry = RegistryProcess::start();
    let closure = SignedClosure::build(1_000);
    let tls_to_plain = oranc_command()
        .args([
            "push",
            "--registry",
            &registry.host(),
            "--repository",
            "x/y",
        ])
        .args(["--trusted-public-key", &closure.public_key, &closure.root])
        .output()
        .unwrap();
    assert!(!tls_to_plain.status.success());
    let said = stderr(&tls_to_plain);
    assert!(
        said.contains(&format!("https://{}", registry.host())) && said.contains("--no-ssl"),
        "{said}"
    );

    let down = oranc_tests::free_loopback_addr().to_string();
    let refused = oranc_command()
        .args([
            "push",
            "--no-ssl",
            "--registry",
            &down,
            "--repository",
            "x/y",
        ])
        .args(["--trusted-public-key", &closure.public_key, &closure.root])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let said = stderr(&refused).to_lowercase();
    assert!(
        said.contains(&format!("http://{down}")) && said.contains("connection refused"),
        "{said}"
    );
    assert!(!said.contains("--no-ssl"), "{said}");
}
