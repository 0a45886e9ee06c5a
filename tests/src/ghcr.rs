//! The ghcr.io + api.github.com stand-in (`tests/standins/ghcr.py`, Python's standard
//! library only) in front of a real registry, on a free loopback port, killed when the guard
//! drops.

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use crate::free_loopback_addr;
use crate::registry::RegistryProcess;

/// The token the stand-in accepts.
pub const TOKEN: &str = "ghp_standin_token";
/// The package owner it serves (`OWNER/...` repositories).
pub const OWNER: &str = "me";

#[derive(Debug)]
pub struct GhcrStandIn {
    child: Child,
    pub addr: SocketAddr,
}

impl GhcrStandIn {
    /// In front of `registry`, with the stand-in's flags `args` (`--popular DIGEST`,
    /// `--scopes …`, `--deletes-per-second N`, `--org`).
    pub fn start(registry: &RegistryProcess, args: &[&str]) -> Self {
        let addr = free_loopback_addr();
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("standins/ghcr.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(["--listen", &addr.to_string()])
            .args(["--upstream", &registry.base_url()])
            .args(["--owner", OWNER, "--token", TOKEN])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the ghcr stand-in (python3)");
        let mut ready = String::new();
        std::io::BufReader::new(child.stdout.take().expect("its stdout"))
            .read_line(&mut ready)
            .expect("reading the stand-in's first line");
        assert_eq!(ready.trim(), "ready", "the ghcr stand-in did not start");
        Self { child, addr }
    }

    /// `host:port`, as `--registry` takes it.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Its API's base URL, as `--github-api-url` takes it.
    pub fn api(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What it counted: `api_deletes`, `manifest_delete_attempts`, `api_requests`,
    /// `secondary_limited`.
    pub fn stats(&self) -> serde_json::Value {
        let out = crate::run_ok(
            Command::new("curl").args(["-sf", &format!("{}/_standin/stats", self.api())]),
        );
        serde_json::from_str(&out).expect("the stand-in's stats")
    }
}

impl Drop for GhcrStandIn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
