//! A real nginx (Debian's package) on a free loopback port in front of `oranc server`: as
//! a caching proxy (what a CDN does) or as the load balancer of several replicas. One
//! process (`master_process off`), so killing it when the guard drops leaves no workers.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::free_loopback_addr;

#[derive(Debug)]
pub struct NginxProcess {
    child: Child,
    pub addr: SocketAddr,
    dir: TempDir,
}

impl NginxProcess {
    /// nginx on `127.0.0.1:PORT` with `http_block` inside its `http { … }`:
    /// `{listen}` in it is replaced by the listen address, `{dir}` by a private directory
    /// (for `proxy_cache_path`).
    pub fn start(http_block: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let addr = free_loopback_addr();
        let path = |name: &str| dir.path().join(name).display().to_string();
        let http_block = http_block
            .replace("{listen}", &addr.to_string())
            .replace("{dir}", &dir.path().display().to_string());
        let config = format!(
            "daemon off;\nmaster_process off;\nuser root;\nworker_processes 1;\npid {pid};\nerror_log {error} warn;\nevents {{ worker_connections 256; }}\nhttp {{\n  access_log {access};\n  client_body_temp_path {body};\n  proxy_temp_path {proxy};\n  fastcgi_temp_path {fastcgi};\n  uwsgi_temp_path {uwsgi};\n  scgi_temp_path {scgi};\n{http_block}\n}}\n",
            pid = path("nginx.pid"),
            error = path("error.log"),
            access = path("access.log"),
            body = path("body"),
            proxy = path("proxy"),
            fastcgi = path("fastcgi"),
            uwsgi = path("uwsgi"),
            scgi = path("scgi"),
        );
        let file = dir.path().join("nginx.conf");
        std::fs::write(&file, config).expect("writing nginx.conf");
        let child = Command::new("nginx")
            .arg("-c")
            .arg(&file)
            .arg("-p")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start nginx: {e}; install it with `apt-get install nginx` (.ci/setup does)")
            });
        let mut nginx = Self { child, addr, dir };
        let child = &mut nginx.child;
        if let Err(e) = crate::wait_for_port(addr, Duration::from_secs(10), || {
            child.try_wait().ok().flatten()
        }) {
            panic!("nginx {e}: {}", nginx.error_log());
        }
        nginx
    }

    /// nginx serving the files of `dir` as they are (a binary cache Nix wrote).
    pub fn serving(dir: &std::path::Path) -> Self {
        Self::start(&format!(
            "server {{ listen {{listen}}; root {}; }}",
            dir.display()
        ))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.addr, path.trim_start_matches('/'))
    }

    /// nginx's access log (the default `combined` format: one line per request).
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// What nginx logged as errors (for assertion messages).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for NginxProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
