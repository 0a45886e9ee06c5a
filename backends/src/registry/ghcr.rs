//! GitHub's container registry. It speaks plain distribution with bearer tokens from
//! `https://ghcr.io/token` (anonymous tokens for public packages), wants lower-case
//! repository names (`Owner/Repo` is stored as `owner/repo`) and redirects blob GETs to
//! its blob storage, which the distribution client follows without our Authorization.

use oranc_core::{RepositoryName, Result};

pub const HOST: &str = "ghcr.io";
/// Where its blob GETs redirect to.
pub const BLOB_STORAGE: &str = "https://pkg-containers.githubusercontent.com";

/// ghcr.io lower-cases owners and names; users type them as GitHub shows them.
pub fn naming(name: &str) -> Result<RepositoryName> {
    name.to_ascii_lowercase().parse()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_style_names_are_lower_cased() {
        assert_eq!(
            naming("LinYinFeng/Cache").unwrap().as_str(),
            "linyinfeng/cache"
        );
        assert!(naming("bad name").is_err());
    }
}
