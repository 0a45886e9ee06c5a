//! What every request needs: the opened registries (one pooled client each), named caches,
//! encodings, limits and upstreams, built once from the config.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use oranc_backends::{Credentials, RegistryHandle, RegistryKind, RegistrySettings};
use oranc_config::Config;
use oranc_core::{
    BlobInfo, CacheKey, PublicKey, Registry, RegistryCache, RepositoryName, SecretKey, TagEncoding,
};

use crate::error::ServerError;
use crate::grants::CredentialGrant;
use crate::layers::response_cache::ResponseCache;
use crate::manifest_cache::{Lookups, ManifestCache};
use crate::metered::MeteredRegistry;
use crate::metrics::Metrics;
use crate::upstream::Upstreams;
use crate::write_locks::WriteLocks;
use crate::writers::Writers;

/// Per-credential registry clients kept for reuse (their tokens stay warm).
const MAX_CLIENTS_PER_REGISTRY: u64 = 256;

/// Registries named only in URLs (`allow_any_registry`) kept open at once.
const MAX_UNLISTED_REGISTRIES: u64 = 256;

/// A client nobody used for this long is dropped (with its tokens).
const CLIENT_IDLE: Duration = Duration::from_secs(3600);
/// Longest a request waits for a registry that pushed back (429 with `Retry-After`) before
/// its client hears 503 with the rest of the wait.
const MAX_PUSHBACK_WAIT: Duration = Duration::from_secs(2);

/// (registry name, SHA-256 of the credentials, reads through the manifest cache) -> a
/// client acting with them; bounded, the least recently used go first.
type ClientsByCredentials = moka::sync::Cache<(ClientOwner, [u8; 32], Purpose), Arc<dyn Registry>>;

/// Whose registry client it is: a named cache's, or a registry a URL names. Two kinds of
/// name, kept apart: a cache may be called `localhost`, and a URL naming the registry
/// `localhost` must not get (or replace) that cache's client.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientOwner {
    NamedCache(String),
    Registry(String),
}

/// What a request does with the registry, which decides whether cached lookups may answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// Reads: cached manifest lookups answer (briefly stale is fine).
    Read,
    /// Writes: every existence check asks the registry, so an add-only write never replaces
    /// what a cached 404 hid (the registry may have been written to around this server).
    Write,
}

/// A registry the server may talk to, and what credentials forwarded to it grant.
#[derive(Debug, Clone)]
struct OpenRegistry {
    handle: RegistryHandle,
    grant: Arc<CredentialGrant>,
}

#[derive(Debug)]
pub struct NamedCache {
    /// A pull-through mirror of `upstreams`, when the config names some.
    pub mirror: Option<crate::mirror::Mirror>,
    pub registry: RegistryHandle,
    pub repository: RepositoryName,
    pub credentials: Credentials,
    /// What credentials a client sends grant here (besides being a writer's).
    pub grant: Arc<CredentialGrant>,
    pub allow_write: bool,
    /// The server's own write users (`writers_file`).
    pub writers: Option<Writers>,
    /// OIDC issuers whose tokens make a writer (`oidc`).
    pub oidc: Option<crate::oidc::OidcWriters>,
    /// Signs what writers upload (`signing_key_file`).
    pub signing_key: Option<SecretKey>,
    /// An uploaded narinfo must be signed by one of these (or by `signing_key`).
    pub trusted_keys: Vec<PublicKey>,
    /// Its registry's `redirect_blobs`.
    pub redirect_blobs: bool,
    /// Not its registry's `skip_digest_check`.
    pub check_digests: bool,
}

/// Repositories whose shared config blob uploads through the server know about.
type SharedConfigs =
    moka::sync::Cache<(String, RepositoryName), Arc<tokio::sync::OnceCell<BlobInfo>>>;
/// Repositories remembered at once (each entry is a few dozen bytes).
const MAX_SHARED_CONFIGS: u64 = 10_000;
/// How long a repository's shared config blob is taken to be stored without looking.
const SHARED_CONFIG_TTL: Duration = Duration::from_secs(3600);

