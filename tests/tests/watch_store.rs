//! `oranc watch-store` as a CI job runs it, against a real registry and a real Nix store:
//! what is built while it watches reaches the cache and substitutes; what was there before
//! is left alone; a SIGTERM right after a build still leaves the closure complete; a
//! registry outage loses nothing; a second signal stops at once and says what was left.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: helpers outside #[test] panic on purpose"
)]

use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use oranc_core::TagEncoding;
use oranc_tests::nix::{assert_same_closure, copy_from, narinfo_key, nix_command, SignedClosure};
use oranc_tests::oci::RawRegistry;
use oranc_tests::registry::RegistryProcess;
use oranc_tests::server::{allow_plain_http, ServerProcess};
use oranc_tests::{fresh_repo, oranc_command, run_ok, unique_suffix};
use tempfile::TempDir;

/// A running `oranc watch-store`, its standard error in a file.
struct Watcher {
    child: Child,
    stderr: PathBuf,
    _dir: TempDir,
}

impl Watcher {
    fn start(registry: &RegistryProcess, repo: &str, key: &SigningKey, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let stderr = dir.path().join("stderr");
        let child = oranc_command()
            .args(["watch-store", "--no-ssl", "--registry"])
            .arg(registry.host())
            .args(["--repository", repo, "--signing-key"])
            .arg(&key.secret_file)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let watcher = Self {
            child,
            stderr,
            _dir: dir,
        };
        watcher.wait_for_stderr("watching", Duration::from_secs(30));
        watcher
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn wait_for_stderr(&self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.stderr().contains(text) {
            assert!(
                Instant::now() < deadline,
                "watch-store did not print {text:?} within {timeout:?}:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&self, signal: &str) {
        oranc_tests::send_signal(self.child.id(), signal);
    }

    /// Waits for the process to exit (at most `timeout`); its status and standard error.
    fn wait(mut self, timeout: Duration) -> (ExitStatus, String) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, self.stderr());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "watch-store did not exit within {timeout:?}:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh signing key: the watcher signs with it, clients trust its public half.
struct SigningKey {
    secret_file: PathBuf,
    public: String,
    _dir: TempDir,
}

fn signing_key() -> SigningKey {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("watch.sk");
    let name = format!("oranc-watch-{}", unique_suffix());
    std::fs::write(
        &secret_file,
        run_ok(nix_command("nix").args(["key", "generate-secret", "--key-name", &name])),
    )
    .unwrap();
    let public = run_ok(
        nix_command("sh")
            .arg("-c")
            .arg("nix key convert-secret-to-public < \"$1\"")
            .arg("sh")
            .arg(&secret_file),
    )
    .trim()
    .to_owned();
    SigningKey {
        secret_file,
        public,
        _dir: dir,
    }
}

fn narinfo_tag(path: &str) -> String {
    TagEncoding::Custom
        .encode(&narinfo_key(path))
        .unwrap()
        .to_string()
}

/// Which of `paths` have a narinfo in `repo`.
async fn pushed(registry: &RegistryProcess, repo: &str, paths: &[String]) -> Vec<String> {
    let raw = RawRegistry::new(&registry.base_url());
    let mut found = Vec::new();
    for path in paths {
        if raw.get_manifest(repo, &narinfo_tag(path)).await.is_some() {
            found.push(path.clone());
        }
    }
    found
}

async fn wait_until_pushed(
    registry: &RegistryProcess,
    repo: &str,
    paths: &[String],
    timeout: Duration,
) {
    let deadline = Instant::now() + timeout;
    while pushed(registry, repo, paths).await.len() < paths.len() {
        assert!(
            Instant::now() < deadline,
            "not all of {paths:?} were pushed within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A store path added with `nix-store --add`: valid at once, unsigned.
fn add_file(dir: &Path, name: &str) -> String {
    let file = dir.join(name);
    std::fs::write(&file, unique_suffix()).unwrap();
    run_ok(nix_command("nix-store").arg("--add").arg(&file))
        .trim()
        .to_owned()
}

/// Real Nix substitutes `root` from the registry through an oranc server into a fresh store.
fn assert_substitutes(registry: &RegistryProcess, repo: &str, root: &str, public_key: &str) {
    let server = ServerProcess::start(&allow_plain_http(&registry.host()), &[]);
    let store = tempfile::tempdir().unwrap();
    let copied = copy_from(
        &server.url(&format!("{}/{repo}", registry.host())),
        store.path(),
        root,
        public_key,
    );
    assert!(
        copied.status.success(),
        "nix copy: {}",
        String::from_utf8_lossy(&copied.stderr)
    );
    assert_same_closure(store.path(), root);
}

#[tokio::test]
async fn what_is_built_while_watching_is_pushed_and_substitutes_what_was_there_is_not() {
    let registry = RegistryProcess::start();
    let repo = fresh_repo("watch");
    let key = signing_key();
    let scratch = tempfile::tempdir().unwrap();
    let before = add_file(scratch.path(), "valid-before-the-watch");

    let watcher = Watcher::start(&registry, &repo, &key, &["--poll-interval", "100ms"]);
    let closure = SignedClosure::build_unsigned(50_000);
    wait_until_pushed(&registry, &repo, &closure.paths, Duration::from_secs(60)).await;
    watcher.signal("-TERM");
    let (status, stderr) = watcher.wait(Duration::from_secs(60));
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("failed 0"), "{stderr}");

    assert!(
        pushed(&registry, &repo, std::slice::from_ref(&before))
            .await
            .is_empty(),
        "{before} was valid before watch-store started and must not be pushed:\n{stderr}"
    );
    assert!(
        !stderr.contains(".drv"),
        "derivations are not pushed:\n{stderr}"
    );
    assert_substitutes(&registry, &repo, &closure.root, &key.public);
}

#[tokio::test]
async fn sigterm_right_after_a_build_leaves_its_closure_complete() {
    let registry = RegistryProcess::start();
    let repo = fresh_repo("watch");
    let key = signing_key();
    // Polling once an hour: only the last look, made on the signal, can find the build.
    // Metadata from `nix path-info` this time (new paths are still found in the DB).
    let watcher = Watcher::start(
        &registry,
        &repo,
        &key,
        &["--poll-interval", "1h", "--store-source", "nix"],
    );
    let closure = SignedClosure::build_unsigned(50_000);
    watcher.signal("-TERM");
    let (status, stderr) = watcher.wait(Duration::from_secs(60));
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("one last look"), "{stderr}");
    assert_eq!(
        pushed(&registry, &repo, &closure.paths).await,
        closure.paths,
        "the closure built just before SIGTERM is in the cache:\n{stderr}"
    );
    assert_substitutes(&registry, &repo, &closure.root, &key.public);
}

#[tokio::test]
async fn a_registry_outage_loses_nothing() {
    let mut registry = RegistryProcess::start();
    let repo = fresh_repo("watch");
    let key = signing_key();
    let watcher = Watcher::start(
        &registry,
        &repo,
        &key,
        &["--poll-interval", "100ms", "--max-retry", "1"],
    );
    registry.stop();
    let closure = SignedClosure::build_unsigned(50_000);
    watcher.wait_for_stderr("failed (retrying", Duration::from_secs(60));
    registry.restart();
    wait_until_pushed(&registry, &repo, &closure.paths, Duration::from_secs(90)).await;
    watcher.signal("-TERM");
    let (status, stderr) = watcher.wait(Duration::from_secs(60));
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("failed 0"), "{stderr}");
    assert_substitutes(&registry, &repo, &closure.root, &key.public);
}

#[tokio::test]
async fn a_second_signal_stops_at_once_and_says_what_was_left() {
    let registry = RegistryProcess::start();
    let repo = fresh_repo("watch");
    let key = signing_key();
    let scratch = tempfile::tempdir().unwrap();
    let watcher = Watcher::start(&registry, &repo, &key, &["--poll-interval", "1h"]);
    // A hung registry: the pushes the drain starts never finish.
    registry.pause();
    let stuck = add_file(scratch.path(), "stuck");
    watcher.signal("-TERM");
    watcher.wait_for_stderr("one last look", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));
    watcher.signal("-INT");
    let (status, stderr) = watcher.wait(Duration::from_secs(30));
    registry.resume();
    assert!(!status.success(), "a hard stop is not a success:\n{stderr}");
    assert!(
        stderr.contains("stopped by a second SIGINT") && stderr.contains(&stuck),
        "{stderr}"
    );
    assert!(
        pushed(&registry, &repo, std::slice::from_ref(&stuck))
            .await
            .is_empty(),
        "{stuck} was never pushed, so it must not be visible"
    );
}

#[test]
fn without_access_to_the_nix_db_it_says_so() {
    let key = signing_key();
    let output = oranc_command()
        .args([
            "watch-store",
            "--nix-db",
            "/nonexistent/db.sqlite",
            "--signing-key",
        ])
        .arg(&key.secret_file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("watch-store finds new paths in the Nix DB")
            && stderr.contains("/nonexistent/db.sqlite"),
        "{stderr}"
    );
}

/// A registry that never answered the first tag listing held watch-store for ever, and
/// SIGTERM was only looked at once watching began. A signal now stops it in any phase.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_stops_it_while_the_registry_is_silent() {
    use oranc_tests::hostile::{HostileRegistry, Hostility};
    let proxy = HostileRegistry::start(Hostility::SilentTagList).await;
    let key = signing_key();
    let dir = tempfile::tempdir().unwrap();
    let stderr = dir.path().join("stderr");
    let mut child = oranc_tests::release_oranc_command()
        .args(["watch-store", "--no-ssl", "--registry"])
        .arg(proxy.host())
        .args(["--repository", "silent", "--signing-key"])
        .arg(&key.secret_file)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(child.try_wait().unwrap().is_none(), "still listing");
    oranc_tests::send_signal(child.id(), "-TERM");
    let signalled = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if signalled.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            panic!(
                "SIGTERM was ignored for 15 s: {}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let said = std::fs::read_to_string(&stderr).unwrap_or_default();
    assert!(!status.success(), "{said}");
    assert!(
        said.contains("SIGTERM") && said.contains("nothing was pushed"),
        "{said}"
    );
}

/// Idle connections to `--metrics-listen` were never timed out or capped: 400 of them
/// used up watch-store's file descriptors and every push failed with "Too many open files".
#[test]
fn idle_connections_to_the_metrics_port_cannot_hold_its_file_descriptors() {
    let key = signing_key();
    let registry = RegistryProcess::start();
    let address = oranc_tests::free_loopback_addr();
    let child = KillOnDrop(
        oranc_tests::release_oranc_command()
            .args(["watch-store", "--no-ssl", "--registry", &registry.host()])
            .args(["--repository", &fresh_repo("metrics-idle"), "--signing-key"])
            .arg(&key.secret_file)
            .arg("--metrics-listen")
            .arg(address.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    oranc_tests::wait_for_port(address, Duration::from_secs(30), || None).unwrap();
    let fds = |pid: u32| std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count);
    let before = fds(child.0.id());
    let idle: Vec<_> = (0..400)
        .filter_map(|_| std::net::TcpStream::connect(address).ok())
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let during = fds(child.0.id());
    assert!(
        during < before + 40,
        "{} idle connections took {} descriptors",
        idle.len(),
        during - before
    );
    // Once the idle ones time out, a scrape is answered.
    std::thread::sleep(Duration::from_secs(6));
    let (status, body, _) = oranc_tests::curl(&[&format!("http://{address}/metrics")]);
    assert_eq!(status, "200");
    assert!(
        body.contains("oranc_watch_store_pushed_paths_total"),
        "{body}"
    );
    drop(idle);
}

/// A child process killed when the test ends, passed or failed (a failed assertion must not
/// leave a watch-store running).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
