//! A mirror whose upstream is hostile: it serves genuine signed narinfos (it can copy any
//! from the real cache) but is free to change what their signature does not cover (`URL`,
//! `FileHash`, `FileSize`) and the files it serves. Each test replays an attack that
//! worked against the release binary before its fix, with a real registry, nginx as the
//! upstream and real Nix.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: helpers outside #[test] panic on purpose"
)]

use oranc_tests::mirror::{download, mirror_config, served_nar_url};
use oranc_tests::nginx::NginxProcess;
use oranc_tests::nix::{copy_from, hash_part, SignedClosure};
use oranc_tests::registry::RegistryProcess;
use oranc_tests::server::ServerProcess;
use oranc_tests::{curl, release_oranc_command};

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

/// Rewrites the narinfo of `path` in the cache at `dir` with `change` (its signature stays:
/// it covers none of what the tests change).
fn rewrite_narinfo(dir: &std::path::Path, path: &str, change: impl FnOnce(String) -> String) {
    let file = narinfo_file(dir, path);
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, change(text)).unwrap();
}

/// Found in review (issue 36, item 2): a NAR file followed by megabytes of padding that its
/// decoder passes over (xz stream padding here; zstd skippable frames alike), with
/// `FileHash`/`FileSize` rewritten to match (they are unsigned), passed the check (the NAR
/// inside is the signed one) and was stored whole, for every client to download. A file is
/// now cut past NarSize + 1% + 1 MiB whatever FileSize says: the client never gets it
/// whole, and neither the mirror nor `oranc push --from` stores anything.
#[test]
fn a_padded_nar_file_is_cut_and_never_stored() {
    let registry = RegistryProcess::start();
    let closure = SignedClosure::build(1_000);
    let upstream = closure.file_cache();
    let honest = narinfo_in(upstream.path(), &closure.root);
    let file = upstream.path().join(&honest.url);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.extend(std::iter::repeat_n(0u8, 4 << 20));
    std::fs::write(&file, &bytes).unwrap();
    let file_hash = oranc_core::Sha256Hash::of(&bytes).to_nix_string();
    rewrite_narinfo(upstream.path(), &closure.root, |text| {
        text.lines()
            .map(|line| {
                if line.starts_with("FileHash: ") {
                    format!("FileHash: {file_hash}")
                } else if line.starts_with("FileSize: ") {
                    format!("FileSize: {}", bytes.len())
                } else {
                    line.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
    });
    let nginx = NginxProcess::serving(upstream.path());
    let server = replica(&mirror_config(
        &registry,
        &nginx.url(""),
        &closure.public_key,
    ));
    let nar_url = served_nar_url(&server, &closure.root);
    let (code, received) = download(&server.url(&format!("mirror/{nar_url}")));
    assert_ne!(code, 0, "the padded file never looks whole");
    assert!(received.len() < bytes.len(), "{} bytes", received.len());
    std::thread::sleep(std::time::Duration::from_millis(500));
    let tags = registry.tag_list("mirror/cache");
    assert!(!tags.contains(&hash_part(&closure.root)), "{tags}");

    let pushed = release_oranc_command()
        .args(oranc_tests::push_args(&registry.host(), "pushed/from"))
        .args([
            "--from",
            &nginx.url(""),
            "--trusted-public-key",
            &closure.public_key,
        ])
        .arg(&closure.root)
        .output()
        .unwrap();
    assert!(!pushed.status.success());
    let said = String::from_utf8_lossy(&pushed.stderr);
    assert!(said.contains("NarSize"), "{said}");
    assert!(!registry
        .tag_list("pushed/from")
        .contains(&hash_part(&closure.root)));
}

/// Found in review (issue 36, items 8 and 9): a validly signed narinfo with a 900 KB
/// `X-Junk:` line was stored and served on every lookup; one malformed `Sig:` line beside a
/// valid one made the narinfo a 502, where Nix accepts it; an upstream URL's credentials
/// were logged whole. Only the fields Nix defines are kept, a bad `Sig:` line is skipped,
/// and upstream URLs are logged without their credentials.
#[test]
fn a_narinfo_is_kept_as_nix_defines_it_and_upstream_credentials_stay_out_of_the_log() {
    let registry = RegistryProcess::start();
    let closure = SignedClosure::build(1_000);
    let upstream = closure.file_cache();
    rewrite_narinfo(upstream.path(), &closure.root, |text| {
        format!(
            "{text}X-Junk: {}\nSig: not-a-signature\n",
            "j".repeat(900_000)
        )
    });
    let nginx = NginxProcess::serving(upstream.path());
    // Credentials in the first upstream's URL, which is down: its failure is logged.
    let config = mirror_config(
        &registry,
        &format!(
            "http://mirror-user:s3cret-token@127.0.0.1:9\", \"{}",
            nginx.url("")
        ),
        &closure.public_key,
    );
    let server = replica(&config);
    let (status, narinfo, _) =
        curl(&[&server.url(&format!("mirror/{}.narinfo", hash_part(&closure.root)))]);
    assert_eq!(status, "200", "{}", &narinfo[..narinfo.len().min(300)]);
    assert!(!narinfo.contains("X-Junk"), "{} bytes", narinfo.len());
    assert!(narinfo.len() < 10_000, "{} bytes", narinfo.len());
    let store = tempfile::tempdir().unwrap();
    let copied = copy_from(
        &server.url("mirror"),
        store.path(),
        &closure.root,
        &closure.public_key,
    );
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    let log = server.log();
    assert!(
        log.contains("upstream lookup failed"),
        "the failure is logged"
    );
    assert!(
        !log.contains("s3cret-token"),
        "an upstream's credentials were logged"
    );
}

/// Found in review (issue 36, "offline"): with upstream gone every narinfo the registry
/// lacked was a 502, and Nix gave up on the build (2.8 even with `fallback = true`). It is
/// now a miss (404, said in a header), so Nix (2.8 and 2.26) builds what the mirror does
/// not have.
#[test]
fn with_upstream_gone_nix_builds_what_the_mirror_lacks() {
    let registry = RegistryProcess::start();
    let closure = SignedClosure::build(1_000);
    let server = replica(&mirror_config(
        &registry,
        "http://127.0.0.1:9",
        &closure.public_key,
    ));
    let (status, _, headers) =
        curl_with_headers(&server.url(&format!("mirror/{}.narinfo", hash_part(&closure.root))));
    assert_eq!(status, "404");
    assert!(
        headers
            .to_lowercase()
            .contains("x-oranc-upstream: unreachable"),
        "{headers}"
    );

    // Nix 2.8 and a newer Nix each build a derivation the mirror does not have.
    for nix in oranc_tests::newer_nix::NixClient::both() {
        let scratch = nix.scratch();
        let expression = scratch.write(
            "offline.nix",
            &format!(
                "derivation {{ name = \"offline-{}\"; system = builtins.currentSystem; builder = \"/bin/sh\"; args = [ \"-c\" \"echo built > $out\" ]; }}",
                oranc_tests::unique_suffix()
            ),
        );
        let built = nix
            .command("nix-build")
            .arg("--no-out-link")
            .arg(&expression)
            .args(["--option", "substituters", &server.url("mirror")])
            .args(["--option", "trusted-public-keys", &closure.public_key])
            .output()
            .unwrap();
        assert!(
            built.status.success(),
            "{}: {}",
            nix.version(),
            String::from_utf8_lossy(&built.stderr)
        );
    }
}

/// Status, body and response headers of a GET of `url`.
fn curl_with_headers(url: &str) -> (String, String, String) {
    let headers = tempfile::NamedTempFile::new().unwrap();
    let (status, body, _) = curl(&["-D", headers.path().to_str().unwrap(), url]);
    (
        status,
        body,
        std::fs::read_to_string(headers.path()).unwrap(),
    )
}

/// Found in review (issue 36, item 7): with two upstreams, when the first served a good
/// narinfo but lacked its NAR file, or sent one that failed its check, the client failed
/// every time, although the second upstream had the very file. The mirror now takes the
/// file from the next upstream whose own signed narinfo describes the same file: at once
/// when the first lacks it, and on the next request when the first one's bytes failed.
#[test]
fn a_nar_the_first_upstream_lacks_or_spoils_comes_from_the_next_with_the_same_file() {
    let registry = RegistryProcess::start();
    let closure = SignedClosure::build(100_000);
    let spoiled = closure.file_cache();
    let good = closure.file_cache();
    let first = NginxProcess::serving(spoiled.path());
    let second = NginxProcess::serving(good.path());
    let (first_url, second_url) = (first.url(""), second.url(""));
    let config = mirror_config(&registry, &first_url, &closure.public_key).replace(
        &format!("upstreams = [\"{first_url}\"]"),
        &format!("upstreams = [\"{first_url}\", \"{second_url}\"]"),
    );
    let server = replica(&config);

    // The first upstream lacks the NAR file of one path of the closure...
    let lacking = closure
        .paths
        .iter()
        .find(|path| **path != closure.root)
        .expect("a closure of several paths")
        .clone();
    std::fs::remove_file(
        spoiled
            .path()
            .join(narinfo_in(spoiled.path(), &lacking).url),
    )
    .unwrap();
    // ... and serves junk of the same length as the root's.
    let root_file = spoiled
        .path()
        .join(narinfo_in(spoiled.path(), &closure.root).url);
    let length = std::fs::metadata(&root_file).unwrap().len();
    std::fs::write(&root_file, vec![b'x'; usize::try_from(length).unwrap()]).unwrap();

    // The spoiled file fails its check on its first fetch (its client gets no whole file),
    // and comes from the second upstream on the next.
    let root_nar = served_nar_url(&server, &closure.root);
    let (code, _) = download(&server.url(&format!("mirror/{root_nar}")));
    assert_ne!(code, 0, "junk cannot pass for the NAR");
    let (code, bytes) = download(&server.url(&format!("mirror/{root_nar}")));
    assert_eq!(code, 0, "the next request for the NAR is served");
    let expected =
        std::fs::read(good.path().join(narinfo_in(good.path(), &closure.root).url)).unwrap();
    assert!(bytes == expected, "the second upstream's file");

    // Nix substitutes the whole closure, the lacking NAR from the second upstream.
    let store = tempfile::tempdir().unwrap();
    let fetched = copy_from(
        &server.url("mirror"),
        store.path(),
        &closure.root,
        &closure.public_key,
    );
    assert!(
        fetched.status.success(),
        "{}",
        String::from_utf8_lossy(&fetched.stderr)
    );
}
