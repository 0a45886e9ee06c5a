//! A registry that lies, loops or trickles: a proxy in front of a real `distribution`
//! injects each hostile answer, and the release binary (server, gc) must answer with a
//! clear error in bounded time and memory, never serve or keep bad bytes, and never send
//! anything to a host the registry points at. Each failed before its fix.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: helpers outside #[test] panic on purpose"
)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use oranc_core::TagEncoding;
use oranc_tests::abuse::{narinfo_of, peak_rss_mb};
use oranc_tests::hostile::{HostileRegistry, Hostility, Trap};
use oranc_tests::oci::RawRegistry;
use oranc_tests::registry::RegistryProcess;
use oranc_tests::server::{allow_plain_http, metric, ServerProcess};
use oranc_tests::{curl, fresh_repo, release_oranc_command, wrapped_release_command};

const HASH: &str = "55555555555555555555555555555555";
const NAR: &str = "nar/hostile.nar";

/// A real registry holding a narinfo and a NAR, behind a proxy that injects `hostility`.
async fn hostile(hostility: Hostility) -> (RegistryProcess, HostileRegistry, String) {
    let registry = RegistryProcess::start();
    let raw = RawRegistry::new(&registry.base_url());
    let repo = fresh_repo("hostile");
    let key = format!("{HASH}.narinfo");
    raw.put_object(
        &repo,
        &key,
        &key,
        "text/x-nix-narinfo",
        Bytes::from(narinfo_of(HASH)),
    )
    .await;
    let nar_tag = TagEncoding::Custom.encode(NAR).unwrap();
    raw.put_object(
        &repo,
        nar_tag.as_str(),
        NAR,
        "application/x-nix-nar",
        Bytes::from(vec![7u8; 300_000]),
    )
    .await;
    let proxy = HostileRegistry::in_front_of(&registry.base_url(), hostility).await;
    (registry, proxy, repo)
}

/// A server for the registry behind `proxy`: `top` is top-level config, `registry` more of
/// the registry's own entry.
fn server_for(proxy: &HostileRegistry, top: &str, registry: &str) -> ServerProcess {
    let config = format!("{top}{}{registry}", allow_plain_http(&proxy.host()));
    ServerProcess::start_logged(release_oranc_command(), &config, &[])
}

/// `oranc gc` (a dry run) against `repo` behind `proxy`, stopped after 60 s at most.
fn gc(proxy: &HostileRegistry, repo: &str) -> (bool, String, Duration) {
    let started = Instant::now();
    // Bounded even where gc would hang (as it did on a looping listing).
    let out = wrapped_release_command(&["timeout", "60"])
        .args([
            "gc",
            "--no-ssl",
            "--registry",
            &proxy.host(),
            "--repository",
            repo,
        ])
        .args(["--keep-newer-than", "1d"])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        started.elapsed(),
    )
}

/// An endless manifest body took the server to 3–4 GB from one anonymous narinfo GET.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_manifest_is_refused_in_bounded_memory() {
    let (_registry, proxy, repo) = hostile(Hostility::EndlessManifest).await;
    let server = tokio::task::block_in_place(|| server_for(&proxy, "", ""));
    let started = Instant::now();
    let (status, body, _) = tokio::task::block_in_place(|| {
        curl(&[&server.url(&format!("{}/{repo}/{HASH}.narinfo", proxy.host()))])
    });
    assert_eq!(status, "502", "{body}");
    assert!(body.contains("larger than"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(peak_rss_mb(&server) < 150.0, "{} MB", peak_rss_mb(&server));
}

/// A tag list linking to itself held gc (and push, watch-store) for ever; an endless one
/// took it to 4 GB; a next page on another host got the credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_listings_that_loop_never_end_or_leave_are_refused() {
    let trap = Trap::start().await;
    for (hostility, says) in [
        (Hostility::LoopingTagList, "does not advance"),
        (Hostility::EndlessTagList, "larger than"),
        (
            Hostility::ForeignTagLink(trap.url("/v2/x/tags/list")),
            "another origin",
        ),
    ] {
        let (_registry, proxy, repo) = hostile(hostility).await;
        let (ok, stderr, took) = tokio::task::block_in_place(|| gc(&proxy, &repo));
        assert!(!ok, "{stderr}");
        assert!(stderr.contains(says), "{says}: {stderr}");
        assert!(took < Duration::from_secs(30), "{took:?}");
    }
    assert_eq!(trap.hits(), 0);
}

/// A blob sent one byte at a time kept a NAR "streaming" past the read timeout (each byte
/// came in time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_blob_times_out() {
    let (_registry, proxy, repo) = hostile(Hostility::TrickledBlob).await;
    let server = tokio::task::block_in_place(|| server_for(&proxy, "read_timeout_secs = 2\n", ""));
    let started = Instant::now();
    let (_, body, code) = tokio::task::block_in_place(|| {
        curl(&[&server.url(&format!("{}/{repo}/{NAR}", proxy.host()))])
    });
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert_ne!(code, 0, "the answer was cut short: {} bytes", body.len());
    assert!(server.log().contains("timed out"), "{}", server.log());
}

