//! The server's TOML configuration: which registries it may talk to and how, named caches
//! (registry + repository + credentials, hidden behind a short URL), upstreams and limits.
//! Defaults live in one place ([`model`]), validation names the field that is wrong
//! ([`load`]). No I/O beyond reading the file and the environment variables it names.

pub mod error;
pub mod load;
pub mod model;

pub use error::ConfigError;
pub use load::{load_file, parse, validate, warnings, who_writes, write_positions};
pub use model::{
    CacheConfig, ClaimPattern, ClientLimitsConfig, Config, MirrorConfig, OidcIssuerConfig,
    PasswordChecksConfig, RateLimitConfig, RegistryConfig, RegistryKind, ResponseCacheConfig,
    TlsConfig, UpstreamConfig,
};
