//! Writes through `oranc server`, tried as an attacker and as a CI runner would, against a
//! real registry and a real Nix: anonymous writers add but never replace, narinfos must
//! match their NARs and the cache's trusted keys, and the server's own writers push
//! unsigned paths that the server signs.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: helpers outside #[test] panic on purpose"
)]

use std::path::Path;

use oranc_tests::nix::{
    assert_same_closure, copy_from, copy_from_command, hash_part, nix_command, SignedClosure,
};
use oranc_tests::registry::RegistryProcess;
use oranc_tests::server::ServerProcess;
use oranc_tests::{run_ok, unique_suffix};

/// Status code and body of a curl request.
fn curl(method: &str, url: &str, extra: &[&str]) -> (String, Vec<u8>) {
    let body = tempfile::NamedTempFile::new().unwrap();
    let out = std::process::Command::new("curl")
        .args(["-s", "-w", "%{http_code}", "-X", method, "-o"])
        .arg(body.path())
        .args(extra)
        .arg(url)
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        std::fs::read(body.path()).unwrap(),
    )
}

fn put_file(url: &str, file: &Path, extra: &[&str]) -> String {
    let data = format!("@{}", file.display());
    let mut args = vec!["--data-binary", &data];
    args.extend_from_slice(extra);
    curl("PUT", url, &args).0
}

/// A named cache `name` over a fresh repository of `registry`, with `extra` settings.
fn named_cache(registry: &RegistryProcess, name: &str, extra: &str) -> String {
    format!(
        "[registries.\"{host}\"]\nplain_http = true\n[caches.{name}]\nregistry = \"{host}\"\nrepository = \"writes/{repo}\"\n{extra}\n",
        host = registry.host(),
        repo = unique_suffix().replace('-', "."),
    )
}

fn nix_copy_to(url: &str, path: &str, netrc: Option<&Path>) -> std::process::Output {
    let mut command = nix_command("nix");
    command.args(["copy", "--to", &format!("{url}?compression=zstd"), path]);
    if let Some(netrc) = netrc {
        command.args(["--option", "netrc-file"]).arg(netrc);
    }
    command.output().unwrap()
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `nix copy --to file://` of `path`'s closure: the narinfos and NARs Nix would upload.
fn reference_cache(closure: &SignedClosure) -> std::path::PathBuf {
    let dir = closure
        .work_dir()
        .join(format!("reference-{}", unique_suffix()));
    run_ok(
        nix_command("nix")
            .args(["copy", "--to"])
            .arg(format!("file://{}?compression=zstd", dir.display()))
            .arg(&closure.root),
    );
    dir
}

#[test]
fn anonymous_writers_can_add_but_never_replace_so_the_closure_stays_usable() {
    let registry = RegistryProcess::start();
    let closure = SignedClosure::build(50_000);
    let server = ServerProcess::start(&named_cache(&registry, "ci", "allow_write = true"), &[]);
    let cache_url = server.url("ci");
    let pushed = nix_copy_to(&cache_url, &closure.root, None);
    assert!(pushed.status.success(), "{}", stderr(&pushed));

    for path in &closure.paths {
        let url = format!("{cache_url}/{}.narinfo", hash_part(path));
        let (status, stored) = curl("GET", &url, &[]);
        assert_eq!(status, "200");
        let text = String::from_utf8(stored.clone()).unwrap();
        // The attack: the same narinfo with its signature replaced by garbage.
        let forged: String = text
            .lines()
            .map(|line| match line.split_once(": ") {
                Some(("Sig", value)) => {
                    let name = value.split(':').next().unwrap();
                    format!("Sig: {name}:{}==\n", "A".repeat(86))
                }
                _ => format!("{line}\n"),
            })
            .collect();
        assert_ne!(forged, text);
        let (status, body) = curl("PUT", &url, &["--data-binary", &forged]);
        assert_eq!(status, "409", "{}", String::from_utf8_lossy(&body));
        // Re-sending the same bytes is harmless.
        let (status, _) = curl("PUT", &url, &["--data-binary", &text]);
        assert_eq!(status, "200");
        assert_eq!(curl("GET", &url, &[]).1, stored, "the narinfo is unchanged");
    }

    // An existing NAR is never overwritten, whatever is sent under its name.
    let narinfo = curl(
        "GET",
        &format!("{cache_url}/{}.narinfo", hash_part(&closure.root)),
        &[],
    )
    .1;
    let nar_url = String::from_utf8(narinfo)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("URL: ").map(str::to_owned))
        .unwrap();
    let nar_url = format!("{cache_url}/{nar_url}");
    let original = curl("GET", &nar_url, &[]).1;
    let (status, _) = curl("PUT", &nar_url, &["--data-binary", "not a nar"]);
    assert_eq!(status, "200");
    assert_eq!(curl("GET", &nar_url, &[]).1, original);

    let store = tempfile::tempdir().unwrap();
    let copied = copy_from(&cache_url, store.path(), &closure.root, &closure.public_key);
    assert!(copied.status.success(), "{}", stderr(&copied));
}

