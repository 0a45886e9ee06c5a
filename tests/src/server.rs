//! The real `oranc server` binary on a free loopback port with a config file written for
//! the test, killed when the guard drops.

use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::{free_loopback_addr, oranc_command};

#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    pub addr: SocketAddr,
    dir: TempDir,
}

impl ServerProcess {
    /// Starts `oranc server` with `config` (TOML, without `listen`) plus `args`.
    pub fn start(config: &str, args: &[&str]) -> Self {
        Self::start_binary(oranc_command(), config, args)
    }

    /// As [`Self::start`], with a given `oranc` command (e.g. a release build).
    pub fn start_binary(command: std::process::Command, config: &str, args: &[&str]) -> Self {
        Self::spawn(command, config, args, false)
    }

    /// As [`Self::start`], with everything the server logs (at `ORANC_LOG=trace` unless the
    /// command sets it) kept for [`Self::log`].
    pub fn start_logged(mut command: std::process::Command, config: &str, args: &[&str]) -> Self {
        if !command.get_envs().any(|(name, _)| name == "ORANC_LOG") {
            command.env("ORANC_LOG", "trace");
        }
        Self::spawn(command, config, args, true)
    }

    /// What the server wrote to stderr so far (empty unless started with
    /// [`Self::start_logged`]).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn spawn(
        mut command: std::process::Command,
        config: &str,
        args: &[&str],
        logged: bool,
    ) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let addr = free_loopback_addr();
        let file = dir.path().join("oranc.toml");
        std::fs::write(&file, format!("listen = \"{addr}\"\n{config}"))
            .expect("writing the config");
        let child = command
            .arg("server")
            .arg("--config")
            .arg(&file)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(if logged {
                Stdio::from(
                    std::fs::File::create(dir.path().join("server.log")).expect("a log file"),
                )
            } else {
                Stdio::inherit()
            })
            .spawn()
            .expect("starting oranc server");
        let mut server = Self { child, addr, dir };
        let child = &mut server.child;
        if let Err(e) = crate::wait_for_port(addr, Duration::from_secs(20), || {
            child.try_wait().ok().flatten()
        }) {
            panic!("oranc server {e}\n{}", server.log());
        }
        server
    }

    /// Peak resident memory of the server so far (Linux), e.g. "23456 kB".
    pub fn peak_memory(&self) -> Option<String> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        Some(line.trim_start_matches("VmHWM:").trim().to_owned())
    }

    /// Sends SIGTERM and waits for the process to exit; returns whether it exited cleanly.
    pub fn terminate(&mut self) -> bool {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().map(|s| s.success()).unwrap_or(false)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The process id, to signal it from another thread.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What `/metrics` answers now.
    pub fn metrics(&self) -> String {
        crate::run_ok(std::process::Command::new("curl").args(["-sf", &self.url("metrics")]))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.addr, path.trim_start_matches('/'))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of the first sample in a `/metrics` text whose line starts with `prefix`.
pub fn metric(text: &str, prefix: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} in:\n{text}"));
    sample_value(line).unwrap_or_else(|| panic!("{prefix}: not a number in:\n{text}"))
}

/// As [`metric`], 0 where no sample has been taken yet (a labelled counter shows up only
/// once it has counted).
pub fn metric_or_zero(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .map_or(0.0, |line| {
            sample_value(line).unwrap_or_else(|| panic!("{prefix}: not a number in:\n{text}"))
        })
}

fn sample_value(line: &str) -> Option<f64> {
    line.rsplit(' ').next()?.parse().ok()
}

/// The server config that allows the plain-HTTP loopback registry `host`.
pub fn allow_plain_http(host: &str) -> String {
    format!("[registries.\"{host}\"]\nplain_http = true\n")
}
