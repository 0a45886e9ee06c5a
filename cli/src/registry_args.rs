//! The flags that name a cache (registry, repository, credentials, tag encodings), shared by
//! push and server, and the one function that turns them into a [`RegistryCache`].

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use oranc_backends::{Credentials, RegistrySettings};
use oranc_core::{RegistryCache, TagEncoding};

/// Repository used with the embedded local registry when none is named.
pub const DEFAULT_LOCAL_REPOSITORY: &str = "oranc/cache";

/// Registry used when only a repository is named, as the original oranc did.
const ORIGINAL_DEFAULT_REGISTRY: &str = "ghcr.io";

#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// Registry to use: `ghcr.io`, `docker.io`, `HOST[:PORT]`, or a directory holding a local
    /// OCI layout. With --repository but no --registry it is `ghcr.io`, as in the original
    /// oranc. With neither, oranc uses its embedded local registry
    /// ($ORANC_HOME, default ~/.local/share/oranc/registry) and the repository `oranc/cache`.
    #[arg(long, env = "ORANC_REGISTRY")]
    pub registry: Option<String>,

    /// Repository inside the registry, e.g. `owner/cache` (required with a remote --registry).
    #[arg(long, env = "ORANC_REPOSITORY")]
    pub repository: Option<String>,

    /// What the registry is, when its host does not say: `ghcr` makes any host behave as
    /// ghcr.io (GitHub Enterprise Server's container registry; tests), `distribution`,
    /// `docker-hub`. By default ghcr.io is `ghcr`, docker.io `docker-hub`, a directory a
    /// local layout, anything else `distribution`.
    #[arg(long, env = "ORANC_REGISTRY_KIND", value_name = "KIND", value_parser = parse_kind)]
    pub registry_kind: Option<oranc_core::RegistryKind>,

    /// Talk plain HTTP to the registry (for a local registry on 127.0.0.1).
    #[arg(long, env = "ORANC_NO_SSL", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_ssl: bool,

    /// Retries of a failed registry request (connection errors, timeouts, 5xx). A 429 is
    /// not a failure: its Retry-After is waited out (at most 60 s at a time, for every
    /// request to that registry), until the registry has refused for ten minutes running.
    #[arg(long, default_value_t = 3)]
    pub max_retry: u32,

    /// Registry user name; the password comes from ORANC_PASSWORD. Without both, the docker
    /// config (~/.docker/config.json) is used, else anonymous.
    #[arg(long, env = "ORANC_USERNAME")]
    pub username: Option<String>,

    #[arg(long, env = "ORANC_PASSWORD", hide = true, hide_env_values = true)]
    pub password: Option<String>,

    /// A token service other than the registry itself that may be sent the credentials
    /// (repeatable), e.g. `https://gitlab.com/jwt/auth` for registry.gitlab.com. A registry
    /// that asks for tokens from anywhere else is refused: credentials go only to the
    /// registry's own origin (Docker Hub's auth.docker.io is known).
    #[arg(
        long = "token-realm",
        value_name = "URL",
        env = "ORANC_TOKEN_REALMS",
        value_delimiter = ','
    )]
    pub token_realms: Vec<String>,

    /// Largest upload request in bytes (a chunk of a NAR). Default 4194304 (4 MiB,
    /// ghcr.io's cap); halved for the rest of the run whenever the registry refuses a
    /// request as too large (413, or ghcr.io's 416), so only a lower cap needs this.
    #[arg(long, value_name = "BYTES", env = "ORANC_CHUNK_SIZE", value_parser = clap::value_parser!(u64).range(65536..))]
    pub chunk_size: Option<u64>,

    #[command(flatten)]
    pub encodings: EncodingArgs,
}