#[test]
fn writers_push_unsigned_paths_that_the_server_signs() {
    let registry = RegistryProcess::start();
    let closure = SignedClosure::build_unsigned(20_000);
    let dir = closure.work_dir();
    let server_key = dir.join("server.sk");
    std::fs::write(
        &server_key,
        run_ok(nix_command("nix").args(["key", "generate-secret", "--key-name", "server-1"])),
    )
    .unwrap();
    let server_public = run_ok(
        nix_command("sh")
            .arg("-c")
            .arg("nix key convert-secret-to-public < \"$1\"")
            .arg("sh")
            .arg(&server_key),
    )
    .trim()
    .to_owned();
    let writers = dir.join("writers");
    std::fs::write(
        &writers,
        format!("ci:{}\n", bcrypt::hash("writer-pass", 4).unwrap()),
    )
    .unwrap();
    let server = ServerProcess::start_logged(
        oranc_tests::oranc_command(),
        &named_cache(
            &registry,
            "team",
            &format!(
                "writers_file = \"{}\"\nsigning_key_file = \"{}\"\ntrusted_public_keys = [\"{server_public}\"]",
                writers.display(),
                server_key.display()
            ),
        ),
        &[],
    );
    let cache_url = server.url("team");

    // Without credentials, or with a wrong writer password: refused, nothing stored.
    let netrc = dir.join("netrc");
    std::fs::write(&netrc, "machine 127.0.0.1 login ci password wrong\n").unwrap();
    for netrc in [None, Some(netrc.as_path())] {
        let refused = nix_copy_to(&cache_url, &closure.root, netrc);
        assert!(!refused.status.success(), "{}", stderr(&refused));
    }
    let narinfo_url = format!("{cache_url}/{}.narinfo", hash_part(&closure.root));
    for credentials in [&[][..], &["-u", "ci:wrong"]] {
        let mut args = vec!["--data-binary", "x"];
        args.extend_from_slice(credentials);
        assert_eq!(curl("PUT", &narinfo_url, &args).0, "401");
    }
    assert_eq!(curl("GET", &narinfo_url, &[]).0, "404");

    std::fs::write(&netrc, "machine 127.0.0.1 login ci password writer-pass\n").unwrap();
    let pushed = nix_copy_to(&cache_url, &closure.root, Some(&netrc));
    assert!(pushed.status.success(), "{}", stderr(&pushed));

    // A client that trusts only the server's key substitutes the whole closure. (It is
    // another machine: the uploader's own Nix remembers the unsigned narinfos it sent.)
    let store = tempfile::tempdir().unwrap();
    let other_machine_cache = tempfile::tempdir().unwrap();
    let copied = copy_from_command(&cache_url, store.path(), &closure.root, &server_public)
        .env("XDG_CACHE_HOME", other_machine_cache.path())
        .output()
        .unwrap();
    assert!(copied.status.success(), "{}", stderr(&copied));
    assert_same_closure(store.path(), &closure.root);
    // Neither the writer's password (plain or as Basic) nor the server's key is logged.
    let log = server.log();
    let secret = std::fs::read_to_string(&server_key).unwrap();
    let secret = secret.trim().split(':').nth(1).unwrap();
    assert!(log.contains("stored"), "the log is there: {log}");
    for needle in ["writer-pass", "Y2k6d3JpdGVyLXBhc3M", secret] {
        assert!(!log.contains(needle), "{needle} logged");
    }
}

