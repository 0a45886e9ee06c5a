//! `cargo run --release -p oranc-tests --bin bench-mirror [SMALL] [LARGE_MIB]`: a mirror
//! cache (`upstreams`) in front of an upstream made by `nix copy --to file://…` and served
//! by nginx, at each round-trip time to upstream in `BENCH_RTT_MS` (default `0,20`, through
//! a delaying proxy). For one large NAR: time to first byte and throughput straight from
//! upstream, through the mirror cold (fetched and stored as it streams) and warm (from the
//! registry), and how long the cold one took to be stored. For SMALL paths: `nix copy
//! --from` upstream itself, the mirror cold and warm. The anchors for storing a cold fetch:
//! the registry ingesting the same file itself, in one request and in chunks of oranc's
//! chunk size (a cold fetch's client is not held to it while the spool has room); for a cold first
//! byte, upstream's through nginx `proxy_pass` (one more hop, connections kept open) and
//! through nginx `proxy_cache` (a pull-through cache on local disk, cold); the
//! cold first byte is timed on a fresh connection, and asked right after its narinfo on one
//! kept-alive connection as Nix asks. Then `oranc push --from` of the same cache into a registry, next
//! to `push` from the local store. `BENCH_MIRROR_CHUNK_SIZE` sets the upload chunk size;
//! `BENCH_MIRROR_REGISTRY_RTT_MS` adds a cold first byte with the registry that far away
//! (upstream `BENCH_MIRROR_UPSTREAM_RTT_MS`, default 10).
//! Prints figures; asserts nothing.

#![allow(
    clippy::print_stdout,
    reason = "a benchmark reports its figures on stdout"
)]

use std::process::Command;
use std::time::{Duration, Instant};

use oranc_tests::latency::LatencyProxy;
use oranc_tests::nginx::NginxProcess;
use oranc_tests::nix::{add_random_path, nix_command};
use oranc_tests::registry::RegistryProcess;
use oranc_tests::server::ServerProcess;
use oranc_tests::{run_ok, unique_suffix};

/// Time to first byte and whole time of a GET, as curl measures them; the bytes.
fn timed_get(url: &str) -> (Duration, Duration, u64) {
    let out = run_ok(Command::new("curl").args([
        "-sf",
        "-o",
        "/dev/null",
        "-w",
        "%{time_starttransfer} %{time_total} %{size_download}",
        url,
    ]));
    let mut parts = out.split_whitespace();
    let mut seconds =
        || Duration::from_secs_f64(parts.next().and_then(|p| p.parse().ok()).unwrap_or(0.0));
    let (first, total) = (seconds(), seconds());
    let bytes = out
        .split_whitespace()
        .nth(2)
        .and_then(|b| b.parse().ok())
        .unwrap_or(0);
    (first, total, bytes)
}

/// The bytes the server's mirror has stored so far.
fn stored_bytes(server: &ServerProcess) -> f64 {
    oranc_tests::server::metric_or_zero(&server.metrics(), "oranc_mirror_stored_bytes_total")
}

/// When the server's mirror had stored `bytes` in all (it counts them once a NAR is tagged
/// and its narinfo stored).
fn wait_until_stored(server: &ServerProcess, bytes: u64) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if stored_bytes(server) >= bytes as f64 {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "the mirror never stored the large NAR"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How long until the mirror's stored bytes stop growing (unchanged for half a second).
fn wait_until_stores_settle(server: &ServerProcess) -> Duration {
    let started = Instant::now();
    let mut last = stored_bytes(server);
    let mut unchanged_since = Instant::now();
    while unchanged_since.elapsed() < Duration::from_millis(500)
        && started.elapsed() < Duration::from_secs(120)
    {
        std::thread::sleep(Duration::from_millis(50));
        let now = stored_bytes(server);
        if now != last {
            last = now;
            unchanged_since = Instant::now();
        }
    }
    unchanged_since.duration_since(started)
}

fn report(label: &str, (first, total, bytes): (Duration, Duration, u64)) {
    println!(
        "{label:<44}: first byte {:7.1} ms  {:7.1} MB/s  ({:.2} s)",
        first.as_secs_f64() * 1e3,
        bytes as f64 / 1e6 / total.as_secs_f64(),
        total.as_secs_f64()
    );
}

/// The anchor for storing a cold fetch: the registry's own ingest of
/// `file` (one monolithic upload with curl), in MB/s.
fn registry_ingest(registry: &RegistryProcess, file: &std::path::Path) -> f64 {
    let digest = run_ok(Command::new("sha256sum").arg(file))
        .split_whitespace()
        .next()
        .expect("a digest")
        .to_owned();
    let size = std::fs::metadata(file).expect("the file").len();
    let started = Instant::now();
    let headers = run_ok(Command::new("curl").args([
        "-sf",
        "-D",
        "-",
        "-o",
        "/dev/null",
        "-X",
        "POST",
        &format!("{}/v2/bench/anchor/blobs/uploads/", registry.base_url()),
    ]));
    let location = headers
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("location")
                .then(|| value.trim().to_owned())
        })
        .expect("an upload location");
    let location = if location.starts_with("http") {
        location
    } else {
        format!("{}{location}", registry.base_url())
    };
    let separator = if location.contains('?') { '&' } else { '?' };
    run_ok(
        Command::new("curl")
            .args(["-sf", "-o", "/dev/null", "-T"])
            .arg(file)
            .arg(format!("{location}{separator}digest=sha256:{digest}")),
    );
    size as f64 / 1e6 / started.elapsed().as_secs_f64()
}

