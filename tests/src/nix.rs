//! Real Nix store paths for tests: a three-path closure with references between them
//! (files, an executable, symlinks, nested and empty directories), built with Debian's Nix
//! into the machine's store, and a fresh signing key per closure.
//!
//! Every closure embeds a unique nonce, so tests running at once never share paths.

use std::path::PathBuf;
use std::process::Command;

use tempfile::TempDir;

use crate::{run_ok, unique_suffix};

/// Settings every Nix call in the tests runs with: a single-user store with no sandbox,
/// no build users and no substituters (there is no network), whatever /etc/nix says.
pub const NIX_CONFIG: &str = "build-users-group =\nsandbox = false\nexperimental-features = nix-command\nsubstituters =\nwarn-dirty = false\n";

/// The hash part of an absolute store path under /nix/store: what its narinfo is named by.
pub fn hash_part(path: &str) -> String {
    oranc_core::StoreDir::default()
        .parse_path(path)
        .unwrap_or_else(|e| panic!("{path} is not a store path: {e}"))
        .hash_part()
        .to_owned()
}

/// The cache key of an absolute store path's narinfo: `<hash>.narinfo`.
pub fn narinfo_key(path: &str) -> String {
    format!("{}.narinfo", hash_part(path))
}

/// A `Command` for a Nix tool with the test settings.
pub fn nix_command(program: &str) -> Command {
    let mut command = Command::new(program);
    command.env("NIX_CONFIG", NIX_CONFIG);
    command
}

#[derive(Debug)]
pub struct SignedClosure {
    /// Absolute path of the closure's root.
    pub root: String,
    /// Absolute paths of the whole closure, root included.
    pub paths: Vec<String>,
    /// `name:base64` as in `trusted-public-keys`.
    pub public_key: String,
    pub secret_key_file: PathBuf,
    dir: TempDir,
}

impl SignedClosure {
    /// Builds a fresh closure of three paths (`app` -> `tool` -> `lib`) holding `lib_bytes`
    /// of random data, and signs all of it with a new key.
    pub fn build(lib_bytes: usize) -> Self {
        Self::build_with(|nonce| closure_expression(nonce, lib_bytes), true)
    }

    /// A signed closure of `leaves + 1` paths: a root that refers to `leaves` small paths
    /// (each a few bytes, built by `/bin/sh`), as a many-path cache to move around.
    pub fn build_wide(leaves: usize) -> Self {
        Self::build_with(|nonce| wide_closure_expression(nonce, leaves), true)
    }

    /// As [`Self::build`], but nothing is signed (the key is made all the same).
    pub fn build_unsigned(lib_bytes: usize) -> Self {
        Self::build_with(|nonce| closure_expression(nonce, lib_bytes), false)
    }

    fn build_with(expression: impl Fn(&str) -> String, sign: bool) -> Self {
        let dir = tempfile::tempdir().expect("creating a temporary directory");
        let nonce = unique_suffix();
        let expr = dir.path().join("closure.nix");
        std::fs::write(&expr, expression(&nonce)).expect("writing closure.nix");
        let root = run_ok(nix_command("nix-build").arg("--no-out-link").arg(&expr))
            .trim()
            .to_owned();

        let (secret_key_file, public_key) =
            generate_key(dir.path(), &format!("oranc-test-{nonce}"));
        if sign {
            run_ok(
                nix_command("nix")
                    .args(["store", "sign", "-r", "-k"])
                    .arg(&secret_key_file)
                    .arg(&root),
            );
        }
        let paths = run_ok(nix_command("nix-store").args(["-qR", &root]))
            .lines()
            .map(str::to_owned)
            .collect();
        Self {
            root,
            paths,
            public_key,
            secret_key_file,
            dir,
        }
    }

    /// `nix path-info --json --sigs -r` of the closure, as Nix reports it.
    pub fn path_info_json(&self) -> serde_json::Value {
        let out = run_ok(
            nix_command("nix")
                .args(["path-info", "--json", "--sigs", "-r"])
                .arg(&self.root),
        );
        serde_json::from_str(&out).expect("nix path-info prints JSON")
    }

    /// `nix copy --to file://DIR?compression=xz` of the closure: a binary cache as Nix
    /// writes it (a mirror's upstream, a `push --from` source).
    pub fn file_cache(&self) -> TempDir {
        let dir = tempfile::tempdir().expect("a temporary directory");
        run_ok(nix_command("nix").args([
            "copy",
            "--to",
            &format!("file://{}?compression=xz", dir.path().display()),
            &self.root,
        ]));
        dir
    }