#[test]
fn a_narinfo_must_match_its_nar_and_the_trusted_keys() {
    let registry = RegistryProcess::start();
    let closure = SignedClosure::build(10_000);
    let stranger = SignedClosure::build(10);
    let server = ServerProcess::start(
        &named_cache(
            &registry,
            "guarded",
            &format!(
                "allow_write = true\ntrusted_public_keys = [\"{}\"]",
                closure.public_key
            ),
        ),
        &[],
    );
    let cache_url = server.url("guarded");
    let reference = reference_cache(&closure);
    let leaf = closure
        .paths
        .iter()
        .find(|p| p.ends_with("oranc-test-lib"))
        .unwrap();
    let narinfo_name = format!("{}.narinfo", hash_part(leaf));
    let text = std::fs::read_to_string(reference.join(&narinfo_name)).unwrap();
    let nar = text.lines().find_map(|l| l.strip_prefix("URL: ")).unwrap();
    assert_eq!(
        put_file(&format!("{cache_url}/{nar}"), &reference.join(nar), &[]),
        "200"
    );
    let narinfo_url = format!("{cache_url}/{narinfo_name}");
    let edit = |field: &str, value: &str| -> String {
        text.lines()
            .map(|line| match line.split_once(": ") {
                Some((name, _)) if name == field => format!("{name}: {value}\n"),
                _ => format!("{line}\n"),
            })
            .collect()
    };
    let other_hash = format!("sha256:{}", "0".repeat(52));
    let unsigned: String = text
        .lines()
        .filter(|l| !l.starts_with("Sig: "))
        .map(|l| format!("{l}\n"))
        .collect();
    let stranger_signed = {
        let secret: oranc_core::SecretKey = std::fs::read_to_string(&stranger.secret_key_file)
            .unwrap()
            .parse()
            .unwrap();
        let mut narinfo = oranc_core::NarInfo::parse(&unsigned).unwrap();
        narinfo.signatures = vec![secret.sign(&narinfo.fingerprint())];
        narinfo.to_string()
    };
    for (body, status, needle) in [
        (edit("FileHash", &other_hash), "400", "FileHash"),
        (edit("FileSize", "1"), "400", "FileSize"),
        (unsigned, "403", "trusted_public_keys"),
        (stranger_signed, "403", "trusted_public_keys"),
    ] {
        let (got, answer) = curl("PUT", &narinfo_url, &["--data-binary", &body]);
        let answer = String::from_utf8_lossy(&answer);
        assert_eq!(got, status, "{answer}");
        assert!(answer.contains(needle), "{answer}");
        assert_eq!(curl("GET", &narinfo_url, &[]).0, "404", "nothing stored");
    }
    // The narinfo as Nix wrote it, signed by the trusted key, is accepted.
    assert_eq!(
        put_file(&narinfo_url, &reference.join(&narinfo_name), &[]),
        "200"
    );
}

/// `bytes` compressed by `tool` (a command that reads stdin and writes stdout).
fn encoded(tool: &[&str], bytes: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut child = std::process::Command::new(tool[0])
        .args(&tool[1..])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = bytes.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input).unwrap());
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(output.status.success(), "{tool:?}");
    output.stdout
}

