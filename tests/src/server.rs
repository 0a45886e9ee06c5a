//! The real `oranc server` binary on a free loopback port with a config file written for
//! the test, killed when the guard drops.

use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::{free_loopback_addr, oranc_command};

#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    pub addr: SocketAddr,
    _dir: TempDir,
}

impl ServerProcess {
    /// Starts `oranc server` with `config` (TOML, without `listen`) plus `args`.
    pub fn start(config: &str, args: &[&str]) -> Self {
        Self::start_binary(oranc_command(), config, args)
    }

    /// As [`Self::start`], with a given `oranc` command (e.g. a release build).
    pub fn start_binary(mut command: std::process::Command, config: &str, args: &[&str]) -> Self {
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
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting oranc server");
        let mut server = Self {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("oranc server exited with {status}");
            }
            if std::net::TcpStream::connect(addr).is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("oranc server did not listen on {addr}");
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

    /// The process id, to signal it from another thread.
    pub fn pid(&self) -> u32 {
        self.child.id()
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
