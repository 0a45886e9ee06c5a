//! The attacks of the adversarial review of `oranc server` (docs/security.md has the rules
//! they broke), each replayed against the release binary with a real registry. Every one of
//! them succeeded before its fix.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: helpers outside #[test] panic on purpose"
)]

use std::time::Duration;

use bytes::Bytes;
use oranc_core::TagEncoding;
use oranc_tests::auth::{PASSWORD, USERNAME};
use oranc_tests::hostile::{HostileRegistry, Hostility, Trap};
use oranc_tests::latency::LatencyProxy;
use oranc_tests::oci::RawRegistry;
use oranc_tests::registry::{RegistryAuth, RegistryProcess};
use oranc_tests::server::{allow_plain_http, ServerProcess};
use oranc_tests::{curl, fresh_repo, release_oranc_command};

fn release_server(config: &str) -> ServerProcess {
    ServerProcess::start_logged(release_oranc_command(), config, &[])
}

/// A narinfo the server accepts as the one of `/nix/store/<hash>-x` (its NAR is not needed
/// to read it).
fn narinfo_of(hash: &str) -> String {
    format!(
        "StorePath: /nix/store/{hash}-x\nURL: nar/x.nar\nCompression: none\nNarHash: sha256:1111111111111111111111111111111111111111111111111111\nNarSize: 1\nReferences: \n"
    )
}

fn tag_of(key: &str) -> String {
    TagEncoding::Custom.encode(key).unwrap().as_str().to_owned()
}

/// `oranc push … initialize` of a cache in `registry` (a directory, or a plain-HTTP host).
fn initialize(registry: &str, repository: &str, plain_http: bool) {
    let mut command = release_oranc_command();
    command.args(["push", "--registry", registry, "--repository", repository]);
    if plain_http {
        command.arg("--no-ssl");
    }
    oranc_tests::run_ok(command.arg("initialize"));
}

/// `oranc push … initialize` as a user with credentials, to a plain-HTTP `host`.
fn initialize_with_credentials(host: &str) -> std::process::Output {
    release_oranc_command()
        .args(["push", "--no-ssl", "--registry", host])
        .args(["--repository", "me/cache", "initialize"])
        .env("ORANC_USERNAME", USERNAME)
        .env("ORANC_PASSWORD", PASSWORD)
        .output()
        .unwrap()
}

fn put(url: &str, user: Option<&str>, body: &str) -> (String, String) {
    let mut args = vec!["-X", "PUT", "--data-binary", body, url];
    if let Some(user) = user {
        args.extend(["-u", user]);
    }
    let (status, body, _) = curl(&args);
    (status, body)
}

/// Attack 1: made-up credentials wrote and replaced files of a cache in a local directory, even
/// one with writers and trusted keys: an OCI layout checks no credentials.
#[test]
fn made_up_credentials_never_write_to_a_cache_in_a_local_directory() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    initialize(layout.to_str().unwrap(), "oranc/cache", false);
    let writers = dir.path().join("writers");
    std::fs::write(
        &writers,
        format!("ci:{}\n", bcrypt::hash("s3cret", 4).unwrap()),
    )
    .unwrap();
    let config = format!(
        "[caches.local]\nregistry = \"{layout}\"\nrepository = \"oranc/cache\"\n\
         [caches.guarded]\nregistry = \"{layout}\"\nrepository = \"oranc/guarded\"\n\
         writers_file = \"{writers}\"\ntrusted_public_keys = [\"k-1:{key}\"]\n",
        layout = layout.display(),
        writers = writers.display(),
        key = "A".repeat(43) + "=",
    );
    let server = release_server(&config);
    // A cache with writers answers a stranger as it answers a wrong password (401); one
    // without says why credentials grant nothing there (403).
    for (cache, user, expected, says) in [
        ("local", "nobody:whatever", "403", "local directory"),
        ("guarded", "mallory:x", "401", "not those of a writer"),
    ] {
        for key in [
            "nix-cache-info",
            "nar/1n7bp8gfz80mjraq5jq1qghh5dcsbb5gfi3rkp2b6v1pr8i7gbcf.nar",
            "11111111111111111111111111111111.narinfo",
        ] {
            let (status, body) = put(
                &server.url(&format!("{cache}/{key}")),
                Some(user),
                "StoreDir: /evil/store\n",
            );
            assert_eq!(status, expected, "{cache}/{key} as {user}: {body}");
            assert!(body.contains(says), "{body}");
        }
    }
    let (status, info, _) = curl(&[&server.url("local/nix-cache-info")]);
    assert_eq!(status, "200");
    assert!(info.contains("StoreDir: /nix/store"), "{info}");
    // The cache's own writer still writes.
    let (status, body) = put(
        &server.url("guarded/nix-cache-info"),
        Some("ci:s3cret"),
        "StoreDir: /nix/store\nPriority: 30\n",
    );
    assert_eq!(status, "200", "{body}");
    // /metrics names no directory.
    assert!(!server.metrics().contains(&dir.path().display().to_string()));
    // `config check` says which position each cache is in.
    let file = dir.path().join("oranc.toml");
    std::fs::write(&file, &config).unwrap();
    let check = release_oranc_command()
        .args(["config", "check"])
        .arg(&file)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stderr);
    assert!(
        said.contains("/local: anonymous clients read only; a local directory: credentials a client sends grant nothing"),
        "{said}"
    );
}

