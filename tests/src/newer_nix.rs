//! The Nix clients the tests claim behaviour with: Debian 12's Nix 2.8 on the machine, and
//! Debian trixie's Nix 2.26 in a chroot that `.ci/newer-nix` makes (run by `.ci/setup`).
//! The chroot shares the machine's network, so it reaches servers on 127.0.0.1, but has its
//! own store (`ROOT/nix/store`) and sees only files inside it: a test hands it files
//! through [`NixClient::scratch`].

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use crate::nix::{nix_command, NIX_CONFIG};

/// Where `.ci/newer-nix` makes the chroot unless `ORANC_NEWER_NIX_ROOT` says otherwise.
const DEFAULT_ROOT: &str = "/var/cache/oranc-ci/nix-trixie";

/// One Nix the tests run.
#[derive(Debug, Clone)]
pub enum NixClient {
    /// The machine's (Debian 12: 2.8), with the machine's store.
    Machine,
    /// The one in the chroot at this root (trixie: 2.26), with the chroot's store.
    Chroot(PathBuf),
}

impl NixClient {
    /// The newer Nix; a test that claims behaviour with it fails (never skips) without it.
    pub fn newer() -> Self {
        let root = std::env::var_os("ORANC_NEWER_NIX_ROOT")
            .map_or_else(|| PathBuf::from(DEFAULT_ROOT), PathBuf::from);
        assert!(
            root.join(".oranc-ready").exists() && root.join("proc/self").exists(),
            "no newer Nix at {}: run `bash .ci/newer-nix` as root (`.ci/setup` does)",
            root.display()
        );
        Self::Chroot(root)
    }

    /// Both clients, the machine's first.
    pub fn both() -> [Self; 2] {
        [Self::Machine, Self::newer()]
    }

    /// `nix --version`'s words, for messages ("nix (Nix) 2.26.3").
    pub fn version(&self) -> String {
        crate::run_ok(self.command("nix").arg("--version"))
            .trim()
            .to_owned()
    }

    /// A command running `program` of this Nix with the tests' settings.
    pub fn command(&self, program: &str) -> Command {
        match self {
            Self::Machine => nix_command(program),
            Self::Chroot(root) => {
                let mut command = Command::new("chroot");
                command
                    .arg(root)
                    .arg(program)
                    .env("NIX_CONFIG", NIX_CONFIG)
                    .env("HOME", "/root");
                command
            }
        }
    }

    /// A fresh directory this Nix can read and write.
    pub fn scratch(&self) -> Scratch {
        let (dir, inside) = match self {
            Self::Machine => {
                let dir = tempfile::tempdir().expect("a temporary directory");
                let inside = dir.path().to_path_buf();
                (dir, inside)
            }
            Self::Chroot(root) => {
                let dir =
                    tempfile::tempdir_in(root.join("tmp")).expect("a directory in the chroot");
                let inside = Path::new("/").join(
                    dir.path()
                        .strip_prefix(root)
                        .expect("made inside the chroot"),
                );
                (dir, inside)
            }
        };
        Scratch { dir, inside }
    }
}

/// A directory a [`NixClient`] can read: on the machine at [`Scratch::host_path`], and to
/// the client at [`Scratch::client_path`].
#[derive(Debug)]
pub struct Scratch {
    dir: TempDir,
    inside: PathBuf,
}

impl Scratch {
    /// Writes `name` with `contents`; its path as the client sees it.
    pub fn write(&self, name: &str, contents: &str) -> String {
        std::fs::write(self.dir.path().join(name), contents).expect("writing a scratch file");
        self.client_path(name)
    }

    /// `name` in the directory, as the client sees it.
    pub fn client_path(&self, name: &str) -> String {
        self.inside.join(name).display().to_string()
    }

    /// `name` in the directory, as this machine sees it.
    pub fn host_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The directory, as this machine sees it.
    pub fn host_dir(&self) -> &Path {
        self.dir.path()
    }
}