/// The anchor at oranc's upload chunk size: the registry ingesting `file` in chunks of
/// `chunk` bytes (PATCH with Content-Range, each after the last, as the OCI spec's chunked
/// upload goes and ghcr.io's 4 MiB request cap requires), in MB/s.
fn registry_ingest_chunked(
    registry: &RegistryProcess,
    file: &std::path::Path,
    chunk: usize,
) -> f64 {
    let bytes = std::fs::read(file).expect("the file");
    let digest = oranc_core::Sha256Hash::of(&bytes).to_oci_digest();
    let base = registry.base_url();
    let absolute = |location: &str| {
        if location.starts_with("http") {
            location.to_owned()
        } else {
            format!("{base}{location}")
        }
    };
    let location_of = |answer: &reqwest::Response| {
        absolute(
            answer
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .expect("an upload location"),
        )
    };
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        let http = reqwest::Client::new();
        let started = Instant::now();
        let answer = http
            .post(format!("{base}/v2/bench/anchor-chunked/blobs/uploads/"))
            .send()
            .await
            .expect("POST");
        let mut location = location_of(&answer);
        for (index, piece) in bytes.chunks(chunk).enumerate() {
            let start = index * chunk;
            let answer = http
                .patch(&location)
                .header("content-type", "application/octet-stream")
                .header(
                    "content-range",
                    format!("{start}-{}", start + piece.len() - 1),
                )
                .body(piece.to_vec())
                .send()
                .await
                .expect("PATCH");
            assert!(answer.status().is_success(), "PATCH: {}", answer.status());
            location = location_of(&answer);
        }
        let separator = if location.contains('?') { '&' } else { '?' };
        let answer = http
            .put(format!("{location}{separator}digest={digest}"))
            .send()
            .await
            .expect("PUT");
        assert!(answer.status().is_success(), "PUT: {}", answer.status());
        bytes.len() as f64 / 1e6 / started.elapsed().as_secs_f64()
    })
}

/// `nix copy --from url` of `paths` into a fresh store, as a fresh machine (its own Nix
/// cache of narinfos); the time it took.
fn nix_copy_from(url: &str, paths: &[String], public_key: &str) -> Duration {
    let store = tempfile::tempdir().expect("a temporary directory");
    let started = Instant::now();
    run_ok(
        nix_command("nix")
            .args(["copy", "--from", url, "--to"])
            .arg(store.path())
            .args(["--option", "trusted-public-keys", public_key])
            .env("XDG_CACHE_HOME", store.path().join("client-cache"))
            .args(paths),
    );
    started.elapsed()
}

/// The NAR `URL` of the narinfo the mirror serves for `hash` (asked for first, as Nix
/// does: the mirror names NARs after their paths).
fn mirrored_nar_url(mirror: &str, hash: &str) -> String {
    let narinfo = run_ok(Command::new("curl").args(["-sf", &format!("{mirror}/{hash}.narinfo")]));
    oranc_core::NarInfo::parse(&narinfo)
        .expect("the mirror's narinfo")
        .url
}