#[derive(Debug, Args)]
pub struct EncodingArgs {
    /// How keys are turned into tags: `custom` (the original oranc's default) or
    /// `base32-dnssec` (older caches).
    #[arg(long, default_value = "custom", value_parser = parse_encoding)]
    pub tag_encoding: TagEncoding,
    /// Encodings also tried when reading (comma separated).
    #[arg(long, value_delimiter = ',', default_value = "base32-dnssec", value_parser = parse_encoding)]
    pub fallback_encodings: Vec<TagEncoding>,
}

pub fn parse_encoding(name: &str) -> Result<TagEncoding, String> {
    name.parse().map_err(|e: oranc_core::Error| e.to_string())
}

/// Where the embedded local registry lives.
pub fn local_registry_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("ORANC_HOME") {
        return PathBuf::from(home);
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    data.join("oranc/registry")
}

impl RegistryArgs {
    /// Where the registry is: --registry; else, with a --repository, ghcr.io (the original
    /// oranc's default); else the embedded local registry.
    fn location(&self) -> String {
        match (&self.registry, &self.repository) {
            (Some(registry), _) => registry.clone(),
            (None, Some(_)) => ORIGINAL_DEFAULT_REGISTRY.to_owned(),
            (None, None) => local_registry_dir().display().to_string(),
        }
    }

    /// The kind of registry this names: --registry-kind, else what its location says.
    pub fn effective_kind(&self) -> oranc_core::RegistryKind {
        self.registry_kind
            .unwrap_or_else(|| oranc_backends::registry::kind_for_location(&self.location()))
    }

    /// Opens the cache these flags name. Also returns a description for messages.
    pub fn open_cache(&self) -> anyhow::Result<(RegistryCache, String)> {
        let location = self.location();
        let repository = match (&self.registry, &self.repository) {
            (Some(_), Some(repository)) => repository.clone(),
            (Some(registry), None) if !oranc_core::is_directory_location(registry) => {
                anyhow::bail!("--repository is required with --registry {registry}")
            }
            // The original's scripts name only the repository and mean ghcr.io: never let
            // them "succeed" into a local directory nobody reads.
            (None, Some(repository)) => {
                eprintln!(
                    "no --registry given: using {ORIGINAL_DEFAULT_REGISTRY} (the original oranc's default) for --repository {repository}"
                );
                repository.clone()
            }
            (_, None) => DEFAULT_LOCAL_REPOSITORY.to_owned(),
        };
        let mut settings = RegistrySettings::new(&location);
        settings.kind = self.effective_kind();
        settings.http.plain_http = self.no_ssl;
        settings.http.retry.max_retries = self.max_retry;
        settings.http.token_realms = self.token_realms.clone();
        if let Some(size) = self.chunk_size {
            settings.http.chunk_size = usize::try_from(size).unwrap_or(usize::MAX);
        }
        settings.credentials = match (&self.username, &self.password) {
            (Some(user), Some(password)) => Some(Credentials::basic(user, password)),
            (Some(_), None) => anyhow::bail!("--username needs ORANC_PASSWORD"),
            _ => None,
        };
        let registry = oranc_backends::open(settings)
            .with_context(|| format!("opening registry {location}"))?;
        let repository = registry
            .repository(&repository)
            .with_context(|| format!("repository {repository:?}"))?;
        let description = format!("{}/{repository}", registry.name());
        if self.registry.is_none() && self.repository.is_none() {
            eprintln!("no --registry given: using the embedded local registry {description}");
        }
        Ok((
            RegistryCache::new(
                registry,
                repository,
                self.encodings.tag_encoding,
                self.encodings.fallback_encodings.clone(),
            ),
            description,
        ))
    }
}

/// A registry kind by its config name (`ghcr`, `docker-hub`, `distribution`, `oci-layout`).
fn parse_kind(name: &str) -> Result<oranc_core::RegistryKind, String> {
    use serde::de::IntoDeserializer as _;
    let deserializer: serde::de::value::StrDeserializer<'_, serde::de::value::Error> =
        name.into_deserializer();
    serde::Deserialize::deserialize(deserializer)
        .map_err(|_| "known kinds: ghcr, docker-hub, distribution, oci-layout".to_owned())
}
