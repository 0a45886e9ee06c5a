//! One server holding several caches, as a team runs it: Nix's netrc is per host, so a
//! client that writes to one cache sends its writer's credentials with every request to
//! every cache of the server. Replayed against the release binary with a registry that
//! checks credentials and real Nix.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: helpers outside #[test] panic on purpose"
)]

use oranc_tests::auth::{PASSWORD, USERNAME};
use oranc_tests::nix::{assert_same_closure, copy_from_command, nix_command, SignedClosure};
use oranc_tests::registry::{RegistryAuth, RegistryProcess};
use oranc_tests::server::{allow_plain_http, ServerProcess};
use oranc_tests::{curl, push_closure, release_oranc_command, unique_suffix};

/// A server with `/main` (read by anyone) and `/team` (CI writers, server-signed), both in
/// `registry` with the registry's own credentials, as README's configuration shows them.
struct TeamServer {
    server: ServerProcess,
    /// The netrc of a CI runner: the `/team` writer's line.
    netrc: std::path::PathBuf,
    server_public_key: String,
    main_repo: String,
    _dir: tempfile::TempDir,
}

impl TeamServer {
    fn start(registry: &RegistryProcess) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let password_file = dir.path().join("registry-password");
        std::fs::write(&password_file, PASSWORD).unwrap();
        let writers = dir.path().join("writers");
        std::fs::write(
            &writers,
            format!("ci:{}\n", bcrypt::hash("writer-pass", 4).unwrap()),
        )
        .unwrap();
        let (server_key, server_public_key) =
            oranc_tests::nix::generate_key(dir.path(), &format!("team-{}", unique_suffix()));
        let suffix = unique_suffix().replace('-', ".");
        let main_repo = format!("main/{suffix}");
        let host = registry.host();
        let config = format!(
            "{plain}[caches.main]\nregistry = \"{host}\"\nrepository = \"{main_repo}\"\n\
             username = \"{USERNAME}\"\npassword_file = \"{password}\"\n\
             [caches.team]\nregistry = \"{host}\"\nrepository = \"team/{suffix}\"\n\
             username = \"{USERNAME}\"\npassword_file = \"{password}\"\n\
             writers_file = \"{writers}\"\nsigning_key_file = \"{key}\"\n",
            plain = allow_plain_http(&host),
            password = password_file.display(),
            writers = writers.display(),
            key = server_key.display(),
        );
        let server = ServerProcess::start_logged(release_oranc_command(), &config, &[]);
        let netrc = dir.path().join("netrc");
        std::fs::write(&netrc, "machine 127.0.0.1 login ci password writer-pass\n").unwrap();
        Self {
            server,
            netrc,
            server_public_key,
            main_repo,
            _dir: dir,
        }
    }
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Found by a new user following the README (issue 40): reads of `/main` forwarded the
/// client's netrc credentials (the `/team` writer's) to the registry, which refused them
/// (403), and `nix copy --from …/main` failed. A named cache reads with its own.
#[test]
fn one_netrc_reads_every_cache_and_writes_where_it_is_a_writer() {
    let registry = RegistryProcess::start_with_auth(RegistryAuth::Htpasswd);
    let team = TeamServer::start(&registry);
    let closure = SignedClosure::build(10_000);
    let mut push = release_oranc_command();
    push.env("ORANC_USERNAME", USERNAME)
        .env("ORANC_PASSWORD", PASSWORD);
    let pushed = push_closure(push, &registry.host(), &team.main_repo, &closure);
    assert!(pushed.status.success(), "{}", stderr(&pushed));

    // Read /main with the writer's netrc, as Nix sends it to every cache of the host.
    let store = tempfile::tempdir().unwrap();
    let copied = copy_from_command(
        &team.server.url("main"),
        store.path(),
        &closure.root,
        &closure.public_key,
    )
    .args(["--option", "netrc-file"])
    .arg(&team.netrc)
    .output()
    .unwrap();
    assert!(copied.status.success(), "{}", stderr(&copied));
    assert_same_closure(store.path(), &closure.root);

    // Write /team with the same netrc.
    let other = SignedClosure::build_unsigned(10_000);
    let written = nix_command("nix")
        .args(["copy", "--to"])
        .arg(format!("{}?compression=zstd", team.server.url("team")))
        .arg(&other.root)
        .args(["--option", "netrc-file"])
        .arg(&team.netrc)
        .output()
        .unwrap();
    assert!(written.status.success(), "{}", stderr(&written));
    let store = tempfile::tempdir().unwrap();
    let machine = tempfile::tempdir().unwrap();
    let copied = copy_from_command(
        &team.server.url("team"),
        store.path(),
        &other.root,
        &team.server_public_key,
    )
    .env("XDG_CACHE_HOME", machine.path())
    .output()
    .unwrap();
    assert!(copied.status.success(), "{}", stderr(&copied));

    // Made-up credentials read like no credentials; a read never checks a password, so it
    // answers alike for a writer, a wrong password and a stranger.
    let info = team.server.url("main/nix-cache-info");
    for user in [
        None,
        Some("ci:writer-pass"),
        Some("ci:wrong"),
        Some("stranger:x"),
    ] {
        let mut args = vec![info.as_str()];
        if let Some(user) = user {
            args.extend(["-u", user]);
        }
        let (status, body, _) = curl(&args);
        assert_eq!(status, "200", "{user:?}: {body}");
    }
}

