//! Whether credentials a client sends may stand as a grant to write. The server does not own
//! a registry's passwords, so forwarding a client's credentials proves something only where
//! the registry checks them: a local OCI layout checks none, and neither does a registry
//! without auth (an internal `distribution`). There, made-up credentials would write and
//! replace anything. The rule (docs/security.md), decided here alone:
//!
//! - a local directory: never (only a named cache's `writers_file` or `allow_write` apply);
//! - a listed registry: if it refuses an anonymous `GET /v2/` (asked once, at start or at
//!   the first write), or if its entry says `trust_client_credentials`;
//! - a registry named in a URL under `allow_any_registry`: as a listed one without
//!   `trust_client_credentials`, so another spelling of a listed host cannot bypass it.

use std::sync::Arc;

use oranc_backends::RegistryHandle;
use oranc_core::Registry;
use tokio::sync::OnceCell;

use crate::error::ServerError;

#[derive(Debug)]
pub enum CredentialGrant {
    /// Nobody checks them.
    Never,
    /// The operator said so (`trust_client_credentials`).
    Always,
    /// If the registry checks credentials; asked once, then remembered.
    IfChecked {
        registry: Arc<dyn Registry>,
        checks: OnceCell<bool>,
    },
}

impl CredentialGrant {
    /// The grant for the registry `handle` opens.
    pub fn for_registry(handle: &RegistryHandle, trust_client_credentials: bool) -> Self {
        match handle {
            RegistryHandle::Local(_) => Self::Never,
            RegistryHandle::Http(_) if trust_client_credentials => Self::Always,
            RegistryHandle::Http(_) => Self::IfChecked {
                registry: handle.registry(),
                checks: OnceCell::new(),
            },
        }
    }

    /// Whether forwarded credentials may write. A registry that cannot be asked now is a
    /// 503 for this request, and asked again at the next.
    pub async fn allows_writes(&self) -> Result<bool, ServerError> {
        match self {
            Self::Never => Ok(false),
            Self::Always => Ok(true),
            Self::IfChecked { registry, checks } => {
                let checked = checks
                    .get_or_try_init(|| async {
                        let checked = registry.checks_credentials().await?;
                        log_position(registry.name(), checked);
                        Ok::<_, ServerError>(checked)
                    })
                    .await?;
                Ok(*checked)
            }
        }
    }

    /// Why a client's credentials grant nothing here, for the answer to its write.
    pub fn refusal(&self) -> String {
        match self {
            Self::Never => "this cache is a local directory, which checks no credentials: only the cache's writers (writers_file) or anonymous adds (allow_write) may write".to_owned(),
            Self::IfChecked { registry, .. } => format!("the registry {} does not check credentials, so the ones you sent prove nothing: only the cache's writers (writers_file) or anonymous adds (allow_write) may write (an operator may set trust_client_credentials)", registry.name()),
            Self::Always => "the credentials were refused".to_owned(),
        }
    }
}

fn log_position(registry: &str, checks: bool) {
    if checks {
        tracing::info!(
            registry,
            "the registry checks credentials: credentials clients send are forwarded and it decides what they may write"
        );
    } else {
        tracing::warn!(
            registry,
            "the registry answers anonymous requests: credentials clients send grant no writes through this server (set trust_client_credentials to allow)"
        );
    }
}
