//! What every request needs: the opened registries (one pooled client each), named caches,
//! encodings, limits and upstreams, built once from the config.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oranc_backends::{BackendKind, Credentials, RegistryHandle, RegistrySettings};
use oranc_config::Config;
use oranc_core::{PublicKey, Registry, RepositoryName, SecretKey, TagEncoding};

use crate::error::ServerError;
use crate::layers::response_cache::ResponseCache;
use crate::manifest_cache::ManifestCache;
use crate::metered::MeteredRegistry;
use crate::metrics::Metrics;
use crate::upstream::Upstreams;
use crate::writers::Writers;

/// Per-credential registry clients kept for reuse (their tokens stay warm).
const MAX_CLIENTS_PER_REGISTRY: u64 = 256;

/// A client nobody used for this long is dropped (with its tokens).
const CLIENT_IDLE: Duration = Duration::from_secs(3600);

/// (registry name, SHA-256 of the credentials) -> a client acting with them; bounded, the
/// least recently used go first.
type ClientsByCredentials = moka::sync::Cache<(String, [u8; 32]), Arc<dyn Registry>>;

#[derive(Debug)]
pub struct NamedCache {
    pub registry: RegistryHandle,
    pub repository: RepositoryName,
    pub credentials: Credentials,
    pub allow_write: bool,
    /// The server's own write users (`writers_file`).
    pub writers: Option<Writers>,
    /// Signs what writers upload (`signing_key_file`).
    pub signing_key: Option<SecretKey>,
    /// An uploaded narinfo must be signed by one of these (or by `signing_key`).
    pub trusted_keys: Vec<PublicKey>,
    /// Its registry's `redirect_blobs`.
    pub redirect_blobs: bool,
}

#[derive(Debug)]
struct Inner {
    config: Config,
    encoding: TagEncoding,
    fallbacks: Vec<TagEncoding>,
    registries: Mutex<HashMap<String, RegistryHandle>>,
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
    kind: Option<&str>,
    plain_http: bool,
    max_in_flight: Option<usize>,
) -> RegistrySettings {
    let mut settings = RegistrySettings::new(location);
    if let Some(kind) = kind {
        settings.kind = match kind {
            "ghcr" => BackendKind::Ghcr,
            "docker-hub" => BackendKind::DockerHub,
            "oci-layout" => BackendKind::OciLayout,
            _ => BackendKind::Distribution,
        };
    }
    // The server's own environment never lends credentials to clients' requests.
    settings.credentials = Some(Credentials::Anonymous);
    settings.http.plain_http = plain_http;
    settings.http.retry.max_retries = config.max_retry;
    settings.http.request_timeout = Duration::from_secs(config.request_timeout_secs);
    settings.http.read_timeout = Duration::from_secs(config.read_timeout_secs);
    if let Some(max) = max_in_flight {
        settings.http.max_in_flight = max;
    }
    settings
}

fn read_password(name: &str, cache: &oranc_config::CacheConfig) -> Result<Option<String>, String> {
    if let Some(variable) = &cache.password_env {
        return std::env::var(variable)
            .map(Some)
            .map_err(|_| format!("cache {name}: environment variable {variable} is not set"));
    }
    if let Some(file) = &cache.password_file {
        return std::fs::read_to_string(file)
            .map(|p| Some(p.trim_end().to_owned()))
            .map_err(|e| format!("cache {name}: cannot read password_file {file}: {e}"));
    }
    Ok(None)
}

