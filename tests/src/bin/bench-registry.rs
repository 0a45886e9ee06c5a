//! `cargo run --release -p oranc-tests --bin bench-registry [MIB]`: blob upload and download
//! MB/s through oranc's distribution backend next to curl on the same blob and registry,
//! and manifest lookups/s with a warm bearer token. Prints figures; asserts nothing.

#![allow(
    clippy::print_stdout,
    reason = "a benchmark reports its figures on stdout"
)]

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt as _;
use oranc_backends::Credentials;
use oranc_core::{layout, BlobBody, Registry, RepositoryName, Sha256Hash, Tag};
use oranc_tests::auth::{TokenIssuer, PASSWORD, USERNAME};
use oranc_tests::open_backend;
use oranc_tests::registry::{RegistryAuth, RegistryProcess};

fn mb_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64()
}

fn random_file(path: &std::path::Path, mib: usize) {
    let status = Command::new("head")
        .arg("-c")
        .arg(format!("{}", mib << 20))
        .arg("/dev/urandom")
        .stdout(std::fs::File::create(path).expect("creating the data file"))
        .status()
        .expect("running head");
    assert!(status.success());
}

async fn download(backend: &Arc<dyn Registry>, repo: &RepositoryName, digest: &Sha256Hash) -> u64 {
    let BlobBody::Stream { mut body, .. } = backend
        .get_blob(repo, digest, None)
        .await
        .expect("GET blob")
    else {
        panic!("expected a stream");
    };
    let mut total = 0;
    while let Some(chunk) = body.next().await {
        total += chunk.expect("a chunk").len() as u64;
    }
    total
}

fn curl(args: &[&str]) -> Duration {
    let started = Instant::now();
    let output = Command::new("curl")
        .args(["-sS", "-f", "-o", "/dev/null"])
        .args(args)
        .output()
        .expect("running curl");
    assert!(
        output.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    started.elapsed()
}

#[tokio::main]
async fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(256);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data_path = dir.path().join("blob");
    random_file(&data_path, mib);
    let bytes = (mib as u64) << 20;

    println!(
        "bench-registry: {mib} MiB blob, distribution registry on loopback, {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    // Throughput, no auth.
    let registry = RegistryProcess::start();
    let backend = open_backend(&registry.host(), Credentials::Anonymous, |_| {});
    let repo: RepositoryName = "bench/blobs".parse().expect("a name");

    let mut file = tokio::fs::File::open(&data_path)
        .await
        .expect("opening the data");
    let started = Instant::now();
    let blob = backend.put_blob(&repo, &mut file).await.expect("upload");
    let upload = started.elapsed();
    println!(
        "upload   oranc backend (8 MiB chunks, hashed): {:8.1} MB/s",
        mb_per_s(bytes, upload)
    );

    // curl: the same bytes, monolithic PUT into a fresh repository.
    let location = Command::new("curl")
        .args(["-sS", "-f", "-X", "POST", "-D", "-", "-o", "/dev/null"])
        .arg(format!(
            "{}/v2/bench/curl/blobs/uploads/",
            registry.base_url()
        ))
        .output()
        .expect("curl POST");
    let headers = String::from_utf8_lossy(&location.stdout);
    let location = headers
        .lines()
        .find_map(|l| {
            l.strip_prefix("Location: ")
                .or_else(|| l.strip_prefix("location: "))
        })
        .expect("a Location")
        .trim()
        .to_owned();
    let put_url = format!("{location}&digest={}", blob.digest.to_oci_digest());
    let data_arg = data_path.display().to_string();
    let curl_upload = curl(&[
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/octet-stream",
        "-T",
        &data_arg,
        &put_url,
    ]);
    println!(
        "upload   curl (one streamed PUT)              : {:8.1} MB/s",
        mb_per_s(bytes, curl_upload)
    );

    let mut best = Duration::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        assert_eq!(download(&backend, &repo, &blob.digest).await, bytes);
        best = best.min(started.elapsed());
    }
    println!(
        "download oranc backend (streamed, best of 3) : {:8.1} MB/s",
        mb_per_s(bytes, best)
    );
    let blob_url = format!(
        "{}/v2/bench/blobs/blobs/{}",
        registry.base_url(),
        blob.digest.to_oci_digest()
    );
    let curl_best = (0..3).map(|_| curl(&[&blob_url])).min().unwrap_or_default();
    println!(
        "download curl (best of 3)                    : {:8.1} MB/s",
        mb_per_s(bytes, curl_best)
    );

    // Manifest lookups with a warm token.
    let issuer = TokenIssuer::start(dir.path(), false, 300).await;
    let token_registry =
        RegistryProcess::start_with_auth(RegistryAuth::Token(issuer.config.clone()));
    let backend = open_backend(
        &token_registry.host(),
        Credentials::basic(USERNAME, PASSWORD),
        |t| t.token_realms = vec![issuer.config.realm.clone()],
    );
    let repo: RepositoryName = "bench/manifests".parse().expect("a name");
    let tag: Tag = "x.narinfo".parse().expect("a tag");
    let layer = backend
        .put_blob_bytes(&repo, Bytes::from_static(b"narinfo"))
        .await
        .expect("layer");
    let config = backend
        .put_blob_bytes(&repo, Bytes::from(layout::image_config(&layer)))
        .await
        .expect("config");
    let manifest =
        layout::manifest("x.narinfo", "text/x-nix-narinfo", &layer, &config).expect("manifest");
    backend
        .put_manifest(
            &repo,
            &tag,
            layout::MANIFEST_MEDIA_TYPE,
            Bytes::from(manifest),
        )
        .await
        .expect("put");
    backend.get_manifest(&repo, &tag).await.expect("warm-up");
    let tokens_before = issuer.tokens_issued();

    let lookups = 2000;
    let started = Instant::now();
    for _ in 0..lookups {
        backend.get_manifest(&repo, &tag).await.expect("lookup");
    }
    let sequential = started.elapsed();
    let started = Instant::now();
    let concurrent = futures::stream::iter(0..lookups)
        .map(|_| backend.get_manifest(&repo, &tag))
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    assert!(concurrent.iter().all(|r| matches!(r, Ok(Some(_)))));
    let parallel = started.elapsed();
    println!(
        "manifest lookups, warm token: {:8.0}/s sequential, {:8.0}/s with 16 in flight ({} new tokens for {} lookups)",
        lookups as f64 / sequential.as_secs_f64(),
        lookups as f64 / parallel.as_secs_f64(),
        issuer.tokens_issued() - tokens_before,
        2 * lookups
    );
}
