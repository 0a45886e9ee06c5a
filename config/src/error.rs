//! Configuration errors, each naming the file and the field.

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: {message}")]
    Syntax { path: String, message: String },

    #[error("{path}: {field}: {reason}")]
    Invalid {
        path: String,
        field: String,
        reason: String,
    },
}
