//! A stand-in for a CI platform's OIDC issuer (GitHub Actions' `token.actions.
//! githubusercontent.com`): its discovery document and JWKS on a free loopback port, and
//! ES256 tokens signed with its key, as a job's `id-token: write` would get. Counts the
//! times its keys are fetched.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use serde_json::{json, Value};

/// The key id the issuer's JWKS names its key by.
pub const KEY_ID: &str = "stand-in-1";

#[derive(Debug)]
pub struct OidcIssuer {
    /// `http://127.0.0.1:PORT`: the `issuer` of its tokens and of the cache's config.
    pub url: String,
    key: jsonwebtoken::EncodingKey,
    key_fetches: Arc<AtomicUsize>,
    _runtime: tokio::runtime::Runtime,
}

/// A fresh P-256 key: for signing, and as its JWK (`x`, `y` from the uncompressed point).
pub fn es256_key() -> (jsonwebtoken::EncodingKey, Value) {
    let pair = rcgen::KeyPair::generate().expect("a P-256 key");
    let point = pair.public_key_raw();
    let encode = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let jwk = json!({
        "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": KEY_ID,
        "x": encode(&point[1..33]), "y": encode(&point[33..65]),
    });
    let key = jsonwebtoken::EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes())
        .expect("an EC key in PEM");
    (key, jwk)
}

impl OidcIssuer {
    pub fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("binding the issuer");
        let url = format!("http://{}", listener.local_addr().expect("an address"));
        let (key, jwk) = es256_key();
        let key_fetches = Arc::new(AtomicUsize::new(0));
        let discovery = json!({ "issuer": url, "jwks_uri": format!("{url}/jwks") });
        let app = Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || async move { Json(discovery) }),
            )
            .route(
                "/jwks",
                get(
                    |State((jwk, fetches)): State<(Value, Arc<AtomicUsize>)>| async move {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        Json(json!({ "keys": [jwk] }))
                    },
                ),
            )
            .with_state((jwk, key_fetches.clone()));
        runtime.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url,
            key,
            key_fetches,
            _runtime: runtime,
        }
    }

    /// A token with GitHub Actions' claims for `repository`, for `audience`, valid from a
    /// minute ago for `lifetime_secs` (negative: expired).
    pub fn token(&self, audience: &str, repository: &str, lifetime_secs: i64) -> String {
        self.token_signed_by(&self.key, KEY_ID, audience, repository, lifetime_secs)
    }

    /// As [`Self::token`], signed by `key` and naming the key id `kid`.
    pub fn token_signed_by(
        &self,
        key: &jsonwebtoken::EncodingKey,
        kid: &str,
        audience: &str,
        repository: &str,
        lifetime_secs: i64,
    ) -> String {
        let now = i64::try_from(jsonwebtoken::get_current_timestamp()).expect("a timestamp");
        let claims = json!({
            "iss": self.url, "aud": audience, "sub": format!("repo:{repository}:ref:refs/heads/main"),
            "repository": repository, "ref": "refs/heads/main",
            "iat": now - 60, "nbf": now - 60, "exp": now + lifetime_secs,
        });
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, &claims, key).expect("signing a token")
    }

    /// How often the issuer's keys were fetched.
    pub fn key_fetches(&self) -> usize {
        self.key_fetches.load(Ordering::SeqCst)
    }
}
