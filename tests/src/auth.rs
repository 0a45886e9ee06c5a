//! Registry authentication for tests, real on the registry's side: an htpasswd file
//! (bcrypt, as distribution requires) and a token issuer signing ES256 JWTs with a key whose
//! certificate the registry trusts (distribution's `auth.token`), the flow ghcr.io and
//! Docker Hub use.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

pub const USERNAME: &str = "oranc-test";
pub const PASSWORD: &str = "correct-horse-battery-staple";

/// Writes an htpasswd file accepting [`USERNAME`] / [`PASSWORD`].
pub fn write_htpasswd(path: &Path) {
    let hash = bcrypt::hash(PASSWORD, 4).expect("bcrypt hashing");
    std::fs::write(path, format!("{USERNAME}:{hash}\n")).expect("writing htpasswd");
}

/// How the registry's `auth.token` section must look for an issuer.
#[derive(Debug, Clone)]
pub struct TokenAuthConfig {
    pub realm: String,
    pub service: String,
    pub issuer: String,
    pub root_cert_bundle: PathBuf,
}

#[derive(Debug)]
struct IssuerState {
    key: jsonwebtoken::EncodingKey,
    key_id: String,
    requests: AtomicUsize,
    anonymous_pull: bool,
    lifetime_seconds: u64,
}

/// A token service on a free loopback port; counts the tokens it hands out.
#[derive(Debug)]
pub struct TokenIssuer {
    pub config: TokenAuthConfig,
    state: Arc<IssuerState>,
    server: tokio::task::JoinHandle<()>,
}

pub const SERVICE: &str = "oranc-test-registry";
pub const ISSUER: &str = "oranc-test-issuer";

#[derive(Deserialize)]
struct TokenQuery {
    scope: Option<String>,
}

#[derive(Serialize)]
struct Access {
    #[serde(rename = "type")]
    kind: String,
    name: String,
    actions: Vec<String>,
}

#[derive(Serialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: String,
    exp: u64,
    nbf: u64,
    iat: u64,
    jti: String,
    access: Vec<Access>,
}

impl TokenIssuer {
    /// Starts an issuer. With `anonymous_pull`, requests without credentials get pull-only
    /// tokens (as for public packages on ghcr.io); otherwise they get 401.
    pub async fn start(dir: &Path, anonymous_pull: bool, lifetime_seconds: u64) -> Self {
        let certified = rcgen::generate_simple_self_signed(vec!["oranc-test-issuer".to_owned()])
            .expect("generating a certificate");
        let bundle = dir.join("token-issuer.pem");
        std::fs::write(&bundle, certified.cert.pem()).expect("writing the certificate");
        let key = jsonwebtoken::EncodingKey::from_ec_pem(
            certified.signing_key.serialize_pem().as_bytes(),
        )
        .expect("an EC key in PEM");
        let spki = rcgen::PublicKeyData::subject_public_key_info(&certified.signing_key);
        let state = Arc::new(IssuerState {
            key,
            key_id: libtrust_key_id(&spki),
            requests: AtomicUsize::new(0),
            anonymous_pull,
            lifetime_seconds,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the issuer");
        let addr: SocketAddr = listener.local_addr().expect("an address");
        let app = Router::new()
            .route("/token", get(issue))
            .with_state(state.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            config: TokenAuthConfig {
                realm: format!("http://{addr}/token"),
                service: SERVICE.to_owned(),
                issuer: ISSUER.to_owned(),
                root_cert_bundle: bundle,
            },
            state,
            server,
        }
    }

    /// Tokens handed out so far.
    pub fn tokens_issued(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }
}

impl Drop for TokenIssuer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// distribution trusts keys by libtrust's key id: the SHA-256 of the DER public key,
/// truncated to 240 bits, base32, in groups of four joined by ':'.
fn libtrust_key_id(spki_der: &[u8]) -> String {
    let digest = sha2::Sha256::digest(spki_der);
    let encoded = data_encoding::BASE32_NOPAD.encode(&digest[..30]);
    encoded
        .as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect::<Vec<_>>()
        .join(":")
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

async fn issue(
    State(state): State<Arc<IssuerState>>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
) -> axum::response::Response {
    let authenticated = match basic_credentials(&headers) {
        Some((user, password)) if user == USERNAME && password == PASSWORD => true,
        Some(_) => return StatusCode::UNAUTHORIZED.into_response(),
        None if state.anonymous_pull => false,
        None => return StatusCode::UNAUTHORIZED.into_response(),
    };
    state.requests.fetch_add(1, Ordering::SeqCst);
    let access = query
        .scope
        .iter()
        .filter_map(|scope| {
            let mut parts = scope.splitn(3, ':');
            let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            let actions = actions
                .split(',')
                .filter(|a| authenticated || *a == "pull")
                .map(str::to_owned)
                .collect();
            Some(Access {
                kind: kind.to_owned(),
                name: name.to_owned(),
                actions,
            })
        })
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let claims = Claims {
        iss: ISSUER.to_owned(),
        sub: if authenticated {
            USERNAME.to_owned()
        } else {
            String::new()
        },
        aud: SERVICE.to_owned(),
        exp: now + state.lifetime_seconds,
        nbf: now.saturating_sub(10),
        iat: now,
        jti: format!("{now}-{}", state.requests.load(Ordering::SeqCst)),
        access,
    };
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(state.key_id.clone());
    match jsonwebtoken::encode(&header, &claims, &state.key) {
        Ok(token) => Json(serde_json::json!({
            "token": token,
            "expires_in": state.lifetime_seconds,
        }))
        .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
