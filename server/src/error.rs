//! Every failure the server answers with, mapped to HTTP in one place: absent -> 404,
//! credentials missing or refused -> 401/403, bad input -> 400, registry trouble ->
//! 502/503/504 (never a 404, or Nix would think the path is simply not cached), our bug ->
//! 500. Messages never carry credentials.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    Core(#[from] oranc_core::Error),

    #[error("registry {0} is not served here (list it under [registries] in the config)")]
    RegistryNotAllowed(String),

    #[error("{0}")]
    BadRequest(String),

    #[error("credentials needed: send HTTP Basic credentials (e.g. from a netrc file); uploading to a configured cache needs a writer's credentials or allow_write")]
    CredentialsRequired,

    /// The client sent credentials, but they prove nothing here (the reason says why).
    #[error("{0}")]
    CredentialsNotGranted(String),

    #[error("wrong password for writer {0:?}")]
    WrongWriterPassword(String),

    /// The upload would replace a file that anonymous writers may only add.
    #[error("{0}")]
    Conflict(String),

    /// An upload the cache's rules refuse (e.g. not signed by a trusted key).
    #[error("{0}")]
    Refused(String),

    #[error("body larger than {0} bytes")]
    TooLarge(usize),

    #[error("{0}")]
    Internal(String),
}

impl ServerError {
    pub fn status(&self) -> StatusCode {
        use oranc_core::Error as E;
        match self {
            Self::Core(error) => match error {
                E::NotFound { .. } => StatusCode::NOT_FOUND,
                E::Denied { .. } => StatusCode::FORBIDDEN,
                E::Unavailable { reason, .. } if reason.contains("timed out") => {
                    StatusCode::GATEWAY_TIMEOUT
                }
                E::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
                E::Protocol { .. } | E::InvalidManifest { .. } | E::Unsupported { .. } => {
                    StatusCode::BAD_GATEWAY
                }
                E::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::BAD_REQUEST,
            },
            Self::RegistryNotAllowed(_) => StatusCode::FORBIDDEN,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::CredentialsRequired | Self::WrongWriterPassword(_) => StatusCode::UNAUTHORIZED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Refused(_) | Self::CredentialsNotGranted(_) => StatusCode::FORBIDDEN,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ServerError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(%status, error = %self, "request failed");
        } else {
            tracing::debug!(%status, error = %self, "request refused");
        }
        let mut response = (status, format!("{self}\n")).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"oranc\""),
            );
        }
        response
    }
}
