//! One reading of each request, made once near the outside of the stack (router.rs) and kept
//! as a request extension: who the client says it is (the credentials it sent, parsed once,
//! and their fingerprint) and what it asks for (a server endpoint, or a binary-cache file in
//! a named cache or in a registry and repository the URL names, with its validated key).
//! The trace span, the metrics, the rate limit, the response cache, [`crate::resolve`] and
//! the handlers all read this instead of parsing the `Authorization` header and the path
//! again, so they cannot disagree about what a request is.

use std::collections::HashSet;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, Uri};
use oranc_backends::Credentials;
use oranc_core::cache_key::KeyKind;
use oranc_core::CacheKey;

use crate::client_auth::{client_credentials, fingerprint};

/// What the server knows about a request before any layer acts on it.
#[derive(Debug)]
pub struct RequestContext {
    /// The registry credentials the client sent (Basic, or a SigV4 access key id). They are
    /// claims: only [`crate::resolve`] decides what they grant.
    pub credentials: Option<Credentials>,
    /// [`fingerprint`] of `credentials` (zero for none): how layers tell clients apart
    /// without holding their passwords.
    pub fingerprint: [u8; 32],
    /// A Bearer token the client sent (an OIDC token, for a named cache's `oidc` writers);
    /// never forwarded to a registry.
    pub bearer_token: Option<String>,
    pub route: Route,
}

/// What a request asks for.
#[derive(Debug)]
pub enum Route {
    /// `/metrics`, `/healthz` or `/readyz` (the name without its slash).
    Endpoint(&'static str),
    /// A binary-cache file; its key, or why the path does not name a valid one.
    File {
        cache: Addressee,
        key: Result<CacheKey, String>,
    },
    /// A path that addresses no cache (no registry, too few segments, `..`); why.
    Malformed(String),
}

/// The cache a file request is for.
#[derive(Debug)]
pub enum Addressee {
    /// `/{name}/{key}`: a named cache of the config.
    Named(String),
    /// `/{registry}/{repository}/{key}`, or `registry=` / `repository=` query parameters as
    /// the original oranc accepts them.
    Url {
        registry: String,
        repository: String,
    },
}

impl RequestContext {
    /// The route as a metric label, from a closed set: the endpoint, the key's kind, or
    /// `other` for a path that names no valid key.
    pub fn route_label(&self) -> &'static str {
        match &self.route {
            Route::Endpoint(name) => name,
            Route::File { key: Ok(key), .. } => key.kind().label(),
            Route::File { key: Err(_), .. } | Route::Malformed(_) => "other",
        }
    }

    /// The cache as a metric label, from a closed set: a named cache of the config, `url`
    /// for one the URL names, `-` for the server's own endpoints.
    pub fn cache_label(&self) -> &str {
        match &self.route {
            Route::Endpoint(_) => "-",
            Route::File {
                cache: Addressee::Named(name),
                ..
            } => name,
            Route::File { .. } | Route::Malformed(_) => "url",
        }
    }

    /// The cache and key of a request for a valid file.
    fn file(&self) -> Option<(&Addressee, &CacheKey)> {
        match &self.route {
            Route::File {
                cache,
                key: Ok(key),
            } => Some((cache, key)),
            _ => None,
        }
    }

    /// The named cache a file request is for, if it is one.
    pub fn named_cache(&self) -> Option<&str> {
        match &self.route {
            Route::File {
                cache: Addressee::Named(name),
                ..
            } => Some(name),
            _ => None,
        }
    }

    /// The file asked for, whatever spelling of the URL named it (`//main/x`, `%2e`, query
    /// parameters): the cache addressed and the parsed key. Answers are kept and dropped by
    /// it, so a PUT clears every spelling of what it wrote.
    pub fn file_identity(&self) -> Option<String> {
        let (cache, key) = self.file()?;
        Some(match cache {
            Addressee::Named(name) => format!("named\0{name}\0{key}"),
            Addressee::Url {
                registry,
                repository,
            } => format!("url\0{registry}\0{repository}\0{key}"),
        })
    }

