//! What users of the original oranc already run, unchanged, against a real registry and a
//! real Nix: its documented signing flows (`ORANC_SIGNING_KEY`, `--already-signed`), a
//! `--repository` given without `--registry`, `nix-store --add … | oranc push` on a machine
//! where the Nix DB appears only while the pipe runs, and pushing through the server with an
//! S3 client as `nix copy --to s3://…?endpoint=…` does.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: helpers outside #[test] panic on purpose"
)]

use std::io::Write as _;
use std::process::{Output, Stdio};

use oranc_core::{NarInfo, PublicKey, StoreDir};
use oranc_tests::auth::{PASSWORD, USERNAME};
use oranc_tests::nix::{assert_same_closure, copy_from_command, nix_command, SignedClosure};
use oranc_tests::oci::RawRegistry;
use oranc_tests::registry::{RegistryAuth, RegistryProcess};
use oranc_tests::server::{allow_plain_http, ServerProcess};
use oranc_tests::{fresh_repo, oranc_command, run_ok, test_python, unique_suffix};

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A store path nobody signed (`nix-store --add` of a fresh file).
fn unsigned_path(dir: &std::path::Path) -> String {
    let file = dir.join(format!("unsigned-{}", unique_suffix()));
    std::fs::write(&file, unique_suffix()).unwrap();
    run_ok(nix_command("nix-store").arg("--add").arg(&file))
        .trim()
        .to_owned()
}

/// `oranc push` to `repo` with `ORANC_SIGNING_KEY` set to `closure`'s secret key.
fn push_with_signing_key_env(
    registry: &RegistryProcess,
    repo: &str,
    closure: &SignedClosure,
    extra: &[&str],
    paths: &[&str],
) -> Output {
    oranc_command()
        .env(
            "ORANC_SIGNING_KEY",
            std::fs::read_to_string(&closure.secret_key_file).unwrap(),
        )
        .args(["push", "--no-ssl", "--registry", &registry.host()])
        .args(["--repository", repo])
        .args(extra)
        .args(paths)
        .output()
        .unwrap()
}

/// The narinfo pushed for `path`, if any.
async fn pushed_narinfo(registry: &RegistryProcess, repo: &str, path: &str) -> Option<NarInfo> {
    let hash = StoreDir::default().parse_path(path).unwrap();
    let tag = format!("{}.narinfo", hash.hash_part());
    let (_, bytes) = RawRegistry::new(&registry.base_url())
        .get_object(repo, &tag)
        .await?;
    Some(NarInfo::parse(std::str::from_utf8(&bytes).unwrap()).unwrap())
}

#[tokio::test]
async fn signing_key_with_already_signed_pushes_signed_and_unsigned_paths_alike() {
    // The original's README: ORANC_SIGNING_KEY signs on the fly; paths signed by hand
    // (`nix store sign`) are pushed with --already-signed. Here the closure is signed by
    // the key already and one more path is not signed at all: all of it goes up, signed.
    let registry = RegistryProcess::start();
    let closure = SignedClosure::build(1_000);
    let unsigned = unsigned_path(closure.work_dir());
    let repo = fresh_repo("flows");
    let output = push_with_signing_key_env(
        &registry,
        &repo,
        &closure,
        &["--already-signed"],
        &[&closure.root, &unsigned],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("pushed 4"), "{}", stderr(&output));
    let key: PublicKey = closure.public_key.parse().unwrap();
    for path in closure.paths.iter().chain([&unsigned]) {
        let narinfo = pushed_narinfo(&registry, &repo, path).await.unwrap();
        assert!(
            narinfo.is_signed_by_any(std::slice::from_ref(&key)),
            "{path} is signed by the key"
        );
    }
}

#[tokio::test]
async fn signing_key_alone_signs_unsigned_paths_on_the_fly() {
    let registry = RegistryProcess::start();
    let closure = SignedClosure::build(10);
    let unsigned = unsigned_path(closure.work_dir());
    let repo = fresh_repo("flows");
    let output = push_with_signing_key_env(&registry, &repo, &closure, &[], &[&unsigned]);
    assert!(output.status.success(), "{}", stderr(&output));
    let narinfo = pushed_narinfo(&registry, &repo, &unsigned).await.unwrap();
    assert!(narinfo.is_signed_by_any(&[closure.public_key.parse().unwrap()]));
}

#[tokio::test]
async fn no_sign_pushes_only_what_is_signed_already() {
    let registry = RegistryProcess::start();
    let closure = SignedClosure::build(10);
    let unsigned = unsigned_path(closure.work_dir());
    let repo = fresh_repo("flows");
    let output = push_with_signing_key_env(
        &registry,
        &repo,
        &closure,
        &["--no-sign"],
        &[&closure.root, &unsigned],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("pushed 3") && stderr(&output).contains("skipped unsigned 1"),
        "{}",
        stderr(&output)
    );
    assert!(pushed_narinfo(&registry, &repo, &unsigned).await.is_none());
    // And the original's older flow: no secret key, paths signed beforehand, the public key
    // to check them by.
    let repo = fresh_repo("flows");
    let output = oranc_command()
        .args(["push", "--no-ssl", "--registry", &registry.host()])
        .args(["--repository", &repo, "--already-signed"])
        .args(["--trusted-public-key", &closure.public_key, &closure.root])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("pushed 3"), "{}", stderr(&output));
}

