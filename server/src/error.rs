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

    #[error(
        "registry {0} is not served here: list it under [registries] in the config, or start the server with --registry {0} (or --allow-any-registry, an open proxy as the original oranc was)"
    )]
    RegistryNotAllowed(String),

    #[error("{0}")]
    BadRequest(String),

    #[error("credentials needed to write here: Nix sends HTTP Basic credentials from its netrc file (netrc-file = /etc/nix/netrc, a line `machine HOST login USER password PASSWORD`); uploads to a configured cache need a writer's credentials (writers_file) or allow_write")]
    CredentialsRequired,

    /// A read the registry refused without credentials, of a `/{registry}/{repository}`
    /// URL (a named cache reads with its own): the client is challenged for its own.
    #[error("credentials needed to read here: the registry refused an anonymous read of this repository. Nix sends HTTP Basic credentials from its netrc file (netrc-file = /etc/nix/netrc, a line `machine HOST login USER password PASSWORD`), which are forwarded to the registry")]
    ReadCredentialsRequired,

    /// The registry refused a named cache's own credentials: the server's configuration is
    /// wrong, and nothing a client sends can fix it.
    #[error("the registry refused the credentials of cache {0} (its username and password in the server's config); the operator must fix them (the server's log and /readyz say more)")]
    CacheCredentialsRefused(String),

    /// The client sent credentials, but they prove nothing here (the reason says why).
    #[error("{0}")]
    CredentialsNotGranted(String),

    /// Credentials on a cache with writers that are not a writer's: an unknown name and a
    /// wrong password are answered alike, so guessing tells nobody who the writers are.
    #[error("these credentials are not those of a writer of this cache (an unknown user or a wrong password)")]
    NotAWriter,

    #[error("too many password checks from this client; retry in {0} s")]
    TooManyPasswordChecks(u64),

    #[error("the server is busy checking passwords; retry shortly")]
    PasswordChecksBusy,

    /// The upload would replace a file that anonymous writers may only add.
    #[error("{0}")]
    Conflict(String),

    /// An upload the cache's rules refuse (e.g. not signed by a trusted key).
    #[error("{0}")]
    Refused(String),

    #[error("body larger than {0} bytes")]
    TooLarge(usize),

    /// An upload with a `Content-Encoding` oranc does not undo (or any, on a NAR): 415.
    #[error("{0}")]
    UnsupportedEncoding(String),

    /// The client stopped sending its upload.
    #[error("{0}")]
    UploadStalled(String),

    /// A mirror cache has as much upstream work under way as it takes: 503, try again soon.
    #[error("{0}; try again shortly")]
    MirrorBusy(String),

    /// A mirror cache's upstream failed (down, 5xx, timed out, or not serving a file its
    /// narinfo names): 502 for that file, and nothing partial is stored.
    #[error("{0}")]
    UpstreamFailed(String),

    /// The server's TLS certificate or key cannot be used (at start, or on a reload, which
    /// keeps the one in use): never a request's answer.
    #[error("TLS certificate: {0}")]
    Tls(String),

    /// The registry did not let us answer within `response_timeout_secs`.
    #[error("no answer from the registry within {0} s")]
    ResponseTimedOut(u64),

    #[error("{0}")]
    Internal(String),

    // Start-up failures below: each message is whole, with its cause in it, and no
    // `source()` (printed with `{:#}` at the binary's edge, a source would be said twice).
    /// Start-up: a file the configuration names cannot be read.
    #[error("cannot read {what} {path}: {error}")]
    UnreadableFile {
        what: &'static str,
        path: String,
        error: std::io::Error,
    },

    /// Start-up: a writers file that is not `user:hash` lines.
    #[error("writers_file {path}: {reason}")]
    InvalidWritersFile { path: String, reason: String },

    /// Start-up: a signing key file that does not hold a Nix secret key.
    #[error("signing_key_file {path}: {error}")]
    InvalidSigningKey {
        path: String,
        error: oranc_core::Error,
    },

    #[error("environment variable {0} is not set")]
    MissingEnvironment(String),

    /// Start-up: a registry or directory the configuration names cannot be opened.
    #[error("{0}")]
    Backend(oranc_backends::BackendError),

    /// Start-up: `[upstream] ignore` is not a regular expression.
    #[error("upstream.ignore: {0}")]
    UpstreamIgnore(regex::Error),

    /// Start-up: the HTTP client for upstream caches cannot be built.
    #[error("upstream client: {0}")]
    UpstreamClient(reqwest::Error),

    /// Start-up: what went wrong, and in which named cache or listed registry.
    #[error("{scope}: {error}")]
    Setup {
        scope: String,
        error: Box<ServerError>,
    },
}

