//! What ships beside the code stays true to it: the flake parses with the real Nix, and every
//! option of its NixOS module is documented in README.md.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: helpers outside #[test] panic on purpose"
)]

use std::path::PathBuf;
use std::process::Command;

fn repository_file(name: &str) -> (PathBuf, String) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    (path, text)
}

#[test]
fn the_flake_parses_and_readme_lists_every_module_option() {
    let (flake_path, flake) = repository_file("flake.nix");
    let parse = Command::new("nix-instantiate")
        .arg("--parse")
        .arg(&flake_path)
        .output()
        .unwrap();
    assert!(
        parse.status.success(),
        "{}",
        String::from_utf8_lossy(&parse.stderr)
    );

    let options: Vec<&str> = flake
        .lines()
        .filter_map(|line| {
            let (name, rest) = line.trim_start().split_once(" = ")?;
            (rest.starts_with("lib.mkOption") || rest.starts_with("lib.mkEnableOption"))
                .then_some(name)
        })
        .collect();
    assert!(options.len() >= 8, "the module's options: {options:?}");
    let (_, readme) = repository_file("README.md");
    let undocumented: Vec<_> = options
        .iter()
        .filter(|name| !readme.contains(&format!("`services.oranc.{name}`")))
        .collect();
    assert!(
        undocumented.is_empty(),
        "options missing from README.md: {undocumented:?}"
    );
}