impl AppState {
    /// Opens everything the config names; fails on the first thing that cannot be opened.
    pub fn new(config: Config) -> Result<Self, String> {
        let encoding: TagEncoding = config
            .tag_encoding
            .parse()
            .map_err(|e| format!("tag_encoding: {e}"))?;
        let fallbacks = config
            .fallback_encodings
            .iter()
            .map(|e| e.parse().map_err(|e| format!("fallback_encodings: {e}")))
            .collect::<Result<Vec<TagEncoding>, String>>()?;
        let mut registries = HashMap::new();
        for (name, registry) in &config.registries {
            let settings = settings_for(
                &config,
                name,
                registry.kind.as_deref(),
                registry.plain_http,
                registry.max_in_flight,
            );
            let handle = oranc_backends::open_handle(settings)
                .map_err(|e| format!("registry {name}: {e}"))?;
            registries.insert(name.clone(), handle);
        }
        let mut caches = HashMap::new();
        for (name, cache) in &config.caches {
            let handle = match registries.get(&cache.registry) {
                Some(handle) => handle.clone(),
                None => oranc_backends::open_handle(settings_for(
                    &config,
                    &cache.registry,
                    None,
                    false,
                    None,
                ))
                .map_err(|e| format!("cache {name}: {e}"))?,
            };
            let repository = handle
                .registry()
                .repository(&cache.repository)
                .map_err(|e| format!("cache {name}: {e}"))?;
            let credentials = match (&cache.username, read_password(name, cache)?) {
                (Some(user), Some(password)) => Credentials::basic(user, password),
                _ => Credentials::Anonymous,
            };
            let writers = cache
                .writers_file
                .as_deref()
                .map(Writers::load)
                .transpose()
                .map_err(|e| format!("cache {name}: {e}"))?;
            let signing_key = cache
                .signing_key_file
                .as_deref()
                .map(|file| {
                    std::fs::read_to_string(file)
                        .map_err(|e| format!("cannot read signing_key_file {file}: {e}"))?
                        .parse::<SecretKey>()
                        .map_err(|e| format!("signing_key_file {file}: {e}"))
                })
                .transpose()
                .map_err(|e| format!("cache {name}: {e}"))?;
            let trusted_keys = cache
                .trusted_public_keys
                .iter()
                .map(|key| key.parse::<PublicKey>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("cache {name}: trusted_public_keys: {e}"))?;
            caches.insert(
                name.clone(),
                NamedCache {
                    registry: handle,
                    repository,
                    credentials,
                    allow_write: cache.allow_write,
                    writers,
                    signing_key,
                    trusted_keys,
                    redirect_blobs: redirects_blobs(&config, &cache.registry),
                },
            );
        }
        let upstreams = Upstreams::new(&config.upstream)?;
        // `[cache] max_bytes = 0` turns off both in-memory caches.
        let caching = config.cache.max_bytes > 0;
        let response_cache = caching.then(|| ResponseCache::new(&config.cache));
        let metrics = Metrics::new(response_cache.as_ref().map(ResponseCache::stats));
        let manifest_cache = caching.then(|| ManifestCache::new(&config.cache));
        let registry_count = config.registries.len() + caches.len();
        Ok(Self(Arc::new(Inner {
            manifest_cache,
            response_cache,
            metrics,
            encoding,
            fallbacks,
            registries: Mutex::new(registries),
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

    pub fn encodings(&self) -> (TagEncoding, Vec<TagEncoding>) {
        (self.0.encoding, self.0.fallbacks.clone())
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
        let registries = self
            .0
            .registries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut checks: HashMap<String, Arc<dyn Registry>> = HashMap::new();
        let all = registries
            .values()
            .chain(self.0.caches.values().map(|c| &c.registry));
        for handle in all {
            let registry = handle.registry();
            checks.entry(registry.name().to_owned()).or_insert(registry);
        }
        checks.into_iter().collect()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    pub fn response_cache(&self) -> Option<ResponseCache> {
        self.0.response_cache.clone()
    }

    /// The registry `name` acting with `credentials`, if the config allows `name`.
    pub fn registry_for(
        &self,
        name: &str,
        credentials: Credentials,
    ) -> Result<Arc<dyn Registry>, ServerError> {
        let handle = {
            let mut registries = self.0.registries.lock().unwrap_or_else(|p| p.into_inner());
            match registries.get(name) {
                Some(handle) => handle.clone(),
                None if self.0.config.allow_any_registry && is_host(name) => {
                    let settings =
                        settings_for(&self.0.config, name, None, self.0.config.no_ssl, None);
                    let handle = oranc_backends::open_handle(settings)
                        .map_err(|e| ServerError::BadRequest(format!("registry {name}: {e}")))?;
                    registries.insert(name.to_owned(), handle.clone());
                    handle
                }
                None => return Err(ServerError::RegistryNotAllowed(name.to_owned())),
            }
        };
        Ok(self.client(name, &handle, credentials))
    }

    /// Whether NAR reads from the registry `name` may be redirected to its storage.
    pub fn redirects_blobs(&self, name: &str) -> bool {
        redirects_blobs(&self.0.config, name)
    }

    /// A registry client for `credentials`, reused across requests so its tokens stay warm.
    pub fn client(
        &self,
        name: &str,
        handle: &RegistryHandle,
        credentials: Credentials,
    ) -> Arc<dyn Registry> {
        let fingerprint = crate::client_auth::fingerprint(&credentials);
        self.0.clients.get_with((name.to_owned(), fingerprint), || {
            let metered =
                MeteredRegistry::wrap(handle.with_credentials(credentials), self.0.metrics.clone());
            // Outside the metering: a cached lookup is not a registry request.
            match &self.0.manifest_cache {
                Some(cache) => cache.wrap(metered, fingerprint),
                None => metered,
            }
        })
    }
}

/// A registry named in a URL must look like `host[:port]`: never a path or a URL.
fn is_host(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        && !name.starts_with(['.', '-'])
}

/// The registry `name`'s `redirect_blobs` (off for registries the config does not list).
fn redirects_blobs(config: &Config, name: &str) -> bool {
    config
        .registries
        .get(name)
        .is_some_and(|r| r.redirect_blobs)
}
