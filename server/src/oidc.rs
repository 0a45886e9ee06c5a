//! Writers by OIDC token (`[[caches.NAME.oidc]]`): a CI job writes with the token its
//! platform mints for it (GitHub Actions' `id-token: write`), so no secret is stored in CI.
//! Nix sends the token as the password of a netrc line; other clients may send it as a
//! Bearer token.
//!
//! Verification follows the careful implementations (crates.io's trusted publishing,
//! niks3), with `jsonwebtoken` doing the cryptography and the registered claims:
//! - RS256 or ES256 only, by a key of the issuer's JWKS (found through its discovery
//!   document), chosen by `kid`; an unknown `kid` fetches the JWKS again, at most once a
//!   minute per issuer, so made-up `kid`s cannot make the server hammer the issuer;
//! - `iss`, `aud`, `exp` and `nbf` checked with a minute of leeway;
//! - every configured claim matched by its glob (any of a list), all of them;
//! - verified tokens remembered (bounded, until they expire) so a `nix copy` that sends the
//!   token with every request costs one verification.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use oranc_config::OidcIssuerConfig;
use serde_json::Value;

use crate::error::ServerError;

/// Verified tokens remembered at once.
const MAX_VERIFIED: u64 = 10_000;
/// How long a verified token is believed at most (its own `exp` may end it sooner).
const VERIFIED_TTL: Duration = Duration::from_secs(300);
/// The least time between two fetches of one issuer's keys.
const REFETCH_INTERVAL: Duration = Duration::from_secs(60);
/// Leeway for `exp` and `nbf`, in seconds (clocks differ).
const LEEWAY_SECS: u64 = 60;
/// Largest discovery document or JWKS read.
const MAX_DOCUMENT_BYTES: usize = 256 << 10;
/// How long a discovery document or JWKS may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// The OIDC issuers one named cache trusts for writers.
#[derive(Debug)]
pub struct OidcWriters {
    issuers: Vec<TrustedIssuer>,
    http: reqwest::Client,
    /// Digests of verified tokens, with when each expires.
    verified: moka::sync::Cache<[u8; 32], Instant>,
}

#[derive(Debug)]
struct TrustedIssuer {
    config: OidcIssuerConfig,
    /// Globs of each claim, compiled.
    claims: Vec<(String, Vec<glob::Pattern>)>,
    /// The issuer's keys, shared by every entry of the same issuer: one fetch serves all,
    /// and the once-a-minute refetch bound is the issuer's, not each entry's.
    keys: Arc<tokio::sync::Mutex<IssuerKeys>>,
}

#[derive(Debug, Default)]
struct IssuerKeys {
    set: Option<Arc<JwkSet>>,
    fetched_at: Option<Instant>,
}

impl OidcWriters {
    /// `None` without issuers. Globs were checked when the config was validated.
    pub fn new(configs: &[OidcIssuerConfig]) -> Result<Option<Self>, ServerError> {
        if configs.is_empty() {
            return Ok(None);
        }
        let mut keys_by_issuer: std::collections::HashMap<
            &str,
            Arc<tokio::sync::Mutex<IssuerKeys>>,
        > = std::collections::HashMap::new();
        let issuers = configs
            .iter()
            .map(|config| {
                let claims = config
                    .claims
                    .iter()
                    .map(|(claim, pattern)| {
                        let globs = pattern
                            .globs()
                            .iter()
                            .map(|glob| glob::Pattern::new(glob))
                            .collect::<Result<Vec<_>, _>>()
                            .map_err(|e| {
                                ServerError::Internal(format!("oidc claim {claim}: {e}"))
                            })?;
                        Ok((claim.clone(), globs))
                    })
                    .collect::<Result<Vec<_>, ServerError>>()?;
                Ok(TrustedIssuer {
                    config: config.clone(),
                    claims,
                    keys: keys_by_issuer
                        .entry(config.issuer.as_str())
                        .or_default()
                        .clone(),
                })
            })
            .collect::<Result<Vec<_>, ServerError>>()?;
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(ServerError::UpstreamClient)?;
        Ok(Some(Self {
            issuers,
            http,
            verified: moka::sync::Cache::builder()
                .max_capacity(MAX_VERIFIED)
                .time_to_live(VERIFIED_TTL)
                .build(),
        }))
    }

    /// Whether `token` is a JWT at all (three base64url parts, a JSON header): anything else
    /// is a password, for `writers_file`.
    pub fn looks_like_a_token(token: &str) -> bool {
        token.starts_with("eyJ") && token.split('.').count() == 3
    }

    /// Whether `token` is a valid token of one of the issuers with the claims it requires;
    /// why not, when it is not (said to the client: it holds the token already).
    pub async fn verify(&self, token: &str) -> Result<(), String> {
        let digest = crate::client_auth::credential_digest("oidc", token);
        if self
            .verified
            .get(&digest)
            .is_some_and(|expires| expires > Instant::now())
        {
            return Ok(());
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| format!("not a JWT: {e}"))?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(format!(
                "{:?} tokens are not taken (RS256 or ES256)",
                header.alg
            ));
        }
        // Which entries to try: those of the issuer the token names (its word, checked by
        // that issuer's keys); several may name one issuer with other audiences or claims
        // (two repositories' jobs), and any of them may take the token.
        let claimed: Value = jsonwebtoken::dangerous::insecure_decode_claims(token)
            .map_err(|e| format!("unreadable claims: {e}"))?;
        let mut refusal = "its issuer is not trusted by this cache".to_owned();
        let mut taken = None;
        for issuer in self
            .issuers
            .iter()
            .filter(|issuer| claimed["iss"].as_str() == Some(issuer.config.issuer.as_str()))
        {
            match issuer.verify(&self.http, token, &header).await {
                Ok(claims) => {
                    taken = Some(claims);
                    break;
                }
                Err(reason) => refusal = reason,
            }
        }
        let claims = taken.ok_or(refusal)?;
        let expires = claims["exp"]
            .as_u64()
            .and_then(|exp| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .ok()?
                    .as_secs();
                Some(Instant::now() + Duration::from_secs(exp.saturating_sub(now)))
            })
            .unwrap_or_else(Instant::now);
        self.verified.insert(digest, expires);
        Ok(())
    }
}

