//! Registry authentication: anonymous, HTTP Basic, and the bearer-token flow that ghcr.io,
//! Docker Hub and `distribution`'s `auth.token` use (401 + `WWW-Authenticate: Bearer
//! realm=...,service=...,scope=...`, then a token from the realm).
//!
//! Tokens are cached per scope until shortly before they expire, so a warm client makes no
//! token round trip; on a 401 the caller asks once for a fresh one. Credentials and tokens
//! never appear in logs or errors.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use oranc_core::{Error, RepositoryName, Result};
use reqwest::header::WWW_AUTHENTICATE;
use reqwest::{Client, RequestBuilder, Response};
use serde::Deserialize;

use super::credentials::Credentials;
use super::origins::Origins;

/// A token request's whole deadline, body included.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(60);
/// Tokens without `expires_in` live 60 s (the distribution token spec's default).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// Refresh this long before a token expires, so it is not refused in flight.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);

/// What a request needs to be allowed to do.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// `/v2/` and other registry-wide calls.
    Registry,
    Pull(&'a RepositoryName),
    Push(&'a RepositoryName),
    /// Deleting a manifest: the token scope's action is `delete` (distribution checks it for
    /// every DELETE; Docker Hub's API reference asks for it), which `push` does not grant.
    Delete(&'a RepositoryName),
}

impl Scope<'_> {
    fn token_scope(&self) -> Option<String> {
        match self {
            Self::Registry => None,
            Self::Pull(repo) => Some(format!("repository:{repo}:pull")),
            Self::Push(repo) => Some(format!("repository:{repo}:pull,push")),
            Self::Delete(repo) => Some(format!("repository:{repo}:delete")),
        }
    }

    fn cache_key(&self) -> String {
        self.token_scope().unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

#[derive(Debug, Default)]
struct State {
    /// What the registry asked for last; `None` until it first answers 401.
    challenge: Option<Challenge>,
    tokens: HashMap<String, (String, Instant)>,
}

#[derive(Debug)]
pub struct Authenticator {
    credentials: Credentials,
    /// Which token services may be asked (and sent the credentials).
    origins: std::sync::Arc<Origins>,
    state: Mutex<State>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

impl Authenticator {
    pub fn new(credentials: Credentials, origins: std::sync::Arc<Origins>) -> Self {
        Self {
            credentials,
            origins,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves only a cache behind; keep using it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds what the registry asked for before (a cached token, or Basic credentials).
    pub fn authorize(&self, request: RequestBuilder, scope: Scope<'_>) -> RequestBuilder {
        let state = self.state();
        match (&state.challenge, &self.credentials) {
            (Some(Challenge::Basic), Credentials::Basic { username, password }) => {
                request.basic_auth(username, Some(password))
            }
            (Some(Challenge::Bearer { .. }), _) => match state.tokens.get(&scope.cache_key()) {
                Some((token, expires)) if *expires > Instant::now() => request.bearer_auth(token),
                _ => request,
            },
            _ => request,
        }
    }

    /// Handles a 401: learns the challenge and, for bearer auth, fetches a token for `scope`.
    /// After `Ok`, the request is worth sending again.
    pub async fn answer_challenge(
        &self,
        http: &Client,
        unauthorized: &Response,
        scope: Scope<'_>,
        what: &str,
    ) -> Result<()> {
        let header = unauthorized
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        let challenge = parse_challenge(header).ok_or_else(|| Error::Denied {
            what: what.to_owned(),
            hint: Some(
                "the registry answered 401 without a usable WWW-Authenticate challenge".into(),
            ),
        })?;
        if let Challenge::Bearer { realm, .. } = &challenge {
            if !self.origins.allows_token_realm(realm) {
                let origin = Origins::display(realm);
                return Err(Error::Protocol {
                    what: what.to_owned(),
                    reason: format!(
                        "the registry asks for a token from {origin}, which is not the registry itself; \
                         nothing is sent there unless you allow it (push: --token-realm {origin}; \
                         server: token_realms = [\"{origin}\"] under the registry)"
                    ),
                });
            }
        }
        self.state().challenge = Some(challenge.clone());
        match challenge {
            Challenge::Basic if self.credentials.is_anonymous() => Err(Error::Denied {
                what: what.to_owned(),
                hint: Some(format!(
                    "the registry needs credentials: set {} and {}, or log in with docker",
                    super::credentials::USERNAME_ENV,
                    super::credentials::PASSWORD_ENV
                )),
            }),
            Challenge::Basic => Ok(()),
            Challenge::Bearer { realm, service } => {
                self.fetch_token(http, &realm, service.as_deref(), scope, what)
                    .await
            }
        }
    }

    async fn fetch_token(
        &self,
        http: &Client,
        realm: &str,
        service: Option<&str>,
        scope: Scope<'_>,
        what: &str,
    ) -> Result<()> {
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(service) = service {
            query.push(("service", service.to_owned()));
        }
        if let Some(scope) = scope.token_scope() {
            query.push(("scope", scope));
        }
        let mut request = http.get(realm).query(&query).timeout(TOKEN_TIMEOUT);
        if let Credentials::Basic { username, password } = &self.credentials {
            request = request.basic_auth(username, Some(password));
        }
        let unavailable = |reason: String| Error::Unavailable {
            what: format!("{what}: token from {}", realm_host(realm)),
            reason,
        };
        let answer = request.send().await.map_err(|e| {
            if e.is_timeout() {
                Error::TimedOut {
                    what: what.to_owned(),
                    reason: Some("asking the token service".into()),
                }
            } else {
                unavailable(e.without_url().to_string())
            }
        })?;
        let status = answer.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(Error::Denied {
                what: what.to_owned(),
                hint: Some(if self.credentials.is_anonymous() {
                    format!(
                        "the token service refused anonymous access; set {} and {}",
                        super::credentials::USERNAME_ENV,
                        super::credentials::PASSWORD_ENV
                    )
                } else {
                    "the token service refused these credentials".to_owned()
                }),
            });
        }
        if !status.is_success() {
            return Err(unavailable(format!("the token service answered {status}")));
        }
        let body = super::bounded::read_capped(answer, super::bounded::MAX_TOKEN, what).await?;
        let body: TokenAnswer = serde_json::from_slice(&body)
            .map_err(|e| unavailable(format!("unreadable token answer: {e}")))?;
        let token = body
            .token
            .or(body.access_token)
            .ok_or_else(|| Error::Protocol {
                what: what.to_owned(),
                reason: "the token answer holds no token".into(),
            })?;
        let lifetime = body
            .expires_in
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TOKEN_LIFETIME);
        let expires = Instant::now()
            + lifetime
                .saturating_sub(EXPIRY_MARGIN)
                .max(Duration::from_secs(1));
        self.state()
            .tokens
            .insert(scope.cache_key(), (token, expires));
        Ok(())
    }

    /// Forgets the token for `scope`, after the registry refused it.
    pub fn forget(&self, scope: Scope<'_>) {
        self.state().tokens.remove(&scope.cache_key());
    }
}

fn realm_host(realm: &str) -> &str {
    let rest = realm.split_once("://").map_or(realm, |(_, rest)| rest);
    rest.split(['/', '?']).next().unwrap_or(rest)
}

/// Parses `Basic realm="..."` or `Bearer realm="...",service="...",scope="..."`.
///
/// Our own few lines: the `www-authenticate` crate is unmaintained and tied to an old
/// hyper, and registries send only these two schemes.
fn parse_challenge(header: &str) -> Option<Challenge> {
    let (scheme, params) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = parse_params(params);
    let realm = params.get("realm")?.clone();
    Some(Challenge::Bearer {
        realm,
        service: params.get("service").cloned(),
    })
}

fn parse_params(input: &str) -> HashMap<String, String> {
    let mut params = HashMap::new();
    let mut rest = input.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((index, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '"' => {
                        end = index + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end.min(quoted.len())..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        params.insert(key, value);
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    params
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_challenges_registries_send() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into())
            })
        );
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:user/image:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://ghcr.io/token".into(),
                service: Some("ghcr.io".into())
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(
            parse_challenge("Bearer service=\"x\""),
            None,
            "no realm, no token"
        );
    }

    #[test]
    fn realm_host_hides_paths_and_queries() {
        assert_eq!(
            realm_host("https://auth.docker.io/token?x=1"),
            "auth.docker.io"
        );
        assert_eq!(realm_host("http://127.0.0.1:9/t"), "127.0.0.1:9");
    }
}
