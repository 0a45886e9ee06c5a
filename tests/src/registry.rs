//! A real CNCF distribution registry (Debian's `docker-registry`) on a free loopback port,
//! storing into a temporary directory, killed when the guard drops.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::free_loopback_addr;

const BINARY: &str = "docker-registry";
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How the registry authenticates clients.
#[derive(Debug, Clone, Default)]
pub enum RegistryAuth {
    #[default]
    None,
    /// HTTP Basic against an htpasswd file ([`crate::auth::write_htpasswd`]).
    Htpasswd,
    /// Bearer tokens from an issuer ([`crate::auth::TokenIssuer`]).
    Token(crate::auth::TokenAuthConfig),
}

#[derive(Debug)]
pub struct RegistryProcess {
    child: Child,
    addr: SocketAddr,
    dir: TempDir,
    /// The object storage behind it, for [`Self::start_on_s3`].
    object_store: Option<Child>,
    /// Its origin (`http://127.0.0.1:PORT`), where blob GETs redirect.
    storage_origin: Option<String>,
}

/// One request as the registry's access log records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    pub method: String,
    pub path: String,
    pub status: u16,
}

impl RegistryProcess {
    /// An empty registry with no authentication.
    pub fn start() -> Self {
        Self::start_with_auth(RegistryAuth::None)
    }

    /// An empty registry that authenticates as `auth` says.
    pub fn start_with_auth(auth: RegistryAuth) -> Self {
        let dir = dir_with_data();
        let storage = filesystem_storage(dir.path(), true);
        Self::start_with_storage(dir, auth, &storage)
    }

    /// An empty registry that refuses deletes (405), as distribution does by default.
    pub fn start_without_delete() -> Self {
        let dir = dir_with_data();
        let storage = filesystem_storage(dir.path(), false);
        Self::start_with_storage(dir, RegistryAuth::None, &storage)
    }

