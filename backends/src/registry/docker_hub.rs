//! Docker Hub. Users say `docker.io`; the API lives at `registry-1.docker.io`, tokens come
//! from `auth.docker.io`, and one-segment names are official images under `library/`.
//! Its pull quota shows in `ratelimit-*` headers and 429 answers, which the shared retry
//! policy honours.

use oranc_core::{RepositoryName, Result};

/// Where the API answers.
pub const API_HOST: &str = "registry-1.docker.io";
/// Its token service, on another host than the API: the one realm credentials may go to
/// besides the registry itself.
pub const TOKEN_REALM: &str = "https://auth.docker.io/token";
/// Where its blob GETs redirect to (its CDN).
pub const BLOB_STORAGE: &str = "https://production.cloudflare.docker.com";
/// Names users give Docker Hub.
pub const ALIASES: [&str; 4] = [
    "docker.io",
    "index.docker.io",
    "registry-1.docker.io",
    "hub.docker.com",
];

pub fn is_docker_hub(host: &str) -> bool {
    ALIASES.contains(&host)
}

/// `nixos` -> `library/nixos`; `user/cache` unchanged.
pub fn naming(name: &str) -> Result<RepositoryName> {
    if name.contains('/') {
        name.parse()
    } else {
        format!("library/{name}").parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_segment_names_are_official_images() {
        assert_eq!(naming("nixos").unwrap().as_str(), "library/nixos");
        assert_eq!(naming("me/cache").unwrap().as_str(), "me/cache");
        assert!(is_docker_hub("docker.io"));
        assert!(!is_docker_hub("ghcr.io"));
    }
}