/// A NAR with one byte flipped was served with 200, its claimed digest as ETag and a year
/// of `immutable`: any cache in front would have kept it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_that_do_not_match_their_digest_are_never_served_whole() {
    let (_registry, proxy, repo) = hostile(Hostility::FlippedBlob).await;
    let server = tokio::task::block_in_place(|| server_for(&proxy, "", ""));
    let cache = server.url(&format!("{}/{repo}", proxy.host()));
    let (_, body, code) = tokio::task::block_in_place(|| curl(&[&format!("{cache}/{NAR}")]));
    assert_ne!(code, 0, "curl saw the answer cut short");
    assert!(body.len() < 300_000, "{} bytes", body.len());
    let (status, body, _) =
        tokio::task::block_in_place(|| curl(&[&format!("{cache}/{HASH}.narinfo")]));
    assert_eq!(
        status, "502",
        "a small file is checked before it is served: {body}"
    );
    let metrics = tokio::task::block_in_place(|| server.metrics());
    assert_eq!(metric(&metrics, "oranc_blob_digest_mismatches_total"), 1.0);
}

/// The server followed a blob redirect to any host and streamed its answer: an internal-URL
/// reader for whoever controls a listed registry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_redirects_lead_only_where_the_config_allows() {
    let trap = Trap::start().await;
    let (_registry, proxy, repo) = hostile(Hostility::RedirectedBlob(trap.url("/internal"))).await;
    let url = format!("{}/{repo}/{NAR}", proxy.host());
    let server = tokio::task::block_in_place(|| server_for(&proxy, "", ""));
    let (status, body, _) = tokio::task::block_in_place(|| curl(&[&server.url(&url)]));
    assert_eq!(status, "502", "{body}");
    assert!(body.contains("blob_origins"), "{body}");
    assert_eq!(trap.hits(), 0);
    let allowed = format!("blob_origins = [\"{}\"]\n", trap.url(""));
    let server = tokio::task::block_in_place(|| server_for(&proxy, "", &allowed));
    let (status, _, _) = tokio::task::block_in_place(|| curl(&[&server.url(&url)]));
    assert_ne!(status, "502", "a listed origin is followed");
    assert_eq!(trap.hits(), 1);
}

/// A path's narinfo (`hash`), naming `nar/{name}.nar` and referencing `references`, stored
/// with its NAR in `repo`; returns the narinfo's tag.
async fn store_path(raw: &RawRegistry, repo: &str, hash: &str, references: &[&str]) -> String {
    let name = &hash[..4];
    let references: Vec<String> = references.iter().map(|r| format!("{r}-x")).collect();
    let narinfo = format!(
        "StorePath: /nix/store/{hash}-x\nURL: nar/{name}.nar\nCompression: none\nNarHash: sha256:1111111111111111111111111111111111111111111111111111\nNarSize: 1\nReferences: {}\n",
        references.join(" ")
    );
    let key = format!("{hash}.narinfo");
    let tag = TagEncoding::Custom.encode(&key).unwrap();
    raw.put_object(
        repo,
        tag.as_str(),
        &key,
        "text/x-nix-narinfo",
        Bytes::from(narinfo),
    )
    .await;
    let nar = format!("nar/{name}.nar");
    let nar_tag = TagEncoding::Custom.encode(&nar).unwrap();
    raw.put_object(
        repo,
        nar_tag.as_str(),
        &nar,
        "application/x-nix-nar",
        Bytes::from(name.as_bytes().to_vec()),
    )
    .await;
    tag.as_str().to_owned()
}

/// `oranc gc --grace 0 --delete` with `policy` against `repo` behind `proxy` (at most
/// 60 s); its standard error, once it succeeded.
fn deleting_gc(proxy: &HostileRegistry, repo: &str, policy: &[&str]) -> String {
    let out = tokio::task::block_in_place(|| {
        wrapped_release_command(&["timeout", "60"])
            .args(["gc", "--no-ssl", "--registry", &proxy.host()])
            .args(["--repository", repo, "--grace", "0", "--delete"])
            .args(policy)
            .output()
            .unwrap()
    });
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    stderr
}

/// Asserts which keys `repo` still holds, asking the registry directly.
async fn assert_kept<const N: usize>(
    raw: &RawRegistry,
    repo: &str,
    said: &str,
    expected: [(String, bool); N],
) {
    for (key, kept) in expected {
        let tag = TagEncoding::Custom.encode(&key).unwrap();
        let present = raw.get_manifest(repo, tag.as_str()).await.is_some();
        assert_eq!(present, kept, "{key}: {said}");
    }
}

