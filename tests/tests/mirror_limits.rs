//! A mirror's work is bounded however clients ask and however slowly upstream answers:
//! NAR copies that outlive their clients, and the fetch slots of listings and logs. The
//! upstream is nginx with `limit_rate`, a slow upstream made of real parts.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oranc_tests::mirror::signed_random_cache;
use oranc_tests::nginx::NginxProcess;
use oranc_tests::nix::{add_random_path, generate_key, hash_part, nix_command};
use oranc_tests::registry::RegistryProcess;
use oranc_tests::server::{allow_plain_http, metric, ServerProcess};
use oranc_tests::{curl, release_oranc_command, run_ok, unique_suffix};

fn mirror_server(registry: &RegistryProcess, upstream: &str, key: &str) -> ServerProcess {
    ServerProcess::start_binary(
        release_oranc_command(),
        &format!(
            "{}[caches.mirror]\nregistry = \"{}\"\nrepository = \"mirror/limits\"\nupstreams = [\"{upstream}\"]\nupstream_public_keys = [\"{key}\"]\n",
            allow_plain_http(&registry.host()),
            registry.host()
        ),
        &[],
    )
}

/// nginx serving `dir`, the files under `slow` at `rate` bytes per second.
fn slow_nginx(dir: &std::path::Path, slow: &str, rate: &str) -> NginxProcess {
    NginxProcess::start(&format!(
        "server {{ listen {{listen}}; root {}; location /{slow}/ {{ limit_rate {rate}; }} }}",
        dir.display()
    ))
}

/// `curl` of each URL at once, each giving up after `seconds` (then leaving).
fn impatient_clients(urls: &[String], seconds: &str) {
    let clients: Vec<_> = urls
        .iter()
        .map(|url| {
            Command::new("curl")
                .args(["-s", "-o", "/dev/null", "--max-time", seconds, url])
                .stdout(Stdio::null())
                .spawn()
                .expect("curl")
        })
        .collect();
    for mut client in clients {
        let _ = client.wait();
    }
}

/// Found by the red team (2026-12-04): every NAR request started a copy into the registry
/// that outlived its client, with no bound: 512 requests for slow NARs took every blocking
/// thread of the server. Past 16 copies, a NAR now streams to its client alone.
#[test]
fn nar_copies_that_outlive_their_clients_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let nonce = unique_suffix();
    let (secret, public_key) = generate_key(dir.path(), &format!("limits-{nonce}"));
    let paths: Vec<String> = (0..20)
        .map(|i| add_random_path(dir.path(), &format!("slow-{nonce}-{i}"), 64 << 10))
        .collect();
    run_ok(
        nix_command("nix")
            .args(["store", "sign", "-k"])
            .arg(&secret)
            .args(&paths),
    );
    let cache = dir.path().join("upstream");
    run_ok(
        nix_command("nix")
            .args([
                "copy",
                "--to",
                &format!("file://{}?compression=zstd", cache.display()),
            ])
            .args(&paths),
    );
    // 64 KiB at 1 KiB/s: each copy lasts about a minute.
    let nginx = slow_nginx(&cache, "nar", "1k");
    let registry = RegistryProcess::start();
    let server = mirror_server(&registry, &nginx.url(""), &public_key);
    let nar_urls: Vec<String> = paths
        .iter()
        .map(|path| {
            let (status, narinfo, _) =
                curl(&[&server.url(&format!("mirror/{}.narinfo", hash_part(path)))]);
            assert_eq!(status, "200", "{narinfo}");
            let url = oranc_core::NarInfo::parse(&narinfo).unwrap().url;
            server.url(&format!("mirror/{url}"))
        })
        .collect();
    impatient_clients(&nar_urls, "2");
    let unstored = metric(
        &server.metrics(),
        "oranc_mirror_upstream_lookups_total{cache=\"mirror\",kind=\"nar\",outcome=\"unstored\"}",
    );
    assert!(unstored >= 4.0, "{}", server.metrics());
}

