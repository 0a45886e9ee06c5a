//! A mirror whose upstream is hostile: it serves genuine signed narinfos (it can copy any
//! from the real cache) but is free to change what their signature does not cover (`URL`,
//! `FileHash`, `FileSize`) and the files it serves. Each test replays an attack that
//! worked against the release binary before its fix, with a real registry, nginx as the
//! upstream and real Nix.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: helpers outside #[test] panic on purpose"
)]

use oranc_tests::nginx::NginxProcess;
use oranc_tests::nix::{copy_from, hash_part, SignedClosure};
use oranc_tests::registry::RegistryProcess;
use oranc_tests::server::{allow_plain_http, ServerProcess};
use oranc_tests::{curl, release_oranc_command};

fn mirror_config(registry: &RegistryProcess, upstream: &str, key: &str) -> String {
    format!(
        "{}[caches.mirror]\nregistry = \"{host}\"\nrepository = \"mirror/cache\"\nupstreams = [\"{upstream}\"]\nupstream_public_keys = [\"{key}\"]\n",
        allow_plain_http(&registry.host()),
        host = registry.host(),
    )
}

fn replica(config: &str) -> ServerProcess {
    ServerProcess::start_logged(release_oranc_command(), config, &[])
}

/// The narinfo of `path` in the binary cache at `dir` (as Nix wrote it, or as changed).
fn narinfo_file(dir: &std::path::Path, path: &str) -> std::path::PathBuf {
    dir.join(format!("{}.narinfo", hash_part(path)))
}

fn narinfo_in(dir: &std::path::Path, path: &str) -> oranc_core::NarInfo {
    let text = std::fs::read_to_string(narinfo_file(dir, path)).expect("the narinfo");
    oranc_core::NarInfo::parse(&text).expect("a narinfo")
}

/// GET `url`: curl's exit code and the bytes received.
fn download(url: &str) -> (i32, Vec<u8>) {
    let file = tempfile::NamedTempFile::new().expect("a temporary file");
    let status = std::process::Command::new("curl")
        .args(["-s", "-f", "--max-time", "60", "-o"])
        .arg(file.path())
        .arg(url)
        .status()
        .expect("running curl");
    (
        status.code().unwrap_or(-1),
        std::fs::read(file.path()).unwrap_or_default(),
    )
}

/// The `URL` of the narinfo of `path` as `server`'s mirror serves it.
fn served_nar_url(server: &ServerProcess, path: &str) -> String {
    let (status, narinfo, _) = curl(&[&server.url(&format!("mirror/{}.narinfo", hash_part(path)))]);
    assert_eq!(status, "200", "{narinfo}");
    oranc_core::NarInfo::parse(&narinfo)
        .expect("the mirror's narinfo")
        .url
}

/// Found in review (issue 36, item 1): after an honest fetch, upstream served another
/// path's genuine narinfo with `URL:` set to the first path's mirrored NAR name (and that
/// path's bytes there). Where the mirror's own name for it made too long a tag, the mirror
/// fell back to upstream's name, which was the first path's key: on a restarted server or
/// another replica, the first path's NAR tag then held the other path's bytes, and Nix
/// failed "hash mismatch" for that closure for good. A mirror's NAR key now always begins
/// with the hash of the path whose narinfo named it, and a stored NAR tag is never
/// re-tagged with other bytes.
#[test]
fn an_upstream_naming_another_paths_stored_nar_never_replaces_it() {
    let registry = RegistryProcess::start();
    let closure = SignedClosure::build(100_000);
    let upstream = closure.file_cache();
    let nginx = NginxProcess::serving(upstream.path());
    let config = mirror_config(&registry, &nginx.url(""), &closure.public_key);

    // Honest: one replica serves the root's narinfo and NAR, and stores them.
    let one = replica(&config);
    let victim_url = served_nar_url(&one, &closure.root);
    let (code, good) = download(&one.url(&format!("mirror/{victim_url}")));
    assert_eq!(code, 0);
    wait_until_stored(&registry, &closure.root);

    // Hostile: the narinfo of another path of the closure (genuine, signed) names the
    // victim's mirrored NAR, and upstream serves that path's NAR file there.
    let other = closure
        .paths
        .iter()
        .find(|path| **path != closure.root)
        .expect("a closure of several paths")
        .clone();
    let honest = narinfo_in(upstream.path(), &other);
    let victim_file = upstream.path().join(&victim_url);
    std::fs::create_dir_all(victim_file.parent().unwrap()).unwrap();
    std::fs::copy(upstream.path().join(&honest.url), &victim_file).unwrap();
    let text = std::fs::read_to_string(narinfo_file(upstream.path(), &other)).unwrap();
    std::fs::write(
        narinfo_file(upstream.path(), &other),
        text.replace(
            &format!("URL: {}", honest.url),
            &format!("URL: {victim_url}"),
        ),
    )
    .unwrap();

    // On another replica, and on a restarted one, Nix substitutes the other path: its
    // narinfo, then at once its NAR (while the registry's word on it is that it lacks it).
    let another = replica(&config);
    drop(one);
    let restarted = replica(&config);
    for server in [&another, &restarted] {
        let store = tempfile::tempdir().unwrap();
        let fetched = copy_from(
            &server.url("mirror"),
            store.path(),
            &other,
            &closure.public_key,
        );
        assert!(
            fetched.status.success(),
            "{}",
            String::from_utf8_lossy(&fetched.stderr)
        );
        assert_ne!(
            served_nar_url(server, &other),
            victim_url,
            "the other path's NAR has a key of its own"
        );
    }

    // Upstream gone: the victim's NAR is still its own.
    drop(nginx);
    let fresh = replica(&mirror_config(
        &registry,
        "http://127.0.0.1:9",
        &closure.public_key,
    ));
    assert_eq!(served_nar_url(&fresh, &closure.root), victim_url);
    let (code, stored) = download(&fresh.url(&format!("mirror/{victim_url}")));
    assert_eq!(code, 0);
    assert!(stored == good, "the victim's NAR tag holds other bytes");
}

/// Waits (at most 30 s) until the mirror has stored the narinfo of `path`: a copy outlives
/// its client, and stores the narinfo last.
fn wait_until_stored(registry: &RegistryProcess, path: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !registry.tag_list("mirror/cache").contains(&hash_part(path)) {
        assert!(
            std::time::Instant::now() < deadline,
            "{path} was never stored"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
