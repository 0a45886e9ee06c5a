//! The end-to-end test harness: real processes, started on demand and stopped when their
//! guard drops. A throw-away CNCF distribution registry on a free loopback port, and real
//! Nix store paths (closures with references, signed with a fresh test key).
//!
//! Nothing here is mocked; a test that needs a fault a real registry will not produce
//! brings its own fault server.

pub mod abuse;
pub mod auth;
pub mod faults;
pub mod ghcr;
pub mod h2_frames;
pub mod hostile;
pub mod latency;
pub mod mirror;
pub mod newer_nix;
pub mod nginx;
pub mod nix;
pub mod oci;
pub mod oidc;
pub mod registry;
pub mod server;
pub mod tls;

use std::net::{SocketAddr, TcpListener};

/// A loopback address with a port nobody listens on right now.
pub fn free_loopback_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    listener
        .local_addr()
        .expect("a bound socket has an address")
}

/// A string that differs between test runs and between tests in one run, for names that
/// must not collide (store paths, repositories, key names).
pub fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{}-{}-{}",
        std::process::id(),
        nanos % 1_000_000_000_000,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Waits up to `timeout` until a process just started listens on `addr`. `exited` says
/// whether (and how) it already ended; the error says what went wrong, for the caller's
/// panic.
pub fn wait_for_port(
    addr: SocketAddr,
    timeout: std::time::Duration,
    mut exited: impl FnMut() -> Option<std::process::ExitStatus>,
) -> Result<(), String> {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if let Some(status) = exited() {
            return Err(format!("exited with {status} before answering"));
        }
        if std::net::TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Err(format!("did not listen on {addr} within {timeout:?}"))
}

/// Sends `signal` (as `kill` takes it: `-TERM`, `-STOP`, ...) to the process `pid`;
/// panics if it cannot be sent.
pub fn send_signal(pid: u32, signal: &str) {
    run_ok(std::process::Command::new("kill").args([signal, &pid.to_string()]));
}

/// A repository name no other test uses: `PREFIX/<unique suffix>`.
pub fn fresh_repo(prefix: &str) -> String {
    format!("{prefix}/{}", unique_suffix().replace('-', "."))
}

/// Runs `command`, panicking with its stderr when it fails; returns its stdout.
pub fn run_ok(command: &mut std::process::Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e} (is it installed? see .ci/run)"));
    assert!(
        output.status.success(),
        "{command:?} failed with {}:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("command output is UTF-8")
}

/// `curl` with `args` (`--path-as-is`, 30 s at most): (status code, body, curl's exit code).
pub fn curl(args: &[&str]) -> (String, String, i32) {
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "--path-as-is",
            "-w",
            "\n%{http_code}",
            "--max-time",
            "30",
        ])
        .args(args)
        .output()
        .expect("running curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (
        status.to_owned(),
        body.to_owned(),
        out.status.code().unwrap_or(-1),
    )
}

/// A file under `tests/fixtures/` (test data written by other tools, kept in the repository).
pub fn fixture(relative: &str) -> std::path::PathBuf {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(relative);
    assert!(path.exists(), "fixture {} is missing", path.display());
    path
}

/// The Python that `.ci/setup` put boto3 into (a venv at `target/test-venv` in the
/// workspace, wherever cargo builds).
pub fn test_python() -> std::path::PathBuf {
    let python =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `bash .ci/setup` first",
        python.display()
    );
    python
}

/// oranc's backend for a plain-HTTP registry on loopback (as the original's `--no-ssl`).
pub fn open_backend(
    host: &str,
    credentials: oranc_backends::Credentials,
    tune: impl FnOnce(&mut oranc_backends::registry::HttpTuning),
) -> std::sync::Arc<dyn oranc_core::Registry> {
    let mut settings = oranc_backends::RegistrySettings::new(host);
    settings.kind = oranc_backends::RegistryKind::Distribution;
    settings.credentials = Some(credentials);
    settings.http.plain_http = true;
    tune(&mut settings.http);
    oranc_backends::open(settings).expect("opening the backend")
}

/// `repo` of the plain-HTTP registry at `host` as a cache, anonymously, with the original's
/// tag encoding: for looking at what a command stored.
pub fn anonymous_cache(host: &str, repo: &str) -> oranc_core::RegistryCache {
    let backend = open_backend(host, oranc_backends::Credentials::Anonymous, |_| {});
    oranc_core::RegistryCache::new(
        backend,
        repo.parse().expect("a repository name"),
        oranc_core::TagEncoding::Custom,
        vec![],
    )
}

/// Reads a whole blob body (tests only: production code streams).
pub async fn read_blob(body: oranc_core::BlobBody) -> Result<Vec<u8>, std::io::Error> {
    use futures::TryStreamExt as _;
    match body {
        oranc_core::BlobBody::Stream { body, .. } => {
            let chunks: Vec<bytes::Bytes> = body.try_collect().await?;
            Ok(chunks.concat())
        }
        oranc_core::BlobBody::Redirect { url } => {
            panic!("expected a stream, got a redirect to {url}")
        }
    }
}

/// The `oranc` binary, built (once per test process) from the workspace's current sources.
pub fn oranc_binary() -> std::path::PathBuf {
    static BUILT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| build_oranc(false)).clone()
}

