//! TLS and HTTP/2 in the server itself: Nix (2.8 and the newer one) substitutes over
//! https, agreeing on HTTP/2 by ALPN; curl speaks h2 over TLS and h2c with prior knowledge
//! on a plain listener; a renewed certificate is taken without a restart and without
//! dropping open connections; and HTTP/2's own attacks (a CONTINUATION flood, rapid
//! resets, a connection that never finishes its headers) are bounded as HTTP/1.1's are.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: helpers outside #[test] panic on purpose"
)]

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use oranc_tests::h2_frames;
use oranc_tests::newer_nix::NixClient;
use oranc_tests::nix::SignedClosure;
use oranc_tests::registry::RegistryProcess;
use oranc_tests::server::{allow_plain_http, metric_or_zero, ServerProcess};
use oranc_tests::tls::{curl_version, TestCertificate};
use oranc_tests::{fresh_repo, release_oranc_command, run_ok};

/// A server over TLS with `certificate`, with a cache anyone may write, `open`.
fn tls_server(registry: &RegistryProcess, certificate: &TestCertificate) -> ServerProcess {
    let config = format!(
        "{}[caches.open]\nregistry = \"{}\"\nrepository = \"{}\"\nallow_write = true\n{}",
        allow_plain_http(&registry.host()),
        registry.host(),
        fresh_repo("tls"),
        certificate.config(),
    );
    ServerProcess::start_logged(release_oranc_command(), &config, &[])
}

fn https(server: &ServerProcess, path: &str) -> String {
    format!("https://{}/{}", server.addr, path.trim_start_matches('/'))
}

/// `/metrics` over https, trusting `certificate`.
fn metrics(server: &ServerProcess, certificate: &TestCertificate) -> String {
    run_ok(
        std::process::Command::new("curl")
            .args(["-sf", "--cacert"])
            .arg(&certificate.ca)
            .arg(https(server, "metrics")),
    )
}

fn h2_connections(server: &ServerProcess, certificate: &TestCertificate) -> f64 {
    metric_or_zero(
        &metrics(server, certificate),
        "oranc_http_connections_served_total{protocol=\"h2\"}",
    )
}

/// Nix 2.8 uploads a closure over https; each Nix then substitutes it over https, trusting
/// the certificate by `ssl-cert-file`, and speaks HTTP/2 to the server (ALPN).
#[test]
fn nix_substitutes_over_https_and_speaks_http2() {
    let registry = RegistryProcess::start();
    let dir = tempfile::tempdir().unwrap();
    let certificate = TestCertificate::make(dir.path(), "server");
    let server = tls_server(&registry, &certificate);
    let url = https(&server, "open");
    let closure = SignedClosure::build(30_000);
    let cert = certificate.ca.display().to_string();
    // Nix 2.8 trusts a CA by NIX_SSL_CERT_FILE only: it ignores `ssl-cert-file` (measured),
    // which the newer Nix honours.
    let trusting = |client: &NixClient, ca: &str| {
        let mut command = client.command("nix");
        match client {
            NixClient::Machine => command.env("NIX_SSL_CERT_FILE", ca),
            NixClient::Chroot(_) => command.args(["--option", "ssl-cert-file", ca]),
        };
        command
    };
    run_ok(trusting(&NixClient::Machine, &cert).args(["copy", "--to", &url, &closure.root]));
    for client in NixClient::both() {
        let version = client.version();
        let scratch = client.scratch();
        std::fs::copy(&certificate.ca, scratch.host_path("cert.pem")).unwrap();
        let store = scratch.client_path("store");
        let before = h2_connections(&server, &certificate);
        run_ok(
            trusting(&client, &scratch.client_path("cert.pem"))
                .args(["copy", "--from", &url, "--to", &store, &closure.root])
                .args(["--option", "trusted-public-keys", &closure.public_key]),
        );
        let paths =
            run_ok(
                client
                    .command("nix-store")
                    .args(["--store", &store, "-qR", &closure.root]),
            );
        assert_eq!(paths.lines().count(), closure.paths.len(), "{version}");
        let after = h2_connections(&server, &certificate);
        assert!(
            after > before,
            "{version} spoke HTTP/2: {before} -> {after}"
        );
    }
    // curl agrees on either protocol over TLS.
    let cacert = cert.as_str();
    let info = https(&server, "open/nix-cache-info");
    assert_eq!(
        curl_version(&info, &["--cacert", cacert]),
        ("2".into(), "200".into())
    );
    assert_eq!(
        curl_version(&info, &["--cacert", cacert, "--http1.1"]),
        ("1.1".into(), "200".into())
    );
}