#[derive(Debug)]
struct Inner {
    config: Config,
    encoding: TagEncoding,
    fallbacks: Vec<TagEncoding>,
    /// The registries the config lists.
    registries: HashMap<String, OpenRegistry>,
    /// Registries URLs named under `allow_any_registry`, opened on demand: bounded, the
    /// least recently used dropped first (every made-up name would otherwise stay).
    unlisted: moka::sync::Cache<String, OpenRegistry>,
    /// Add-only checks and writes of one key run one at a time.
    write_locks: WriteLocks,
    /// Per registry and repository, whether its shared config blob is known to be stored:
    /// uploads through the server look for it once, not once per file. Bounded; forgotten
    /// after an hour, or at once after a failed upload (the registry may have lost it).
    shared_configs: SharedConfigs,
    readiness: crate::routes::health::ReadinessVerdict,
    /// What the landing page last read of each named cache's `nix-cache-info`.
    landing_cache_info: crate::routes::landing::CacheInfoMemory,
    password_gate: crate::password_gate::PasswordGate,
    clients: ClientsByCredentials,
    caches: HashMap<String, NamedCache>,
    upstreams: Upstreams,
    response_cache: Option<ResponseCache>,
    manifest_cache: Option<ManifestCache>,
    metrics: Metrics,
}

#[derive(Debug, Clone)]
pub struct AppState(Arc<Inner>);

fn settings_for(
    config: &Config,
    location: &str,
    listed: Option<&oranc_config::RegistryConfig>,
) -> RegistrySettings {
    let mut settings = RegistrySettings::new(location);
    if let Some(kind) = listed.and_then(|r| r.kind) {
        settings.kind = kind;
    }
    // The server's own environment never lends credentials to clients' requests.
    settings.credentials = Some(Credentials::Anonymous);
    // The server follows blob redirects only where the config or the backend says.
    settings.http.blob_origins = Some(listed.map(|r| r.blob_origins.clone()).unwrap_or_default());
    // A registry a URL named (not listed) is reached as `no_ssl` says.
    settings.http.plain_http = listed.map_or(config.no_ssl, |r| r.plain_http);
    settings.http.retry.max_retries = config.max_retry;
    settings.http.request_timeout = Duration::from_secs(config.request_timeout_secs);
    settings.http.read_timeout = Duration::from_secs(config.read_timeout_secs);
    // A client waits at most this long for the registry's pushback; then it hears 503
    // with the rest of the wait in Retry-After.
    settings.http.max_pushback_wait = Some(MAX_PUSHBACK_WAIT);
    if let Some(listed) = listed {
        if let Some(size) = listed.chunk_size {
            settings.http.chunk_size = size;
        }
        if let Some(max) = listed.max_in_flight {
            settings.http.max_in_flight = max;
        }
        settings.http.token_realms = listed.token_realms.clone();
    }
    settings
}

fn read_password(cache: &oranc_config::CacheConfig) -> Result<Option<String>, ServerError> {
    if let Some(variable) = &cache.password_env {
        return std::env::var(variable)
            .map(Some)
            .map_err(|_| ServerError::MissingEnvironment(variable.clone()));
    }
    if let Some(file) = &cache.password_file {
        return std::fs::read_to_string(file)
            .map(|p| Some(p.trim_end().to_owned()))
            .map_err(|error| ServerError::UnreadableFile {
                what: "password_file",
                path: file.clone(),
                error,
            });
    }
    Ok(None)
}

fn read_signing_key(path: &str) -> Result<SecretKey, ServerError> {
    std::fs::read_to_string(path)
        .map_err(|error| ServerError::UnreadableFile {
            what: "signing_key_file",
            path: path.to_owned(),
            error,
        })?
        .parse::<SecretKey>()
        .map_err(|error| ServerError::InvalidSigningKey {
            path: path.to_owned(),
            error,
        })
}

/// A registry listed under `[registries]`, opened, with what credentials clients send
/// grant there; an error names it.
fn open_listed_registry(
    config: &Config,
    name: &str,
    registry: &oranc_config::RegistryConfig,
) -> Result<OpenRegistry, ServerError> {
    let handle = oranc_backends::open_handle(settings_for(config, name, Some(registry)))
        .map_err(|e| ServerError::Backend(e).within(format!("registry {name}")))?;
    let grant = CredentialGrant::for_registry(&handle, registry.trust_client_credentials);
    Ok(OpenRegistry {
        handle,
        grant: Arc::new(grant),
    })
}