/// Found in review (issue 40): after a storm of wrong passwords for the writer `ci`, a read
/// as `ci:wrong` got 429 while one as `stranger:wrong` got 200, which told an attacker who
/// the writers are. Reads check no password; writes with a wrong password answer alike for
/// a writer's name and a stranger's, before the storm and after it.
#[test]
fn who_is_a_writer_never_shows_before_or_after_a_storm_of_guesses() {
    let registry = RegistryProcess::start_with_auth(RegistryAuth::Htpasswd);
    let team = TeamServer::start(&registry);
    let narinfo = team
        .server
        .url("team/11111111111111111111111111111111.narinfo");
    let nix_cache_info = team.server.url("team/nix-cache-info");
    // Fresh pairs each time: a remembered verdict costs no check.
    let answers = |phase: &str| {
        ["ci", "stranger"].map(|name| {
            let user = format!("{name}:wrong-{phase}");
            let read = curl(&["-u", &user, &nix_cache_info]).0;
            let write = curl(&["-X", "PUT", "--data-binary", "x", "-u", &user, &narinfo]).0;
            (read, write)
        })
    };
    let before = answers("before");
    assert_eq!(before[0], before[1], "before the storm");
    // The storm: more guesses for `ci` than a client may cause a minute.
    let guesses: Vec<_> = (0..40)
        .map(|n| {
            let narinfo = narinfo.clone();
            std::thread::spawn(move || {
                let user = format!("ci:guess-{n}");
                curl(&["-X", "PUT", "--data-binary", "x", "-u", &user, &narinfo]).0
            })
        })
        .collect();
    let statuses: Vec<String> = guesses.into_iter().map(|g| g.join().unwrap()).collect();
    assert!(statuses.iter().any(|s| s == "429"), "{statuses:?}");
    let after = answers("after");
    assert_eq!(after[0], after[1], "after the storm");
    assert_eq!(
        after[0].0, before[0].0,
        "reads check no password, so none is limited"
    );
    assert_eq!(
        after[0].1, "429",
        "writes are: the address spent its checks"
    );
}

fn config_check(config: &str, probe: bool) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("oranc.toml");
    std::fs::write(&file, config).unwrap();
    let mut command = release_oranc_command();
    command.args(["config", "check"]);
    if probe {
        command.arg("--probe");
    }
    let output = command.arg(&file).output().unwrap();
    (output.status.success(), stderr(&output))
}

/// Found following the README (issue 40): `oranc config check` said "ok" for a missing
/// `password_file`, a missing or garbled `writers_file` and an unset `password_env`, and
/// the server then refused to start (or, with a wrong password, started and failed every
/// read). It now reads each as the server would and names every problem.
#[test]
fn config_check_reads_every_file_and_variable_the_server_would() {
    let dir = tempfile::tempdir().unwrap();
    let garbled = dir.path().join("writers");
    std::fs::write(&garbled, "ci $2b$04$nocolon\n").unwrap();
    let missing = dir.path().join("missing");
    let config = format!(
        "[registries.\"127.0.0.1:9\"]\nplain_http = true\n\
         [caches.a]\nregistry = \"127.0.0.1:9\"\nrepository = \"a/a\"\nusername = \"u\"\npassword_file = \"{missing}\"\n\
         [caches.b]\nregistry = \"127.0.0.1:9\"\nrepository = \"b/b\"\nwriters_file = \"{garbled}\"\n\
         [caches.c]\nregistry = \"127.0.0.1:9\"\nrepository = \"c/c\"\nusername = \"u\"\npassword_env = \"ORANC_TEST_UNSET_VARIABLE\"\n\
         [caches.d]\nregistry = \"127.0.0.1:9\"\nrepository = \"d/d\"\nwriters_file = \"{missing}\"\n",
        missing = missing.display(),
        garbled = garbled.display(),
    );
    let (ok, said) = config_check(&config, false);
    assert!(!ok, "{said}");
    for needle in [
        "cache a: cannot read password_file",
        "cache b: writers_file",
        "line 1",
        "cache c: environment variable ORANC_TEST_UNSET_VARIABLE is not set",
        "cache d: cannot read writers_file",
        "4 problems",
    ] {
        assert!(said.contains(needle), "{needle:?} in {said}");
    }
}

