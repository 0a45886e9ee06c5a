//! What the tests of a mirror cache (`upstreams`) share: its config, the NAR name it serves
//! for a path, and downloads through it.

use crate::curl;
use crate::nix::hash_part;
use crate::registry::RegistryProcess;
use crate::server::{allow_plain_http, ServerProcess};

/// The config of a server with one mirror cache, `mirror`, of `upstream`, trusting `key`.
pub fn mirror_config(registry: &RegistryProcess, upstream: &str, key: &str) -> String {
    mirror_config_at(&registry.host(), "", upstream, key)
}

/// The config of a server whose mirror of `upstream` stores into `registry_host` (a plain
/// HTTP registry, or a latency proxy in front of one), with `registry_lines` more on it.
pub fn mirror_config_at(
    registry_host: &str,
    registry_lines: &str,
    upstream: &str,
    key: &str,
) -> String {
    format!(
        "{}{registry_lines}[caches.mirror]\nregistry = \"{registry_host}\"\nrepository = \"mirror/cache\"\nupstreams = [\"{upstream}\"]\nupstream_public_keys = [\"{key}\"]\n",
        allow_plain_http(registry_host),
    )
}

/// The `URL` of the narinfo of `path` as `server`'s mirror serves it.
pub fn served_nar_url(server: &ServerProcess, path: &str) -> String {
    let (status, narinfo, _) = curl(&[&server.url(&format!("mirror/{}.narinfo", hash_part(path)))]);
    assert_eq!(status, "200", "{narinfo}");
    oranc_core::NarInfo::parse(&narinfo)
        .expect("the mirror's narinfo")
        .url
}

/// GET `url` into a file: curl's exit code and the bytes received.
pub fn download(url: &str) -> (i32, Vec<u8>) {
    let file = tempfile::NamedTempFile::new().expect("a temporary file");
    let status = std::process::Command::new("curl")
        .args(["-s", "--max-time", "30", "-o"])
        .arg(file.path())
        .arg(url)
        .status()
        .expect("running curl");
    (
        status.code().unwrap_or(-1),
        std::fs::read(file.path()).unwrap_or_default(),
    )
}

/// A binary cache Nix wrote (`nix copy --to file://DIR/upstream`, xz) of fresh paths of
/// random bytes, one per size in `sizes`, signed by a new key: the paths, the public key,
/// and the cache's directory. An upstream for mirror tests and benchmarks.
pub fn signed_random_cache(
    dir: &std::path::Path,
    prefix: &str,
    sizes: &[usize],
) -> (Vec<String>, String, std::path::PathBuf) {
    use crate::nix::{add_random_path, generate_key, nix_command};
    let nonce = crate::unique_suffix();
    let (secret, public_key) = generate_key(dir, &format!("{prefix}-{nonce}"));
    let paths: Vec<String> = sizes
        .iter()
        .enumerate()
        .map(|(i, size)| add_random_path(dir, &format!("{prefix}-{nonce}-{i}"), *size))
        .collect();
    crate::run_ok(
        nix_command("nix")
            .args(["store", "sign", "-k"])
            .arg(&secret)
            .args(&paths),
    );
    let cache = dir.join("upstream");
    crate::run_ok(
        nix_command("nix")
            .args(["copy", "--to", &format!("file://{}", cache.display())])
            .args(&paths),
    );
    (paths, public_key, cache)
}
