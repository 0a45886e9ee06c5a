//! Puts the commit the binary was built from into `oranc --version`: `ORANC_COMMIT` when
//! the build sets it (the flake passes its revision; a source tarball has no `.git`), else
//! `git rev-parse`, else "unknown".

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=ORANC_COMMIT");
    println!("cargo:rerun-if-changed=build.rs");
    let git_dir = std::path::Path::new("../.git");
    // A new commit changes the file of the branch HEAD names (or packed-refs, in a fresh
    // clone), not HEAD itself. Only files that exist are named: cargo reruns a build script
    // that names a missing one every time, and every test's build would relink the binary.
    if let Ok(head) = std::fs::read_to_string(git_dir.join("HEAD")) {
        println!("cargo:rerun-if-changed=../.git/HEAD");
        let branch = head
            .trim()
            .strip_prefix("ref: ")
            .map(|branch| git_dir.join(branch));
        let packed = git_dir.join("packed-refs");
        for file in branch.into_iter().chain([packed]) {
            if file.exists() {
                println!("cargo:rerun-if-changed={}", file.display());
            }
        }
    }
    let commit = std::env::var("ORANC_COMMIT")
        .ok()
        .filter(|commit| !commit.is_empty())
        .or_else(|| {
            let out = Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=ORANC_COMMIT={commit}");
}
