//! A named cache with `upstreams`: a pull-through mirror kept in a real registry. The
//! upstream is a cache Nix wrote (`nix copy --to file://DIR`) served by nginx; real Nix
//! substitutes through `oranc server` with only the upstream's key trusted, eight clients at
//! once, then again from the registry alone once nginx is gone.

use std::process::Output;

use oranc_tests::mirror::{download, mirror_config, mirror_config_at, served_nar_url};
use oranc_tests::nginx::NginxProcess;
use oranc_tests::nix::{
    assert_same_closure, copy_from, generate_key, hash_part, nix_command, SignedClosure,
};
use oranc_tests::registry::RegistryProcess;
use oranc_tests::server::{allow_plain_http, metric, metric_or_zero, ServerProcess};
use oranc_tests::{curl, run_ok};

fn mirror_server(registry: &RegistryProcess, upstream: &str, key: &str) -> ServerProcess {
    ServerProcess::start(&mirror_config(registry, upstream, key), &[])
}

/// `nix copy --from url` of `closure` into a fresh store (kept while the guard lives).
fn substitute_into_a_fresh_store(
    url: &str,
    closure: &SignedClosure,
) -> (tempfile::TempDir, Output) {
    let store = tempfile::tempdir().expect("a temporary directory");
    let output = copy_from(url, store.path(), &closure.root, &closure.public_key);
    (store, output)
}

fn text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn registry_tags(registry: &RegistryProcess) -> String {
    registry.tag_list("mirror/cache")
}

