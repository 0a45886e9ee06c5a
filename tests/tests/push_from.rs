//! `oranc push --from URL`: a binary cache written by Nix itself (`nix copy --to
//! file://DIR`), read as a directory and through nginx, moved into a real registry; then
//! real Nix substitutes the closure through `oranc server`. A NAR file that is not the one
//! its narinfo describes is never named by a narinfo in the registry. At 200 paths, what
//! was moved reads back through the original oranc's layout too.

use std::process::Output;

use oranc_tests::nginx::NginxProcess;
use oranc_tests::nix::{assert_same_closure, copy_from, hash_part, SignedClosure};
use oranc_tests::oci::RawRegistry;
use oranc_tests::registry::RegistryProcess;
use oranc_tests::server::{allow_plain_http, ServerProcess};
use oranc_tests::{fresh_repo, oranc_command, push_args, release_oranc_command};

fn push_from(
    registry: &RegistryProcess,
    repo: &str,
    from: &str,
    closure: &SignedClosure,
) -> Output {
    push_from_with(oranc_command(), registry, repo, from, closure)
}

/// [`push_from`] with the release binary, for the attacks of a hostile source cache.
fn release_push_from(
    registry: &RegistryProcess,
    repo: &str,
    from: &str,
    closure: &SignedClosure,
) -> Output {
    push_from_with(release_oranc_command(), registry, repo, from, closure)
}

fn push_from_with(
    mut command: std::process::Command,
    registry: &RegistryProcess,
    repo: &str,
    from: &str,
    closure: &SignedClosure,
) -> Output {
    command
        .args(push_args(&registry.host(), repo))
        .args(["--from", from, "--trusted-public-key", &closure.public_key])
        .arg(&closure.root)
        .output()
        .expect("running oranc push")
}

/// [`release_push_from`] of the cache directory `dir`, which must fail; what it printed.
fn refused_push_from(
    registry: &RegistryProcess,
    repo: &str,
    dir: &std::path::Path,
    closure: &SignedClosure,
) -> String {
    let pushed = release_push_from(
        registry,
        repo,
        &format!("file://{}", dir.display()),
        closure,
    );
    assert!(!pushed.status.success(), "{}", text_of(&pushed));
    text_of(&pushed)
}

/// Nix substitutes `closure` from `repo` through a fresh `oranc server`.
fn substitutes_through_the_server(registry: &RegistryProcess, repo: &str, closure: &SignedClosure) {
    let server = ServerProcess::start(&allow_plain_http(&registry.host()), &[]);
    let store = tempfile::tempdir().expect("a temporary directory");
    let url = server.url(&format!("{}/{repo}", registry.host()));
    let copied = copy_from(&url, store.path(), &closure.root, &closure.public_key);
    assert!(copied.status.success(), "{}", text_of(&copied));
    assert_same_closure(store.path(), &closure.root);
}

#[test]
fn a_cache_nix_wrote_moves_into_the_registry_from_a_directory_and_over_http() {
    let registry = RegistryProcess::start();
    let closure = SignedClosure::build(300_000);
    let cache = closure.file_cache();

    let repo = fresh_repo("from-dir");
    let pushed = push_from(
        &registry,
        &repo,
        &format!("file://{}", cache.path().display()),
        &closure,
    );
    assert!(pushed.status.success(), "{}", text_of(&pushed));
    assert!(
        text_of(&pushed).contains("pushed 3"),
        "{}",
        text_of(&pushed)
    );
    substitutes_through_the_server(&registry, &repo, &closure);
    // A second run finds everything there and copies nothing.
    let again = push_from(
        &registry,
        &repo,
        &format!("file://{}", cache.path().display()),
        &closure,
    );
    assert!(
        text_of(&again).contains("already there 3"),
        "{}",
        text_of(&again)
    );

    let nginx = NginxProcess::serving(cache.path());
    let repo = fresh_repo("from-http");
    let pushed = push_from(&registry, &repo, &nginx.url(""), &closure);
    assert!(pushed.status.success(), "{}", text_of(&pushed));
    substitutes_through_the_server(&registry, &repo, &closure);
    // Each file was asked for once.
    let log = nginx.access_log();
    let nar_gets = log.lines().filter(|l| l.contains("GET /nar/")).count();
    assert_eq!(nar_gets, 3, "{log}");
}

