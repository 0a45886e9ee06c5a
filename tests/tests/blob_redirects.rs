//! `redirect_blobs`: in front of a registry that keeps its blobs in object storage (CNCF
//! distribution on moto's S3 server, answering blob GETs with a presigned 307 as ghcr.io
//! does with its CDN), NAR bytes go from storage to Nix and not through the server; narinfo
//! is still served and checked by the server.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: helpers outside #[test] panic on purpose"
)]

use oranc_tests::nix::{assert_same_closure, copy_from, hash_part, SignedClosure};
use oranc_tests::registry::RegistryProcess;
use oranc_tests::server::{metric, ServerProcess};
use oranc_tests::{oranc_command, push_closure, run_ok};

/// `code redirect_url` of a GET, or of a HEAD with `head`.
fn probe(url: &str, head: bool) -> String {
    let mut command = std::process::Command::new("curl");
    command.args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{redirect_url}",
    ]);
    if head {
        command.arg("-I");
    }
    run_ok(command.arg(url))
}

#[test]
fn with_redirect_blobs_nars_come_from_storage_and_nix_substitutes_the_closure() {
    let registry = RegistryProcess::start_on_s3();
    let closure = SignedClosure::build(400_000);
    let pushed = push_closure(oranc_command(), &registry.host(), "cdn/cache", &closure);
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    let narinfo_key = format!("{}.narinfo", hash_part(&closure.root));

    for redirect in [true, false] {
        let server = ServerProcess::start(
            &format!(
                "[registries.\"{}\"]\nplain_http = true\nredirect_blobs = {redirect}\nblob_origins = [\"{}\"]\n",
                registry.host(),
                registry.storage_origin().unwrap()
            ),
            &[],
        );
        let cache_url = server.url(&format!("{}/cdn/cache", registry.host()));
        // narinfo: served by the server, never a redirect.
        let narinfo = run_ok(
            std::process::Command::new("curl").args(["-sf", &format!("{cache_url}/{narinfo_key}")]),
        );
        let nar = narinfo
            .lines()
            .find_map(|l| l.strip_prefix("URL: "))
            .unwrap()
            .to_owned();
        assert!(probe(&format!("{cache_url}/{narinfo_key}"), false).starts_with("200 "));

        let answer = probe(&format!("{cache_url}/{nar}"), false);
        if redirect {
            let (status, location) = answer.split_once(' ').unwrap();
            assert_eq!(status, "307", "{answer}");
            // The storage's own presigned URL: not the registry, no credentials of ours.
            assert!(!location.contains(&registry.host()), "{location}");
            assert!(location.contains("X-Amz-Signature="), "{location}");
        } else {
            assert!(answer.starts_with("200 "), "{answer}");
        }
        // HEAD needs no bytes: answered from the manifest either way.
        assert!(probe(&format!("{cache_url}/{nar}"), true).starts_with("200 "));

        let store = tempfile::tempdir().unwrap();
        let copied = copy_from(&cache_url, store.path(), &closure.root, &closure.public_key);
        assert!(
            copied.status.success(),
            "{}",
            String::from_utf8_lossy(&copied.stderr)
        );
        assert_same_closure(store.path(), &closure.root);
        let nar_bytes = metric(
            &server.metrics(),
            "oranc_http_response_bytes_total{route=\"nar\"}",
        );
        if redirect {
            assert!(
                nar_bytes < 1_000.0,
                "{nar_bytes} NAR bytes through the server"
            );
        } else {
            assert!(
                nar_bytes > 400_000.0,
                "{nar_bytes} NAR bytes through the server"
            );
        }
    }
}