/// Attack 1: a listed registry without auth took any credentials as a write grant; one that
/// checks them still decides, and `trust_client_credentials` is the operator's opt-in.
#[test]
fn forwarded_credentials_write_only_where_the_registry_checks_them() {
    let open = RegistryProcess::start();
    let checking = RegistryProcess::start_with_auth(RegistryAuth::Htpasswd);
    let trusted = RegistryProcess::start();
    let config = format!(
        "{}{}{}trust_client_credentials = true\n",
        allow_plain_http(&open.host()),
        allow_plain_http(&checking.host()),
        allow_plain_http(&trusted.host()),
    );
    let server = release_server(&config);
    let right = format!("{USERNAME}:{PASSWORD}");
    let repo = fresh_repo("grants");
    for (registry, user, expected) in [
        (&open, "nobody:whatever", "403"),
        (&checking, right.as_str(), "200"),
        (&checking, "nobody:whatever", "403"),
        (&trusted, "nobody:whatever", "200"),
    ] {
        let url = server.url(&format!("{}/{repo}/nix-cache-info", registry.host()));
        let (status, body) = put(&url, Some(user), "StoreDir: /nix/store\n");
        assert_eq!(status, expected, "{} as {user}: {body}", registry.host());
    }
    assert!(
        server
            .log()
            .contains("the registry answers anonymous requests"),
        "the start-up log says which registries check credentials:\n{}",
        server.log()
    );
    let (status, _, _) = curl(&[&server.url(&format!("{}/{repo}/nix-cache-info", open.host()))]);
    assert_eq!(status, "404", "nothing was written to the open registry");
}

/// Found by a red-team run: under `allow_any_registry`, another spelling of a listed
/// registry's host (`localhost:PORT` for `127.0.0.1:PORT`) took made-up credentials as a
/// grant and replaced a file of an add-only cache on that registry.
#[test]
fn another_spelling_of_a_listed_registry_grants_nothing_more() {
    let registry = RegistryProcess::start();
    let repo = fresh_repo("alias");
    initialize(&registry.host(), &repo, true);
    let config = format!(
        "allow_any_registry = true\nno_ssl = true\n{}",
        open_cache_config(&registry, &repo)
    );
    let server = release_server(&config);
    let port = registry.addr().port();
    for alias in [format!("localhost:{port}"), format!("127.1:{port}")] {
        let (status, body) = put(
            &server.url(&format!("{alias}/{repo}/nix-cache-info")),
            Some("x:y"),
            "StoreDir: /nix/store\nPriority: 99\n",
        );
        assert_eq!(status, "403", "{alias}: {body}");
    }
    let (_, info, _) = curl(&[&server.url("open/nix-cache-info")]);
    assert!(!info.contains("Priority: 99"), "{info}");
}

