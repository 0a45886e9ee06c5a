//! `oranc push --from URL`: a binary cache written by Nix itself (`nix copy --to
//! file://DIR`), read as a directory and through nginx, moved into a real registry; then
//! real Nix substitutes the closure through `oranc server`. A NAR file that is not the one
//! its narinfo describes is never named by a narinfo in the registry.

use std::process::Output;

use oranc_tests::nginx::NginxProcess;
use oranc_tests::nix::{assert_same_closure, copy_from, hash_part, nix_command, SignedClosure};
use oranc_tests::registry::RegistryProcess;
use oranc_tests::server::{allow_plain_http, ServerProcess};
use oranc_tests::{fresh_repo, oranc_command, run_ok};

/// `nix copy --to file://DIR?compression=xz` of the closure: a cache as Nix writes it.
fn nix_written_cache(closure: &SignedClosure) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    run_ok(nix_command("nix").args([
        "copy",
        "--to",
        &format!("file://{}?compression=xz", dir.path().display()),
        &closure.root,
    ]));
    dir
}

fn push_from(
    registry: &RegistryProcess,
    repo: &str,
    from: &str,
    closure: &SignedClosure,
) -> Output {
    oranc_command()
        .args([
            "push",
            "--no-ssl",
            "--registry",
            &registry.host(),
            "--repository",
            repo,
        ])
        .args(["--from", from, "--trusted-public-key", &closure.public_key])
        .arg(&closure.root)
        .output()
        .expect("running oranc push")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Nix substitutes `closure` from `repo` through a fresh `oranc server`.
fn substitutes_through_the_server(registry: &RegistryProcess, repo: &str, closure: &SignedClosure) {
    let server = ServerProcess::start(&allow_plain_http(&registry.host()), &[]);
    let store = tempfile::tempdir().expect("a temporary directory");
    let url = server.url(&format!("{}/{repo}", registry.host()));
    let copied = copy_from(&url, store.path(), &closure.root, &closure.public_key);
    assert!(copied.status.success(), "{}", text(&copied.stderr));
    assert_same_closure(store.path(), &closure.root);
}

#[test]
fn a_cache_nix_wrote_moves_into_the_registry_from_a_directory_and_over_http() {
    let registry = RegistryProcess::start();
    let closure = SignedClosure::build(300_000);
    let cache = nix_written_cache(&closure);

    let repo = fresh_repo("from-dir");
    let pushed = push_from(
        &registry,
        &repo,
        &format!("file://{}", cache.path().display()),
        &closure,
    );
    assert!(pushed.status.success(), "{}", text(&pushed.stderr));
    assert!(
        text(&pushed.stderr).contains("pushed 3"),
        "{}",
        text(&pushed.stderr)
    );
    substitutes_through_the_server(&registry, &repo, &closure);
    // A second run finds everything there and copies nothing.
    let again = push_from(
        &registry,
        &repo,
        &format!("file://{}", cache.path().display()),
        &closure,
    );
    assert!(
        text(&again.stderr).contains("already there 3"),
        "{}",
        text(&again.stderr)
    );

    let nginx = NginxProcess::start(&format!(
        "server {{ listen {{listen}}; root {}; }}",
        cache.path().display()
    ));
    let repo = fresh_repo("from-http");
    let pushed = push_from(&registry, &repo, &nginx.url(""), &closure);
    assert!(pushed.status.success(), "{}", text(&pushed.stderr));
    substitutes_through_the_server(&registry, &repo, &closure);
    // Each file was asked for once.
    let log = nginx.access_log();
    let nar_gets = log.lines().filter(|l| l.contains("GET /nar/")).count();
    assert_eq!(nar_gets, 3, "{log}");
}

#[test]
fn a_nar_file_that_is_not_the_one_its_narinfo_describes_is_never_named() {
    let registry = RegistryProcess::start();
    let closure = SignedClosure::build(50_000);
    let cache = nix_written_cache(&closure);
    // Replace the bytes of every NAR file (same length) behind the narinfos' backs.
    for entry in std::fs::read_dir(cache.path().join("nar")).unwrap() {
        let path = entry.unwrap().path();
        let length = std::fs::metadata(&path).unwrap().len() as usize;
        std::fs::write(&path, vec![b'x'; length]).unwrap();
    }
    let repo = fresh_repo("from-bad");
    let pushed = push_from(
        &registry,
        &repo,
        &format!("file://{}", cache.path().display()),
        &closure,
    );
    assert!(!pushed.status.success(), "{}", text(&pushed.stderr));
    assert!(
        text(&pushed.stderr).contains("is not the one its narinfo describes"),
        "{}",
        text(&pushed.stderr)
    );
    let tags = run_ok(std::process::Command::new("curl").args([
        "-s",
        &format!("{}/v2/{repo}/tags/list", registry.base_url()),
    ]));
    for path in &closure.paths {
        let hash = hash_part(path);
        assert!(
            !tags.contains(&hash),
            "a narinfo for {path} was stored: {tags}"
        );
    }
    assert!(!tags.contains("nar_"), "a NAR was tagged: {tags}");
}

#[test]
fn a_cache_for_another_store_directory_is_refused() {
    let registry = RegistryProcess::start();
    let closure = SignedClosure::build(1_000);
    let cache = nix_written_cache(&closure);
    std::fs::write(
        cache.path().join("nix-cache-info"),
        "StoreDir: /gnu/store\nWantMassQuery: 1\nPriority: 40\n",
    )
    .unwrap();
    let pushed = push_from(
        &registry,
        &fresh_repo("from-gnu"),
        &format!("file://{}", cache.path().display()),
        &closure,
    );
    assert!(!pushed.status.success());
    assert!(
        text(&pushed.stderr).contains("/gnu/store"),
        "{}",
        text(&pushed.stderr)
    );
}
