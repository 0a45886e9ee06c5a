//! Registry backends, and [`open`]: the one place that picks one from settings.

mod auth;
mod bounded;
mod credentials;
mod distribution;
mod docker_hub;
mod ghcr;
pub mod github_packages;
mod hashing;
mod oci_layout;
mod origins;
mod pace;
mod retry;
mod throttle;

use std::path::PathBuf;
use std::sync::Arc;

use oranc_core::Registry;

/// For the binary-cache client, which bounds small answers the same way.
pub(crate) use bounded::{body_of, read_stream_capped, with_progress_deadline};
pub use credentials::Credentials;
pub use distribution::{DistributionRegistry, DistributionSettings, HttpTuning};
pub use oci_layout::OciLayoutRegistry;

use crate::error::BackendError;

pub use oranc_core::RegistryKind;

/// The backend a registry location implies: a path is an OCI layout, `ghcr.io` and Docker
/// Hub's names get their own backends, anything else is generic distribution.
pub fn kind_for_location(location: &str) -> RegistryKind {
    if oranc_core::is_directory_location(location) {
        RegistryKind::OciLayout
    } else if location == ghcr::HOST {
        RegistryKind::Ghcr
    } else if docker_hub::is_docker_hub(location) {
        RegistryKind::DockerHub
    } else {
        RegistryKind::Distribution
    }
}

/// Everything needed to open one registry.
#[derive(Debug, Clone)]
pub struct RegistrySettings {
    pub kind: RegistryKind,
    /// `host[:port]` for HTTP registries; a directory (optionally `oci-layout:DIR`) for
    /// [`RegistryKind::OciLayout`].
    pub location: String,
    /// Credentials given by flag or config; `None` falls back to the environment, then the
    /// docker config, then anonymous.
    pub credentials: Option<Credentials>,
    pub http: HttpTuning,
}

impl RegistrySettings {
    pub fn new(location: &str) -> Self {
        Self {
            kind: kind_for_location(location),
            location: location.to_owned(),
            credentials: None,
            http: HttpTuning::default(),
        }
    }
}

/// An opened registry that can also act for other credentials (the server forwards each
/// client's own), sharing connections and limits.
#[derive(Debug, Clone)]
pub enum RegistryHandle {
    Http(Arc<DistributionRegistry>),
    Local(Arc<OciLayoutRegistry>),
}

impl RegistryHandle {
    /// The registry with the credentials it was opened with.
    pub fn registry(&self) -> Arc<dyn Registry> {
        match self {
            Self::Http(registry) => registry.clone(),
            Self::Local(registry) => registry.clone(),
        }
    }

    /// The registry acting with `credentials` instead (a local layout has none).
    pub fn with_credentials(&self, credentials: Credentials) -> Arc<dyn Registry> {
        match self {
            Self::Http(registry) => Arc::new(registry.with_credentials(credentials)),
            Self::Local(registry) => registry.clone(),
        }
    }
}

/// Opens the backend `settings` names.
pub fn open(settings: RegistrySettings) -> Result<Arc<dyn Registry>, BackendError> {
    Ok(open_handle(settings)?.registry())
}

/// Opens the backend `settings` names, keeping the ability to switch credentials.
pub fn open_handle(settings: RegistrySettings) -> Result<RegistryHandle, BackendError> {
    let RegistrySettings {
        kind,
        location,
        credentials,
        mut http,
    } = settings;
    let (host, naming): (
        String,
        fn(&str) -> oranc_core::Result<oranc_core::RepositoryName>,
    ) = match kind {
        RegistryKind::OciLayout => {
            let dir = location.strip_prefix("oci-layout:").unwrap_or(&location);
            return Ok(RegistryHandle::Local(Arc::new(OciLayoutRegistry::new(
                PathBuf::from(dir),
            )?)));
        }
        RegistryKind::Distribution => {
            if location.is_empty() || location.contains('/') {
                return Err(BackendError::InvalidSetting {
                    setting: "registry",
                    reason: format!("{location:?} is not host[:port]"),
                });
            }
            (location, distribution::plain_naming)
        }
        RegistryKind::Ghcr => {
            if let Some(origins) = &mut http.blob_origins {
                origins.push(ghcr::BLOB_STORAGE.to_owned());
            }
            // ghcr.io, or another host that behaves as it (GitHub Enterprise Server, tests).
            (location, ghcr::naming)
        }
        RegistryKind::DockerHub => {
            http.token_realms.push(docker_hub::TOKEN_REALM.to_owned());
            if let Some(origins) = &mut http.blob_origins {
                origins.push(docker_hub::BLOB_STORAGE.to_owned());
            }
            // Docker Hub by any of its names, or a host that behaves as it (tests).
            let host = if docker_hub::is_docker_hub(&location) {
                docker_hub::API_HOST.to_owned()
            } else {
                location
            };
            (host, docker_hub::naming)
        }
    };
    let credentials = Credentials::resolve(credentials, &host)?;
    Ok(RegistryHandle::Http(Arc::new(DistributionRegistry::new(
        DistributionSettings {
            host,
            credentials,
            tuning: http,
            naming,
        },
    )?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_location_picks_the_backend() {
        assert_eq!(kind_for_location("ghcr.io"), RegistryKind::Ghcr);
        assert_eq!(kind_for_location("docker.io"), RegistryKind::DockerHub);
        assert_eq!(
            kind_for_location("127.0.0.1:5000"),
            RegistryKind::Distribution
        );
        assert_eq!(kind_for_location("/var/lib/oranc"), RegistryKind::OciLayout);
        assert_eq!(
            kind_for_location("oci-layout:cache"),
            RegistryKind::OciLayout
        );
    }

    #[test]
    fn a_location_with_a_path_is_not_a_host() {
        let mut settings = RegistrySettings::new("example.com/v2");
        settings.credentials = Some(Credentials::Anonymous);
        assert!(matches!(
            open(settings),
            Err(BackendError::InvalidSetting { .. })
        ));
    }
}