    pub fn work_dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

/// A fresh signing key named `name`, written to `dir/secret-key`: its file and its public
/// half (`name:base64`, as in `trusted-public-keys`).
pub fn generate_key(dir: &std::path::Path, name: &str) -> (PathBuf, String) {
    let secret_key_file = dir.join("secret-key");
    let secret = run_ok(nix_command("nix").args(["key", "generate-secret", "--key-name", name]));
    std::fs::write(&secret_key_file, secret).expect("writing the secret key");
    let public_key = run_ok(
        nix_command("nix")
            .args(["key", "convert-secret-to-public"])
            .stdin(std::fs::File::open(&secret_key_file).expect("the secret key")),
    )
    .trim()
    .to_owned();
    (secret_key_file, public_key)
}

/// A content-addressed derivation (experimental `ca-derivations`) named `name`, unique to
/// `nonce`, whose build prints `building <nonce>`, written to `dir/ca.nix`; its path.
pub fn write_ca_expression(dir: &std::path::Path, name: &str, nonce: &str) -> String {
    let expression = dir.join("ca.nix");
    std::fs::write(
        &expression,
        format!(
            r#"derivation {{
  name = "{name}"; system = builtins.currentSystem; builder = "/bin/sh";
  args = [ "-c" "echo building {nonce}; echo {nonce} > $out" ];
  __contentAddressed = true; outputHashMode = "recursive"; outputHashAlgo = "sha256";
}}"#
        ),
    )
    .expect("writing ca.nix");
    expression.display().to_string()
}

/// The Nix expression of a three-path closure (`app` -> `tool` -> `lib`, `lib_bytes` of
/// random data in `lib`) unique to `nonce`, for `nix-build`.
pub fn closure_expression(nonce: &str, lib_bytes: usize) -> String {
    format!(
        r#"
let
  nonce = "{nonce}";
  mk = name: script: derivation {{
    inherit name; system = builtins.currentSystem; builder = "/bin/sh";
    args = [ "-c" ("export PATH=/usr/bin:/bin; echo " + nonce + " > /dev/null; " + script) ];
  }};
  lib = mk "oranc-test-lib" "mkdir -p $out/lib/empty-dir $out/share/a/b; head -c {lib_bytes} /dev/urandom > $out/lib/libfoo.so; : > $out/share/a/b/empty-file";
  tool = mk "oranc-test-tool" "mkdir -p $out/bin; printf '#!/bin/sh\necho ${{lib}}\n' > $out/bin/tool; chmod +x $out/bin/tool; ln -s ${{lib}}/lib $out/lib; ln -s bin/tool $out/relative-link";
in mk "oranc-test-app" "mkdir -p $out; echo ${{tool}} > $out/deps; ln -s ${{tool}}/bin/tool $out/run"
"#
    )
}

/// The Nix expression of a root referring to `leaves` small paths, unique to `nonce`.
pub fn wide_closure_expression(nonce: &str, leaves: usize) -> String {
    format!(
        r#"
let
  mk = name: text: derivation {{
    inherit name; system = builtins.currentSystem; builder = "/bin/sh";
    args = [ "-c" ("echo '" + text + "' > $out") ];
  }};
  leaves = builtins.genList (i: mk "oranc-leaf-${{toString i}}" "{nonce} ${{toString i}}") {leaves};
in mk "oranc-wide-root" "{nonce} ${{toString leaves}}"
"#
    )
}

/// Reads one entry of `nix path-info --json --sigs` into the core's `PathInfo`, panicking
/// with the entry when Nix printed something the core model cannot hold.
pub fn path_info_from_nix(
    store_dir: &oranc_core::StoreDir,
    entry: &serde_json::Value,
) -> oranc_core::PathInfo {
    let text = |field: &str| {
        entry[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field} missing in {entry}"))
    };
    let parse_path = |path: &str| {
        store_dir
            .parse_path(path)
            .unwrap_or_else(|e| panic!("Nix printed {path:?}: {e}"))
    };
    let mut references: Vec<_> = entry["references"]
        .as_array()
        .unwrap_or_else(|| panic!("references missing in {entry}"))
        .iter()
        .map(|r| parse_path(r.as_str().expect("a reference is a string")))
        .collect();
    references.sort();
    oranc_core::PathInfo {
        path: parse_path(text("path")),
        nar_hash: text("narHash")
            .parse()
            .unwrap_or_else(|e| panic!("narHash in {entry}: {e}")),
        nar_size: entry["narSize"].as_u64().expect("narSize is a number"),
        references,
        deriver: entry["deriver"].as_str().map(parse_path),
        signatures: entry["signatures"]
            .as_array()
            .map(|sigs| {
                sigs.iter()
                    .map(|s| {
                        s.as_str()
                            .and_then(|s| s.parse().ok())
                            .unwrap_or_else(|| panic!("signature {s} in {entry}"))
                    })
                    .collect()
            })
            .unwrap_or_default(),
        ca: entry["ca"].as_str().map(str::to_owned),
    }
}