/// First byte of `nar`, asked right after `narinfo` on the same kept-alive connection, as
/// Nix asks (one curl, two transfers; curl times each transfer from its own start).
fn first_byte_after_narinfo(narinfo: &str, nar: &str) -> Duration {
    let out = run_ok(Command::new("curl").args([
        "-sf",
        "-o",
        "/dev/null",
        "-o",
        "/dev/null",
        "-w",
        "%{time_starttransfer}\n",
        narinfo,
        nar,
    ]));
    let seconds = out
        .lines()
        .nth(1)
        .and_then(|line| line.trim().parse().ok())
        .unwrap_or(0.0);
    Duration::from_secs_f64(seconds)
}

/// The key a mirror names the NAR file `upstream_url` (`nar/…`) of the path `hash` by.
fn mirrored_name(hash: &str, upstream_url: &str) -> String {
    format!(
        "nar/{hash}-{}",
        upstream_url.strip_prefix("nar/").unwrap_or(upstream_url)
    )
}

/// nginx as a reverse proxy of `upstream` (`http://host:port`) that keeps its connections
/// to it open, as the mirror does; `http` goes in its `http` block, `location` in its one
/// location.
fn nginx_in_front_of(upstream: &str, http: &str, location: &str) -> NginxProcess {
    NginxProcess::start(&format!(
        "{http}\nupstream up {{ server {}; keepalive 8; }}\nserver {{ listen {{listen}}; location / {{ proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection \"\"; {location} }} }}",
        upstream.trim_start_matches("http://")
    ))
}

/// Small NARs whose first byte is timed (the median is reported).
const FIRST_BYTE_SAMPLES: usize = 20;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// How long the registry takes to answer for a manifest it lacks (curl, a fresh connection).
fn registry_miss(registry: &RegistryProcess, sample: usize) -> Duration {
    let out = run_ok(Command::new("curl").args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{time_starttransfer}",
        &format!(
            "{}/v2/bench/mirror/manifests/absent-{sample}",
            registry.base_url()
        ),
    ]));
    Duration::from_secs_f64(out.trim().parse().unwrap_or(0.0))
}

/// The number in the environment variable `name`, if it holds one.
fn env_number<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
}

/// A server config with one mirror cache, `mirror`, of `upstream` in `repository` of the
/// plain-HTTP registry `host`; `extra` goes in the registry's table.
fn bench_mirror_config(
    host: &str,
    extra: &str,
    repository: &str,
    upstream: &str,
    public_key: &str,
) -> String {
    format!(
        "[registries.\"{host}\"]\nplain_http = true\n{extra}[caches.mirror]\nregistry = \"{host}\"\nrepository = \"{repository}\"\nupstreams = [\"{upstream}\"]\nupstream_public_keys = [\"{public_key}\"]\n"
    )
}

/// A cold first byte where the registry is farther than upstream (`registry_rtt` ms away,
/// upstream `BENCH_MIRROR_UPSTREAM_RTT_MS`, default 10): the NAR asked right after its
/// narinfo (the registry's word asked meanwhile: upstream alone), against the same asked
/// once that word has lapsed (the registry and upstream at once: the slower of the two).
fn distant_registry_first_byte(
    oranc: &std::path::Path,
    registry_rtt: u64,
    nginx: &NginxProcess,
    public_key: &str,
    paths: &[String],
) {
    let upstream_rtt: u64 = env_number("BENCH_MIRROR_UPSTREAM_RTT_MS").unwrap_or(10);
    let registry = oranc_tests::latency::DistantRegistry::start(registry_rtt);
    let proxy = LatencyProxy::start(nginx.addr, Duration::from_millis(upstream_rtt));
    let upstream = format!("http://{}", proxy.host());
    let config = bench_mirror_config(&registry.host(), "", "bench/distant", &upstream, public_key);
    let server = ServerProcess::start_binary(Command::new(oranc), &config, &[]);
    let mirror = server.url("mirror");
    let (now, lapsed) = paths.split_at(paths.len() / 2);
    let cold_first_byte = |path: &String, wait: Duration| {
        std::thread::sleep(Duration::from_millis(200));
        let url = mirrored_nar_url(&mirror, &oranc_tests::nix::hash_part(path));
        std::thread::sleep(wait);
        timed_get(&format!("{mirror}/{url}")).0
    };
    let at_once: Vec<Duration> = now
        .iter()
        .map(|path| cold_first_byte(path, Duration::ZERO))
        .collect();
    let after: Vec<Duration> = lapsed
        .iter()
        .map(|path| cold_first_byte(path, Duration::from_millis(2500)))
        .collect();
    println!(
        "registry {registry_rtt} ms away, upstream {upstream_rtt} ms: cold first byte of a 64 KiB NAR, median of {}: asked right after its narinfo {:.1} ms, asked 2.5 s after (the registry asked alongside) {:.1} ms",
        now.len(),
        ms(median(at_once)),
        ms(median(after))
    );
}