/// The scale: a 200-path cache Nix wrote moves into a registry from a directory and
/// over HTTP. Nix substitutes all of it through the server, and an independent reader of
/// the original oranc's layout (its tags and manifests, `oranc_tests::oci`) exports every
/// path into a `file://` cache Nix substitutes from too.
#[test]
fn a_cache_of_200_paths_moves_in_and_reads_back_through_the_server_and_the_original_layout() {
    let registry = RegistryProcess::start();
    let closure = SignedClosure::build_wide(199);
    assert_eq!(closure.paths.len(), 200);
    let cache = closure.file_cache();
    let nginx = NginxProcess::serving(cache.path());
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let sources = [
        ("wide-dir", format!("file://{}", cache.path().display())),
        ("wide-http", nginx.url("")),
    ];
    let mut repos = Vec::new();
    for (prefix, from) in sources {
        let repo = fresh_repo(prefix);
        let pushed = push_from(&registry, &repo, &from, &closure);
        assert!(pushed.status.success(), "{from}: {}", text_of(&pushed));
        assert!(
            text_of(&pushed).contains("pushed 200"),
            "{from}: {}",
            text_of(&pushed)
        );
        substitutes_through_the_server(&registry, &repo, &closure);

        let exported = tempfile::tempdir().expect("a temporary directory");
        runtime.block_on(RawRegistry::new(&registry.base_url()).export_file_cache(
            &repo,
            &closure.paths,
            exported.path(),
        ));
        let store = tempfile::tempdir().expect("a temporary directory");
        let file_url = format!("file://{}", exported.path().display());
        let copied = copy_from(&file_url, store.path(), &closure.root, &closure.public_key);
        assert!(copied.status.success(), "{from}: {}", text_of(&copied));
        assert_same_closure(store.path(), &closure.root);
        repos.push(repo);
    }

    // And from another oranc server's cache URL into a third repository.
    let server = ServerProcess::start(&allow_plain_http(&registry.host()), &[]);
    let source = server.url(&format!("{}/{}", registry.host(), repos[0]));
    let repo = fresh_repo("wide-oranc");
    let pushed = push_from(&registry, &repo, &source, &closure);
    assert!(
        text_of(&pushed).contains("pushed 200"),
        "{}",
        text_of(&pushed)
    );
    substitutes_through_the_server(&registry, &repo, &closure);
}

#[test]
fn options_about_making_nars_cannot_be_given_with_from() {
    for option in [
        &["--compression", "xz"][..],
        &["--write-nar-listing"],
        &["--index-debug-info"],
        &["--store-source", "nix"],
        &["--nix-db", "/nix/var/nix/db/db.sqlite"],
    ] {
        let output = oranc_command()
            .args(["push", "--from", "file:///nonexistent"])
            .args(option)
            .arg("/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x")
            .output()
            .expect("running oranc push");
        assert_eq!(output.status.code(), Some(2), "{option:?}");
        assert!(
            text_of(&output).contains("cannot be used with"),
            "{option:?}: {}",
            text_of(&output)
        );
    }
}

#[test]
fn a_nar_file_that_is_not_the_one_its_narinfo_describes_is_never_named() {
    let registry = RegistryProcess::start();
    let closure = SignedClosure::build(50_000);
    let cache = closure.file_cache();
    // Replace the bytes of every NAR file (same length) behind the narinfos' backs.
    for entry in std::fs::read_dir(cache.path().join("nar")).unwrap() {
        let path = entry.unwrap().path();
        let length = std::fs::metadata(&path).unwrap().len() as usize;
        std::fs::write(&path, vec![b'x'; length]).unwrap();
    }
    let repo = fresh_repo("from-bad");
    let refused = refused_push_from(&registry, &repo, cache.path(), &closure);
    assert!(
        refused.contains("is not the one its narinfo describes"),
        "{refused}"
    );
    let tags = registry.tag_list(&repo);
    for path in &closure.paths {
        let hash = hash_part(path);
        assert!(
            !tags.contains(&hash),
            "a narinfo for {path} was stored: {tags}"
        );
    }
    assert!(!tags.contains("nar_"), "a NAR was tagged: {tags}");
}