/// Attack 2: a `Range` request and a plain GET that missed the response cache together shared
/// one answer: the plain GET got 206 with 20 bytes.
#[test]
fn a_range_answer_is_never_handed_to_a_plain_get() {
    let registry = RegistryProcess::start();
    let distant = LatencyProxy::start(registry.addr(), Duration::from_millis(300));
    let raw = RawRegistry::new(&registry.base_url());
    let repo = fresh_repo("range");
    let hashes: Vec<String> = (1..=3).map(|i| format!("{i}").repeat(32)).collect();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for hash in &hashes {
        let key = format!("{hash}.narinfo");
        runtime.block_on(raw.put_object(
            &repo,
            &key,
            &key,
            "text/x-nix-narinfo",
            Bytes::from(narinfo_of(hash)),
        ));
    }
    let server = release_server(&allow_plain_http(&distant.host()));
    for hash in &hashes {
        let url = server.url(&format!("{}/{repo}/{hash}.narinfo", distant.host()));
        let ranged = {
            let url = url.clone();
            std::thread::spawn(move || curl(&["-H", "Range: bytes=0-19", &url]))
        };
        std::thread::sleep(Duration::from_millis(100));
        let (status, body, _) = curl(&[&url]);
        assert_eq!(status, "200", "{body}");
        assert_eq!(body, narinfo_of(hash), "the whole narinfo");
        let (status, body, _) = ranged.join().unwrap();
        assert_eq!((status.as_str(), body.len()), ("206", 20));
    }
}

/// A server with `/open`: `repo` in `registry`, where anyone may add files.
fn open_cache_config(registry: &RegistryProcess, repo: &str) -> String {
    format!(
        "{}[caches.open]\nregistry = \"{host}\"\nrepository = \"{repo}\"\nallow_write = true\n",
        allow_plain_http(&registry.host()),
        host = registry.host(),
    )
}

/// Attack 3a: a 404 remembered from a GET let an anonymous (add-only) PUT replace what `oranc
/// push` wrote straight to the registry meanwhile.
#[test]
fn a_remembered_absence_does_not_let_an_add_only_write_replace() {
    let registry = RegistryProcess::start();
    let repo = fresh_repo("addonly");
    let server = release_server(&open_cache_config(&registry, &repo));
    let (status, _, _) = curl(&[&server.url("open/nix-cache-info")]);
    assert_eq!(status, "404");
    initialize(&registry.host(), &repo, true);
    let (status, body) = put(
        &server.url("open/nix-cache-info"),
        None,
        "StoreDir: /nix/store\nPriority: 1\n",
    );
    assert_eq!(status, "409", "{body}");
    let raw = RawRegistry::new(&registry.base_url());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (_, stored) = runtime
        .block_on(raw.get_object(&repo, "nix-cache-info"))
        .unwrap();
    assert!(String::from_utf8_lossy(&stored).contains("Priority: 41"));
}

/// Attack 3b: two anonymous PUTs of different bytes to one new key both got 200, the second
/// replacing the first.
#[test]
fn concurrent_add_only_writes_of_one_new_key_do_not_both_win() {
    let registry = RegistryProcess::start();
    let repo = fresh_repo("race");
    let server = release_server(&open_cache_config(&registry, &repo));
    for attempt in 0..10 {
        let url = server.url(&format!("open/log/{attempt:0>32}-race.drv"));
        let writers: Vec<_> = ["first log\n", "second log\n"]
            .into_iter()
            .map(|body| {
                let url = url.clone();
                std::thread::spawn(move || (body, put(&url, None, body)))
            })
            .collect();
        let outcomes: Vec<_> = writers.into_iter().map(|w| w.join().unwrap()).collect();
        let winners: Vec<&str> = outcomes
            .iter()
            .filter(|(_, (status, _))| status == "200")
            .map(|(body, _)| *body)
            .collect();
        assert_eq!(winners.len(), 1, "attempt {attempt}: {outcomes:?}");
        let (_, stored, _) = curl(&[&url]);
        assert_eq!(stored, winners[0], "the stored log is the winner's");
    }
}