#[test]
fn nix_substitutes_through_the_mirror_then_from_the_registry_alone() {
    let registry = RegistryProcess::start();
    let closure = SignedClosure::build(2_000_000);
    let upstream_dir = closure.file_cache();
    let nginx = NginxProcess::serving(upstream_dir.path());
    let server = mirror_server(&registry, &nginx.url(""), &closure.public_key);
    let url = server.url("mirror");

    // A lookup serves the upstream narinfo and downloads no NAR.
    let root_hash = hash_part(&closure.root);
    let (status, narinfo, _) = curl(&[&format!("{url}/{root_hash}.narinfo")]);
    assert_eq!(status, "200", "{narinfo}");
    assert!(narinfo.contains("StorePath: "), "{narinfo}");
    assert!(
        !nginx.access_log().contains("GET /nar/"),
        "{}",
        nginx.access_log()
    );
    assert!(
        !registry_tags(&registry).contains(&root_hash),
        "nothing is stored by a lookup"
    );

    // Eight clients at once, trusting only the upstream's key.
    let stores: Vec<tempfile::TempDir> = (0..8).map(|_| tempfile::tempdir().unwrap()).collect();
    let clients: Vec<_> = stores
        .iter()
        .map(|store| {
            oranc_tests::nix::copy_from_command(
                &url,
                store.path(),
                &closure.root,
                &closure.public_key,
            )
            // Eight machines: each its own Nix cache of narinfos (one SQLite file shared by
            // concurrent Nix processes fails inserts).
            .env("XDG_CACHE_HOME", store.path().join("client-cache"))
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    for client in clients {
        let output = client.wait_with_output().unwrap();
        assert!(output.status.success(), "{}", text(&output));
    }
    for store in &stores {
        assert_same_closure(store.path(), &closure.root);
    }
    assert_eq!(
        nar_fetches(&nginx),
        3,
        "each NAR fetched from upstream once:\n{}",
        nginx.access_log()
    );
    let metrics = server.metrics();
    assert!(
        metric(&metrics, "oranc_mirror_stored_bytes_total") > 0.0,
        "{metrics}"
    );
    // The copies uploaded the shared config blob once between them: when each looked for
    // it and uploaded it, their uploads raced in the registry (a manifest put while another
    // upload rewrote the blob's link failed with DIGEST_INVALID, and a NAR was fetched
    // twice; CI, 2026-12-07).
    let config_digest = oranc_core::Sha256Hash::of(&oranc_core::layout::shared_config());
    let config_uploads = registry
        .requests()
        .iter()
        .filter(|request| {
            request.method == "POST" && request.path.contains(&config_digest.to_oci_digest())
        })
        .count();
    assert_eq!(config_uploads, 1, "{:?}", registry.requests());

    // Upstream gone: everything comes from the registry.
    drop(nginx);
    let (store, again) = substitute_into_a_fresh_store(&url, &closure);
    assert!(again.status.success(), "{}", text(&again));
    assert_same_closure(store.path(), &closure.root);
    // And a fresh server (nothing in memory) reads the same registry.
    drop(server);
    let server = mirror_server(&registry, "http://127.0.0.1:9/", &closure.public_key);
    let (_store, fresh) = substitute_into_a_fresh_store(&server.url("mirror"), &closure);
    assert!(fresh.status.success(), "{}", text(&fresh));
}

#[test]
fn a_narinfo_not_signed_by_an_upstream_key_is_never_served_or_stored() {
    let registry = RegistryProcess::start();
    let trusted = SignedClosure::build(1_000);
    let stranger = SignedClosure::build(1_000);
    let upstream_dir = stranger.file_cache();
    let nginx = NginxProcess::serving(upstream_dir.path());
    let server = mirror_server(&registry, &nginx.url(""), &trusted.public_key);
    let (status, _, _) =
        curl(&[&server.url(&format!("mirror/{}.narinfo", hash_part(&stranger.root)))]);
    assert_eq!(status, "404");
    assert!(!registry_tags(&registry).contains(&hash_part(&stranger.root)));
    let metrics = server.metrics();
    assert!(
        metrics.contains("outcome=\"refused\""),
        "the refusal is counted:\n{metrics}"
    );
}

#[test]
fn an_upstream_that_fails_is_a_502_and_nothing_partial_is_stored() {
    let registry = RegistryProcess::start();
    let closure = SignedClosure::build(100_000);
    let upstream_dir = closure.file_cache();
    // The narinfos are there, the NAR files are not.
    std::fs::remove_dir_all(upstream_dir.path().join("nar")).unwrap();
    let nginx = NginxProcess::serving(upstream_dir.path());
    let server = mirror_server(&registry, &nginx.url(""), &closure.public_key);
    let (_store, copied) = substitute_into_a_fresh_store(&server.url("mirror"), &closure);
    assert!(!copied.status.success());
    let tags = registry_tags(&registry);
    assert!(
        !tags.contains(".narinfo") && !tags.contains("nar_"),
        "{tags}"
    );
    let (_, narinfo, _) =
        curl(&[&server.url(&format!("mirror/{}.narinfo", hash_part(&closure.root)))]);
    let nar_url = oranc_core::NarInfo::parse(&narinfo).unwrap().url;
    let (status, body, _) = curl(&[&server.url(&format!("mirror/{nar_url}"))]);
    assert_eq!(status, "502", "{body}");
    // Upstream's address and answer are in the server's log, not told to clients.
    assert!(!body.contains("127.0.0.1"), "{body}");
}

/// Found in review (2026-12-04): a NAR asked for before its narinfo is a 404 (the mirror does
/// not know it yet). The response cache kept that 404 for the negative TTL, so anyone who
/// asked for NARs first hid them from every anonymous client. It is never kept now.
#[test]
fn asking_for_nars_before_their_narinfos_hides_them_from_nobody() {
    let registry = RegistryProcess::start();
    let closure = SignedClosure::build(10_000);
    let upstream_dir = closure.file_cache();
    let nginx = NginxProcess::serving(upstream_dir.path());
    let config = mirror_config(&registry, &nginx.url(""), &closure.public_key);
    let server = ServerProcess::start_logged(oranc_tests::release_oranc_command(), &config, &[]);
    for path in &closure.paths {
        let narinfo = std::fs::read_to_string(
            upstream_dir
                .path()
                .join(format!("{}.narinfo", hash_part(path))),
        )
        .unwrap();
        let url = oranc_core::NarInfo::parse(&narinfo).unwrap().url;
        let (status, _, _) = curl(&[&server.url(&format!("mirror/{url}"))]);
        assert_eq!(status, "404");
    }
    let (_store, copied) = substitute_into_a_fresh_store(&server.url("mirror"), &closure);
    assert!(copied.status.success(), "{}", text(&copied));
}

/// Two paths with the same contents under other names: their NARs are one file upstream.
/// Signed with a fresh key and copied into a cache Nix writes; (paths, public key, cache).
fn twin_paths() -> (Vec<String>, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let nonce = oranc_tests::unique_suffix();
    let paths: Vec<String> = ["a", "b"]
        .iter()
        .map(|twin| {
            let content = dir.path().join(format!("twin-{twin}-{nonce}"));
            std::fs::create_dir_all(&content).expect("a directory");
            std::fs::write(content.join("data"), format!("the same bytes {nonce}\n"))
                .expect("a file");
            run_ok(nix_command("nix-store").arg("--add").arg(&content))
                .trim()
                .to_owned()
        })
        .collect();
    let (secret, public_key) = generate_key(dir.path(), &format!("twins-{nonce}"));
    run_ok(
        nix_command("nix")
            .args(["store", "sign", "-k"])
            .arg(&secret)
            .args(&paths),
    );
    let cache = tempfile::tempdir().expect("a temporary directory");
    run_ok(
        nix_command("nix")
            .args([
                "copy",
                "--to",
                &format!("file://{}", cache.path().display()),
            ])
            .args(&paths),
    );
    (paths, public_key, cache)
}

fn upstream_url(cache: &std::path::Path, path: &str) -> String {
    let narinfo = std::fs::read_to_string(cache.join(format!("{}.narinfo", hash_part(path))))
        .expect("the narinfo Nix wrote");
    oranc_core::NarInfo::parse(&narinfo).expect("a narinfo").url
}

/// Found in review (2026-12-04): a NAR asked for at a replica that had not served its
/// narinfo was a 404 there, and of two paths whose NARs are one file only the last one's
/// narinfo was ever stored (the other vanished with upstream).
#[test]
fn replicas_find_each_others_nars_and_paths_sharing_a_nar_file_are_all_kept() {
    let (paths, public_key, cache) = twin_paths();
    assert_eq!(
        upstream_url(cache.path(), &paths[0]),
        upstream_url(cache.path(), &paths[1]),
        "the premise: one NAR file upstream"
    );
    let registry = RegistryProcess::start();
    let nginx = NginxProcess::serving(cache.path());
    let config = mirror_config(&registry, &nginx.url(""), &public_key);
    let one = ServerProcess::start_logged(oranc_tests::release_oranc_command(), &config, &[]);
    let other = ServerProcess::start_logged(oranc_tests::release_oranc_command(), &config, &[]);

    // The narinfo from one replica, its NAR from the other, as a load balancer may send them.
    let (status, narinfo, _) =
        curl(&[&one.url(&format!("mirror/{}.narinfo", hash_part(&paths[0])))]);
    assert_eq!(status, "200", "{narinfo}");
    let served = oranc_core::NarInfo::parse(&narinfo).unwrap();
    let (status, body, _) = curl(&[&other.url(&format!("mirror/{}", served.url))]);
    assert_eq!(status, "200", "the other replica: {body}");

    // Both twins through the mirror, each with its own client.
    for path in &paths {
        let store = tempfile::tempdir().unwrap();
        let copied = copy_from(&one.url("mirror"), store.path(), path, &public_key);
        assert!(copied.status.success(), "{}", text(&copied));
    }

    // Upstream gone: both come from the registry alone.
    drop(nginx);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let fresh = ServerProcess::start(
        &mirror_config(&registry, "http://127.0.0.1:9", &public_key),
        &[],
    );
    for path in &paths {
        let store = tempfile::tempdir().unwrap();
        let copied = copy_from(&fresh.url("mirror"), store.path(), path, &public_key);
        assert!(
            copied.status.success(),
            "{path} from the registry alone: {}",
            text(&copied)
        );
    }
}

/// Replaces the file at `path` with as many bytes of junk: the same size, other contents.
fn spoil(path: &std::path::Path) {
    let size = std::fs::metadata(path).expect("the file to spoil").len();
    std::fs::write(
        path,
        vec![0x5a; usize::try_from(size).expect("a small file")],
    )
    .expect("spoiling the file");
}

fn nar_fetches(nginx: &NginxProcess) -> usize {
    nginx
        .access_log()
        .lines()
        .filter(|line| line.contains("GET /nar/"))
        .count()
}

/// Two replicas of one mirror on one registry, in front of nginx serving a closure's cache.
struct Replicas {
    registry: RegistryProcess,
    closure: SignedClosure,
    upstream_dir: tempfile::TempDir,
    nginx: NginxProcess,
    one: ServerProcess,
    other: ServerProcess,
}

impl Replicas {
    fn start() -> Self {
        let registry = RegistryProcess::start();
        let closure = SignedClosure::build(100_000);
        let upstream_dir = closure.file_cache();
        let nginx = NginxProcess::serving(upstream_dir.path());
        let config = mirror_config(&registry, &nginx.url(""), &closure.public_key);
        let replica =
            || ServerProcess::start_binary(oranc_tests::release_oranc_command(), &config, &[]);
        let (one, other) = (replica(), replica());
        Self {
            registry,
            closure,
            upstream_dir,
            nginx,
            one,
            other,
        }
    }
}

/// Found by the red team (2026-12-06) in a build that went upstream for a cold NAR without
/// the registry's word: a replica that had served a narinfo fetched and stored its NAR again
/// after another replica had stored it, and served upstream's junk (or waited out upstream's
/// timeout) when the registry held the good copy. The registry decides, as before, once
/// its word given as the narinfo was served has lapsed (2 s; within them, see
/// `within_two_seconds_of_its_narinfo_a_nar_a_replica_stored_is_never_lost`).
#[test]
fn a_nar_a_replica_stored_is_read_from_the_registry_whatever_upstream_says_now() {
    let Replicas {
        registry: _registry,
        closure,
        upstream_dir,
        nginx,
        one,
        other,
    } = Replicas::start();

    // `one` serves the narinfo, `other` the narinfo and the NAR (which it stores).
    let nar_url = served_nar_url(&one, &closure.root);
    assert_eq!(served_nar_url(&other, &closure.root), nar_url);
    let (code, good) = download(&other.url(&format!("mirror/{nar_url}")));
    assert_eq!(code, 0);
    // Past the registry's word that `one` took as it served the narinfo.
    std::thread::sleep(REGISTRY_WORD_LAPSED);

    // Upstream now serves junk of the right size.
    spoil_upstream_nar(upstream_dir.path(), &closure.root);
    let (code, served) = download(&one.url(&format!("mirror/{nar_url}")));
    assert_eq!(code, 0);
    assert!(served == good, "the registry's copy, not upstream's junk");
    assert_read_from_the_registry_alone(&one, &nginx, &nar_url, &good);
}

/// Found by the red team (2026-12-06) in f6ffbab, where a mirror took the registry's
/// lacking a narinfo as its word on the NAR: that absence could be one the manifest cache
/// remembered (a HEAD of the narinfo, as `nix path-info` sends, up to `negative_ttl_secs`
/// earlier), so a replica went upstream alone for a NAR another replica had stored since,
/// and served upstream's junk as a broken download. A mirror now remembers only what it
/// found, never an absence: its word is the registry's answer of the moment.
#[test]
fn a_narinfo_absence_a_replica_saw_earlier_never_hides_the_nar_another_stored() {
    let Replicas {
        registry,
        closure,
        upstream_dir,
        nginx,
        one,
        other,
    } = Replicas::start();
    let hash = hash_part(&closure.root);
    // `one` is asked for the narinfo with HEAD, as lookups do: the registry lacks it.
    let (status, _, _) = curl(&["-I", &one.url(&format!("mirror/{hash}.narinfo"))]);
    assert_eq!(status, "200");
    // `other` serves the narinfo and the NAR, and stores both.
    let nar_url = served_nar_url(&other, &closure.root);
    let (code, good) = download(&other.url(&format!("mirror/{nar_url}")));
    assert_eq!(code, 0);
    std::thread::sleep(REGISTRY_WORD_LAPSED);
    let tags = registry_tags(&registry);
    assert!(tags.contains(&hash), "{tags}");
    // Upstream now serves junk of the right size; a client substitutes through `one`.
    spoil_upstream_nar(upstream_dir.path(), &closure.root);
    assert_eq!(served_nar_url(&one, &closure.root), nar_url);
    let (code, served) = download(&one.url(&format!("mirror/{nar_url}")));
    assert!(
        code == 0 && served == good,
        "the registry held the good copy, yet `one` went upstream (curl {code})"
    );
    assert_read_from_the_registry_alone(&one, &nginx, &nar_url, &good);
}

/// Spoils upstream's NAR file of `path` (junk of the right size).
fn spoil_upstream_nar(upstream: &std::path::Path, path: &str) {
    spoil(&upstream.join(upstream_url(upstream, path)));
}

/// `server` serves the NAR at `nar_url` (`good`) again without asking upstream for it.
fn assert_read_from_the_registry_alone(
    server: &ServerProcess,
    nginx: &NginxProcess,
    nar_url: &str,
    good: &[u8],
) {
    let fetched = nar_fetches(nginx);
    let (code, again) = download(&server.url(&format!("mirror/{nar_url}")));
    assert_eq!((code, again == good), (0, true));
    assert_eq!(
        nar_fetches(nginx),
        fetched,
        "a NAR found in the registry is not asked of upstream again"
    );
}

/// Longer than a mirror's word from the registry, taken as it serves a narinfo, stands.
const REGISTRY_WORD_LAPSED: std::time::Duration = std::time::Duration::from_millis(2500);

/// A mirror serves a narinfo from upstream because the registry lacks it, and for 2 s takes
/// that as the registry's word that it lacks the NAR too, and goes straight upstream for
/// the NAR (a cold first byte waits for upstream alone). A replica
/// storing the NAR in those 2 s loses nothing: when upstream then fails, the registry is
/// asked again before the client is answered; when upstream sends junk, the client gets a
/// download that is not whole (never the junk as a NAR), and its retry reads the registry.
/// On a build without the fallback to the registry, the first step was a 502.
#[test]
fn within_two_seconds_of_its_narinfo_a_nar_a_replica_stored_is_never_lost() {
    let Replicas {
        registry,
        closure,
        upstream_dir,
        nginx: _nginx,
        one,
        other,
    } = Replicas::start();
    let (gone, spoiled) = (&closure.paths[0], &closure.paths[1]);
    assert_ne!(gone, spoiled);

    // `one` serves both narinfos (the registry lacks them, and both NARs); `other`
    // serves and stores both NARs.
    let urls: Vec<String> = [gone, spoiled]
        .iter()
        .map(|path| served_nar_url(&one, path))
        .collect();
    let good: Vec<Vec<u8>> = [gone, spoiled]
        .iter()
        .zip(&urls)
        .map(|(path, url)| {
            assert_eq!(&served_nar_url(&other, path), url);
            let (code, bytes) = download(&other.url(&format!("mirror/{url}")));
            assert_eq!(code, 0);
            bytes
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let tags = registry_tags(&registry);
    assert!(
        tags.contains(&hash_part(gone)) && tags.contains(&hash_part(spoiled)),
        "{tags}"
    );

    // Upstream lost one NAR and spoils the other, within `one`'s 2 s.
    std::fs::remove_file(
        upstream_dir
            .path()
            .join(upstream_url(upstream_dir.path(), gone)),
    )
    .expect("removing upstream's NAR");
    spoil(
        &upstream_dir
            .path()
            .join(upstream_url(upstream_dir.path(), spoiled)),
    );

    let (code, served) = download(&one.url(&format!("mirror/{}", urls[0])));
    assert_eq!(
        (code, served == good[0]),
        (0, true),
        "upstream's 404 answered from the registry"
    );
    let (code, served) = download(&one.url(&format!("mirror/{}", urls[1])));
    assert!(
        code == 0 && served == good[1] || code != 0 && served.len() < good[1].len(),
        "the junk reached the client whole (curl {code})"
    );
    let (code, served) = download(&one.url(&format!("mirror/{}", urls[1])));
    assert_eq!(
        (code, served == good[1]),
        (0, true),
        "the retry reads the registry's copy"
    );
}

/// A registry, and upstream's cache of a small closure with its root's NAR file (to spoil).
fn root_nar_upstream() -> (
    RegistryProcess,
    SignedClosure,
    tempfile::TempDir,
    std::path::PathBuf,
) {
    let registry = RegistryProcess::start();
    let closure = SignedClosure::build(100_000);
    let upstream_dir = closure.file_cache();
    let file = upstream_dir
        .path()
        .join(upstream_url(upstream_dir.path(), &closure.root));
    (registry, closure, upstream_dir, file)
}

/// Found by the red team (2026-12-06): a NAR that failed its check was still served whole
/// (every byte of its Content-Length, then an error nobody sees), so curl, or an HTTP cache
/// in front, took junk for a good download. Its last chunk now waits for the check. Nor
/// does it reach the registry (since the upload of a spooled NAR waits for its check): an
/// upstream serving junk left an upload behind in the registry per request, which
/// distribution keeps for a week.
#[test]
fn a_nar_that_fails_its_check_never_reaches_its_client_whole_nor_the_registry() {
    let (registry, closure, upstream_dir, file) = root_nar_upstream();
    let size = std::fs::metadata(&file).unwrap().len();
    spoil(&file);
    let nginx = NginxProcess::serving(upstream_dir.path());
    let config = mirror_config(&registry, &nginx.url(""), &closure.public_key);
    let server = ServerProcess::start_binary(oranc_tests::release_oranc_command(), &config, &[]);
    let nar_url = served_nar_url(&server, &closure.root);
    let (code, served) = download(&server.url(&format!("mirror/{nar_url}")));
    assert_ne!(code, 0, "curl saw a whole download");
    assert!(
        (served.len() as u64) < size,
        "{} of {size} bytes",
        served.len()
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(!registry_tags(&registry).contains(&hash_part(&closure.root)));
    let metrics = server.metrics();
    let uploads: Vec<&str> = metrics
        .lines()
        .filter(|line| {
            line.starts_with("oranc_registry_requests_total")
                && (line.contains("\"open_upload\"") || line.contains("\"put_blob\""))
        })
        .collect();
    assert!(uploads.is_empty(), "{uploads:?}");
}

/// Found by the red team (2026-12-07): a NAR fed to the registry as it arrives (here the
/// spool is off; also past a full spool disk) whose check failed only at its end had been
/// uploaded whole by then and was committed as a blob: never tagged, but kept until the
/// registry's garbage collection. The upload's last chunk now waits for the check, and an
/// upload whose body fails is cancelled.
#[test]
fn a_nar_fed_to_the_registry_as_it_comes_that_fails_its_check_is_never_committed() {
    let (_, closure, upstream_dir, _) = root_nar_upstream();
    // The 100 KB path, larger than a 64 KiB chunk.
    let lib = closure
        .paths
        .iter()
        .find(|path| path.ends_with("-oranc-test-lib"))
        .expect("the closure's large path");
    let file = upstream_dir
        .path()
        .join(upstream_url(upstream_dir.path(), lib));
    // Junk at the end only: the check fails after every byte has gone by.
    let spoiled = oranc_tests::nix::spoil_tail(&file);
    let nginx = NginxProcess::serving(upstream_dir.path());
    // The NAR in one request, and in PATCHed chunks of 64 KiB.
    for chunk_lines in ["", "chunk_size = 65536\n"] {
        let registry = RegistryProcess::start();
        let config = format!(
            "{}[mirror]\nspool_max_bytes = 0\n",
            mirror_config_at(
                &registry.host(),
                chunk_lines,
                &nginx.url(""),
                &closure.public_key
            )
        );
        let server =
            ServerProcess::start_binary(oranc_tests::release_oranc_command(), &config, &[]);
        let nar_url = served_nar_url(&server, lib);
        let (code, _) = download(&server.url(&format!("mirror/{nar_url}")));
        assert_ne!(code, 0, "{chunk_lines}: curl saw a whole download");
        std::thread::sleep(std::time::Duration::from_millis(500));
        assert!(
            !registry.has_blob("mirror/cache", &spoiled),
            "{chunk_lines}: the spoiled NAR is a blob"
        );
        // Nor is its upload left for the registry's purge: it is cancelled.
        let live = registry.live_uploads("mirror/cache");
        assert!(
            live.is_empty(),
            "{chunk_lines}: uploads left behind: {live:?}"
        );
    }
}

/// Found by the red team (2026-12-06): a mirror forwarded a reader's credentials to the
/// registry, so credentials the registry refused made a fetch fail after upstream was asked,
/// and read-only ones left what they fetched unstored. A mirror reads and stores with its
/// own credentials: a client's count for nothing there but a writer's.
#[test]
fn a_mirror_reads_and_stores_with_its_own_credentials_whatever_a_client_sends() {
    use oranc_tests::auth::{PASSWORD, USERNAME};
    use oranc_tests::registry::RegistryAuth;
    let registry = RegistryProcess::start_with_auth(RegistryAuth::Htpasswd);
    let closure = SignedClosure::build(10_000);
    let upstream_dir = closure.file_cache();
    let nginx = NginxProcess::serving(upstream_dir.path());
    let config = format!(
        "{}username = \"{USERNAME}\"\npassword_env = \"ORANC_TEST_CACHE_SECRET\"\n",
        mirror_config(&registry, &nginx.url(""), &closure.public_key)
    );
    let mut command = oranc_tests::release_oranc_command();
    command.env("ORANC_TEST_CACHE_SECRET", PASSWORD);
    let server = ServerProcess::start_binary(command, &config, &[]);
    let url = server.url(&format!("mirror/{}.narinfo", hash_part(&closure.root)));
    let (status, narinfo, _) = curl(&["-u", "stranger:wrong", &url]);
    assert_eq!(status, "200", "{narinfo}");
    let nar_url = oranc_core::NarInfo::parse(&narinfo).unwrap().url;
    let (status, _, _) = curl(&[
        "-u",
        "stranger:wrong",
        "-o",
        "/dev/null",
        &server.url(&format!("mirror/{nar_url}")),
    ]);
    assert_eq!(status, "200");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let tags = run_ok(
        std::process::Command::new("curl")
            .args(["-sf", "-u", &format!("{USERNAME}:{PASSWORD}")])
            .arg(format!("{}/v2/mirror/cache/tags/list", registry.base_url())),
    );
    assert!(tags.contains(&hash_part(&closure.root)), "stored: {tags}");
}

/// Found by the red team (2026-12-06): a mirror's upstream could keep a NAR request
/// waiting 60 s whatever `read_timeout_secs` said. An upstream that serves narinfos but
/// never answers for a NAR (nginx in front of a port that accepts and says nothing) is a
/// 502 once `read_timeout_secs` has passed.
#[test]
fn an_upstream_that_keeps_a_nar_waiting_is_given_read_timeout_secs() {
    let registry = RegistryProcess::start();
    let closure = SignedClosure::build(1_000);
    let upstream_dir = closure.file_cache();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let nginx = NginxProcess::start(&format!(
        "server {{ listen {{listen}}; root {}; location /nar/ {{ proxy_pass http://{}; proxy_read_timeout 300s; }} }}",
        upstream_dir.path().display(),
        silent.local_addr().expect("its address")
    ));
    let config = format!(
        "read_timeout_secs = 2\n{}",
        mirror_config(&registry, &nginx.url(""), &closure.public_key)
    );
    let server = ServerProcess::start_binary(oranc_tests::release_oranc_command(), &config, &[]);
    let nar_url = served_nar_url(&server, &closure.root);
    let (status, body, _) = curl(&[
        "--max-time",
        "20",
        &server.url(&format!("mirror/{nar_url}")),
    ]);
    assert_eq!(status, "502", "{body}");
    drop(silent);
}

/// Found by the red team (2026-12-06): a client that left while upstream had not answered
/// yet let go of its fetch without one, and a request that had joined that fetch was told
/// the NAR was stored, found nothing, and got a 502. It now fetches the NAR itself.
#[test]
fn a_request_that_joined_a_fetch_whose_client_left_still_gets_its_nar() {
    let registry = RegistryProcess::start();
    let closure = SignedClosure::build(1_000);
    let upstream_dir = closure.file_cache();
    let nginx = NginxProcess::serving(upstream_dir.path());
    // Upstream answers 2 s after it is asked.
    let slow =
        oranc_tests::latency::LatencyProxy::start(nginx.addr, std::time::Duration::from_secs(4));
    let config = mirror_config(
        &registry,
        &format!("http://{}", slow.host()),
        &closure.public_key,
    );
    let server = ServerProcess::start_binary(oranc_tests::release_oranc_command(), &config, &[]);
    let nar_url = served_nar_url(&server, &closure.root);
    let url = server.url(&format!("mirror/{nar_url}"));
    let leaving = {
        let url = url.clone();
        std::thread::spawn(move || curl(&["--max-time", "1", &url]))
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (code, served) = download(&url);
    let _ = leaving.join();
    let nar = std::fs::read(
        upstream_dir
            .path()
            .join(upstream_url(upstream_dir.path(), &closure.root)),
    )
    .expect("upstream's NAR");
    assert!(
        code == 0 && served == nar,
        "curl {code}: {}",
        String::from_utf8_lossy(&served[..served.len().min(200)])
    );
}

/// Found by the red team (2026-12-04): with `allow_write` next to `upstreams`, an anonymous
/// client uploaded junk under the NAR name the mirror was about to use (its names are
/// predictable), and the path could never be substituted again. The config is refused.
#[test]
fn a_mirror_anyone_may_write_into_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("oranc.toml");
    std::fs::write(
        &config,
        "[caches.mirror]\nregistry = \"/nonexistent\"\nrepository = \"a/b\"\nallow_write = true\nupstreams = [\"https://cache.nixos.org\"]\nupstream_public_keys = [\"cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=\"]\n",
    )
    .unwrap();
    let mut child = oranc_tests::release_oranc_command()
        .args(["server", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server started with a mirror anyone may write into");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(stderr.contains("caches.mirror.allow_write"), "{stderr}");
}

/// Found by the red team's second pass (2026-12-04): on a registry with
/// `trust_client_credentials` that checks none, made-up credentials wrote a forged build log
/// into a mirror, which served it. A mirror takes writes only from its writers now.
#[test]
fn credentials_a_mirror_cannot_check_write_nothing_into_it() {
    let registry = RegistryProcess::start();
    let config = format!(
        "{}trust_client_credentials = true\n[caches.mirror]\nregistry = \"{}\"\nrepository = \"mirror/cache\"\nupstreams = [\"http://127.0.0.1:9\"]\nupstream_public_keys = [\"cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=\"]\n",
        allow_plain_http(&registry.host()),
        registry.host()
    );
    let server = ServerProcess::start_logged(oranc_tests::release_oranc_command(), &config, &[]);
    let (status, body, _) = curl(&[
        "-u",
        "made:up",
        "-X",
        "PUT",
        "--data-binary",
        "forged build log",
        &server.url("mirror/log/0000000000000000000000000000000a-x.drv"),
    ]);
    assert!(status == "401" || status == "403", "{status}: {body}");
    assert!(
        !registry_tags(&registry).contains("log"),
        "{}",
        registry_tags(&registry)
    );
}

/// A registry slower than upstream (here 200 ms away, taking 1 MiB a request, as a far
/// ghcr.io takes 4 MiB) does not hold a cold NAR's client to its pace: what the registry has
/// not taken yet waits on disk (`[mirror] spool_max_bytes`), the client gets upstream's
/// pace, and the NAR is stored all the same. Before the spool, the client got its last byte
/// only a few chunks ahead of the registry. A client asking while the store goes on is
/// served from the spool, checked, without asking upstream again: before, it waited for
/// the store to end (5.6 s against 0.07 s here).
#[test]
fn a_cold_nar_reaches_its_clients_at_upstreams_pace_when_the_registry_is_slower() {
    let mut far = FarLargeNar::start("");
    let asked = std::time::Instant::now();
    let downloaded = far.download_whole("cold");
    // The store takes seconds more: this request joins it.
    let downloaded_while_stored = far.download_whole("joining the store");
    let stored = loop {
        let bytes = metric_or_zero(&far.far.server.metrics(), "oranc_mirror_stored_bytes_total");
        if bytes >= far.nar.len() as f64 {
            break asked.elapsed();
        }
        assert!(
            asked.elapsed() < std::time::Duration::from_secs(120),
            "the NAR was never stored"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    // 0.07 s against 5.6 s here; 2.0 s against 5.6 s before the spool.
    assert!(
        downloaded * 10 < stored,
        "the client had the NAR after {downloaded:?}, the registry after {stored:?}"
    );
    assert!(
        downloaded_while_stored * 10 < stored,
        "the client that joined the store had the NAR after {downloaded_while_stored:?}, the registry after {stored:?}"
    );
    let nginx = far.far.nginx.take().expect("upstream");
    let fetched = nginx
        .access_log()
        .lines()
        .filter(|line| line.contains("GET /nar/"))
        .count();
    assert_eq!(fetched, 1, "{}", nginx.access_log());
    // Stored whole: served again with upstream gone.
    drop(nginx);
    far.download_whole("from the registry");
}

/// A mirror of `closure` storing into a registry `rtt` away, `chunk_size` bytes a request.
struct FarRegistryMirror {
    registry: RegistryProcess,
    _far_registry: oranc_tests::latency::LatencyProxy,
    closure: SignedClosure,
    upstream_dir: tempfile::TempDir,
    /// Upstream, until a test takes it away.
    nginx: Option<NginxProcess>,
    server: ServerProcess,
}

impl FarRegistryMirror {
    fn start(
        closure: SignedClosure,
        rtt: std::time::Duration,
        chunk_size: usize,
        server_lines: &str,
    ) -> Self {
        let registry = RegistryProcess::start();
        let far_registry = oranc_tests::latency::LatencyProxy::start(
            registry.host().parse().expect("the registry's address"),
            rtt,
        );
        let upstream_dir = closure.file_cache();
        let nginx = NginxProcess::serving(upstream_dir.path());
        let config = mirror_config_at(
            &far_registry.host(),
            &format!("chunk_size = {chunk_size}\n"),
            &nginx.url(""),
            &closure.public_key,
        );
        let server = ServerProcess::start_binary(
            oranc_tests::release_oranc_command(),
            &format!("{config}{server_lines}"),
            &[],
        );
        Self {
            registry,
            _far_registry: far_registry,
            closure,
            upstream_dir,
            nginx: Some(nginx),
            server,
        }
    }
}

/// A mirror storing into a registry 200 ms away, 1 MiB a request (a store takes seconds
/// more than its fetch), of a 16 MiB NAR, whose narinfo the server has served.
struct FarLargeNar {
    far: FarRegistryMirror,
    /// The large path and its NAR file upstream.
    lib: String,
    nar: Vec<u8>,
    url: String,
}

impl FarLargeNar {
    fn start(server_lines: &str) -> Self {
        let far = FarRegistryMirror::start(
            SignedClosure::build(16 << 20),
            std::time::Duration::from_millis(200),
            1 << 20,
            server_lines,
        );
        let lib = far
            .closure
            .paths
            .iter()
            .find(|path| path.ends_with("-oranc-test-lib"))
            .expect("the closure's large path")
            .clone();
        let upstream = far.upstream_dir.path();
        let nar =
            std::fs::read(upstream.join(upstream_url(upstream, &lib))).expect("upstream's NAR");
        let url = far
            .server
            .url(&format!("mirror/{}", served_nar_url(&far.server, &lib)));
        Self { far, lib, nar, url }
    }

    /// Downloads the NAR, which must arrive whole: how long it took.
    fn download_whole(&self, what: &str) -> std::time::Duration {
        let started = std::time::Instant::now();
        let (code, served) = download(&self.url);
        assert!(
            code == 0 && served == self.nar,
            "{what}: curl {code}, {} bytes",
            served.len()
        );
        started.elapsed()
    }
}

/// Found by the red team (2026-12-07), in the first version of serving from the spool: a
/// request that joined a fetch announced the FileSize of the narinfo it had looked up, and
/// FileSize is not signed. Upstream changed it to 1000 while the store went on, a narinfo
/// request took the new one, and the next client got the NAR's first 1000 bytes as a whole
/// download (curl exit 0). Such a request now announces the size the spool was checked at.
#[test]
fn a_request_served_from_the_spool_gets_the_checked_file_whatever_size_a_later_narinfo_says() {
    let far = FarLargeNar::start("[response_cache]\nttl_secs = 1\n");
    far.download_whole("cold");
    let narinfo_path = far
        .far
        .upstream_dir
        .path()
        .join(format!("{}.narinfo", hash_part(&far.lib)));
    let narinfo = std::fs::read_to_string(&narinfo_path).expect("upstream's narinfo");
    let lying: String = narinfo
        .lines()
        .map(|line| match line.strip_prefix("FileSize: ") {
            Some(_) => "FileSize: 1000\n".to_owned(),
            None => format!("{line}\n"),
        })
        .collect();
    std::fs::write(&narinfo_path, lying).expect("rewriting upstream's narinfo");
    std::thread::sleep(std::time::Duration::from_millis(1_200));
    let narinfo_url = far
        .far
        .server
        .url(&format!("mirror/{}.narinfo", hash_part(&far.lib)));
    let (status, served, _) = curl(&[&narinfo_url]);
    assert!(
        status == "200" && served.contains("FileSize: 1000"),
        "{status}: {served}"
    );
    // The store of the first fetch takes seconds more: this request joins it.
    far.download_whole("joining the store after the narinfo changed");
}

/// Found by the red team (2026-12-07): once clients no longer waited for the registry, a
/// copy still held one of the mirror's 16 copy slots until its upload ended, so a client
/// fetching a cold closure from a slow registry's mirror outran them, and the NARs past the
/// 16th were served but never stored (8 of 25 here). A spooled copy now gives its slot back when its
/// fetch ends; the spool's own bounds hold the uploads.
#[test]
fn a_client_faster_than_the_registry_leaves_no_nar_unstored() {
    let far = FarRegistryMirror::start(
        SignedClosure::build_wide(24),
        std::time::Duration::from_millis(300),
        4 << 20,
        "",
    );
    let (registry, closure, server) = (&far.registry, &far.closure, &far.server);
    // As Nix substitutes: the narinfos at once, then the NARs, each fetched in a moment
    // while its store takes a dozen round trips to the registry.
    let nar_urls: Vec<String> = std::thread::scope(|scope| {
        let asked: Vec<_> = closure
            .paths
            .iter()
            .map(|path| scope.spawn(|| served_nar_url(server, path)))
            .collect();
        asked
            .into_iter()
            .map(|narinfo| narinfo.join().expect("a narinfo request"))
            .collect()
    });
    for nar_url in &nar_urls {
        let (code, _) = download(&server.url(&format!("mirror/{nar_url}")));
        assert_eq!(code, 0, "{nar_url}");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let stored = || {
        closure
            .paths
            .iter()
            .filter(|path| {
                registry_tags(registry).contains(&format!("{}.narinfo", hash_part(path)))
            })
            .count()
    };
    while stored() < closure.paths.len() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let unstored = server
        .metrics()
        .lines()
        .filter(|line| line.contains("outcome=\"unstored\""))
        .map(str::to_owned)
        .collect::<Vec<_>>();
    assert_eq!(
        stored(),
        closure.paths.len(),
        "narinfos stored; unstored: {unstored:?}"
    );
}

/// Found by the red team (2026-12-07), older than the spool: a NAR's answer announced the
/// narinfo's `FileSize`, which is not signed, as its Content-Length. With `FileSize: 0` a
/// NAR that failed its check was an empty 200 that looked whole (no chunk was left to hold
/// back), one an HTTP cache in front would keep; with a length clients refuse, curl took a
/// short body as whole. Such a length is no longer announced.
#[test]
fn a_file_size_upstream_lies_about_never_makes_a_failed_nar_look_whole() {
    let registry = RegistryProcess::start();
    let closure = SignedClosure::build(100_000);
    let upstream_dir = closure.file_cache();
    let lies = ["0", "18446744073709551615"];
    let lying_paths: Vec<&String> = closure.paths.iter().take(lies.len()).collect();
    for (path, size) in lying_paths.iter().zip(lies) {
        let narinfo = upstream_dir
            .path()
            .join(format!("{}.narinfo", hash_part(path)));
        let text = std::fs::read_to_string(&narinfo).expect("the narinfo Nix wrote");
        let lying: String = text
            .lines()
            .map(|line| {
                if line.starts_with("FileSize:") {
                    format!("FileSize: {size}\n")
                } else {
                    format!("{line}\n")
                }
            })
            .collect();
        std::fs::write(&narinfo, lying).expect("rewriting the narinfo");
    }
    let nginx = NginxProcess::serving(upstream_dir.path());
    let config = mirror_config(&registry, &nginx.url(""), &closure.public_key);
    let server = ServerProcess::start_binary(oranc_tests::release_oranc_command(), &config, &[]);
    for (path, size) in lying_paths.iter().zip(lies) {
        let url = server.url(&format!("mirror/{}", served_nar_url(&server, path)));
        let (code, body) = download(&url);
        assert_ne!(
            code,
            0,
            "FileSize {size}: curl took {} bytes as a whole NAR",
            body.len()
        );
    }
    assert!(
        !registry_tags(&registry).contains(".narinfo"),
        "{}",
        registry_tags(&registry)
    );
}