/// Found in review (issue 36, item 6): `push --from` uploaded a NAR file whole before its
/// check's verdict, so one that failed only at its end (junk in its last bytes) was
/// committed as an untagged blob, kept until the registry's garbage collection. Its last
/// chunk now waits for the check, and an upload that fails is cancelled.
#[test]
fn a_nar_file_that_fails_its_check_at_the_end_is_never_committed() {
    let registry = RegistryProcess::start();
    let closure = SignedClosure::build(100_000);
    let cache = closure.file_cache();
    let lib = closure
        .paths
        .iter()
        .find(|path| path.ends_with("-oranc-test-lib"))
        .expect("the closure's large path");
    let (_, text) = narinfo_file(cache.path(), lib);
    let url = oranc_core::NarInfo::parse(&text).unwrap().url;
    let spoiled = oranc_tests::nix::spoil_tail(&cache.path().join(url));
    let repo = fresh_repo("from-tail");
    refused_push_from(&registry, &repo, cache.path(), &closure);
    assert!(
        !registry.has_blob(&repo, &spoiled),
        "the spoiled NAR file is a blob"
    );
    let live = registry.live_uploads(&repo);
    assert!(live.is_empty(), "uploads left behind: {live:?}");
}

#[test]
fn a_cache_for_another_store_directory_is_refused() {
    let registry = RegistryProcess::start();
    let closure = SignedClosure::build(1_000);
    let cache = closure.file_cache();
    std::fs::write(
        cache.path().join("nix-cache-info"),
        "StoreDir: /gnu/store\nWantMassQuery: 1\nPriority: 40\n",
    )
    .unwrap();
    let pushed = push_from(
        &registry,
        &fresh_repo("from-gnu"),
        &format!("file://{}", cache.path().display()),
        &closure,
    );
    assert!(!pushed.status.success());
    assert!(
        text_of(&pushed).contains("/gnu/store"),
        "{}",
        text_of(&pushed)
    );
}

/// The narinfo file of `path` in a cache directory, and its text.
fn narinfo_file(cache: &std::path::Path, path: &str) -> (std::path::PathBuf, String) {
    let file = cache.join(format!("{}.narinfo", hash_part(path)));
    let text = std::fs::read_to_string(&file).expect("the narinfo nix copy wrote");
    (file, text)
}