    /// Runs the registry's own `garbage-collect` over its storage (the registry is stopped
    /// for it and started again), freeing blobs no manifest names.
    pub fn garbage_collect(&mut self) {
        self.stop();
        let output = Command::new(BINARY)
            .args(["garbage-collect", "--delete-untagged"])
            .arg(self.dir.path().join("config.yml"))
            .output()
            .unwrap_or_else(|e| panic!("running {BINARY} garbage-collect: {e}"));
        assert!(
            output.status.success(),
            "{BINARY} garbage-collect: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        self.restart();
    }

    /// Bytes under the registry's storage directory.
    pub fn disk_usage(&self) -> u64 {
        fn walk(dir: &Path) -> u64 {
            std::fs::read_dir(dir).map_or(0, |entries| {
                entries
                    .flatten()
                    .map(|e| match e.metadata() {
                        Ok(m) if m.is_dir() => walk(&e.path()),
                        Ok(m) => m.len(),
                        Err(_) => 0,
                    })
                    .sum()
            })
        }
        walk(&self.data_dir())
    }

    /// A registry serving a copy of a distribution storage tree (such as the original
    /// oranc's fixture), so the test may write without touching the source.
    pub fn start_with_data_from(archive: &Path) -> Self {
        let dir = dir_with_data();
        crate::run_ok(
            Command::new("tar")
                .arg("-C")
                .arg(dir.path().join("data"))
                .arg("-xzf")
                .arg(archive),
        );
        let storage = filesystem_storage(dir.path(), true);
        Self::start_with_storage(dir, RegistryAuth::None, &storage)
    }

    /// An empty registry storing into S3 (moto's server from `.ci/setup`'s venv, on a free
    /// loopback port): it answers blob GETs with a 307 to a presigned storage URL, as
    /// ghcr.io and registries on object storage do.
    pub fn start_on_s3() -> Self {
        let dir = tempfile::tempdir().expect("creating a temporary directory");
        let s3 = free_loopback_addr();
        let moto =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-venv/bin/moto_server");
        let mut object_store = Command::new(&moto)
            .args(["-H", "127.0.0.1", "-p", &s3.port().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e}; run `bash .ci/setup` first",
                    moto.display()
                )
            });
        crate::wait_for_port(s3, START_TIMEOUT, || object_store.try_wait().ok().flatten())
            .unwrap_or_else(|e| panic!("moto_server {e}"));
        // moto takes an unsigned bucket creation.
        crate::run_ok(Command::new("curl").args([
            "-sf",
            "-X",
            "PUT",
            &format!("http://{s3}/registry"),
        ]));
        let storage = format!(
            "storage:\n  s3:\n    accesskey: x\n    secretkey: y\n    region: us-east-1\n    regionendpoint: http://{s3}\n    bucket: registry\n    secure: false\n    v4auth: true\n    rootdirectory: /r\n  delete:\n    enabled: true\n"
        );
        let mut registry = Self::start_with_storage(dir, RegistryAuth::None, &storage);
        registry.object_store = Some(object_store);
        registry.storage_origin = Some(format!("http://{s3}"));
        registry
    }

    /// Where blob GETs redirect to, for a registry on object storage.
    pub fn storage_origin(&self) -> Option<&str> {
        self.storage_origin.as_deref()
    }

    fn start_with_storage(dir: TempDir, auth: RegistryAuth, storage: &str) -> Self {
        let addr = free_loopback_addr();
        let config = dir.path().join("config.yml");
        let auth_section = match auth {
            RegistryAuth::None => String::new(),
            RegistryAuth::Htpasswd => {
                let file = dir.path().join("htpasswd");
                crate::auth::write_htpasswd(&file);
                format!(
                    "auth:\n  htpasswd:\n    realm: oranc-test\n    path: {}\n",
                    file.display()
                )
            }
            RegistryAuth::Token(token) => format!(
                "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                token.realm,
                token.service,
                token.issuer,
                token.root_cert_bundle.display()
            ),
        };
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: false\n{storage}http:\n  addr: {addr}\n{auth_section}"
            ),
        )
        .expect("writing the registry config");
        let child = Self::spawn(dir.path());
        let mut registry = Self {
            child,
            addr,
            dir,
            object_store: None,
            storage_origin: None,
        };
        registry.wait_until_ready();
        registry
    }

    /// Starts the registry of `dir`; its access log (stdout) is appended to
    /// `dir/requests.log`.
    fn spawn(dir: &Path) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("requests.log"))
            .expect("opening the registry's request log");
        Command::new(BINARY)
            .arg("serve")
            .arg(dir.join("config.yml"))
            // The S3 driver refuses the CA bundle some machines point this at.
            .env_remove("AWS_CA_BUNDLE")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {BINARY}: {e}; install it with `apt-get install docker-registry` (.ci/run does)")
            })
    }

    /// Kills the registry process, keeping its data: an outage.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Freezes the registry (SIGSTOP): the kernel still accepts connections, nothing answers
    /// them, as with a hung registry. [`Self::resume`] thaws it.
    pub fn pause(&self) {
        crate::send_signal(self.child.id(), "-STOP");
    }

    pub fn resume(&self) {
        crate::send_signal(self.child.id(), "-CONT");
    }

    /// Starts the registry again on the same address with the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.child = Self::spawn(self.dir.path());
        self.wait_until_ready();
    }

    fn wait_until_ready(&mut self) {
        let child = &mut self.child;
        crate::wait_for_port(self.addr, START_TIMEOUT, || child.try_wait().ok().flatten())
            .unwrap_or_else(|e| panic!("{BINARY} {e}"));
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT`, as oranc's `--registry` takes it.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What the registry's API lists as `repo`'s tags (its JSON; an error body for a
    /// repository it does not have), to check what was or was not stored.
    pub fn tag_list(&self, repo: &str) -> String {
        crate::run_ok(
            Command::new("curl").args(["-s", &format!("{}/v2/{repo}/tags/list", self.base_url())]),
        )
    }

    /// Whether the registry holds `bytes` as a blob of `repo` (tagged or not).
    pub fn has_blob(&self, repo: &str, bytes: &[u8]) -> bool {
        let digest = oranc_core::Sha256Hash::of(bytes).to_oci_digest();
        let (status, _, _) = crate::curl(&[
            "-I",
            &format!("{}/v2/{repo}/blobs/{digest}", self.base_url()),
        ]);
        status == "200"
    }

    /// The upload sessions of `repo` still live: started and neither committed nor
    /// cancelled (distribution removes a cancelled one's bytes and its start time, which its
    /// purge goes by, and keeps a live one for a week).
    pub fn live_uploads(&self, repo: &str) -> Vec<std::ffi::OsString> {
        let uploads = self
            .data_dir()
            .join(format!("docker/registry/v2/repositories/{repo}/_uploads"));
        std::fs::read_dir(&uploads)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|upload| upload.path().join("startedat").exists())
                    .map(|upload| upload.file_name())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    /// Every request the registry answered so far, in order, from its access log
    /// (`"METHOD PATH HTTP/1.1" STATUS …` lines).
    pub fn requests(&self) -> Vec<LoggedRequest> {
        let log = std::fs::read_to_string(self.dir.path().join("requests.log")).unwrap_or_default();
        log.lines()
            .filter_map(|line| {
                let (_, rest) = line.split_once(" \"")?;
                let (request, rest) = rest.split_once("\" ")?;
                let mut words = request.split(' ');
                let (method, path) = (words.next()?, words.next()?);
                let status = rest.split(' ').next()?.parse().ok()?;
                Some(LoggedRequest {
                    method: method.to_owned(),
                    path: path.to_owned(),
                    status,
                })
            })
            .collect()
    }
}

impl Drop for RegistryProcess {
    fn drop(&mut self) {
        for child in std::iter::once(&mut self.child).chain(self.object_store.as_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A temporary directory for a registry, with its empty `data` storage directory.
fn dir_with_data() -> TempDir {
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    std::fs::create_dir(dir.path().join("data")).expect("creating the data directory");
    dir
}

/// The `storage:` section for `dir/data` on the filesystem, with deletes on or off.
fn filesystem_storage(dir: &Path, delete: bool) -> String {
    format!(
        "storage:\n  filesystem:\n    rootdirectory: {}\n{}",
        dir.join("data").display(),
        if delete {
            "  delete:\n    enabled: true\n"
        } else {
            ""
        }
    )
}
