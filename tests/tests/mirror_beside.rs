//! What a mirror cache does with the files Nix reads beside narinfos and NARs: NAR listings,
//! build logs (served brotli-encoded, as cache.nixos.org serves them), debuginfo entries,
//! realisations, and build-trace entries (Nix 2.35). The upstream is a cache real Nix wrote
//! (`nix copy --to file://DIR` of a content-addressed build, signed as it was built) served
//! by nginx; each file is served
//! through the mirror, stored, and served again from the registry once nginx is gone. A
//! realisation no upstream key signed is neither, nor a build-trace entry signed for another
//! derivation.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: helpers outside #[test] panic on purpose"
)]

use std::path::Path;

use oranc_tests::nginx::NginxProcess;
use oranc_tests::nix::{generate_key, hash_part, nix_command, write_ca_expression};
use oranc_tests::registry::RegistryProcess;
use oranc_tests::server::{allow_plain_http, metric, ServerProcess};
use oranc_tests::{curl, run_ok, unique_suffix};

/// A content-addressed derivation's output, built and signed with a fresh key, copied into
/// an upstream cache with its listing, realisation and build log.
struct CaUpstream {
    dir: tempfile::TempDir,
    expression: String,
    output: String,
    drv: String,
    public_key: String,
    secret_key: oranc_core::SecretKey,
}

fn ca_nix(program: &str) -> std::process::Command {
    let mut command = nix_command(program);
    command.args(["--extra-experimental-features", "ca-derivations"]);
    command
}

impl CaUpstream {
    fn build() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let nonce = unique_suffix();
        let (secret, public_key) = generate_key(dir.path(), &format!("upstream-{nonce}"));
        let expression = write_ca_expression(dir.path(), "oranc-mirror-ca", &nonce);
        // Built with a secret key: Nix signs the output's path info and its realisation.
        let output = run_ok(
            ca_nix("nix-build")
                .args(["--no-out-link", "--option", "secret-key-files"])
                .arg(&secret)
                .arg(&expression),
        )
        .trim()
        .to_owned();
        let drv = run_ok(ca_nix("nix-instantiate").arg(&expression))
            .trim()
            .to_owned();
        let cache = dir.path().join("upstream");
        run_ok(ca_nix("nix").args([
            "copy",
            "--to",
            &format!("file://{}?write-nar-listing=true", cache.display()),
            "-f",
            &expression,
        ]));
        run_ok(ca_nix("nix").args([
            "store",
            "copy-log",
            "--to",
            &format!("file://{}", cache.display()),
            &drv,
        ]));
        let secret_key = std::fs::read_to_string(&secret)
            .expect("reading the secret key")
            .trim()
            .parse()
            .expect("a Nix secret key");
        Self {
            dir,
            expression,
            output,
            drv,
            public_key,
            secret_key,
        }
    }

    fn cache(&self) -> std::path::PathBuf {
        self.dir.path().join("upstream")
    }

    /// The key of the one realisation Nix wrote.
    fn realisation_key(&self) -> String {
        let entry = std::fs::read_dir(self.cache().join("realisations"))
            .expect("Nix wrote realisations/")
            .next()
            .expect("one realisation")
            .expect("a directory entry");
        format!("realisations/{}", entry.file_name().to_string_lossy())
    }

    /// A build-trace entry (Nix 2.35's successor of realisations) for the output, signed with
    /// upstream's key as Nix 2.35 signs one, written into the cache; its key.
    fn write_build_trace(&self) -> String {
        let drv = self.drv.trim_start_matches("/nix/store/");
        let key: oranc_core::CacheKey = format!("build-trace-v2/{drv}/out.doi").parse().unwrap();
        let value = format!(
            r#"{{"outPath":"{}"}}"#,
            self.output.trim_start_matches("/nix/store/")
        );
        let signed =
            oranc_core::realisation::signed(&key, value.as_bytes(), &self.secret_key).unwrap();
        let file = self.cache().join(key.as_str());
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, &signed).unwrap();
        // The same signed value under another derivation: its signature binds it to the
        // first, so no mirror may keep it.
        let forged = self
            .cache()
            .join("build-trace-v2/0cn5ij2xiyp7fbpxpjz6j7rm7rm1k91d-x.drv/out.doi");
        std::fs::create_dir_all(forged.parent().unwrap()).unwrap();
        std::fs::write(forged, &signed).unwrap();
        key.as_str().to_owned()
    }

    fn log_key(&self) -> String {
        format!("log/{}", self.drv.trim_start_matches("/nix/store/"))
    }
}

/// Compresses `file` with brotli in place: what Nix's `log-compression=br` uploads to S3.
fn brotli_in_place(file: &Path) {
    let compressed = file.with_extension("br");
    run_ok(
        std::process::Command::new("brotli")
            .args(["-f", "-o"])
            .arg(&compressed)
            .arg(file),
    );
    std::fs::rename(&compressed, file).expect("replacing the log");
}

/// nginx serving `dir` as S3 serves a cache Hydra uploads: logs with `Content-Encoding: br`.
fn upstream_nginx(dir: &Path) -> NginxProcess {
    NginxProcess::start(&format!(
        "server {{ listen {{listen}}; root {}; location /log/ {{ add_header Content-Encoding br; }} }}",
        dir.display()
    ))
}