/// Attack 4: the registry chose the answer's Content-Type (a manifest annotation): a NAR was
/// served as `text/html`, cacheable for a year.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_content_type_follows_from_the_key_alone() {
    let registry = RegistryProcess::start();
    let raw = RawRegistry::new(&registry.base_url());
    let repo = fresh_repo("xss");
    let key = "nar/xss.nar";
    raw.put_object(
        &repo,
        &tag_of(key),
        key,
        "text/html",
        Bytes::from_static(b"<script>alert(document.domain)</script>"),
    )
    .await;
    let server =
        tokio::task::block_in_place(|| release_server(&allow_plain_http(&registry.host())));
    let client = reqwest::Client::new();
    for path in [
        format!("{}/{repo}/{key}", registry.host()),
        "healthz".into(),
    ] {
        let answer = client.get(server.url(&path)).send().await.unwrap();
        assert_eq!(
            answer.headers()["x-content-type-options"],
            "nosniff",
            "{path}"
        );
        if path.ends_with(".nar") {
            assert_eq!(answer.headers()["content-type"], "application/x-nix-nar");
        }
    }
}

/// Attack 5: under `allow_any_registry`, `oci-layout:NAME` passed for a host: a GET created a
/// directory, a PUT wrote a layout in the parent directory, a query read a local cache.
#[test]
fn registry_names_from_urls_never_reach_the_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let mut command = release_oranc_command();
    command.current_dir(&work);
    let server = ServerProcess::start_binary(command, "allow_any_registry = true\n", &[]);
    for (path, user) in [
        ("oci-layout:pwned/a/b/nix-cache-info", None),
        ("oci-layout%3Apwned/a/b/nix-cache-info", None),
        ("oci-layout:../a/b/nix-cache-info", Some("x:y")),
        (
            "nix-cache-info?registry=oci-layout:var&repository=lib%2Foranc",
            None,
        ),
        (
            "nix-cache-info?registry=oci-layout:..&repository=a%2Fb",
            Some("x:y"),
        ),
    ] {
        let url = server.url(path);
        let (status, body) = match user {
            Some(user) => put(&url, Some(user), "StoreDir: /evil/store\n"),
            None => {
                let (status, body, _) = curl(&[&url]);
                (status, body)
            }
        };
        assert_eq!(status, "400", "{path}: {body}");
    }
    let created: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .chain(std::fs::read_dir(&work).unwrap())
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(created, vec!["work"], "nothing was created on disk");
}

/// Attack 6: small files between 1 MiB and `max_small_body_bytes` were served empty (200 with no
/// body), and that answer was cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_file_over_a_mebibyte_is_served_whole() {
    let registry = RegistryProcess::start();
    let raw = RawRegistry::new(&registry.base_url());
    let repo = fresh_repo("large");
    let info = format!("StoreDir: /nix/store\nPadding: {}\n", "x".repeat(2_000_000));
    raw.put_object(
        &repo,
        "nix-cache-info",
        "nix-cache-info",
        "text/x-nix-cache-info",
        Bytes::from(info.clone()),
    )
    .await;
    let server =
        tokio::task::block_in_place(|| release_server(&allow_plain_http(&registry.host())));
    let url = server.url(&format!("{}/{repo}/nix-cache-info", registry.host()));
    for _ in 0..2 {
        let answer = reqwest::get(&url).await.unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.text().await.unwrap(), info);
    }
}

/// A registry that asks for tokens from another host must not get the user's credentials
/// sent there, by push or by the server (for a named cache's own secret).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_never_go_to_a_token_realm_on_another_host() {
    let trap = Trap::start().await;
    let registry = HostileRegistry::start(Hostility::ForeignTokenRealm(trap.url("/token"))).await;
    let push = tokio::task::block_in_place(|| initialize_with_credentials(&registry.host()));
    let stderr = String::from_utf8_lossy(&push.stderr);
    assert!(!push.status.success());
    assert!(stderr.contains("--token-realm"), "{stderr}");

    let config = format!(
        "{}[caches.named]\nregistry = \"{host}\"\nrepository = \"me/cache\"\nusername = \"me\"\npassword_env = \"ORANC_TEST_CACHE_SECRET\"\n",
        allow_plain_http(&registry.host()),
        host = registry.host(),
    );
    let server = tokio::task::block_in_place(|| {
        let mut command = release_oranc_command();
        command.env("ORANC_TEST_CACHE_SECRET", "the-cache-secret");
        ServerProcess::start_logged(command, &config, &[])
    });
    let client = reqwest::Client::new();
    let basic = "Basic bWU6Y2xpZW50LXNlY3JldA=="; // me:client-secret
    for authorization in [None, Some(basic)] {
        let mut request = client.get(server.url("named/nix-cache-info"));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let answer = request.send().await.unwrap();
        assert_eq!(answer.status(), 502, "{:?}", answer.text().await);
    }
    assert_eq!(trap.hits(), 0, "nothing reached the other host");
}