/// `nix copy --from URL --to STORE PATH` trusting `public_key`, as a client substitutes.
pub fn copy_from(
    url: &str,
    store: &std::path::Path,
    path: &str,
    public_key: &str,
) -> std::process::Output {
    copy_from_command(url, store, path, public_key)
        .output()
        .expect("running nix copy")
}

/// The command [`copy_from`] runs, for a caller that adds to it (a netrc file, another
/// machine's Nix cache directory).
pub fn copy_from_command(
    url: &str,
    store: &std::path::Path,
    path: &str,
    public_key: &str,
) -> Command {
    let mut command = nix_command("nix");
    command
        .args(["copy", "--from", url, "--to"])
        .arg(store)
        .arg(path)
        .args(["--option", "trusted-public-keys", public_key]);
    command
}

/// "PATH NARHASH" for each path of `root`'s closure in `store` (the default store when
/// `None`), sorted: what two stores must agree on to hold the same closure.
pub fn closure_hashes(store: Option<&std::path::Path>, root: &str) -> Vec<String> {
    let mut command = nix_command("nix");
    command.args(["path-info", "--json"]);
    if let Some(store) = store {
        command.arg("--store").arg(store);
    }
    let output = run_ok(command.args(["-r", root]));
    let infos: serde_json::Value =
        serde_json::from_str(&output).expect("nix path-info prints JSON");
    hashes_of(&infos)
}

/// Asserts that `store` holds `root`'s closure exactly as the machine's store does: the same
/// paths with the same NAR hashes (what a substitution must leave behind).
pub fn assert_same_closure(store: &std::path::Path, root: &str) {
    assert_eq!(
        closure_hashes(Some(store), root),
        closure_hashes(None, root),
        "the substituted closure of {root} differs from the original"
    );
}

/// "PATH NARHASH" for each entry of a `nix path-info --json` list, sorted.
pub fn hashes_of(infos: &serde_json::Value) -> Vec<String> {
    let mut hashes: Vec<String> = infos
        .as_array()
        .expect("a list of path infos")
        .iter()
        .map(|i| {
            format!(
                "{} {}",
                i["path"].as_str().unwrap_or("?"),
                i["narHash"].as_str().unwrap_or("?")
            )
        })
        .collect();
    hashes.sort();
    hashes
}

/// Replaces the last 64 bytes of the file at `path` with junk, as a hostile cache would
/// spoil a NAR file so that its check fails only after every other byte has gone by; the
/// spoiled bytes.
pub fn spoil_tail(path: &std::path::Path) -> Vec<u8> {
    let mut spoiled = std::fs::read(path).expect("the file to spoil");
    let tail = spoiled.len().saturating_sub(64);
    spoiled[tail..].fill(0x5a);
    std::fs::write(path, &spoiled).expect("spoiling the file");
    spoiled
}

/// `nix-store --add` of a directory `name` holding `bytes` random bytes (and its name, so
/// equal sizes make distinct paths); its store path. For benchmarks' many paths.
pub fn add_random_path(dir: &std::path::Path, name: &str, bytes: usize) -> String {
    let content = dir.join(name);
    std::fs::create_dir_all(&content).expect("a directory");
    run_ok(
        Command::new("head")
            .arg("-c")
            .arg(bytes.to_string())
            .arg("/dev/urandom")
            .stdout(std::fs::File::create(content.join("data")).expect("a file")),
    );
    std::fs::write(content.join("name"), name).expect("a file");
    let path = run_ok(nix_command("nix-store").arg("--add").arg(&content))
        .trim()
        .to_owned();
    std::fs::remove_dir_all(&content).expect("cleaning up");
    path
}

/// `count` small store paths, added to the machine's store in one call.
pub fn small_paths(count: usize) -> Vec<String> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let nonce = unique_suffix();
    add_files(
        dir.path(),
        (0..count).map(|i| (format!("small-{i}"), format!("{nonce} {i}\n"))),
    )
}

/// Writes each `(name, contents)` into `dir` and adds them all as store paths in one
/// `nix-store --add`; their store paths, in order.
pub fn add_files(
    dir: &std::path::Path,
    files: impl IntoIterator<Item = (String, String)>,
) -> Vec<String> {
    let files: Vec<_> = files
        .into_iter()
        .map(|(name, contents)| {
            let file = dir.join(name);
            std::fs::write(&file, contents).expect("writing a small file");
            file
        })
        .collect();
    run_ok(nix_command("nix-store").arg("--add").args(&files))
        .lines()
        .map(str::to_owned)
        .collect()
}