/// `text` with the field `name` set to `value`.
fn with_field(text: &str, name: &str, value: &str) -> String {
    text.lines()
        .map(|line| {
            if line.starts_with(&format!("{name}: ")) {
                format!("{name}: {value}")
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// Red-team finding (2026-12-04): the signature does not cover URL, FileHash or FileSize. A
/// source that rewrote them to describe other bytes got those bytes stored and named by a
/// narinfo (and the key poisoned for later pushes). The NAR inside is now checked against
/// the signed NarHash.
#[test]
fn a_source_that_rewrites_the_unsigned_fields_to_other_bytes_gets_nothing_stored() {
    let registry = RegistryProcess::start();
    let closure = SignedClosure::build(20_000);
    let cache = closure.file_cache();
    let garbage = zstd::encode_all(&b"not a NAR at all"[..], 3).unwrap();
    std::fs::write(cache.path().join("nar/garbage.nar.zst"), &garbage).unwrap();
    let (file, text) = narinfo_file(cache.path(), &closure.root);
    let text = with_field(&text, "URL", "nar/garbage.nar.zst");
    let text = with_field(&text, "Compression", "zstd");
    let text = with_field(
        &text,
        "FileHash",
        &oranc_core::Sha256Hash::of(&garbage).to_nix_string(),
    );
    let text = with_field(&text, "FileSize", &garbage.len().to_string());
    std::fs::write(file, text).unwrap();

    let repo = fresh_repo("from-rewritten");
    let from = format!("file://{}", cache.path().display());
    let pushed = release_push_from(&registry, &repo, &from, &closure);
    assert!(!pushed.status.success(), "{}", text_of(&pushed));
    assert!(text_of(&pushed).contains("NarHash"), "{}", text_of(&pushed));
    let tags = registry.tag_list(&repo);
    assert!(!tags.contains(&hash_part(&closure.root)), "{tags}");
}

/// Red-team finding (2026-12-04): `%2e%2e` in a narinfo's URL is `..` to an HTTP client, so
/// a source could send the copy to any file of its host.
#[test]
fn a_url_that_climbs_out_of_the_cache_is_never_followed() {
    let registry = RegistryProcess::start();
    let closure = SignedClosure::build(1_000);
    let cache = closure.file_cache();
    let (file, text) = narinfo_file(cache.path(), &closure.root);
    std::fs::write(
        file,
        with_field(&text, "URL", "nar/%2e%2e/%2e%2e/outside.nar.xz"),
    )
    .unwrap();
    let nginx = NginxProcess::serving(cache.path());
    let pushed = release_push_from(
        &registry,
        &fresh_repo("from-climb"),
        &nginx.url(""),
        &closure,
    );
    assert!(!pushed.status.success());
    assert!(
        text_of(&pushed).contains("not a file inside the cache"),
        "{}",
        text_of(&pushed)
    );
    assert!(
        !nginx.access_log().contains("outside"),
        "{}",
        nginx.access_log()
    );
}

/// Red-team finding (2026-12-04): a narinfo that was a symlink to /dev/zero was read without
/// end (its length is 0, so the size check passed), and a FIFO blocked for ever.
#[test]
fn a_source_file_that_is_not_a_regular_file_is_refused_at_once() {
    let registry = RegistryProcess::start();
    let closure = SignedClosure::build(1_000);
    let cache = closure.file_cache();
    let (file, _) = narinfo_file(cache.path(), &closure.root);
    std::fs::remove_file(&file).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &file).unwrap();
    // Built before the clock starts: the bound is on reading, not on building.
    let command = release_oranc_command();
    let started = std::time::Instant::now();
    let from = format!("file://{}", cache.path().display());
    let pushed = push_from_with(
        command,
        &registry,
        &fresh_repo("from-zero"),
        &from,
        &closure,
    );
    assert!(!pushed.status.success());
    assert!(
        text_of(&pushed).contains("not a regular file"),
        "{}",
        text_of(&pushed)
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}

/// Red-team finding (2026-12-04): a NAR file longer than its FileSize was read and uploaded
/// whole (without end, from an endless source) before it was refused.
#[test]
fn a_nar_file_longer_than_its_file_size_is_cut_off() {
    let registry = RegistryProcess::start();
    let closure = SignedClosure::build(1_000);
    let cache = closure.file_cache();
    let (_, text) = narinfo_file(cache.path(), &closure.root);
    let url = oranc_core::NarInfo::parse(&text).unwrap().url;
    // 200 MB more than the narinfo says (sparse: nothing is written to disk).
    let nar = std::fs::OpenOptions::new()
        .write(true)
        .open(cache.path().join(&url))
        .unwrap();
    nar.set_len(200_000_000).unwrap();
    let repo = fresh_repo("from-long");
    let pushed = release_push_from(
        &registry,
        &repo,
        &format!("file://{}", cache.path().display()),
        &closure,
    );
    assert!(!pushed.status.success());
    assert!(
        text_of(&pushed).contains("FileSize"),
        "{}",
        text_of(&pushed)
    );
    assert!(!registry.tag_list(&repo).contains(&hash_part(&closure.root)));
}

fn text_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