fn main() {
    let small = oranc_tests::bench_arg(1, 200);
    let large_mib = oranc_tests::bench_arg(2, 256);
    let oranc = oranc_tests::bench_oranc();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let nonce = unique_suffix();
    let key = oranc_tests::bench_signing_key(dir.path());
    let public_key = run_ok(
        nix_command("nix")
            .args(["key", "convert-secret-to-public"])
            .stdin(std::fs::File::open(&key).expect("the key")),
    )
    .trim()
    .to_owned();

    let paths: Vec<String> = (0..small)
        .map(|i| add_random_path(dir.path(), &format!("mirror-small-{nonce}-{i}"), 4096))
        .collect();
    let large = add_random_path(
        dir.path(),
        &format!("mirror-large-{nonce}"),
        large_mib << 20,
    );
    let first_byte_paths: Vec<String> = (0..FIRST_BYTE_SAMPLES)
        .map(|i| add_random_path(dir.path(), &format!("mirror-first-{nonce}-{i}"), 64 << 10))
        .collect();
    // The same, asked as Nix asks: right after the narinfo, on the same connection.
    let reused_paths: Vec<String> = (0..FIRST_BYTE_SAMPLES)
        .map(|i| add_random_path(dir.path(), &format!("mirror-reused-{nonce}-{i}"), 64 << 10))
        .collect();
    let everything: Vec<String> = paths
        .iter()
        .chain(&first_byte_paths)
        .chain(&reused_paths)
        .cloned()
        .chain([large.clone()])
        .collect();
    run_ok(
        nix_command("nix")
            .args(["store", "sign", "-k"])
            .arg(&key)
            .args(&everything),
    );
    let upstream_dir = dir.path().join("upstream");
    run_ok(
        nix_command("nix")
            .args(["copy", "--to"])
            .arg(format!(
                "file://{}?compression=zstd",
                upstream_dir.display()
            ))
            .args(&everything),
    );
    let large_hash = oranc_tests::nix::hash_part(&large);
    let nar_url = |path: &str| {
        let narinfo = std::fs::read_to_string(
            upstream_dir.join(format!("{}.narinfo", oranc_tests::nix::hash_part(path))),
        )
        .expect("narinfo");
        oranc_core::NarInfo::parse(&narinfo)
            .expect("the narinfo nix copy wrote")
            .url
    };
    let large_url = nar_url(&large);
    let first_byte_urls: Vec<String> = first_byte_paths.iter().map(|p| nar_url(p)).collect();
    let nginx = NginxProcess::serving(&upstream_dir);
    println!(
        "bench-mirror: {small} paths of 4 KiB and one of {large_mib} MiB (zstd), upstream nginx, oranc {}",
        oranc.display()
    );

    // `BENCH_MIRROR_CHUNK_SIZE` (bytes) sets the registry's upload chunk size; the default
    // is oranc's, 4 MiB (ghcr.io's cap), which bounds a cold fetch on loopback.
    let chunk_size: usize = env_number("BENCH_MIRROR_CHUNK_SIZE").unwrap_or(4 << 20);
    let chunk_size_line = format!("chunk_size = {chunk_size}\n");
    for rtt in oranc_tests::latency::bench_rtts() {
        let proxy = (rtt > 0).then(|| LatencyProxy::start(nginx.addr, Duration::from_millis(rtt)));
        let upstream = proxy
            .as_ref()
            .map_or_else(|| nginx.url(""), |p| format!("http://{}/", p.host()));
        let upstream = upstream.trim_end_matches('/').to_owned();
        // The anchor for a cold first byte: one more hop, a plain reverse proxy that keeps
        // its connections to upstream open as the mirror does.
        let proxy_pass = nginx_in_front_of(&upstream, "", "");
        // The other anchor: nginx as a pull-through cache (`proxy_cache`, what many put in
        // front of cache.nixos.org), which stores what it streams, as the mirror does, but
        // on local disk.
        let proxy_cache = nginx_in_front_of(
            &upstream,
            "proxy_cache_path {dir}/cache levels=1:2 keys_zone=nix:10m inactive=7d use_temp_path=off;",
            "proxy_cache nix; proxy_cache_valid 200 7d; proxy_cache_lock on;",
        );
        let proxy_base = proxy_pass.url("");
        let proxy_base = proxy_base.trim_end_matches('/');
        let cache_base = proxy_cache.url("");
        let cache_base = cache_base.trim_end_matches('/');
        let registry = RegistryProcess::start();
        let config = bench_mirror_config(
            &registry.host(),
            &chunk_size_line,
            "bench/mirror",
            &upstream,
            &public_key,
        );
        let server = ServerProcess::start_binary(Command::new(&oranc), &config, &[]);
        let mirror = server.url("mirror");

        report(
            &format!("RTT {rtt:>3} ms: large NAR straight from upstream"),
            timed_get(&format!("{upstream}/{large_url}")),
        );
        let mirrored_large = mirrored_nar_url(&mirror, &large_hash);
        let asked = Instant::now();
        let cold = timed_get(&format!("{mirror}/{mirrored_large}"));
        report(
            &format!("RTT {rtt:>3} ms: large NAR through the mirror, cold"),
            cold,
        );
        let stored = wait_until_stored(&server, cold.2);
        println!(
            "RTT {rtt:>3} ms: large NAR through the mirror, cold: stored in the registry {:.2} s after it was asked for ({:.1} MB/s)",
            stored.duration_since(asked).as_secs_f64(),
            cold.2 as f64 / 1e6 / stored.duration_since(asked).as_secs_f64()
        );
        // Anchors for the client's pace: a plain reverse proxy, which stores nothing, and
        // nginx's pull-through cache, which stores as it streams, on local disk, unchecked.
        report(
            &format!("RTT {rtt:>3} ms: anchor, large NAR through nginx proxy_pass"),
            timed_get(&format!("{proxy_base}/{large_url}")),
        );
        report(
            &format!("RTT {rtt:>3} ms: anchor, large NAR through nginx proxy_cache, cold"),
            timed_get(&format!("{cache_base}/{large_url}")),
        );
        let large_file = upstream_dir.join(&large_url);
        println!(
            "RTT {rtt:>3} ms: anchor, the registry ingesting that file itself: {:7.1} MB/s in one request, {:7.1} MB/s in {} MiB chunks",
            registry_ingest(&registry, &large_file),
            registry_ingest_chunked(&registry, &large_file, chunk_size),
            chunk_size >> 20
        );
        report(
            &format!("RTT {rtt:>3} ms: large NAR through the mirror, warm"),
            timed_get(&format!("{mirror}/{mirrored_large}")),
        );

        // First byte of small NARs, the median of several: straight from upstream, through
        // the mirror cold (its narinfo asked for first, as Nix does) and warm. The anchor is
        // upstream's plus the registry's answer for a tag it lacks, which a mirror must ask
        // before it goes upstream.
        let first_byte = |url: &str| timed_get(url).0;
        let direct: Vec<Duration> = first_byte_urls
            .iter()
            .map(|u| first_byte(&format!("{upstream}/{u}")))
            .collect();
        let mut mirrored_urls = Vec::new();
        let cold: Vec<Duration> = first_byte_paths
            .iter()
            .map(|path| {
                // The previous sample's store runs on after its first byte: each sample
                // starts on a quiet mirror, as the anchor's parts are measured.
                std::thread::sleep(Duration::from_millis(200));
                let url = mirrored_nar_url(&mirror, &oranc_tests::nix::hash_part(path));
                let first = first_byte(&format!("{mirror}/{url}"));
                mirrored_urls.push(url);
                first
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let warm: Vec<Duration> = mirrored_urls
            .iter()
            .map(|u| first_byte(&format!("{mirror}/{u}")))
            .collect();
        let miss: Vec<Duration> = (0..FIRST_BYTE_SAMPLES)
            .map(|i| registry_miss(&registry, i))
            .collect();
        let proxied: Vec<Duration> = first_byte_urls
            .iter()
            .map(|u| first_byte(&format!("{proxy_base}/{u}")))
            .collect();
        let cached: Vec<Duration> = first_byte_urls
            .iter()
            .map(|u| first_byte(&format!("{cache_base}/{u}")))
            .collect();
        let (direct, miss) = (median(direct), median(miss));
        let (mut after_direct, mut after_cold, mut after_proxied, mut after_cached) =
            (vec![], vec![], vec![], vec![]);
        for path in &reused_paths {
            std::thread::sleep(Duration::from_millis(200));
            let hash = oranc_tests::nix::hash_part(path);
            let url = nar_url(path);
            let mirrored = mirrored_name(&hash, &url);
            after_direct.push(first_byte_after_narinfo(
                &format!("{upstream}/{hash}.narinfo"),
                &format!("{upstream}/{url}"),
            ));
            after_cold.push(first_byte_after_narinfo(
                &format!("{mirror}/{hash}.narinfo"),
                &format!("{mirror}/{mirrored}"),
            ));
            after_proxied.push(first_byte_after_narinfo(
                &format!("{proxy_base}/{hash}.narinfo"),
                &format!("{proxy_base}/{url}"),
            ));
            after_cached.push(first_byte_after_narinfo(
                &format!("{cache_base}/{hash}.narinfo"),
                &format!("{cache_base}/{url}"),
            ));
        }
        println!(
            "RTT {rtt:>3} ms: first byte of a 64 KiB NAR asked right after its narinfo on one connection (as Nix asks), median of {FIRST_BYTE_SAMPLES}: upstream {:.2} ms, mirror cold {:.2} ms; anchors: upstream through nginx proxy_pass {:.2} ms, nginx proxy_cache cold {:.2} ms",
            ms(median(after_direct)),
            ms(median(after_cold)),
            ms(median(after_proxied)),
            ms(median(after_cached))
        );
        println!(
            "RTT {rtt:>3} ms: first byte of a 64 KiB NAR, median of {FIRST_BYTE_SAMPLES}: upstream {:.1} ms, mirror cold {:.1} ms, warm {:.1} ms; anchors: upstream + a registry miss ({:.1} ms) = {:.1} ms, upstream through nginx proxy_pass {:.1} ms, nginx proxy_cache cold {:.1} ms",
            ms(direct),
            ms(median(cold)),
            ms(median(warm)),
            ms(miss),
            ms(direct + miss),
            ms(median(proxied)),
            ms(median(cached))
        );

        let direct = nix_copy_from(&upstream, &paths, &public_key);
        let cold = nix_copy_from(&mirror, &paths, &public_key);
        // Stores go on after their clients are served: warm is timed once they are done.
        let stored_after = wait_until_stores_settle(&server);
        let warm = nix_copy_from(&mirror, &paths, &public_key);
        println!(
            "RTT {rtt:>3} ms: nix copy of {small} paths: from upstream {:.2} s, mirror cold {:.2} s (all stored {:.2} s later), warm {:.2} s",
            direct.as_secs_f64(),
            cold.as_secs_f64(),
            stored_after.as_secs_f64(),
            warm.as_secs_f64()
        );
        if let Some(peak) = server.peak_memory() {
            println!("RTT {rtt:>3} ms: server peak RSS {peak}");
        }
    }

    if let Some(registry_rtt) = env_number("BENCH_MIRROR_REGISTRY_RTT_MS") {
        distant_registry_first_byte(&oranc, registry_rtt, &nginx, &public_key, &first_byte_paths);
    }

    // Moving the same cache into a registry: push --from against push from the store.
    let registry = RegistryProcess::start();
    let push = |extra: &[&str], repo: &str| {
        let started = Instant::now();
        run_ok(
            Command::new(&oranc)
                .args(oranc_tests::push_args(&registry.host(), repo))
                .args(["--trusted-public-key", &public_key])
                .args(extra)
                .args(&everything),
        );
        started.elapsed()
    };
    let from = push(&["--from", &nginx.url("")], "bench/from");
    let local = push(&[], "bench/local");
    println!(
        "push --from nginx of {} paths: {:.2} s; push from the local store: {:.2} s",
        everything.len(),
        from.as_secs_f64(),
        local.as_secs_f64()
    );
}