fn mirror_server(registry: &RegistryProcess, upstream: &str, key: &str) -> ServerProcess {
    ServerProcess::start(
        &format!(
            "{}[caches.mirror]\nregistry = \"{}\"\nrepository = \"mirror/beside\"\nupstreams = [\"{upstream}\"]\nupstream_public_keys = [\"{key}\"]\n",
            allow_plain_http(&registry.host()),
            registry.host()
        ),
        &[],
    )
}

#[test]
fn listings_logs_debuginfo_and_signed_realisations_are_mirrored_and_outlive_upstream() {
    let upstream = CaUpstream::build();
    let cache = upstream.cache();
    let log_key = upstream.log_key();
    brotli_in_place(&cache.join(&log_key));
    let listing_key = format!("{}.ls", hash_part(&upstream.output));
    let realisation_key = upstream.realisation_key();
    let build_trace_key = upstream.write_build_trace();
    let forged_trace_key = "build-trace-v2/0cn5ij2xiyp7fbpxpjz6j7rm7rm1k91d-x.drv/out.doi";
    // A debuginfo entry as `index-debug-info=true` writes them.
    let build_id = "0123456789abcdef0123456789abcdef01234567";
    let debuginfo_key = format!("debuginfo/{build_id}.debug");
    std::fs::create_dir_all(cache.join("debuginfo")).unwrap();
    let nar_url =
        std::fs::read_to_string(cache.join(format!("{}.narinfo", hash_part(&upstream.output))))
            .unwrap()
            .lines()
            .find_map(|line| line.strip_prefix("URL: ").map(str::to_owned))
            .unwrap();
    std::fs::write(
        cache.join(&debuginfo_key),
        format!(
            r#"{{"archive":"../{nar_url}","member":"lib/debug/.build-id/01/23456789abcdef0123456789abcdef01234567.debug"}}"#
        ),
    )
    .unwrap();
    // A realisation nobody signed, for an output Nix never built.
    let unsigned_key = "realisations/sha256:1111111111111111111111111111111111111111111111111111111111111111!out.doi";
    std::fs::write(
        cache.join(unsigned_key),
        r#"{"dependentRealisations":{},"id":"sha256:1111111111111111111111111111111111111111111111111111111111111111!out","outPath":"a6d0a82k145airx8md9l4v42d8fq0xjz-x","signatures":[]}"#,
    )
    .unwrap();

    let registry = RegistryProcess::start();
    let nginx = upstream_nginx(&cache);
    let server = mirror_server(&registry, &nginx.url(""), &upstream.public_key);
    let url = server.url("mirror");
    let expectations = |url: &str, when: &str, upstream_up: bool| {
        let (status, listing, _) = curl(&[&format!("{url}/{listing_key}")]);
        assert_eq!(status, "200", "{when}: {listing}");
        assert!(listing.contains("\"root\""), "{when}: {listing}");
        // The log comes back decoded: upstream's brotli is undone once, here.
        let (status, log, _) = curl(&[&format!("{url}/{log_key}")]);
        assert_eq!(status, "200", "{when}: {log}");
        assert!(log.contains("building"), "{when}: {log:?}");
        let (status, entry, _) = curl(&[&format!("{url}/{debuginfo_key}")]);
        assert_eq!(status, "200", "{when}: {entry}");
        assert!(entry.contains(&nar_url), "{when}: {entry}");
        let (status, realisation, _) = curl(&[&format!("{url}/{realisation_key}")]);
        assert_eq!(status, "200", "{when}: {realisation}");
        assert!(realisation.contains("signatures"), "{when}: {realisation}");
        let (status, trace, _) = curl(&[&format!("{url}/{build_trace_key}")]);
        assert_eq!(status, "200", "{when}: {trace}");
        assert!(trace.contains("\"keyName\""), "{when}: {trace}");
        // Refused while upstream is up; once it is gone, looking for it upstream fails.
        let expected = if upstream_up { "404" } else { "502" };
        let (status, body, _) = curl(&[&format!("{url}/{unsigned_key}")]);
        assert_eq!(status, expected, "{when}: an unsigned realisation: {body}");
        let (status, body, _) = curl(&[&format!("{url}/{forged_trace_key}")]);
        assert_eq!(
            status, expected,
            "{when}: another derivation's build trace: {body}"
        );
    };
    expectations(&url, "through the mirror", true);
    assert!(
        metric(&server.metrics(), "oranc_mirror_upstream_lookups_total{cache=\"mirror\",kind=\"realisation\",outcome=\"refused\"}") >= 1.0,
        "{}",
        server.metrics()
    );

    // Nix finds the output by its realisation through the mirror (`--max-jobs 0`: it may
    // not build), trusting only upstream's key, which it checks the realisation against.
    let store = tempfile::tempdir().unwrap();
    run_ok(
        ca_nix("nix-build")
            .arg("--store")
            .arg(store.path())
            .args(["--max-jobs", "0", "--no-out-link", &upstream.expression])
            .args(["--option", "substituters", &url])
            .args(["--option", "trusted-public-keys", &upstream.public_key]),
    );
    assert!(store
        .path()
        .join(upstream.output.trim_start_matches('/'))
        .exists());

    // Upstream gone: a fresh server answers from the registry alone.
    drop(nginx);
    drop(server);
    let tags = registry.tag_list("mirror/beside");
    assert!(
        !tags.contains("1111111111"),
        "the unsigned realisation is not stored: {tags}"
    );
    let server = mirror_server(&registry, "http://127.0.0.1:9", &upstream.public_key);
    expectations(&server.url("mirror"), "from the registry alone", false);
}