/// A named cache of the config, opened: its registry (a listed one, or a directory), its
/// credentials, writers and keys.
fn open_named_cache(
    config: &Config,
    name: &str,
    cache: &oranc_config::CacheConfig,
    metrics: &Metrics,
    registries: &HashMap<String, OpenRegistry>,
    shared: &crate::mirror::Shared,
) -> Result<NamedCache, ServerError> {
    let OpenRegistry { handle, grant } = match registries.get(&cache.registry) {
        Some(open) => open.clone(),
        None => {
            // A directory (validation allows nothing else unlisted).
            let handle = oranc_backends::open_handle(settings_for(config, &cache.registry, None))
                .map_err(ServerError::Backend)?;
            let grant = Arc::new(CredentialGrant::for_registry(&handle, false));
            OpenRegistry { handle, grant }
        }
    };
    let repository = handle.registry().repository(&cache.repository)?;
    let credentials = match (&cache.username, read_password(cache)?) {
        (Some(user), Some(password)) => Credentials::basic(user, password),
        (None, None) => Credentials::Anonymous,
        (Some(_), None) => {
            return Err(ServerError::Internal(
                "username without password_env or password_file: its reads would go anonymous"
                    .into(),
            ))
        }
        (None, Some(_)) => return Err(ServerError::Internal(
            "a password without username: set username (for a token, any name the registry takes)"
                .into(),
        )),
    };
    let writers = cache
        .writers_file
        .as_deref()
        .map(Writers::load)
        .transpose()?;
    let signing_key = cache
        .signing_key_file
        .as_deref()
        .map(read_signing_key)
        .transpose()?;
    let mirror = (!cache.upstreams.is_empty())
        .then(|| {
            crate::mirror::Mirror::new(crate::mirror::MirrorSettings {
                name,
                upstreams: &cache.upstreams,
                keys: cache.upstream_public_keys.clone(),
                signing_key: signing_key.clone(),
                negative_ttl: Duration::from_secs(config.response_cache.negative_ttl_secs),
                client_stall: Duration::from_secs(config.read_timeout_secs),
                upstream_timeouts: crate::mirror::BinaryCacheTimeouts {
                    read: Duration::from_secs(config.read_timeout_secs),
                    ..crate::mirror::BinaryCacheTimeouts::default()
                },
                metrics: metrics.clone(),
                limits: crate::mirror::Limits {
                    small_file: config.max_small_body_bytes,
                },
                shared: shared.clone(),
            })
        })
        .transpose()?;
    Ok(NamedCache {
        mirror,
        registry: handle,
        repository,
        credentials,
        grant,
        allow_write: cache.allow_write,
        writers,
        oidc: crate::oidc::OidcWriters::new(&cache.oidc)?,
        signing_key,
        trusted_keys: cache.trusted_public_keys.clone(),
        redirect_blobs: redirects_blobs(config, &cache.registry),
        check_digests: checks_digests(config, &cache.registry),
    })
}

impl AppState {
    /// Everything [`Self::new`] would fail on, each said once with where it is: every file
    /// and variable the server would read (`password_file`, `password_env`, `writers_file`,
    /// `signing_key_file`), not only the first that fails. Empty when the server can start.
    pub fn problems(config: &Config) -> Vec<String> {
        let mut problems = Vec::new();
        let mut registries = HashMap::new();
        for (name, registry) in &config.registries {
            match open_listed_registry(config, name, registry) {
                Ok(open) => {
                    registries.insert(name.clone(), open);
                }
                Err(error) => problems.push(error.to_string()),
            }
        }
        let metrics = Metrics::new(None);
        let shared = crate::mirror::Shared::new(&config.mirror);
        for (name, cache) in &config.caches {
            if let Err(error) =
                open_named_cache(config, name, cache, &metrics, &registries, &shared)
            {
                problems.push(format!("cache {name}: {error}"));
            }
        }
        if let Some(tls) = &config.tls {
            if let Err(error) =
                crate::connections::tls::ReloadingCert::load(&tls.cert_file, &tls.key_file)
            {
                problems.push(error.to_string());
            }
        }
        problems
    }

