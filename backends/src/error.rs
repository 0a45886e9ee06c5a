//! Errors in setting a backend up (bad settings, unreadable credentials), and of GitHub's
//! packages API, which is not a registry. Failures of the registry operations themselves are
//! [`oranc_core::Error`], which the trait returns.

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("invalid registry setting {setting}: {reason}")]
    InvalidSetting {
        setting: &'static str,
        reason: String,
    },

    #[error("cannot read credentials for {host} from the docker config: {reason}")]
    DockerConfig { host: String, reason: String },

    #[error("binary cache {url}: {reason}")]
    BinaryCacheUrl { url: String, reason: String },

    #[error("cannot create the HTTP client: {0}")]
    HttpClient(String),

    /// GitHub's packages API (gc on ghcr.io) refused or failed a request.
    #[error("GitHub packages API, {what}: {reason}")]
    GithubApi { what: String, reason: String },

    /// GitHub's packages API refused the token (401) or its rights (403); the reason names
    /// what is missing.
    #[error("GitHub packages API, {what}: {reason}")]
    GithubDenied { what: String, reason: String },

    #[error("cannot use the OCI layout directory {path}: {source}")]
    LayoutDirectory {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}