/// A plain listener speaks HTTP/1.1, and HTTP/2 to a client that starts with its preface
/// (h2c with prior knowledge, as proxies send it).
#[test]
fn a_plain_listener_speaks_h2c_with_prior_knowledge() {
    let server = ServerProcess::start_logged(release_oranc_command(), "", &[]);
    let url = server.url("healthz");
    assert_eq!(
        curl_version(&url, &["--http2-prior-knowledge"]),
        ("2".into(), "200".into())
    );
    assert_eq!(curl_version(&url, &[]), ("1.1".into(), "200".into()));
    let metrics = server.metrics();
    assert!(
        metric_or_zero(
            &metrics,
            "oranc_http_connections_served_total{protocol=\"h2c\"}"
        ) >= 1.0,
        "{metrics}"
    );
}

/// A client trusting only `certificate`, speaking HTTP/2, keeping its connection.
fn client_trusting(certificate: &TestCertificate) -> reqwest::Client {
    let pem = std::fs::read(&certificate.ca).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

async fn healthz(client: &reqwest::Client, url: &str) -> Result<reqwest::Version, String> {
    let response = client.get(url).send().await.map_err(|e| format!("{e:?}"))?;
    assert!(response.status().is_success());
    Ok(response.version())
}

/// A renewed certificate (files replaced, then SIGHUP; or just replaced) is used for new
/// connections without a restart, and a connection opened before keeps working: the client
/// that trusts only the old certificate is still served, which it could not be on a new
/// connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_taken_without_dropping_connections() {
    let registry = RegistryProcess::start();
    let dir = tempfile::tempdir().unwrap();
    let live = TestCertificate::make(dir.path(), "live");
    let first = TestCertificate::make(dir.path(), "first");
    let renewed = TestCertificate::make(dir.path(), "renewed");
    live.replace_with(&first);
    let server = tokio::task::block_in_place(|| tls_server(&registry, &live));
    let url = https(&server, "healthz");

    let old_client = client_trusting(&first);
    assert_eq!(
        healthz(&old_client, &url).await,
        Ok(reqwest::Version::HTTP_2)
    );
    live.replace_with(&renewed);
    oranc_tests::send_signal(server.pid(), "-HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        healthz(&client_trusting(&first), &url).await.is_err(),
        "a new connection gets the renewed certificate"
    );
    assert_eq!(
        healthz(&client_trusting(&renewed), &url).await,
        Ok(reqwest::Version::HTTP_2)
    );
    assert_eq!(
        healthz(&old_client, &url).await,
        Ok(reqwest::Version::HTTP_2),
        "the connection opened before the renewal is still served"
    );

    // Without a signal: the files' change is noticed within seconds.
    live.replace_with(&first);
    let deadline = Instant::now() + Duration::from_secs(15);
    while healthz(&client_trusting(&first), &url).await.is_err() {
        assert!(Instant::now() < deadline, "{}", server.log());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // A broken renewal keeps the certificate in use.
    std::fs::write(&live.cert, "not a certificate").unwrap();
    oranc_tests::send_signal(server.pid(), "-HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(healthz(&client_trusting(&first), &url).await.is_ok());
    assert!(server.log().contains("TLS certificate not reloaded"));
}

/// The frames `server` answers `frames` with (after the client's opening) within 2 s.
fn answer_to(server: std::net::SocketAddr, frames: &[u8]) -> Vec<(u8, u8, u32)> {
    let mut stream = TcpStream::connect(server).unwrap();
    stream.write_all(&h2_frames::opening()).unwrap();
    stream.write_all(frames).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut answer = Vec::new();
    let started = Instant::now();
    let mut chunk = [0u8; 4096];
    while started.elapsed() < Duration::from_secs(2) {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(_) => {}
        }
        if h2_frames::parse(&answer)
            .iter()
            .any(|(kind, _, stream)| *kind == h2_frames::HEADERS_FRAME && *stream == 1)
        {
            break;
        }
    }
    h2_frames::parse(&answer)
}

/// The hand-written frames the attacks below use make a request the server answers: the
/// attacks are cut off for what they are, not for a malformed frame.
#[test]
fn the_attacks_frames_are_a_valid_request() {
    let server = ServerProcess::start_logged(release_oranc_command(), "", &[]);
    let block = h2_frames::get_block(&server.addr.to_string(), "/healthz");
    let frames = answer_to(server.addr, &h2_frames::request(1, &block));
    assert!(
        frames
            .iter()
            .any(|(kind, _, stream)| *kind == h2_frames::HEADERS_FRAME && *stream == 1),
        "{frames:?}"
    );
    assert!(!frames
        .iter()
        .any(|(kind, _, _)| *kind == h2_frames::GOAWAY_FRAME));
    // A header block split over HEADERS and a CONTINUATION that ends it.
    let mut split = h2_frames::unended_headers(1, &block);
    split.extend(h2_frames::frame(0x9, 0x4, 1, &[]));
    let frames = answer_to(server.addr, &split);
    assert!(
        frames
            .iter()
            .any(|(kind, _, stream)| *kind == h2_frames::HEADERS_FRAME && *stream == 1),
        "{frames:?}"
    );
}

/// A header block continued for ever (CVE-2024-27316's class): the server stops reading it
/// once it passes its header-list limit, instead of holding every byte.
#[test]
fn a_continuation_flood_is_cut_off() {
    let server = ServerProcess::start_logged(release_oranc_command(), "", &[]);
    let authority = server.addr.to_string();
    let block = h2_frames::get_block(&authority, "/healthz");
    let limit = 64 << 20;
    let sent = h2_frames::flood_until_closed(
        TcpStream::connect(server.addr).unwrap(),
        h2_frames::endless_header_block(&block),
        limit,
    );
    eprintln!("a CONTINUATION flood: the server closed the connection after {sent} bytes");
    assert!(
        sent < 4 << 20,
        "the server took {sent} bytes of one header block"
    );
    let peak = server.peak_memory().unwrap();
    let kb: u64 = peak.trim_end_matches(" kB").parse().unwrap();
    assert!(kb < 64 << 10, "peak memory {peak}");
    assert_eq!(
        curl_version(&server.url("healthz"), &["--http2-prior-knowledge"]),
        ("2".into(), "200".into())
    );
}

/// Streams opened and reset at once, many thousands (CVE-2023-44487, "rapid reset"): the
/// server's memory stays bounded, another client is served meanwhile, and the resets cost
/// the attacker its connection.
#[test]
fn rapid_resets_are_bounded() {
    let server = ServerProcess::start_logged(release_oranc_command(), "", &[]);
    let authority = server.addr.to_string();
    let block = h2_frames::get_block(&authority, "/healthz");
    let block_len = block.len();
    let limit = 64 << 20;
    let addr = server.addr;
    let attack = std::thread::spawn(move || {
        h2_frames::flood_until_closed(
            TcpStream::connect(addr).unwrap(),
            h2_frames::rapid_resets(&block),
            limit,
        )
    });
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    while !attack.is_finished() && started.elapsed() < Duration::from_secs(20) {
        let asked = Instant::now();
        let (_, status) = curl_version(&server.url("healthz"), &["--http2-prior-knowledge"]);
        assert_eq!(status, "200");
        slowest = slowest.max(asked.elapsed());
        std::thread::sleep(Duration::from_millis(50));
    }
    let sent = attack.join().unwrap();
    eprintln!(
        "rapid resets: the connection closed after {sent} bytes ({} streams); slowest legitimate request {slowest:?}",
        sent / (18 + 13 + block_len)
    );
    assert!(
        sent < limit,
        "the attacker's connection was never closed ({sent} bytes of resets)"
    );
    assert!(
        slowest < Duration::from_secs(2),
        "a legitimate request took {slowest:?}"
    );
    let peak = server.peak_memory().unwrap();
    let kb: u64 = peak.trim_end_matches(" kB").parse().unwrap();
    assert!(kb < 64 << 10, "peak memory {peak}");
}

/// An HTTP/2 connection that opens a request and never finishes its headers, or that sits
/// with nothing open, is closed after the header timeout, as on HTTP/1.1.
#[test]
fn an_idle_or_half_sent_http2_connection_is_closed() {
    let server = ServerProcess::start_logged(
        release_oranc_command(),
        "[clients]\nheader_read_timeout_secs = 2\n",
        &[],
    );
    let authority = server.addr.to_string();
    let block = h2_frames::get_block(&authority, "/healthz");
    for (what, first) in [
        ("idle", Vec::new()),
        ("half-sent headers", h2_frames::unended_headers(1, &block)),
    ] {
        let mut stream = TcpStream::connect(server.addr).unwrap();
        stream.write_all(&h2_frames::opening()).unwrap();
        stream.write_all(&first).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let started = Instant::now();
        let mut sink = [0u8; 4096];
        loop {
            match stream.read(&mut sink) {
                Ok(0) => break,
                Ok(_) => {}
                Err(error) => panic!("{what}: still open after {:?}: {error}", started.elapsed()),
            }
        }
        assert!(started.elapsed() < Duration::from_secs(8), "{what}");
    }
}

/// One client opening 4 HTTP/2 connections of 100 streams each, every one a GET of a
/// 16 MiB NAR, with the largest windows and reading nothing: before the cap on a client's
/// open requests it held 400 NAR answers open (as many registry downloads; b8ac695: none
/// refused) where HTTP/1.1 allows it one per connection. Now the client gets
/// `max_requests_per_client` and 429 for the rest, the server's memory stays small, and
/// another client is served meanwhile.
#[test]
fn unread_http2_streams_of_nars_are_bounded_per_client() {
    let registry = RegistryProcess::start();
    let closure = SignedClosure::build(16 << 20);
    let repo = fresh_repo("h2-unread");
    let pushed = oranc_tests::push_closure(
        oranc_tests::oranc_command(),
        &registry.host(),
        &repo,
        &closure,
    );
    assert!(pushed.status.success(), "{pushed:?}");
    let server = ServerProcess::start_logged(
        release_oranc_command(),
        &format!(
            "{}[clients]\nmax_requests_per_client = 64\n",
            allow_plain_http(&registry.host())
        ),
        &[],
    );
    let cache = format!("{}/{repo}", registry.host());
    let narinfo = run_ok(std::process::Command::new("curl").args([
        "-sf",
        &server.url(&format!(
            "{cache}/{}",
            oranc_tests::nix::narinfo_key(&closure.root)
        )),
    ]));
    let nar_url = oranc_core::NarInfo::parse(&narinfo).unwrap().url;
    let block = h2_frames::get_block(&server.addr.to_string(), &format!("/{cache}/{nar_url}"));
    let held: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut stream = TcpStream::connect(server.addr).unwrap();
            stream
                .write_all(&h2_frames::opening_with_open_windows())
                .unwrap();
            for n in 0..100 {
                stream
                    .write_all(&h2_frames::request(1 + 2 * n, &block))
                    .unwrap();
            }
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_secs(5));
    let (version, status) = curl_version(&server.url("healthz"), &["--http2-prior-knowledge"]);
    assert_eq!((version.as_str(), status.as_str()), ("2", "200"));
    let metrics = server.metrics();
    let refused = metric_or_zero(&metrics, "oranc_http_requests_over_client_cap_total");
    let peak = server.peak_memory().unwrap();
    let kb: u64 = peak.trim_end_matches(" kB").parse().unwrap();
    eprintln!("400 unread NAR streams: {refused} answered 429, peak memory {peak}");
    assert!(refused >= 300.0, "{refused} over the cap:\n{metrics}");
    assert!(kb < 150 << 10, "peak memory {peak}");
    drop(held);
}