    /// Opens everything the config names; fails on the first thing that cannot be opened.
    pub fn new(config: Config) -> Result<Self, ServerError> {
        let encoding = config.tag_encoding;
        let fallbacks = config.fallback_encodings.clone();
        let mut registries = HashMap::new();
        for (name, registry) in &config.registries {
            registries.insert(name.clone(), open_listed_registry(&config, name, registry)?);
        }
        // `[response_cache] max_bytes = 0` turns off both in-memory caches.
        let caching = config.response_cache.max_bytes > 0;
        let response_cache = caching.then(|| {
            let named = config
                .caches
                .iter()
                .map(|(name, cache)| {
                    (
                        name.clone(),
                        (cache.registry.clone(), cache.repository.clone()),
                    )
                })
                .collect();
            ResponseCache::new(&config.response_cache, config.max_small_body_bytes, named)
        });
        let metrics = Metrics::new(response_cache.as_ref().map(ResponseCache::stats));
        let shared = crate::mirror::Shared::new(&config.mirror);
        let mut caches = HashMap::new();
        for (name, cache) in &config.caches {
            let named = open_named_cache(&config, name, cache, &metrics, &registries, &shared)
                .map_err(|e| e.within(format!("cache {name}")))?;
            caches.insert(name.clone(), named);
        }
        let upstreams = Upstreams::new(&config.upstream)?;
        let password_gate =
            crate::password_gate::PasswordGate::new(&config.password_checks, metrics.clone());
        let manifest_cache = caching.then(|| ManifestCache::new(&config.response_cache));
        let registry_count = config.registries.len() + caches.len();
        Ok(Self(Arc::new(Inner {
            manifest_cache,
            response_cache,
            metrics,
            encoding,
            fallbacks,
            registries,
            unlisted: moka::sync::Cache::builder()
                .max_capacity(MAX_UNLISTED_REGISTRIES)
                .time_to_idle(CLIENT_IDLE)
                .build(),
            write_locks: WriteLocks::default(),
            shared_configs: moka::sync::Cache::builder()
                .max_capacity(MAX_SHARED_CONFIGS)
                .time_to_live(SHARED_CONFIG_TTL)
                .build(),
            readiness: Default::default(),
            landing_cache_info: moka::future::Cache::builder()
                .max_capacity(caches.len() as u64 + 1)
                .time_to_live(crate::routes::landing::CACHE_INFO_TTL)
                .build(),
            password_gate,
            clients: moka::sync::Cache::builder()
                .max_capacity(MAX_CLIENTS_PER_REGISTRY * (registry_count as u64).max(1))
                .time_to_idle(CLIENT_IDLE)
                .build(),
            caches,
            upstreams,
            config,
        })))
    }

    pub fn config(&self) -> &Config {
        &self.0.config
    }

    /// The cache in `repository` of `registry`, reading and writing with the configured tag
    /// encodings; writes share what is known of the repository's shared config blob.
    pub fn registry_cache(
        &self,
        registry: Arc<dyn Registry>,
        repository: RepositoryName,
        purpose: Purpose,
    ) -> RegistryCache {
        let shared = (purpose == Purpose::Write).then(|| {
            self.0.shared_configs.get_with(
                (registry.name().to_owned(), repository.clone()),
                Arc::default,
            )
        });
        let cache = RegistryCache::new(
            registry,
            repository,
            self.0.encoding,
            self.0.fallbacks.clone(),
        );
        match shared {
            Some(known) => cache.sharing_config(known),
            None => cache,
        }
    }

    /// Look for `cache`'s shared config blob again at its next write.
    pub fn forget_shared_config(&self, cache: &RegistryCache) {
        self.0.shared_configs.invalidate(&(
            cache.registry().name().to_owned(),
            cache.repository().clone(),
        ));
    }

    pub fn named_cache(&self, name: &str) -> Option<&NamedCache> {
        self.0.caches.get(name)
    }

    pub fn upstreams(&self) -> &Upstreams {
        &self.0.upstreams
    }

    /// Every registry the config names (listed, or behind a named cache), once each, with
    /// its anonymous client, for readiness checks.
    pub fn registries_to_check(&self) -> Vec<(String, Arc<dyn Registry>)> {
        let mut checks: HashMap<String, Arc<dyn Registry>> = HashMap::new();
        let all = self
            .0
            .registries
            .values()
            .map(|open| &open.handle)
            .chain(self.0.caches.values().map(|c| &c.registry));
        for handle in all {
            let registry = handle.registry();
            checks.entry(registry.name().to_owned()).or_insert(registry);
        }
        checks.into_iter().collect()
    }