/// Found by the red team (2026-12-04): four build logs trickling from upstream held every
/// fetch slot of the mirror, and an honest listing waited until the server's response
/// timeout; then (second pass) clients that asked for many files and left queued fetches
/// ahead of it. A fetch now ends within 30 s, and a wait for a slot ends with its client.
#[test]
fn slow_logs_upstream_do_not_keep_listings_from_being_served() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("upstream");
    std::fs::create_dir_all(cache.join("log")).unwrap();
    let hash = "0000000000000000000000000000000a";
    let logs: Vec<String> = (0..44)
        .map(|i| {
            let key = format!("log/{hash}-slow-{i}.drv");
            std::fs::write(cache.join(&key), "building\n".repeat(100)).unwrap();
            key
        })
        .collect();
    let listing_key = format!("{hash}.ls");
    std::fs::write(
        cache.join(&listing_key),
        r#"{"version":1,"root":{"type":"regular","size":1}}"#,
    )
    .unwrap();
    // A byte a second: each log would take a quarter of an hour.
    let nginx = slow_nginx(&cache, "log", "1");
    let registry = RegistryProcess::start();
    let (_, public_key) = generate_key(dir.path(), "limits");
    let server = mirror_server(&registry, &nginx.url(""), &public_key);
    let log_urls: Vec<String> = logs
        .iter()
        .map(|key| server.url(&format!("mirror/{key}")))
        .collect();
    // Four clients that stay: the fetches they started must end on their own.
    let stayers = log_urls[..4].to_vec();
    let slow_clients = std::thread::spawn(move || impatient_clients(&stayers, "100"));
    std::thread::sleep(Duration::from_secs(1));
    // Forty that leave at once (the second pass of the red team): their waits must leave
    // with them, not queue fetches ahead of everyone else's.
    impatient_clients(&log_urls[4..], "1");
    let started = Instant::now();
    // Served once the slow fetches hit their 30 s deadline; before, only when upstream's
    // read timeout (60 s between bytes) or the server's response timeout ended them.
    let (status, listing, _) = curl(&[
        "--max-time",
        "45",
        &server.url(&format!("mirror/{listing_key}")),
    ]);
    assert_eq!(status, "200", "after {:?}: {listing}", started.elapsed());
    assert!(listing.contains("\"root\""), "{listing}");
    slow_clients.join().unwrap();
}

/// Found in review (issue 36, item 5): an upstream sending one byte a second kept a NAR
/// copy going (and its slot taken) for as long as it liked, and a narinfo sent that way held
/// its request for 90 s: each byte came within the read timeout. Upstream files now keep a
/// minimum pace over each `read_timeout_secs` window (a narinfo comes whole within it, and
/// within 15 s at most), as registry reads already did.
#[test]
fn an_upstream_trickling_a_byte_a_second_is_let_go_within_the_read_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (paths, public_key, cache) = signed_random_cache(dir.path(), "trickle", &[64 << 10; 2]);
    let (trickled_narinfo, trickled_nar) = (&paths[0], &paths[1]);
    let nar_file = {
        let text =
            std::fs::read_to_string(cache.join(format!("{}.narinfo", hash_part(trickled_nar))))
                .unwrap();
        oranc_core::NarInfo::parse(&text).unwrap().url
    };
    let nginx = NginxProcess::start(&format!(
        "server {{ listen {{listen}}; root {root}; location = /{narinfo}.narinfo {{ {trickle} }} location = /{nar_file} {{ {trickle} }} }}",
        root = cache.display(),
        narinfo = hash_part(trickled_narinfo),
        // The status line, headers and a few bytes at once, then a byte a second (nginx
        // counts its headers against the rate, and holds small writes back by default).
        trickle = "limit_rate 1; limit_rate_after 300; postpone_output 0; sendfile off;",
    ));
    let registry = RegistryProcess::start();
    let config = format!(
        "read_timeout_secs = 2\n{}",
        oranc_tests::mirror::mirror_config(&registry, &nginx.url(""), &public_key)
    );
    let server = ServerProcess::start_binary(release_oranc_command(), &config, &[]);

    // The narinfo: a few hundred bytes, which at a byte a second took minutes.
    let started = Instant::now();
    let (status, body, _) = curl(&[
        "--max-time",
        "40",
        &server.url(&format!("mirror/{}.narinfo", hash_part(trickled_narinfo))),
    ]);
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(15),
        "a trickled narinfo held its client {waited:?} (status {status})"
    );
    assert_ne!(status, "200", "{body}");

    // The NAR: its narinfo comes at once; its 64 KiB would take 18 hours.
    let nar_url = oranc_tests::mirror::served_nar_url(&server, trickled_nar);
    let started = Instant::now();
    let (status, _, code) = curl(&[
        "--max-time",
        "40",
        &server.url(&format!("mirror/{nar_url}")),
    ]);
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(15),
        "a trickled NAR held its client {waited:?} (status {status}, curl {code})"
    );
    assert!(
        status != "200" || code != 0,
        "a trickled NAR cannot have come whole"
    );
}

