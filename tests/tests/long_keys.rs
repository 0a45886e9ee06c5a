//! Keys too long for an OCI tag (128 characters): the build log of a derivation with a long
//! name. Before long-key tags, `nix store copy-log` of such a derivation failed ("a tag has
//! 1 to 128 characters"); now it is stored under `oranc-long-key.sha256.<hash>`, served
//! back, and collected by gc with its path. Run with Nix 2.8 and the newer Nix.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: helpers outside #[test] panic on purpose"
)]

use bytes::Bytes;
use oranc_core::tag::long_key_tag;
use oranc_tests::newer_nix::NixClient;
use oranc_tests::oci::RawRegistry;
use oranc_tests::registry::RegistryProcess;
use oranc_tests::server::{allow_plain_http, ServerProcess};
use oranc_tests::{curl, fresh_repo, release_oranc_command, run_ok, unique_suffix};

/// A name of 180 characters: its derivation's log key (`log/<hash>-<name>.drv`) is 221
/// characters, its custom tag longer still.
fn long_name(nonce: &str) -> String {
    let stem = format!("oranc-long-{nonce}-");
    format!("{stem}{}", "x".repeat(180 - stem.len()))
}

fn server_for(registry: &RegistryProcess, repository: &str) -> ServerProcess {
    let config = format!(
        "{}[caches.open]\nregistry = \"{}\"\nrepository = \"{repository}\"\nallow_write = true\n",
        allow_plain_http(&registry.host()),
        registry.host(),
    );
    ServerProcess::start_logged(release_oranc_command(), &config, &[])
}

#[test]
fn a_build_log_of_a_long_derivation_name_is_stored_served_and_collected() {
    let registry = RegistryProcess::start();
    for client in NixClient::both() {
        let version = client.version();
        let repository = fresh_repo("long-keys");
        let server = server_for(&registry, &repository);
        let url = server.url("open");
        let nonce = unique_suffix();
        let name = long_name(&nonce);
        let scratch = client.scratch();
        let expression = scratch.write(
            "long.nix",
            &format!(
                r#"derivation {{
  name = "{name}"; system = builtins.currentSystem; builder = "/bin/sh";
  args = [ "-c" "echo building {nonce}; echo {nonce} > $out" ];
}}"#
            ),
        );
        let path = run_ok(
            client
                .command("nix-build")
                .args(["--no-out-link", &expression]),
        )
        .trim()
        .to_owned();
        let drv = run_ok(client.command("nix-instantiate").arg(&expression))
            .trim()
            .to_owned();
        run_ok(client.command("nix").args(["copy", "--to", &url, &path]));
        run_ok(
            client
                .command("nix")
                .args(["store", "copy-log", "--to", &url, &drv]),
        );

        let drv_name = drv.trim_start_matches("/nix/store/");
        let key = format!("log/{drv_name}");
        assert!(key.len() > 200, "{key}");
        let tag = long_key_tag(&key);
        let tags = registry.tag_list(&repository);
        assert!(tags.contains(tag.as_str()), "{version}: {tags}");
        // `oranc tag encode` names the same tag.
        let encoded = run_ok(release_oranc_command().args(["tag", "encode", &key]));
        assert_eq!(encoded.trim(), tag.as_str(), "{version}");
        // Served back, to curl and to Nix.
        let (status, log, _) = curl(&["--compressed", &format!("{url}/{key}")]);
        assert_eq!(status, "200", "{version}: {log}");
        assert!(
            log.contains(&format!("building {nonce}")),
            "{version}: {log}"
        );
        // Nix finds the log through the narinfo's Deriver.
        let read = run_ok(client.command("nix").args(["log", "--store", &url, &path]));
        assert!(
            read.contains(&format!("building {nonce}")),
            "{version}: {read}"
        );

        // gc keeps it with its path, and deletes it with its path.
        let gc = |policy: &[&str]| {
            run_ok(
                release_oranc_command()
                    .args(["gc", "--no-ssl", "--registry", &registry.host()])
                    .args(["--repository", &repository, "--grace", "0", "--delete"])
                    .args(policy),
            )
        };
        gc(&["--keep-closure-of", &path]);
        assert!(
            registry.tag_list(&repository).contains(tag.as_str()),
            "{version}: gc kept the path, and so its log"
        );
        gc(&["--remove", &path]);
        let tags = registry.tag_list(&repository);
        assert!(
            !tags.contains(tag.as_str()),
            "{version}: the log went with its path: {tags}"
        );
    }
}

/// The long-key tag is a hash, and anyone who can push to the repository can put any
/// manifest under it: one that names another key is never served as this key's file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_under_a_long_key_tag_that_names_another_key_is_not_served() {
    let registry = RegistryProcess::start();
    let raw = RawRegistry::new(&registry.base_url());
    let repository = fresh_repo("long-keys-forged");
    let name = long_name(&unique_suffix());
    let wanted = format!("log/v873jj33sxxhc8d6jf84lbn85p09wm3i-{name}.drv");
    let other = format!("log/0cn5ij2xiyp7fbpxpjz6j7rm7rm1k91d-{name}.drv");
    raw.put_object(
        &repository,
        long_key_tag(&wanted).as_str(),
        &other,
        "text/plain; charset=utf-8",
        Bytes::from_static(b"forged log\n"),
    )
    .await;
    let server = tokio::task::block_in_place(|| server_for(&registry, &repository));
    let (status, body, _) =
        tokio::task::block_in_place(|| curl(&[&server.url(&format!("open/{wanted}"))]));
    assert_ne!(status, "200", "{body}");
    assert!(!body.contains("forged log"), "{body}");
}
