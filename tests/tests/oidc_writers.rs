//! A named cache whose writers are CI jobs with an OIDC token (`[[caches.NAME.oidc]]`), no
//! stored secret: against a stand-in issuer on loopback, the release binary, a real
//! registry and real Nix.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: helpers outside #[test] panic on purpose"
)]

use oranc_tests::nix::{copy_from_command, generate_key, hash_part, nix_command, SignedClosure};
use oranc_tests::oidc::{es256_key, OidcIssuer, KEY_ID};
use oranc_tests::registry::RegistryProcess;
use oranc_tests::server::{allow_plain_http, ServerProcess};
use oranc_tests::{curl, release_oranc_command, unique_suffix};

const AUDIENCE: &str = "oranc-test";

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `nix copy --to` the cache with a netrc line whose password is `token`.
fn nix_copy_with_token(
    url: &str,
    path: &str,
    token: &str,
    dir: &std::path::Path,
) -> std::process::Output {
    let netrc = dir.join(format!("netrc-{}", unique_suffix()));
    std::fs::write(
        &netrc,
        format!("machine 127.0.0.1 login oidc password {token}\n"),
    )
    .unwrap();
    nix_command("nix")
        .args(["copy", "--to", &format!("{url}?compression=zstd"), path])
        .args(["--option", "netrc-file"])
        .arg(&netrc)
        .output()
        .unwrap()
}

#[test]
fn a_ci_job_writes_with_its_oidc_token_and_no_other_token_writes() {
    let registry = RegistryProcess::start();
    let issuer = OidcIssuer::start();
    let dir = tempfile::tempdir().unwrap();
    let (server_key, server_public) = generate_key(dir.path(), &format!("ci-{}", unique_suffix()));
    let host = registry.host();
    let config = format!(
        "{plain}[caches.ci]\nregistry = \"{host}\"\nrepository = \"ci/{repo}\"\nsigning_key_file = \"{key}\"\n\
         [[caches.ci.oidc]]\nissuer = \"{issuer}\"\naudience = \"{AUDIENCE}\"\n\
         [caches.ci.oidc.claims]\nrepository = \"org/*\"\nref = [\"refs/heads/main\", \"refs/tags/v*\"]\n\
         [[caches.ci.oidc]]\nissuer = \"{issuer}\"\naudience = \"second-audience\"\n\
         [caches.ci.oidc.claims]\nrepository = \"team/app\"\n",
        plain = allow_plain_http(&host),
        repo = unique_suffix().replace('-', "."),
        key = server_key.display(),
        issuer = issuer.url,
    );
    let server = ServerProcess::start_logged(release_oranc_command(), &config, &[]);
    let url = server.url("ci");
    let closure = SignedClosure::build_unsigned(10_000);
    let narinfo = server.url(&format!("ci/{}.narinfo", hash_part(&closure.root)));

    // Refused: each gets 401/403 and nothing is written.
    let (other_key, _) = es256_key();
    let refused = [
        ("expired", issuer.token(AUDIENCE, "org/app", -3600)),
        (
            "another audience",
            issuer.token("someone-else", "org/app", 600),
        ),
        (
            "another repository",
            issuer.token(AUDIENCE, "elsewhere/app", 600),
        ),
        (
            "a repository below org/*",
            issuer.token(AUDIENCE, "org/app/../../evil", 600),
        ),
        (
            "the second entry's audience with the first's claims",
            issuer.token("second-audience", "org/app", 600),
        ),
        (
            "another signing key",
            issuer.token_signed_by(&other_key, KEY_ID, AUDIENCE, "org/app", 600),
        ),
    ];
    for (what, token) in &refused {
        let copied = nix_copy_with_token(&url, &closure.root, token, dir.path());
        assert!(!copied.status.success(), "{what}: {}", stderr(&copied));
        let (status, body) = put_with_token(&narinfo, token, "x");
        assert!(
            status == "401" || status == "403",
            "{what}: {status} {body}"
        );
    }
    assert_eq!(curl(&[&narinfo]).0, "404", "nothing was written");
    assert_eq!(curl(&[&server.url("ci/nix-cache-info")]).0, "404");

    // Made-up key ids do not make the server fetch the issuer's keys for each.
    let fetches = issuer.key_fetches();
    for n in 0..20 {
        let token = issuer.token_signed_by(
            &other_key,
            &format!("made-up-{n}"),
            AUDIENCE,
            "org/app",
            600,
        );
        put_with_token(&narinfo, &token, "x");
    }
    assert!(
        issuer.key_fetches() <= fetches + 1,
        "{} fetches",
        issuer.key_fetches()
    );

    // A job's token writes, through Nix's netrc; the server signs what it stores.
    let token = issuer.token(AUDIENCE, "org/app", 600);
    let copied = nix_copy_with_token(&url, &closure.root, &token, dir.path());
    assert!(copied.status.success(), "{}", stderr(&copied));
    let store = tempfile::tempdir().unwrap();
    let machine = tempfile::tempdir().unwrap();
    let substituted = copy_from_command(&url, store.path(), &closure.root, &server_public)
        .env("XDG_CACHE_HOME", machine.path())
        .output()
        .unwrap();
    assert!(substituted.status.success(), "{}", stderr(&substituted));
    // And as a Bearer token.
    let (status, body) = put_with_token(
        &server.url("ci/nix-cache-info"),
        &token,
        "StoreDir: /nix/store\nPriority: 30\n",
    );
    assert_eq!(status, "200", "{body}");
    // A second entry of the same issuer (another audience, other claims) is tried too:
    // the red team found only the first was.
    let (status, body) = put_with_token(
        &server.url("ci/nix-cache-info"),
        &issuer.token("second-audience", "team/app", 600),
        "StoreDir: /nix/store\nPriority: 31\n",
    );
    assert_eq!(status, "200", "{body}");
    // No token is logged.
    assert!(!server.log().contains(&token), "the token is never logged");
}

/// A PUT of `body` to `url` with `token` as a Bearer token: status and answer.
fn put_with_token(url: &str, token: &str, body: &str) -> (String, String) {
    let bearer = format!("Authorization: Bearer {token}");
    let (status, answer, _) = curl(&["-X", "PUT", "--data-binary", body, "-H", &bearer, url]);
    (status, answer)
}