    /// The stored file asked for: its registry, repository and parsed key, by whichever
    /// route (a named cache, found in `named`, or a `/{registry}/{repository}` URL).
    pub fn stored_file(
        &self,
        named: &std::collections::HashMap<String, (String, String)>,
    ) -> Option<String> {
        let (cache, key) = self.file()?;
        let (registry, repository) = match cache {
            Addressee::Named(name) => {
                let (registry, repository) = named.get(name)?;
                (registry.as_str(), repository.as_str())
            }
            Addressee::Url {
                registry,
                repository,
            } => (registry.as_str(), repository.as_str()),
        };
        Some(format!("{registry}\0{repository}\0{key}"))
    }

    /// Whether the answer to a read depends on the credentials the client sent: only for
    /// `/{registry}/{repository}` URLs, whose reads forward them. A named cache reads with
    /// its own, whoever asks.
    pub fn reads_depend_on_credentials(&self) -> bool {
        self.named_cache().is_none()
    }

    /// The key asked for, when the path names a valid one.
    pub fn key(&self) -> Option<&CacheKey> {
        self.file().map(|(_, key)| key)
    }

    /// narinfo and nix-cache-info: small, asked for all the time, worth keeping whole.
    pub fn is_small_file(&self) -> bool {
        self.key()
            .is_some_and(|key| matches!(key.kind(), KeyKind::NarInfo | KeyKind::CacheInfo))
    }

    pub fn is_endpoint(&self) -> bool {
        matches!(self.route, Route::Endpoint(_))
    }
}

/// How paths map to caches under this server's config.
#[derive(Debug, Clone)]
pub struct AddressRules {
    named: Arc<HashSet<String>>,
    /// Segments of a repository in `/{registry}/{repository}/{key}` (`repository_parts`).
    repository_parts: usize,
}

impl AddressRules {
    pub fn new(named: impl IntoIterator<Item = String>, repository_parts: usize) -> Self {
        Self {
            named: Arc::new(named.into_iter().collect()),
            repository_parts,
        }
    }

    /// Reads `request` into its context and attaches it as an extension.
    pub fn attach(&self, mut request: Request<Body>) -> Request<Body> {
        let credentials = client_credentials(request.headers());
        let fingerprint = credentials.as_ref().map_or([0; 32], fingerprint);
        let route = self.route(request.uri());
        let bearer_token = crate::client_auth::bearer_token(request.headers());
        request.extensions_mut().insert(Arc::new(RequestContext {
            credentials,
            fingerprint,
            bearer_token,
            route,
        }));
        request
    }

    fn route(&self, uri: &Uri) -> Route {
        match uri.path() {
            "/metrics" => Route::Endpoint("metrics"),
            "/healthz" => Route::Endpoint("healthz"),
            "/readyz" => Route::Endpoint("readyz"),
            _ => match self.file(uri) {
                Ok(route) => route,
                Err(reason) => Route::Malformed(reason),
            },
        }
    }