/// An upload `Location` on another host must not get the NAR's bytes or the credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_never_follow_a_location_to_another_host() {
    let trap = Trap::start().await;
    let registry =
        HostileRegistry::start(Hostility::ForeignUploadLocation(trap.url("/upload"))).await;
    let push = tokio::task::block_in_place(|| initialize_with_credentials(&registry.host()));
    let stderr = String::from_utf8_lossy(&push.stderr);
    assert!(!push.status.success());
    assert!(stderr.contains("another origin"), "{stderr}");
    assert_eq!(trap.hits(), 0, "nothing reached the other host");
}

/// A client's path went raw into the refusal logged at info: `%0a` forged a whole log
/// line, `%1b` reached the terminal of whoever tails the log, and a 60 KB path made a
/// 120 KB line.
#[test]
fn a_client_cannot_write_lines_or_control_characters_into_the_log() {
    let registry = RegistryProcess::start();
    let server = release_server(&allow_plain_http(&registry.host()));
    for path in [
        "evil%0a2026-11-29T21:00:00.000000Z%20%20INFO%20oranc_server:%20FORGED/r/p/nix-cache-info",
        "evil%1b%5b2J%1b%5b31mRED/r/p/nix-cache-info",
    ] {
        let (status, _, _) = curl(&[&server.url(path)]);
        assert_eq!(status, "403");
    }
    let long = format!("{}/r/p/nix-cache-info", "a".repeat(60_000));
    curl(&[&server.url(&long)]);
    std::thread::sleep(Duration::from_millis(300));
    let log = server.log();
    assert!(log.contains("request refused"), "{log}");
    assert!(
        !log.lines()
            .any(|line| line.starts_with("2026-11-29T21:00:00.000000Z")),
        "a forged line: {log}"
    );
    assert!(
        !log.contains('\u{1b}'),
        "an escape sequence reached the log"
    );
    let longest = log.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 2_000, "a {longest}-byte log line");
}

