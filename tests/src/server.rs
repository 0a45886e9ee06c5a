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
        let dir = tempfile::tempdir().expect("a temporary directory");
        let addr = free_loopback_addr();
        let file = dir.path().join("oranc.toml");
        std::fs::write(&file, format!("listen = \"{addr}\"\n{config}"))
            .expect("writing the config");
        let child = oranc_command()
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
