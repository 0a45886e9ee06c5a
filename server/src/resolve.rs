//! From a request to a cache and a key: `/{cache}/{key}` for named caches,
//! `/{registry}/{repository: N segments}/{key}` otherwise (N is `repository_parts`), with
//! `registry` and `repository` also accepted as query parameters, as the original oranc
//! accepts them. Keys are validated before anything is asked of a registry.

use axum::http::{HeaderMap, Uri};
use oranc_core::{CacheKey, RegistryCache};

use crate::client_auth::client_credentials;
use crate::error::ServerError;
use crate::state::AppState;

/// What a request is about.
#[derive(Debug)]
pub struct Target {
    pub cache: RegistryCache,
    pub key: CacheKey,
    /// True when the request may write (client credentials, or a cache that allows it).
    pub writable: bool,
}

fn query_value<'a>(uri: &'a Uri, name: &str) -> Option<&'a str> {
    uri.query()?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn parse_key(key: &str) -> Result<CacheKey, ServerError> {
    key.parse::<CacheKey>()
        .map_err(|e| ServerError::BadRequest(e.to_string()))
}

pub fn resolve(state: &AppState, uri: &Uri, headers: &HeaderMap) -> Result<Target, ServerError> {
    let path = uri.path().trim_start_matches('/');
    if path.contains("//") || path.split('/').any(|s| s == ".." || s == ".") {
        return Err(ServerError::BadRequest(format!(
            "malformed path {:?}",
            uri.path()
        )));
    }
    let segments: Vec<&str> = path.split('/').collect();
    let client = client_credentials(headers);
    let (encoding, fallbacks) = state.encodings();

    if let Some(named) = segments.first().and_then(|name| state.named_cache(name)) {
        let key = parse_key(&segments[1..].join("/"))?;
        // A client's own credentials take precedence; otherwise the cache's.
        let (credentials, writable) = match client {
            Some(credentials) => (credentials, true),
            None => (named.credentials.clone(), named.allow_write),
        };
        let registry = state.client(segments[0], &named.registry, credentials);
        return Ok(Target {
            cache: RegistryCache::new(registry, named.repository.clone(), encoding, fallbacks),
            key,
            writable,
        });
    }

    let mut rest: &[&str] = &segments;
    let registry_name = match query_value(uri, "registry") {
        Some(name) => name.to_owned(),
        None => {
            let (first, tail) = rest
                .split_first()
                .ok_or_else(|| ServerError::BadRequest("no registry in the path".into()))?;
            rest = tail;
            // S3 clients send the endpoint's path percent-encoded (`127.0.0.1%3A5000`).
            percent_encoding::percent_decode_str(first)
                .decode_utf8()
                .map_err(|_| ServerError::BadRequest(format!("malformed registry {first:?}")))?
                .into_owned()
        }
    };
    let repository = match query_value(uri, "repository") {
        Some(repository) => repository.replace("%2F", "/").replace("%2f", "/"),
        None => {
            let parts = state.config().repository_parts;
            if rest.len() <= parts {
                return Err(ServerError::BadRequest(format!(
                    "expected /{{registry}}/{{repository: {parts} segments}}/{{file}}, got {:?}",
                    uri.path()
                )));
            }
            let (repository, tail) = rest.split_at(parts);
            rest = tail;
            repository.join("/")
        }
    };
    let key = parse_key(&rest.join("/"))?;
    let writable = client.is_some();
    let registry = state.registry_for(&registry_name, client.unwrap_or_default())?;
    let repository = registry
        .repository(&repository)
        .map_err(|e| ServerError::BadRequest(e.to_string()))?;
    Ok(Target {
        cache: RegistryCache::new(registry, repository, encoding, fallbacks),
        key,
        writable,
    })
}
