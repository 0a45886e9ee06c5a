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

    /// nginx in front of the registry at `upstream` (a base URL) allowing `rate` requests a
    /// second with a burst of `burst` (`limit_req ... nodelay`): past them, 429 with
    /// `Retry-After: 1`, as a rate-limited registry answers.
    pub fn rate_limiting(upstream: &str, rate: u64, burst: u64) -> Self {
        Self::start(&format!(
            "  limit_req_zone $server_port zone=registry:1m rate={rate}r/s;\n  server {{\n    listen {{listen}};\n    location / {{\n      limit_req zone=registry burst={burst} nodelay;\n      limit_req_status 429;\n      error_page 429 = @slow_down;\n      proxy_pass {upstream};\n      proxy_set_header Host $http_host;\n      proxy_buffering off;\n      proxy_http_version 1.1;\n    }}\n    location @slow_down {{\n      add_header Retry-After 1 always;\n      return 429 \"slow down\\n\";\n    }}\n  }}\n"
        ))
    }

    /// Requests it logged, and how many of them it answered 429.
    pub fn requests_and_429s(&self) -> (usize, usize) {
        let log = self.access_log();
        let refused = log.lines().filter(|l| l.contains("\" 429 ")).count();
        (log.lines().count(), refused)
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