    /// `/{cache}/{key}` for named caches, `/{registry}/{repository: N segments}/{key}`
    /// otherwise, with `registry` and `repository` also accepted as query parameters.
    fn file(&self, uri: &Uri) -> Result<Route, String> {
        let path = uri.path().trim_start_matches('/');
        if path.contains("//") || path.split('/').any(|s| s == ".." || s == ".") {
            return Err(format!("malformed path {:?}", uri.path()));
        }
        let segments: Vec<&str> = path.split('/').collect();
        if let Some((name, rest)) = segments
            .split_first()
            .filter(|(name, _)| self.named.contains(**name))
        {
            return Ok(Route::File {
                cache: Addressee::Named((*name).to_owned()),
                key: parse_key(&rest.join("/")),
            });
        }
        let mut rest: &[&str] = &segments;
        let registry = match query_value(uri, "registry") {
            Some(name) => name.to_owned(),
            None => {
                let (first, tail) = rest
                    .split_first()
                    .ok_or_else(|| "no registry in the path".to_owned())?;
                rest = tail;
                // S3 clients send the endpoint's path percent-encoded (`127.0.0.1%3A5000`).
                percent_encoding::percent_decode_str(first)
                    .decode_utf8()
                    .map_err(|_| format!("malformed registry {first:?}"))?
                    .into_owned()
            }
        };
        let repository = match query_value(uri, "repository") {
            Some(repository) => repository.replace("%2F", "/").replace("%2f", "/"),
            None => {
                let parts = self.repository_parts;
                if rest.len() <= parts {
                    return Err(format!(
                        "expected /{{registry}}/{{repository: {parts} segments}}/{{file}}, got {:?}",
                        uri.path()
                    ));
                }
                let (repository, tail) = rest.split_at(parts);
                rest = tail;
                repository.join("/")
            }
        };
        Ok(Route::File {
            cache: Addressee::Url {
                registry,
                repository,
            },
            key: parse_key(&rest.join("/")),
        })
    }
}

fn parse_key(key: &str) -> Result<CacheKey, String> {
    key.parse::<CacheKey>().map_err(|e| e.to_string())
}

fn query_value<'a>(uri: &'a Uri, name: &str) -> Option<&'a str> {
    uri.query()?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn context(uri: &str, authorization: Option<&str>) -> Arc<RequestContext> {
        let rules = AddressRules::new(["main".to_owned()], 2);
        let mut request = Request::builder().uri(uri);
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let request = rules.attach(request.body(Body::empty()).unwrap());
        request
            .extensions()
            .get::<Arc<RequestContext>>()
            .unwrap()
            .clone()
    }

    const NARINFO: &str = "5kk4mwqi310s9ssry90al6mxrb47vdiw.narinfo";

    #[test]
    fn each_kind_of_path_is_read_once_into_labels_and_a_key() {
        let named = context(&format!("/main/{NARINFO}"), None);
        assert_eq!(
            (named.cache_label(), named.route_label()),
            ("main", "narinfo")
        );
        assert!(named.is_small_file());
        let url = context("/127.0.0.1%3A5000/team/cache/nix-cache-info", None);
        assert_eq!(
            (url.cache_label(), url.route_label()),
            ("url", "nix-cache-info")
        );
        let Route::File {
            cache:
                Addressee::Url {
                    registry,
                    repository,
                },
            ..
        } = &url.route
        else {
            panic!("{:?}", url.route)
        };
        assert_eq!(
            (registry.as_str(), repository.as_str()),
            ("127.0.0.1:5000", "team/cache")
        );
        let query = context(
            &format!("/{NARINFO}?registry=ghcr.io&repository=a%2Fb&junk=1"),
            None,
        );
        assert_eq!(query.key().unwrap().as_str(), NARINFO);
        let metrics = context("/metrics", None);
        assert!(metrics.is_endpoint());
        assert_eq!(
            (metrics.cache_label(), metrics.route_label()),
            ("-", "metrics")
        );
    }

    #[test]
    fn paths_that_name_no_valid_key_are_other_and_say_why() {
        for uri in ["/main/x.narinfo", "/main/../etc", "/h/r", "/", "/main//a"] {
            let context = context(uri, None);
            assert_eq!(context.route_label(), "other", "{uri}");
            assert!(context.key().is_none() && !context.is_small_file(), "{uri}");
        }
    }

    #[test]
    fn credentials_are_parsed_once_with_their_fingerprint() {
        let anonymous = context("/healthz", None);
        assert_eq!(
            (anonymous.credentials.clone(), anonymous.fingerprint),
            (None, [0; 32])
        );
        let basic = context("/healthz", Some("Basic dTpw"));
        assert_eq!(basic.credentials, Some(Credentials::basic("u", "p")));
        assert_eq!(
            basic.fingerprint,
            fingerprint(&Credentials::basic("u", "p"))
        );
    }
}