/// On a cache that requires signatures, an anonymous writer stored a debuginfo entry
/// pointing at a NAR of its own: debuginfod clients follow such entries unchecked.
#[test]
fn anonymous_writers_add_nothing_unsigned_to_a_cache_that_requires_signatures() {
    let registry = RegistryProcess::start();
    let key = "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=";
    let config = format!(
        "{}[caches.signed]\nregistry = \"{host}\"\nrepository = \"{}\"\nallow_write = true\ntrusted_public_keys = [\"{key}\"]\n",
        allow_plain_http(&registry.host()),
        fresh_repo("signed"),
        host = registry.host(),
    );
    let server = release_server(&config);
    // Named by its SHA-256, as Nix names them (any other name is refused: see
    // write_poisoning.rs).
    let nar = format!(
        "signed/nar/{}.nar",
        oranc_core::Sha256Hash::of(b"x").to_nix32()
    );
    let (status, _) = put(&server.url(&nar), None, "x");
    assert_eq!(
        status, "200",
        "a NAR is only ever fetched through a signed narinfo"
    );
    let entry = r#"{"archive":"../nar/evilevilevil.nar","member":"lib/debug/.build-id/ab/cdef0123456789abcdef0123456789abcdef01.debug"}"#;
    for (path, body) in [
        (
            "signed/debuginfo/abcdef0123456789abcdef0123456789abcdef01",
            entry,
        ),
        (
            "signed/55555555555555555555555555555555.ls",
            r#"{"version":1,"root":{"type":"regular","size":1,"narOffset":1}}"#,
        ),
        ("signed/log/55555555555555555555555555555555-x.drv", "built"),
    ] {
        let (status, answer) = put(&server.url(path), None, body);
        assert_eq!(status, "403", "{path}: {answer}");
        assert!(answer.contains("trusted_public_keys"), "{answer}");
    }
    // A second run found three more: a nix-cache-info for another store locked every
    // reader out; a realisation and a debuginfo entry were taken unchecked.
    let (status, answer) = put(
        &server.url("signed/nix-cache-info"),
        None,
        "StoreDir: /evil/store\nWantMassQuery: 1\nPriority: 1\n",
    );
    assert_eq!(status, "403", "{answer}");
    let realisation = "signed/realisations/sha256:2222222222222222222222222222222222222222222222222222222222222222!out.doi";
    let (status, answer) = put(&server.url(realisation), None, "garbage <html>");
    assert_eq!(status, "400", "{answer}");
    let writable = format!(
        "{}[caches.open]\nregistry = \"{host}\"\nrepository = \"{}\"\nallow_write = true\n",
        allow_plain_http(&registry.host()),
        fresh_repo("open"),
        host = registry.host(),
    );
    let open = release_server(&writable);
    let shifted = r#"{"archive":"../nar/abc.nar","member":"lib/debug/.build-id/0f/./1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c.debug"}"#;
    let (status, answer) = put(
        &open.url("open/debuginfo/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa2"),
        None,
        shifted,
    );
    assert_eq!(status, "400", "an entry for another build id: {answer}");
}

/// Red-team finding (2026-12-04): with `allow_any_registry`, a URL naming the registry
/// `localhost` took the registry client of the named cache `localhost` (clients were kept by
/// a bare name), so that cache's reads, and its anonymous adds, went to another host.
#[test]
fn a_url_naming_a_registry_like_a_cache_never_takes_that_caches_client() {
    let registry = RegistryProcess::start();
    initialize(&registry.host(), "team/cache", true);
    let config = format!(
        "allow_any_registry = true\nno_ssl = true\n{}[caches.localhost]\nregistry = \"{}\"\nrepository = \"team/cache\"\n",
        allow_plain_http(&registry.host()),
        registry.host()
    );
    let server = release_server(&config);
    // Nothing answers on localhost:80 here: the URL-addressed request fails...
    let (status, _, _) = curl(&[&server.url("nix-cache-info?registry=localhost&repository=x/y")]);
    assert!(status.starts_with('5'), "{status}");
    // ...and the named cache still reads its own registry.
    let (status, body, _) = curl(&[&server.url("localhost/nix-cache-info")]);
    assert_eq!(status, "200", "{body}");
    assert!(body.contains("StoreDir: /nix/store"), "{body}");
}

/// Red-team finding (2026-12-04): a token service that never answered made a 503 ("error
/// sending request"), as if the registry were down, where a registry that never answers
/// is a 504: a timeout is said as one wherever it happens.
#[tokio::test(flavor = "multi_thread")]
async fn a_token_service_that_never_answers_is_a_timeout() {
    let faults = oranc_tests::faults::FaultServer::start(0, Bytes::new()).await;
    let realm = format!(
        "http://{}/v2/{}/manifests/token",
        faults.host(),
        oranc_tests::faults::HANGING
    );
    let registry = HostileRegistry::start(Hostility::ForeignTokenRealm(realm.clone())).await;
    let config = format!(
        "max_retry = 0\nrequest_timeout_secs = 2\nread_timeout_secs = 2\nresponse_timeout_secs = 30\n[registries.\"{host}\"]\nplain_http = true\ntoken_realms = [\"{realm}\"]\n",
        host = registry.host()
    );
    let server = tokio::task::block_in_place(|| release_server(&config));
    let answer = reqwest::get(server.url(&format!("{}/me/cache/nix-cache-info", registry.host())))
        .await
        .unwrap();
    let status = answer.status();
    let body = answer.text().await.unwrap();
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("timed out"), "{body}");
}
