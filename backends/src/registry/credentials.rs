//! Where registry credentials come from, in order: given explicitly (flag or config),
//! `ORANC_USERNAME` / `ORANC_PASSWORD`, the docker config file (`~/.docker/config.json`,
//! credential helpers included), else anonymous. The password never reaches `Debug`.

use std::fmt;

use crate::error::BackendError;

pub const USERNAME_ENV: &str = "ORANC_USERNAME";
pub const PASSWORD_ENV: &str = "ORANC_PASSWORD";

#[derive(Clone, PartialEq, Eq, Default)]
pub enum Credentials {
    #[default]
    Anonymous,
    Basic {
        username: String,
        password: String,
    },
}

impl Credentials {
    pub fn basic(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self::Basic {
            username: username.into(),
            password: password.into(),
        }
    }

    /// `ORANC_USERNAME` and `ORANC_PASSWORD`, when both are set.
    pub fn from_env() -> Option<Self> {
        let username = std::env::var(USERNAME_ENV).ok()?;
        let password = std::env::var(PASSWORD_ENV).ok()?;
        Some(Self::basic(username, password))
    }

    /// The docker config's entry for `host` (Docker Hub's is stored under its v1 URL).
    pub fn from_docker_config(host: &str) -> Result<Option<Self>, BackendError> {
        let keys: &[&str] = if matches!(
            host,
            "docker.io" | "registry-1.docker.io" | "index.docker.io"
        ) {
            &[
                "https://index.docker.io/v1/",
                "docker.io",
                "registry-1.docker.io",
            ]
        } else {
            &[host]
        };
        for key in keys {
            match docker_credential::get_credential(key) {
                Ok(docker_credential::DockerCredential::UsernamePassword(username, password)) => {
                    return Ok(Some(Self::basic(username, password)))
                }
                Ok(docker_credential::DockerCredential::IdentityToken(_)) => {
                    tracing::warn!(host, "the docker config holds an identity token for this registry; oranc needs a username and password or token, ignoring it");
                }
                Err(
                    docker_credential::CredentialRetrievalError::ConfigNotFound
                    | docker_credential::CredentialRetrievalError::ConfigReadError
                    | docker_credential::CredentialRetrievalError::NoCredentialConfigured,
                ) => {}
                Err(other) => {
                    return Err(BackendError::DockerConfig {
                        host: host.to_owned(),
                        reason: other.to_string(),
                    })
                }
            }
        }
        Ok(None)
    }

    /// The credentials to use for `host`: `explicit`, else the environment, else the docker
    /// config, else anonymous.
    pub fn resolve(explicit: Option<Self>, host: &str) -> Result<Self, BackendError> {
        if let Some(credentials) = explicit.or_else(Self::from_env) {
            return Ok(credentials);
        }
        Ok(Self::from_docker_config(host)?.unwrap_or_default())
    }

    pub fn is_anonymous(&self) -> bool {
        matches!(self, Self::Anonymous)
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Anonymous => f.write_str("Anonymous"),
            Self::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_password() {
        let shown = format!("{:?}", Credentials::basic("alice", "hunter2-secret"));
        assert!(shown.contains("alice"));
        assert!(!shown.contains("hunter2"));
    }

    #[test]
    fn reads_a_docker_config_file() {
        let dir = tempfile::tempdir().unwrap();
        // base64("bob:s3cret")
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"auths":{"registry.example:5000":{"auth":"Ym9iOnMzY3JldA=="}}}"#,
        )
        .unwrap();
        // The docker_credential crate reads DOCKER_CONFIG; this test owns that variable.
        std::env::set_var("DOCKER_CONFIG", dir.path());
        let found = Credentials::from_docker_config("registry.example:5000").unwrap();
        let absent = Credentials::from_docker_config("other.example").unwrap();
        std::env::remove_var("DOCKER_CONFIG");
        assert_eq!(found, Some(Credentials::basic("bob", "s3cret")));
        assert_eq!(absent, None);
    }
}