impl TrustedIssuer {
    /// The claims of `token` when this entry takes it: signed by one of the issuer's keys,
    /// for its audience, in its time, with every claim it names.
    async fn verify(
        &self,
        http: &reqwest::Client,
        token: &str,
        header: &jsonwebtoken::Header,
    ) -> Result<Value, String> {
        let key = self.key(http, header.kid.as_deref(), header.alg).await?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        let claims: Value = jsonwebtoken::decode(token, &key, &validation)
            .map_err(|e| format!("refused: {e}"))?
            .claims;
        self.check_claims(&claims)?;
        Ok(claims)
    }

    /// Every configured claim matches one of its globs (`*` and `?` never match `/`, so
    /// `org/*` is one level below `org`).
    fn check_claims(&self, claims: &Value) -> Result<(), String> {
        for (claim, globs) in &self.claims {
            let value = match &claims[claim.as_str()] {
                Value::String(text) => text.clone(),
                Value::Null => return Err(format!("the claim {claim} is missing")),
                other => other.to_string(),
            };
            let options = glob::MatchOptions {
                require_literal_separator: true,
                ..glob::MatchOptions::new()
            };
            if !globs.iter().any(|glob| glob.matches_with(&value, options)) {
                return Err(format!(
                    "its claim {claim} = {:?} is not one this cache takes",
                    crate::refusal_log::Loggable(&value).to_string()
                ));
            }
        }
        Ok(())
    }

    /// The issuer's key `kid` for `alg`, from its JWKS as last fetched, or fetched again
    /// when it lacks `kid` and the last fetch is a minute old.
    async fn key(
        &self,
        http: &reqwest::Client,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<DecodingKey, String> {
        let mut keys = self.keys.lock().await;
        if let Some(key) = keys.set.as_deref().and_then(|set| find_key(set, kid, alg)) {
            return Ok(key);
        }
        let recently = keys
            .fetched_at
            .is_some_and(|at| at.elapsed() < REFETCH_INTERVAL);
        if recently {
            return Err("signed by a key its issuer does not list".into());
        }
        keys.fetched_at = Some(Instant::now());
        let set = fetch_keys(http, &self.config.issuer).await.map_err(|error| {
            tracing::warn!(issuer = %self.config.issuer, %error, "cannot read the OIDC issuer's keys");
            "its issuer's keys cannot be read now (the server's log says why)".to_owned()
        })?;
        keys.set = Some(Arc::new(set));
        keys.set
            .as_deref()
            .and_then(|set| find_key(set, kid, alg))
            .ok_or_else(|| "signed by a key its issuer does not list".into())
    }
}

/// The key of `set` named `kid` (or its only key, when the token names none) usable for
/// `alg`.
fn find_key(set: &JwkSet, kid: Option<&str>, alg: Algorithm) -> Option<DecodingKey> {
    let candidates: Vec<_> = match kid {
        Some(kid) => set.find(kid).into_iter().collect(),
        None if set.keys.len() == 1 => set.keys.iter().collect(),
        None => Vec::new(),
    };
    candidates.into_iter().find_map(|jwk| {
        let suits = match alg {
            Algorithm::RS256 => matches!(
                jwk.algorithm,
                jsonwebtoken::jwk::AlgorithmParameters::RSA(_)
            ),
            Algorithm::ES256 => matches!(
                jwk.algorithm,
                jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_)
            ),
            _ => false,
        };
        suits.then(|| DecodingKey::from_jwk(jwk).ok()).flatten()
    })
}

/// The JWKS of `issuer`, through its discovery document.
async fn fetch_keys(http: &reqwest::Client, issuer: &str) -> Result<JwkSet, String> {
    let discovery = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let document = fetch_json(http, &discovery).await?;
    let jwks_uri = document["jwks_uri"]
        .as_str()
        .ok_or_else(|| format!("{discovery} names no jwks_uri"))?;
    if !(jwks_uri.starts_with("https://") || issuer.starts_with("http://")) {
        return Err(format!("jwks_uri {jwks_uri:?} is not https"));
    }
    serde_json::from_value(fetch_json(http, jwks_uri).await?)
        .map_err(|e| format!("{jwks_uri}: not a JWKS: {e}"))
}

async fn fetch_json(http: &reqwest::Client, url: &str) -> Result<Value, String> {
    use futures::StreamExt as _;
    let response = http
        .get(url)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("{url}: {}", response.status()));
    }
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| format!("{url}: {e}"))?;
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(format!("{url}: larger than {MAX_DOCUMENT_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|e| format!("{url}: {e}"))
}
