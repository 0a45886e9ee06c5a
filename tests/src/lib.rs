//! The end-to-end test harness: real processes, started on demand and stopped when their
//! guard drops. A throw-away CNCF distribution registry on a free loopback port, and real
//! Nix store paths (closures with references, signed with a fresh test key).
//!
//! Nothing here is mocked; a test that needs a fault a real registry will not produce
//! brings its own fault server.

pub mod nix;
pub mod oci;
pub mod registry;

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

/// A file under `../shared/fixtures/` beside the repository (read-only test data written by
/// other tools).
pub fn shared_fixture(relative: &str) -> std::path::PathBuf {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fixtures")
        .join(relative);
    assert!(
        path.exists(),
        "fixture {} is missing: clone the repository with ../shared beside it",
        path.display()
    );
    path
}
