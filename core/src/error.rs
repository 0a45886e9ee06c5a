//! The one error type of `oranc-core`: parsing failures that say what was wrong and where,
//! and the registry outcomes every backend must tell apart (absent, denied, unavailable).

/// Everything that can go wrong in the core model or behind the [`crate::Registry`] and
/// [`crate::StoreSource`] traits.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid store path {path:?}: {reason}")]
    InvalidStorePath { path: String, reason: String },

    #[error("invalid hash {input:?}: {reason}")]
    InvalidHash { input: String, reason: String },

    #[error("invalid narinfo, line {line}: {reason}")]
    InvalidNarinfo { line: usize, reason: String },

    #[error("invalid nix-cache-info, line {line}: {reason}")]
    InvalidCacheInfo { line: usize, reason: String },

    #[error("invalid debuginfo entry: {reason}")]
    InvalidDebugInfo { reason: String },

    #[error("invalid key: {reason}")]
    InvalidKey { reason: String },

    #[error("invalid signature {signature:?}: {reason}")]
    InvalidSignature { signature: String, reason: String },

    #[error("invalid cache key {key:?}: {reason}")]
    InvalidCacheKey { key: String, reason: String },

    #[error("invalid tag {tag:?}: {reason}")]
    InvalidTag { tag: String, reason: String },

    #[error("cannot encode key {key:?} as a tag: {reason}")]
    UnencodableKey { key: String, reason: String },

    #[error("invalid repository name {name:?}: {reason}")]
    InvalidRepository { name: String, reason: String },

    #[error("manifest is not an oranc object: {reason}")]
    InvalidManifest { reason: String },

    /// The registry or store answered that the thing does not exist.
    #[error("{what} not found")]
    NotFound { what: String },

    /// Credentials were missing, wrong, or lack the permission asked for.
    #[error("{what}: access denied{}", hint_suffix(.hint))]
    Denied { what: String, hint: Option<String> },

    /// The other side is down, overloaded, throttling or timing out; worth retrying later.
    #[error("{what}: unavailable: {reason}")]
    Unavailable { what: String, reason: String },

    /// The other side did not answer, or stopped sending, within the time allowed; like
    /// [`Error::Unavailable`], worth retrying later, but a gateway answers it with 504.
    #[error("{what}: unavailable: timed out{}", reason_suffix(.reason))]
    TimedOut {
        what: String,
        reason: Option<String>,
    },

    /// The registry does not offer the operation (HTTP 405: deletion turned off, or an API
    /// that deletes another way).
    #[error("{what}: not supported by the registry: {reason}")]
    Unsupported { what: String, reason: String },

    /// The other side answered, but not in a way the protocol allows.
    #[error("{what}: unexpected answer: {reason}")]
    Protocol { what: String, reason: String },

    /// The registry asked to wait (429 with `Retry-After`) longer than this client waits
    /// for it: the caller may pass the wait on (the server answers 503 with it).
    #[error("{what}: the registry asks for no requests for {} s", retry_after.as_secs().max(1))]
    PushedBack {
        what: String,
        retry_after: std::time::Duration,
    },

    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn hint_suffix(hint: &Option<String>) -> String {
    hint.as_ref().map(|h| format!(" ({h})")).unwrap_or_default()
}

fn reason_suffix(reason: &Option<String>) -> String {
    reason.as_ref().map(|r| format!(" {r}")).unwrap_or_default()
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `error` and its causes joined by ": ", each said once: many errors say their cause in
/// their own message too, and the whole chain then said it twice ("No such file or
/// directory (os error 2): No such file or directory (os error 2)"); others, such as
/// reqwest's ("error sending request"), say it only in their causes.
pub fn said_once(error: &(dyn std::error::Error + 'static)) -> String {
    let mut said: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(cause) = next {
        let text = cause.to_string();
        if !said.iter().any(|earlier| earlier.contains(&text)) {
            said.push(text);
        }
        next = cause.source();
    }
    said.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_the_message_already_says_is_not_said_again() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let error = Error::Io {
            what: "reading x".into(),
            source: io,
        };
        assert_eq!(said_once(&error), "reading x: gone");
    }
}
