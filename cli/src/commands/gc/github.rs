//! gc on ghcr.io, which refuses the OCI manifest DELETE: each manifest is a version of the
//! package, deleted through GitHub's packages API (`backends/src/registry/github_packages.rs`).
//! The plan is the same as anywhere; only the deleting differs. Versions left untagged (a tag
//! pushed again leaves its old manifest behind, which still takes space) are deleted too,
//! once older than `--grace`.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use oranc_backends::registry::github_packages::{Deleted, GithubPackages, PackageVersion};
use oranc_backends::BackendError;
use oranc_core::Sha256Hash;

/// The package's versions as listed when gc started, by manifest digest.
pub struct Versions {
    packages: GithubPackages,
    by_digest: HashMap<String, u64>,
    listed: Vec<PackageVersion>,
}

impl Versions {
    /// Lists the versions of the package behind `repository` (`OWNER/NAME`).
    pub async fn list(api: &str, repository: &str, token: &str) -> anyhow::Result<Self> {
        let packages = GithubPackages::open(api, repository, token).await?;
        let listed = packages
            .versions()
            .await
            .context("listing the package's versions")?;
        let by_digest = listed.iter().map(|v| (v.name.clone(), v.id)).collect();
        Ok(Self {
            packages,
            by_digest,
            listed,
        })
    }

    /// Deletes the version holding the manifest `digest`: `NotFound` when there is none (an
    /// earlier run deleted it); GitHub's refusals and failures in its own words.
    pub async fn delete_manifest(&self, digest: &Sha256Hash) -> oranc_core::Result<()> {
        let what = digest.to_oci_digest();
        let Some(id) = self.by_digest.get(&what) else {
            return Err(oranc_core::Error::NotFound { what });
        };
        match self.packages.delete(*id).await {
            Ok(Deleted::Yes) => Ok(()),
            Ok(Deleted::AlreadyGone) => Err(oranc_core::Error::NotFound { what }),
            Ok(Deleted::Refused(words)) => Err(oranc_core::Error::Protocol {
                what: format!("package version {id} ({what})"),
                reason: format!("GitHub refuses to delete it: {words}"),
            }),
            Err(error @ BackendError::GithubDenied { .. }) => Err(oranc_core::Error::Denied {
                what: format!("deleting package version {id}"),
                hint: Some(error.to_string()),
            }),
            Err(error) => Err(oranc_core::Error::Unavailable {
                what: format!("deleting package version {id}"),
                reason: error.to_string(),
            }),
        }
    }

    /// Versions with no tag, last changed more than `grace` before `now`.
    pub fn untagged(&self, grace: Duration, now: SystemTime) -> Vec<&PackageVersion> {
        self.listed
            .iter()
            .filter(|v| v.tags().is_empty())
            .filter(|v| {
                v.changed()
                    .is_some_and(|at| now.duration_since(at).is_ok_and(|age| age >= grace))
            })
            .collect()
    }

    /// Deletes `versions` (untagged ones); how many went, and what GitHub refused.
    pub async fn delete_untagged(&self, versions: &[&PackageVersion]) -> (usize, Vec<String>) {
        let mut deleted = 0;
        let mut refused = Vec::new();
        for version in versions {
            match self.packages.delete(version.id).await {
                Ok(Deleted::Yes | Deleted::AlreadyGone) => deleted += 1,
                Ok(Deleted::Refused(words)) => {
                    refused.push(format!(
                        "untagged version {} ({}): {words}",
                        version.id, version.name
                    ));
                }
                Err(error) => refused.push(format!("untagged version {}: {error}", version.id)),
            }
        }
        (deleted, refused)
    }
}