    /// What reads a named cache's files with its own credentials (as every read of it
    /// does).
    pub fn named_cache_reader(&self, name: &str, named: &NamedCache) -> RegistryCache {
        let registry = self.client(
            ClientOwner::NamedCache(name.to_owned()),
            &named.registry,
            named.credentials.clone(),
            Purpose::Read,
        );
        self.registry_cache(registry, named.repository.clone(), Purpose::Read)
    }

    /// Each named cache asked for its `nix-cache-info` with its own credentials, as each of
    /// its reads is: whether the registry takes them (a wrong password in `password_file`
    /// otherwise showed only as every read failing). The answer says the cache's name, never
    /// a local directory's path.
    pub async fn probe_caches(&self) -> Vec<(String, Result<(), String>)> {
        let probes = self.0.caches.iter().map(|(name, named)| async move {
            let cache = self.named_cache_reader(name, named);
            let outcome = cache.get(&CacheKey::cache_info()).await.map(|_| ());
            let outcome = outcome.map_err(|error| match named.registry {
                RegistryHandle::Local(_) => {
                    tracing::warn!(cache = %name, %error, "a local layout is not readable");
                    "not readable (see the server log)".to_owned()
                }
                RegistryHandle::Http(_) => error.to_string(),
            });
            (name.clone(), outcome)
        });
        futures::future::join_all(probes).await
    }

    /// Every writer password check goes through here.
    pub fn password_gate(&self) -> &crate::password_gate::PasswordGate {
        &self.0.password_gate
    }

    /// What the landing page remembers of each named cache's `nix-cache-info`.
    pub fn landing_cache_info(&self) -> &crate::routes::landing::CacheInfoMemory {
        &self.0.landing_cache_info
    }

    /// The last `/readyz` verdict.
    pub fn readiness(&self) -> &crate::routes::health::ReadinessVerdict {
        &self.0.readiness
    }

    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    pub fn response_cache(&self) -> Option<ResponseCache> {
        self.0.response_cache.clone()
    }

    /// The registry `name`, if the config allows it, and what credentials forwarded to it
    /// grant. A name from a URL is a `host[:port]`, never a path or a scheme.
    pub fn open_registry(
        &self,
        name: &str,
    ) -> Result<(RegistryHandle, Arc<CredentialGrant>), ServerError> {
        if let Some(open) = self.0.registries.get(name) {
            return Ok((open.handle.clone(), open.grant.clone()));
        }
        if !self.0.config.allow_any_registry {
            return Err(ServerError::RegistryNotAllowed(name.to_owned()));
        }
        if !is_host(name) {
            return Err(ServerError::BadRequest(format!(
                "registry {name:?} is not a host[:port]"
            )));
        }
        let open = self
            .0
            .unlisted
            .try_get_with(name.to_owned(), || {
                let mut settings = settings_for(&self.0.config, name, None);
                if settings.kind == RegistryKind::OciLayout {
                    // `is_host` already refuses paths; a backend that reads the disk must
                    // never come from a URL, whatever the name looks like.
                    settings.kind = RegistryKind::Distribution;
                }
                let handle = oranc_backends::open_handle(settings)
                    .map_err(|e| ServerError::BadRequest(format!("registry {name}: {e}")))?;
                // Like a listed registry's: forwarded credentials write only where the
                // registry checks them. Anything else would let another spelling of a
                // listed registry's host (`localhost`, `127.1`, `[::ffff:127.0.0.1]`)
                // bypass its rules and the add-only rule of caches on it.
                let grant = Arc::new(CredentialGrant::for_registry(&handle, false));
                Ok::<_, ServerError>(OpenRegistry { handle, grant })
            })
            .map_err(|error| ServerError::BadRequest(error.to_string()))?;
        Ok((open.handle, open.grant))
    }

    /// Every grant that depends on asking the registry, for the start-up check (a named
    /// cache shares its listed registry's, or is a directory's, which asks nothing).
    pub fn grants_to_probe(&self) -> Vec<Arc<CredentialGrant>> {
        self.0
            .registries
            .values()
            .map(|open| open.grant.clone())
            .filter(|grant| matches!(**grant, CredentialGrant::IfChecked { .. }))
            .collect()
    }