/// Found in review (issue 39, item 2): since 2.32 Nix can upload narinfos, listings and
/// logs with `Content-Encoding` (`narinfo-compression`, `ls-compression`,
/// `log-compression`). A gzip narinfo got 400, a gzip `.ls` was stored as gzip and served
/// as if plain, a brotli log was stored and served as brotli with no header. Now each is
/// decoded as it comes (bounded), checked as a plain one is, and stored plain.
#[test]
fn metadata_uploaded_compressed_is_stored_plain_and_checked() {
    let registry = RegistryProcess::start();
    let closure = SignedClosure::build(20_000);
    let server = ServerProcess::start_binary(
        oranc_tests::release_oranc_command(),
        &format!(
            "max_decoded_body_bytes = 1048576\n{}",
            named_cache(&registry, "ci", "allow_write = true")
        ),
        &[],
    );
    let cache_url = server.url("ci");
    let reference = reference_cache(&closure);
    let gzip = ["gzip", "-c"];
    // The NARs as they are, then each narinfo gzip'd, as Nix 2.32+ sends them.
    for entry in std::fs::read_dir(reference.join("nar")).unwrap() {
        let file = entry.unwrap().path();
        let name = file.file_name().unwrap().to_str().unwrap().to_owned();
        assert_eq!(
            put_file(&format!("{cache_url}/nar/{name}"), &file, &[]),
            "200"
        );
    }
    for path in &closure.paths {
        let name = format!("{}.narinfo", hash_part(path));
        let plain = std::fs::read(reference.join(&name)).unwrap();
        let body = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(body.path(), encoded(&gzip, &plain)).unwrap();
        let url = format!("{cache_url}/{name}");
        let status = put_file(&url, body.path(), &["-H", "Content-Encoding: gzip"]);
        assert_eq!(status, "200", "{name}");
        assert_eq!(curl("GET", &url, &[]).1, plain, "{name} is stored plain");
    }
    let store = tempfile::tempdir().unwrap();
    let copied = copy_from(&cache_url, store.path(), &closure.root, &closure.public_key);
    assert!(copied.status.success(), "{}", stderr(&copied));

    // Listings and logs in every coding Nix writes, and two applied one after the other.
    let hash = hash_part(&closure.root);
    let listing = br#"{"version":1,"root":{"type":"regular","size":5,"narOffset":96}}"#.repeat(3);
    let log = b"building '/nix/store/x.drv'...\n".repeat(500);
    let cases: [(&str, &str, &[u8], Vec<u8>); 6] = [
        ("ls", "gzip", &listing, encoded(&gzip, &listing)),
        ("log", "br", &log, encoded(&["brotli", "-c"], &log)),
        ("log", "zstd", &log, encoded(&["zstd", "-c", "-q"], &log)),
        ("log", "xz", &log, encoded(&["xz", "-c"], &log)),
        ("log", "bzip2", &log, encoded(&["bzip2", "-c"], &log)),
        (
            "log",
            "gzip, br",
            &log,
            encoded(&["brotli", "-c"], &encoded(&gzip, &log)),
        ),
    ];
    for (n, (kind, coding, plain, sent)) in cases.into_iter().enumerate() {
        let url = match kind {
            "ls" => format!("{cache_url}/{hash}.ls"),
            _ => format!("{cache_url}/log/{hash}-coded{n}.drv"),
        };
        let body = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(body.path(), &sent).unwrap();
        let header = format!("Content-Encoding: {coding}");
        assert_eq!(
            put_file(&url, body.path(), &["-H", &header]),
            "200",
            "{coding}"
        );
        let (head, stored) = curl("GET", &url, &["-D", "-"]);
        assert!(head.ends_with("200"), "{head}");
        assert!(
            !head.to_ascii_lowercase().contains("content-encoding"),
            "{head}"
        );
        assert_eq!(stored, plain, "{kind} sent as {coding} is stored plain");
    }

    // What is refused changes nothing: a bomb past max_decoded_body_bytes (413), a corrupt
    // body (400), a coding oranc does not undo (415, saying what it takes), a coded NAR.
    let bomb = encoded(&["zstd", "-c", "-q"], &vec![0u8; 8 << 20]);
    let refusals = [
        (format!("log/{hash}-bomb.drv"), "zstd", bomb, "413"),
        (
            format!("{}.narinfo", "1".repeat(32)),
            "gzip",
            b"not gzip".to_vec(),
            "400",
        ),
        (
            format!("log/{hash}-compress.drv"),
            "compress",
            log.clone(),
            "415",
        ),
        (
            format!("nar/{}.nar", "0".repeat(52)),
            "gzip",
            encoded(&gzip, b"nar"),
            "415",
        ),
    ];
    for (key, coding, sent, expected) in refusals {
        let url = format!("{cache_url}/{key}");
        let body = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(body.path(), &sent).unwrap();
        let header = format!("Content-Encoding: {coding}");
        let data = format!("@{}", body.path().display());
        let (status, said) = curl("PUT", &url, &["--data-binary", &data, "-H", &header]);
        let said = String::from_utf8_lossy(&said);
        assert_eq!(status, expected, "{key} as {coding}: {said}");
        assert_eq!(curl("GET", &url, &[]).0, "404", "{key} was not stored");
    }
    let (headers, _) = curl(
        "PUT",
        &format!("{cache_url}/log/{hash}-compress.drv"),
        &[
            "-H",
            "Content-Encoding: compress",
            "--data-binary",
            "x",
            "-D",
            "-",
        ],
    );
    let headers = headers.to_ascii_lowercase();
    assert!(
        headers.contains("accept-encoding: gzip, br, zstd, xz, bzip2"),
        "{headers}"
    );
}