/// Builds `oranc` (optimised with `release`) and returns its path. The debug build has the
/// `test-hooks` feature (`ORANC_TEST_EXIT_AT` and friends); the release build is the one
/// users run, without it.
pub fn build_oranc(release: bool) -> std::path::PathBuf {
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = std::process::Command::new(cargo);
    command
        .current_dir(&workspace)
        .args(["build", "--quiet", "-p", "oranc"]);
    if release {
        command.arg("--release");
    } else {
        command.args(["--features", "test-hooks"]);
    }
    run_ok(&mut command);
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    target.join(if release {
        "release/oranc"
    } else {
        "debug/oranc"
    })
}

/// The `oranc` a benchmark measures: `BENCH_ORANC` (another build, e.g. an older commit's,
/// on the same machine) or a release build of the workspace.
pub fn bench_oranc() -> std::path::PathBuf {
    named_or_release_build("BENCH_ORANC")
}

/// The `oranc` the environment variable `variable` names, or a release build of the
/// workspace when it is unset or empty.
fn named_or_release_build(variable: &str) -> std::path::PathBuf {
    std::env::var_os(variable)
        .filter(|path| !path.is_empty())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| build_oranc(true))
}

/// A fresh secret key file `dir/key` for a benchmark's pushes.
pub fn bench_signing_key(dir: &std::path::Path) -> std::path::PathBuf {
    let key = dir.join("key");
    std::fs::write(
        &key,
        run_ok(nix::nix_command("nix").args(["key", "generate-secret", "--key-name", "bench-1"])),
    )
    .expect("writing a key");
    key
}

/// A `Command` for `oranc` with a clean environment for its own variables.
pub fn oranc_command() -> std::process::Command {
    clean_command(oranc_binary())
}

/// [`oranc_command`] for the release build (built once per test process): the binary users
/// run, for tests that replay attacks against it. `ORANC_TEST_RELEASE_BINARY` names another
/// build instead (an older commit's, to see an attack succeed before its fix).
pub fn release_oranc_command() -> std::process::Command {
    static BUILT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let binary = BUILT.get_or_init(|| named_or_release_build("ORANC_TEST_RELEASE_BINARY"));
    clean_command(binary.clone())
}

/// [`release_oranc_command`] started by `wrapper` (e.g. `prlimit --nofile=256:256 --`).
pub fn wrapped_release_command(wrapper: &[&str]) -> std::process::Command {
    let release = release_oranc_command();
    let (program, args) = wrapper.split_first().expect("a wrapper command");
    let mut command = clean_command(std::path::PathBuf::from(program));
    command.args(args).arg(release.get_program());
    command
}

/// A `Command` for the `oranc` at `binary` with a clean environment for its own variables.
pub fn clean_command(binary: std::path::PathBuf) -> std::process::Command {
    let mut command = std::process::Command::new(binary);
    for variable in [
        "ORANC_USERNAME",
        "ORANC_PASSWORD",
        "ORANC_SIGNING_KEY",
        "ORANC_REGISTRY",
        "ORANC_REPOSITORY",
        "ORANC_TRUSTED_PUBLIC_KEYS",
        "ORANC_TOKEN_REALMS",
        "ORANC_CHUNK_SIZE",
        "ORANC_NO_SSL",
        "ORANC_FAIL_ON_SKIPPED",
        "ORANC_TEST_EXIT_AT",
        "ORANC_TEST_PANIC_PATH",
    ] {
        command.env_remove(variable);
    }
    command.env(
        "ORANC_HOME",
        std::env::temp_dir().join("oranc-tests-unused-home"),
    );
    command
}

/// The arguments of `oranc push` to `repo` in the plain-HTTP loopback registry `host`.
pub fn push_args<'a>(host: &'a str, repo: &'a str) -> [&'a str; 6] {
    ["push", "--no-ssl", "--registry", host, "--repository", repo]
}

/// A benchmark's positional argument `position` (from 1) as a number, or `default`.
pub fn bench_arg(position: usize, default: usize) -> usize {
    std::env::args()
        .nth(position)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

/// `oranc push` of `closure` (trusting its key) to `repo` in a plain-HTTP loopback registry;
/// its output.
pub fn push_closure(
    command: std::process::Command,
    registry_host: &str,
    repo: &str,
    closure: &nix::SignedClosure,
) -> std::process::Output {
    let mut command = command;
    command
        .args(push_args(registry_host, repo))
        .args(["--trusted-public-key", &closure.public_key, &closure.root])
        .output()
        .expect("running oranc push")
}

/// `oranc push` (the binary of `command`) of `paths` at `--parallel 16` to the plain-HTTP
/// registry at `host`, into a fresh repository named from `prefix`, signed with `key`.
pub fn push_signed_in_parallel(
    mut command: std::process::Command,
    host: &str,
    prefix: &str,
    key: &std::path::Path,
    paths: &[String],
) -> std::process::Output {
    command
        .args(["push", "--no-ssl", "--registry", host])
        .args(["--repository", &fresh_repo(prefix), "--parallel", "16"])
        .arg("--signing-key")
        .arg(key)
        .args(paths)
        .output()
        .expect("running oranc push")
}