/// With a tag listing that left out narinfos (a root and one it references), `gc --grace 0
/// --delete` deleted the NARs they name: narinfos without NARs. gc now asks for what the
/// kept closure needs by tag before trusting the listing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_asks_for_the_narinfos_a_listing_leaves_out() {
    const ROOT: &str = "rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr";
    const DEPENDENCY: &str = "dddddddddddddddddddddddddddddddd";
    const UNKEPT: &str = "wwwwwwwwwwwwwwwwwwwwwwwwwwwwwwww";
    let registry = RegistryProcess::start();
    let raw = RawRegistry::new(&registry.base_url());
    let repo = fresh_repo("hidden");
    let hidden = vec![
        store_path(&raw, &repo, ROOT, &[DEPENDENCY]).await,
        store_path(&raw, &repo, DEPENDENCY, &[]).await,
    ];
    store_path(&raw, &repo, UNKEPT, &[]).await;
    let proxy =
        HostileRegistry::in_front_of(&registry.base_url(), Hostility::HiddenTags(hidden)).await;
    let stderr = deleting_gc(
        &proxy,
        &repo,
        &["--keep-closure-of", &format!("/nix/store/{ROOT}-x")],
    );
    assert!(stderr.contains("left out"), "{stderr}");
    assert_kept(
        &raw,
        &repo,
        &stderr,
        [
            (format!("{ROOT}.narinfo"), true),
            ("nar/rrrr.nar".to_owned(), true),
            (format!("{DEPENDENCY}.narinfo"), true),
            ("nar/dddd.nar".to_owned(), true),
            (format!("{UNKEPT}.narinfo"), false),
            ("nar/wwww.nar".to_owned(), false),
        ],
    )
    .await;
}

/// With `--remove` (nothing to keep asked for) gc deleted the NAR of a narinfo the
/// listing left out: every file no listed narinfo named counted as garbage. Removing paths
/// now deletes their files only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_path_never_deletes_files_of_narinfos_the_listing_left_out() {
    const REMOVED: &str = "rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr";
    const HIDDEN: &str = "dddddddddddddddddddddddddddddddd";
    let registry = RegistryProcess::start();
    let raw = RawRegistry::new(&registry.base_url());
    let repo = fresh_repo("hidden-remove");
    store_path(&raw, &repo, REMOVED, &[]).await;
    let hidden = vec![store_path(&raw, &repo, HIDDEN, &[]).await];
    let proxy =
        HostileRegistry::in_front_of(&registry.base_url(), Hostility::HiddenTags(hidden)).await;
    let stderr = deleting_gc(
        &proxy,
        &repo,
        &["--remove", &format!("/nix/store/{REMOVED}-x")],
    );
    assert_kept(
        &raw,
        &repo,
        &stderr,
        [
            (format!("{REMOVED}.narinfo"), false),
            ("nar/rrrr.nar".to_owned(), false),
            (format!("{HIDDEN}.narinfo"), true),
            ("nar/dddd.nar".to_owned(), true),
        ],
    )
    .await;
}

/// Found by the red team (#39's review): a second narinfo for a kept path, under its
/// base32-dnssec tag or under a forged long-key tag, naming another path's NAR. gc followed
/// whichever it read last: 4 of 6 runs deleted the NAR of the narinfo clients are served,
/// leaving it without its NAR. Now a long-key tag counts only where a reader looks for it,
/// and every narinfo of a kept path keeps what it names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_narinfos_of_a_kept_path_never_cost_it_its_nar() {
    const KEPT: &str = "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk";
    const GARBAGE: &str = "mmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmm";
    let registry = RegistryProcess::start();
    let raw = RawRegistry::new(&registry.base_url());
    let repo = fresh_repo("two-narinfos");
    store_path(&raw, &repo, KEPT, &[]).await;
    store_path(&raw, &repo, GARBAGE, &[]).await;
    let key = format!("{KEPT}.narinfo");
    let other = format!(
        "StorePath: /nix/store/{KEPT}-x\nURL: nar/mmmm.nar\nCompression: none\nNarHash: sha256:1111111111111111111111111111111111111111111111111111\nNarSize: 1\nReferences: \n"
    );
    for tag in [
        TagEncoding::Base32Dnssec.encode(&key).unwrap(),
        oranc_core::tag::long_key_tag(&key),
    ] {
        raw.put_object(
            &repo,
            tag.as_str(),
            &key,
            "text/x-nix-narinfo",
            Bytes::from(other.clone()),
        )
        .await;
    }
    let proxy =
        HostileRegistry::in_front_of(&registry.base_url(), Hostility::HiddenTags(Vec::new())).await;
    for _ in 0..3 {
        let stderr = deleting_gc(
            &proxy,
            &repo,
            &["--keep-closure-of", &format!("/nix/store/{KEPT}-x")],
        );
        assert_kept(
            &raw,
            &repo,
            &stderr,
            [
                (key.clone(), true),
                ("nar/kkkk.nar".to_owned(), true),
                (format!("{GARBAGE}.narinfo"), false),
            ],
        )
        .await;
    }
}