/// Found in review (issue 36, item 4): requests for cold NARs, each left right after the
/// status line (1 KB of requests), made the mirror fetch and store 192 MiB: a copy outlives
/// its client, and nothing bounded what one address could start. `[mirror]
/// store_bytes_per_client_per_hour` now does; past it the client still gets its NARs,
/// streamed to it alone and not stored.
#[test]
fn what_one_address_can_have_a_mirror_store_is_bounded_per_hour() {
    let dir = tempfile::tempdir().unwrap();
    let (paths, public_key, cache) = signed_random_cache(dir.path(), "allowance", &[300 << 10; 12]);
    let nginx = NginxProcess::serving(&cache);
    let registry = RegistryProcess::start();
    // 1 MiB an hour: three of these NARs (about 300 KiB each).
    let config = format!(
        "{}[mirror]\nstore_bytes_per_client_per_hour = 1048576\n",
        oranc_tests::mirror::mirror_config(&registry, &nginx.url(""), &public_key)
    );
    let server = ServerProcess::start_binary(release_oranc_command(), &config, &[]);
    let nar_urls: Vec<String> = paths
        .iter()
        .map(|path| {
            let url = oranc_tests::mirror::served_nar_url(&server, path);
            server.url(&format!("mirror/{url}"))
        })
        .collect();

    // One after another (each copy's slot free again), each client gone at once.
    for url in &nar_urls[..10] {
        let _ = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "--max-time", "0.05", url])
            .status();
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_secs(2));
    let metrics = server.metrics();
    let stored = oranc_tests::server::metric_or_zero(
        &metrics,
        "oranc_mirror_stored_bytes_total{cache=\"mirror\"}",
    );
    assert!(
        stored <= f64::from(1 << 20),
        "{stored} bytes stored for clients that left at once"
    );
    assert!(
        metric(
            &metrics,
            "oranc_mirror_upstream_lookups_total{cache=\"mirror\",kind=\"nar\",outcome=\"over_allowance\"}"
        ) >= 1.0,
        "{metrics}"
    );

    // Past its allowance the client still gets its NAR whole.
    let (code, bytes) = oranc_tests::mirror::download(&nar_urls[11]);
    assert_eq!(code, 0);
    assert!(bytes.len() > 300 << 10, "{} bytes", bytes.len());
}

