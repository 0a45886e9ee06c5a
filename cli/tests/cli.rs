//! The `oranc` binary as a user runs it.

use assert_cmd::Command;

fn oranc() -> Command {
    Command::cargo_bin("oranc").expect("the oranc binary is built")
}

#[test]
fn tag_encode_prints_the_original_oranc_tag() {
    oranc()
        .args(["tag", "encode", "nar/abc.nar.zst"])
        .assert()
        .success()
        .stdout("nar_L_abc.nar.zst\n");
}

#[test]
fn tag_encode_with_fallbacks_prints_every_encoding() {
    oranc()
        .args(["tag", "encode", "nix-cache-info", "--fallbacks"])
        .assert()
        .success()
        .stdout("custom: nix-cache-info\nbase32-dnssec: dpkngbb3c5hmgp9dd5n6cro\n");
}

#[test]
fn tag_decode_reverses_encode_for_both_encodings() {
    oranc()
        .args(["tag", "decode", "realisations_L_sha256_W_ab_x_out.doi"])
        .assert()
        .success()
        .stdout("realisations/sha256:ab!out.doi\n");
    oranc()
        .args([
            "tag",
            "decode",
            "dpkngbb3c5hmgp9dd5n6cro",
            "--tag-encoding",
            "base32-dnssec",
        ])
        .assert()
        .success()
        .stdout("nix-cache-info\n");
}

#[test]
fn a_malformed_tag_is_a_clear_error_not_a_panic() {
    let assert = oranc().args(["tag", "decode", "ab_"]).assert().failure();
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert!(stderr.contains("not closed"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn completion_scripts_are_generated() {
    let assert = oranc().args(["completion", "bash"]).assert().success();
    assert!(String::from_utf8_lossy(&assert.get_output().stdout).contains("oranc"));
}

#[test]
fn config_check_accepts_the_example_and_names_the_bad_field() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../oranc.example.toml");
    // The check reads what the server would: the example's token variables must be set.
    let assert = oranc()
        .args(["config", "check", example])
        .env_remove("ORANC_MAIN_TOKEN")
        .assert()
        .failure();
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert!(stderr.contains("ORANC_MAIN_TOKEN is not set"), "{stderr}");
    oranc()
        .args(["config", "check", example])
        .env("ORANC_MAIN_TOKEN", "token")
        .env("ORANC_MIRROR_TOKEN", "token")
        .assert()
        .success();
    let dir = std::env::temp_dir().join(format!("oranc-config-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a directory");
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "repository_parts = 0\n").expect("writing");
    let assert = oranc()
        .args(["config", "check"])
        .arg(&bad)
        .assert()
        .failure();
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert!(stderr.contains("repository_parts"), "{stderr}");
    // Allowed but dangerous: said, and still a success.
    let open = dir.join("open.toml");
    std::fs::write(
        &open,
        "[caches.ci]\nregistry = \"/tmp/oranc-unused\"\nrepository = \"ci/cache\"\nallow_write = true\n",
    )
    .expect("writing");
    let assert = oranc()
        .args(["config", "check"])
        .arg(&open)
        .assert()
        .success();
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert!(
        stderr.contains("warning: caches.ci: allow_write"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