#[test]
fn a_repository_without_a_registry_goes_to_ghcr_io_never_to_a_local_directory() {
    // A CI script written for the original: `oranc push --repository me/cache`. There is
    // no network here; the proxy (a closed loopback port) keeps every attempt on this
    // machine. The push must fail, say where it went, and write nothing locally.
    let closure = SignedClosure::build(10);
    let home = tempfile::tempdir().unwrap();
    for extra in [vec![closure.root.as_str()], vec!["initialize"]] {
        let output = oranc_command()
            .env("ORANC_HOME", home.path())
            .env("HTTPS_PROXY", "http://127.0.0.1:9")
            .args(["push", "--repository", "me/cache", "--max-retry", "0"])
            .args(["--trusted-public-key", &closure.public_key])
            .args(&extra)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{}", stderr(&output));
        assert!(stderr(&output).contains("ghcr.io"), "{}", stderr(&output));
        assert_eq!(
            std::fs::read_dir(home.path()).unwrap().count(),
            0,
            "nothing written to the embedded local registry"
        );
    }
}

#[test]
fn paths_are_read_before_the_nix_db_is_opened() {
    // `nix-store --add X | oranc push` where Nix never ran: the DB is created by the
    // command before the pipe while push already runs. Push must wait for its input first.
    let registry = RegistryProcess::start();
    let closure = SignedClosure::build(10);
    let db_dir = tempfile::tempdir().unwrap();
    let db = db_dir.path().join("db.sqlite");
    let mut child = oranc_command()
        .args(["push", "--no-ssl", "--registry", &registry.host()])
        .args(["--repository", &fresh_repo("flows")])
        .args(["--trusted-public-key", &closure.public_key])
        .arg("--nix-db")
        .arg(&db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "push gave up before its input ended"
    );
    // Now the DB appears (a consistent copy of the machine's), then the path arrives.
    run_ok(
        std::process::Command::new("sqlite3")
            .arg("/nix/var/nix/db/db.sqlite")
            .arg(".timeout 10000")
            .arg(format!(".backup '{}'", db.display())),
    );
    writeln!(child.stdin.take().unwrap(), "{}", closure.root).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("pushed 3"), "{}", stderr(&output));
}

#[test]
fn an_s3_client_pushes_through_the_server_and_nix_substitutes_what_it_stored() {
    // The original's second push flow: `nix copy --to s3://OWNER2?endpoint=SERVER/REG/OWNER1`
    // with AWS_ACCESS_KEY_ID = base64(user:password). Debian's Nix has no S3 support, so
    // boto3 speaks S3 (path style, SigV4) in its place.
    let registry = RegistryProcess::start_with_auth(RegistryAuth::Htpasswd);
    let closure = SignedClosure::build(100_000);
    let reference = closure.work_dir().join("reference");
    run_ok(
        nix_command("nix")
            .args(["copy", "--to"])
            .arg(format!("file://{}?compression=zstd", reference.display()))
            .arg(&closure.root),
    );
    let server = ServerProcess::start(&allow_plain_http(&registry.host()), &[]);
    let owner = format!("s3{}", unique_suffix().replace('-', ""));
    let endpoint = server.url(&format!("{}/{owner}", registry.host()));
    let upload = |password: &str| {
        std::process::Command::new(test_python())
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/scripts/s3_put_cache.py"
            ))
            .args([&endpoint, "cache", USERNAME, password])
            .arg(&reference)
            .output()
            .unwrap()
    };

    let refused = upload("wrong-password");
    assert!(!refused.status.success(), "a wrong password is refused");
    assert!(stderr(&refused).contains("403"), "{}", stderr(&refused));

    let uploaded = upload(PASSWORD);
    assert!(uploaded.status.success(), "{}", stderr(&uploaded));
    // nix-cache-info, three NARs, three narinfos.
    assert_eq!(
        String::from_utf8_lossy(&uploaded.stdout).trim(),
        "uploaded 7"
    );

    // A body framed with per-chunk signatures would be stored corrupt: refused instead.
    let framed = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT"])
        .args(["-u", &format!("{USERNAME}:{PASSWORD}")])
        .args([
            "-H",
            "x-amz-content-sha256: STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        ])
        .args([
            "--data-binary",
            "5;chunk-signature=00\r\nhello\r\n0\r\n\r\n",
        ])
        .arg(format!("{endpoint}/cache/log/framed.drv"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&framed.stdout), "400");

    let netrc = closure.work_dir().join("netrc");
    std::fs::write(
        &netrc,
        format!("machine 127.0.0.1 login {USERNAME} password {PASSWORD}\n"),
    )
    .unwrap();
    let store = tempfile::tempdir().unwrap();
    let copied = copy_from_command(
        &format!("{endpoint}/cache"),
        store.path(),
        &closure.root,
        &closure.public_key,
    )
    .args(["--option", "netrc-file"])
    .arg(&netrc)
    .output()
    .unwrap();
    assert!(copied.status.success(), "{}", stderr(&copied));
    assert_same_closure(store.path(), &closure.root);
}