/// Found following the README (issue 40): with a wrong password in a cache's
/// `password_file` the server said "ready", logged nothing, and every read got 401
/// "credentials needed to write here", which Nix reports as "does not appear to be a
/// binary cache". The start-up probe logs the refusal, /readyz reports it, `config check
/// --probe` fails, and a read says whose credentials were refused.
#[test]
fn a_cache_whose_own_credentials_the_registry_refuses_is_named_everywhere() {
    let registry = RegistryProcess::start_with_auth(RegistryAuth::Htpasswd);
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong-password");
    std::fs::write(&wrong, "not-the-password").unwrap();
    let host = registry.host();
    let config = format!(
        "{plain}[caches.main]\nregistry = \"{host}\"\nrepository = \"main/cache\"\n\
         username = \"{USERNAME}\"\npassword_file = \"{wrong}\"\n",
        plain = allow_plain_http(&host),
        wrong = wrong.display(),
    );
    let server = ServerProcess::start_logged(release_oranc_command(), &config, &[]);
    let (status, body, _) = curl(&[&server.url("main/nix-cache-info")]);
    assert_eq!(status, "502", "{body}");
    assert!(
        body.contains("refused the credentials of cache main"),
        "{body}"
    );
    let (status, body, _) = curl(&[&server.url("readyz")]);
    assert_eq!(status, "503", "{body}");
    assert!(body.contains("cache main"), "{body}");
    let log = server.log();
    assert!(log.contains("refused this cache's reads"), "{log}");
    assert!(
        !log.contains("not-the-password"),
        "the password is never logged"
    );
    let (ok, said) = config_check(&format!("listen = \"127.0.0.1:0\"\n{config}"), true);
    assert!(!ok, "{said}");
    assert!(said.contains("probe: /main"), "{said}");

    // A `/{registry}/{repository}` read the registry refuses challenges the client for
    // credentials to read, not to write.
    let (status, body, _) = curl(&[&server.url(&format!("{host}/main/cache/nix-cache-info"))]);
    assert_eq!(status, "401", "{body}");
    assert!(body.contains("credentials needed to read here"), "{body}");
}

/// Found in review (issue 40): a PUT through the server cleared the answers kept for its
/// raw path only, so the same file asked for under another spelling of its URL (`%3A` for
/// the port's colon, the original oranc's `?registry=&repository=` form) kept its old
/// answer for the TTL. Answers are now kept and dropped by the file's cache and parsed key.
#[test]
fn a_put_clears_the_answer_kept_under_every_spelling_of_its_url() {
    let registry = RegistryProcess::start();
    let host = registry.host();
    let config = format!(
        "{}trust_client_credentials = true\n",
        allow_plain_http(&host)
    );
    let server = ServerProcess::start_logged(release_oranc_command(), &config, &[]);
    let plain = server.url(&format!("{host}/spelling/cache/nix-cache-info"));
    let spellings = [
        server.url(&format!(
            "{}/spelling/cache/nix-cache-info",
            host.replace(':', "%3A")
        )),
        server.url(&format!(
            "nix-cache-info?registry={host}&repository=spelling%2Fcache"
        )),
    ];
    let put = |priority: u32| {
        let body = format!("StoreDir: /nix/store\nPriority: {priority}\n");
        let (status, answer, _) =
            curl(&["-X", "PUT", "-u", "ci:x", "--data-binary", &body, &plain]);
        assert_eq!(status, "200", "{answer}");
    };
    put(30);
    for url in &spellings {
        let (status, body, _) = curl(&[url]);
        assert_eq!(status, "200", "{url}: {body}");
        assert!(body.contains("Priority: 30"), "{url}: {body}");
    }
    put(50);
    for url in &spellings {
        let (_, body, _) = curl(&[url]);
        assert!(
            body.contains("Priority: 50"),
            "a stale answer under {url}: {body}"
        );
    }
}