impl ServerError {
    /// This error, said to be about `scope` (`cache NAME`, `registry NAME`).
    pub fn within(self, scope: impl Into<String>) -> Self {
        Self::Setup {
            scope: scope.into(),
            error: Box::new(self),
        }
    }
}

impl ServerError {
    pub fn status(&self) -> StatusCode {
        use oranc_core::Error as E;
        match self {
            Self::Core(error) => match error {
                E::NotFound { .. } => StatusCode::NOT_FOUND,
                E::Denied { .. } => StatusCode::FORBIDDEN,
                E::TimedOut { .. } => StatusCode::GATEWAY_TIMEOUT,
                E::Unavailable { .. } | E::PushedBack { .. } => StatusCode::SERVICE_UNAVAILABLE,
                E::Protocol { .. } | E::InvalidManifest { .. } | E::Unsupported { .. } => {
                    StatusCode::BAD_GATEWAY
                }
                E::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::BAD_REQUEST,
            },
            Self::RegistryNotAllowed(_) => StatusCode::FORBIDDEN,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::CredentialsRequired | Self::ReadCredentialsRequired | Self::NotAWriter => {
                StatusCode::UNAUTHORIZED
            }
            Self::CacheCredentialsRefused(_) => StatusCode::BAD_GATEWAY,
            Self::TooManyPasswordChecks(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::PasswordChecksBusy | Self::MirrorBusy(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Refused(_) | Self::CredentialsNotGranted(_) => StatusCode::FORBIDDEN,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::UploadStalled(_) => StatusCode::REQUEST_TIMEOUT,
            Self::ResponseTimedOut(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::UpstreamFailed(_) => StatusCode::BAD_GATEWAY,
            Self::Internal(_)
            | Self::Tls(_)
            | Self::UnreadableFile { .. }
            | Self::InvalidWritersFile { .. }
            | Self::InvalidSigningKey { .. }
            | Self::MissingEnvironment(_)
            | Self::Backend(_)
            | Self::UpstreamIgnore(_)
            | Self::UpstreamClient(_)
            | Self::Setup { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl ServerError {
    /// An upload body that could not be read: stalled (408) or broken by the client (400).
    pub fn from_body_error(error: std::io::Error) -> Self {
        if error.kind() == std::io::ErrorKind::TimedOut {
            Self::UploadStalled(error.to_string())
        } else {
            Self::BadRequest(format!("reading the body: {error}"))
        }
    }
}

impl IntoResponse for ServerError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(%status, error = %crate::refusal_log::loggable(&self), "request failed");
        } else {
            crate::refusal_log::log_refusal(status, &self);
        }
        let body = match &self {
            // Upstream's addresses and answers are the operator's business, not a client's:
            // the log above has them.
            Self::UpstreamFailed(_) => {
                "the mirror's upstream failed for this file (the server's log says why)\n".into()
            }
            other => format!("{other}\n"),
        };
        let mut response = (status, body).into_response();
        let retry_after = match &self {
            Self::TooManyPasswordChecks(seconds) => Some(*seconds),
            Self::PasswordChecksBusy | Self::MirrorBusy(_) => Some(1),
            // The registry's own wait, rounded up: a client that comes back sooner would
            // only meet the same pause.
            Self::Core(oranc_core::Error::PushedBack { retry_after, .. }) => {
                Some(retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0))
            }
            _ => None,
        };
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
        }
        if let Self::UnsupportedEncoding(_) = &self {
            // What would have been taken (RFC 9110, 15.5.16).
            response.headers_mut().insert(
                header::ACCEPT_ENCODING,
                header::HeaderValue::from_static(crate::routes::ACCEPTED_CODINGS),
            );
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"oranc\""),
            );
        }
        response
    }
}