/// Found in review (issue 36, item 3): one address opened 80 connections with a tiny
/// receive buffer, asked for cold NARs and read nothing. After 30 s the requests waiting
/// on one NAR's fetch each fetched it again (one NAR came from upstream 65 times), a cold
/// NAR of another client got 503, and the server grew to 589 MB. Requests for a NAR being
/// fetched into the spool are now served from the spool as it grows, never by another
/// download, and the address's share leaves the rest to others.
#[test]
fn requests_holding_a_cold_nar_share_its_one_fetch_and_leave_the_rest_to_others() {
    let dir = tempfile::tempdir().unwrap();
    let mut sizes = vec![4 << 20];
    sizes.extend([64 << 10; 9]);
    let (paths, public_key, cache) = signed_random_cache(dir.path(), "held", &sizes);
    let (held, others) = paths.split_first().unwrap();
    // The held NAR takes about 40 s at upstream's pace, past the 30 s after which waiting
    // requests used to fetch it themselves; the attacker's other NARs take a while too.
    let nginx = NginxProcess::start(&format!(
        "server {{ listen {{listen}}; root {}; location /nar/ {{ limit_rate 100k; }} }}",
        cache.display()
    ));
    let registry = RegistryProcess::start();
    let config = oranc_tests::mirror::mirror_config(&registry, &nginx.url(""), &public_key);
    let server = ServerProcess::start_binary(release_oranc_command(), &config, &[]);
    let nar_url = |path: &str| oranc_tests::mirror::served_nar_url(&server, path);
    let held_url = nar_url(held);
    let (attacked, legit) = others.split_at(8);
    let attacked_urls: Vec<String> = attacked.iter().map(|path| nar_url(path)).collect();
    let legit_url = nar_url(&legit[0]);

    let held_paths = std::iter::repeat_n(held_url, 40).chain(attacked_urls);
    let _held = oranc_tests::abuse::unread_requests(
        server.addr,
        held_paths.map(|url| format!("/mirror/{url}")),
    );
    std::thread::sleep(Duration::from_secs(35));
    let fetched = metric(
        &server.metrics(),
        "oranc_mirror_upstream_lookups_total{cache=\"mirror\",kind=\"nar\",outcome=\"hit\"}",
    );
    // Each of the 8 other NARs once, the held one at most twice.
    assert!(fetched <= 10.0, "{fetched} NAR fetches from upstream");

    // Another client's cold NAR (64 KiB at upstream's pace: under a second).
    let (code, bytes) = oranc_tests::mirror::download(&server.url(&format!("mirror/{legit_url}")));
    assert_eq!(code, 0, "the legitimate client's cold NAR");
    assert!(bytes.len() > 60 << 10, "{} bytes", bytes.len());
    let rss = oranc_tests::abuse::peak_rss_mb(&server);
    assert!(rss < 150.0, "peak RSS {rss} MB");
}

/// Found by the red team (2026-12-07): a client reading a cold NAR steadily but slower than
/// about a third of the socket's send buffer (up to 4 MB) per `read_timeout_secs` was cut
/// off as if it had stopped: the socket woke the server's writer only once that much was
/// free. The server now has it woken once little is left unsent.
#[test]
fn a_client_that_reads_slowly_but_steadily_gets_its_cold_nar_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (paths, public_key, cache) = signed_random_cache(dir.path(), "steady", &[12 << 20]);
    let nginx = NginxProcess::serving(&cache);
    let registry = RegistryProcess::start();
    let config = format!(
        "read_timeout_secs = 2\n{}",
        oranc_tests::mirror::mirror_config(&registry, &nginx.url(""), &public_key)
    );
    let server = ServerProcess::start_binary(release_oranc_command(), &config, &[]);
    let nar_url = oranc_tests::mirror::served_nar_url(&server, &paths[0]);
    let expected = nar_bytes_upstream(&cache, &paths[0], &nar_url);
    // 400 KB/s through a 64 KiB receive buffer: about 30 s for the NAR, 800 KB in each
    // 2 s window.
    let reader = format!(
        r#"
import socket, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
s.connect(("{host}", {port}))
s.sendall(b"GET /mirror/{nar_url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
got = b""
while True:
    d = s.recv(65536)
    if not d:
        break
    got += d
    time.sleep(len(d) / 400000)
print(len(got.partition(b"\r\n\r\n")[2]))
"#,
        host = server.addr.ip(),
        port = server.addr.port(),
    );
    let out = run_ok(Command::new("python3").args(["-c", &reader]));
    let received: u64 = out.trim().parse().unwrap();
    assert_eq!(received, expected, "bytes of the NAR received");
}

/// The size of the NAR file upstream serves for `path`, which the mirror serves as
/// `nar_url` (`nar/<hash>-<upstream's name>`).
fn nar_bytes_upstream(cache: &std::path::Path, path: &str, nar_url: &str) -> u64 {
    let upstream_name = nar_url.replacen(&format!("nar/{}-", hash_part(path)), "nar/", 1);
    std::fs::metadata(cache.join(upstream_name))
        .expect("upstream's NAR file")
        .len()
}