    /// Holds writes of `key` in `repository` of `registry` to one at a time in this process.
    pub async fn lock_writes(&self, what: String) -> crate::write_locks::WriteGuard {
        self.0.write_locks.lock(what).await
    }

    /// Whether NAR reads from the registry `name` may be redirected to its storage.
    pub fn redirects_blobs(&self, name: &str) -> bool {
        redirects_blobs(&self.0.config, name)
    }

    /// Whether NARs from the registry `name` are hashed as they stream.
    pub fn checks_digests(&self, name: &str) -> bool {
        checks_digests(&self.0.config, name)
    }

    /// A registry client for `credentials`, reused across requests so its tokens stay warm.
    pub fn client(
        &self,
        owner: ClientOwner,
        handle: &RegistryHandle,
        credentials: Credentials,
        purpose: Purpose,
    ) -> Arc<dyn Registry> {
        let fingerprint = crate::client_auth::fingerprint(&credentials);
        let key = (owner, fingerprint, purpose);
        // What the config says of the owner is read only when its client is made.
        self.0.clients.get_with_by_ref(&key, || {
            let (owner, ..) = &key;
            let listed = match owner {
                ClientOwner::NamedCache(_) => true,
                ClientOwner::Registry(name) => self.0.config.registries.contains_key(name),
            };
            let mirror = match owner {
                ClientOwner::NamedCache(name) => self
                    .0
                    .config
                    .caches
                    .get(name)
                    .is_some_and(|cache| !cache.upstreams.is_empty()),
                ClientOwner::Registry(_) => false,
            };
            let metered = MeteredRegistry::wrap(
                handle.with_credentials(credentials),
                self.0.metrics.clone(),
                listed,
            );
            let lookups = if purpose == Purpose::Write {
                Lookups::ReadThrough
            } else if mirror {
                Lookups::FoundOnly
            } else {
                Lookups::Cached
            };
            // Outside the metering: a cached lookup is not a registry request.
            match &self.0.manifest_cache {
                Some(cache) => cache.wrap(metered, fingerprint, lookups),
                None => metered,
            }
        })
    }
}

/// A registry named in a URL must be `host[:port]`: DNS labels, an IPv4 address or a
/// bracketed IPv6 address, and a port of digits. Never a path, a scheme (`oci-layout:`), or
/// anything else a backend could read as a location on disk.
fn is_host(name: &str) -> bool {
    // The port is after the last ':' unless that ':' is inside an unbracketed IPv6
    // address (which is refused below anyway).
    let (host, port) = match name.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') || host.ends_with(']') => (host, Some(port)),
        _ => (name, None),
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.parse::<u16>().is_ok());
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && host.len() <= 253
                && host.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                        && !label.starts_with('-')
                        && !label.ends_with('-')
                })
        }
    };
    port_ok && host_ok
}

/// Not the registry `name`'s `skip_digest_check` (registries the config does not list are
/// always checked).
fn checks_digests(config: &Config, name: &str) -> bool {
    !config
        .registries
        .get(name)
        .is_some_and(|r| r.skip_digest_check)
}

/// The registry `name`'s `redirect_blobs` (off for registries the config does not list).
fn redirects_blobs(config: &Config, name: &str) -> bool {
    config
        .registries
        .get(name)
        .is_some_and(|r| r.redirect_blobs)
}

#[cfg(test)]
mod tests {
    use super::is_host;

    #[test]
    fn a_registry_from_a_url_is_a_host_and_port_only() {
        for good in [
            "ghcr.io",
            "127.0.0.1:5000",
            "localhost",
            "[::1]:5000",
            "[::1]",
            "a-b.example.com",
        ] {
            assert!(is_host(good), "{good}");
        }
        for bad in [
            "oci-layout:pwned",
            "oci-layout:..",
            "/var/lib/oranc",
            "./x",
            "..",
            ".",
            "a..b",
            "-a.example",
            "host:",
            "host:99999",
            "host:80:80",
            "[::1",
            "[nope]:1",
            "a/b",
            "",
        ] {
            assert!(!is_host(bad), "{bad}");
        }
    }
}
