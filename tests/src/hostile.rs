//! A stand-in registry that answers as a hostile one would, for attacks a real registry will
//! not make on demand (a token realm or an upload `Location` on another host), and a trap:
//! a listener that records every request it gets, standing for the attacker's host.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::Router;

/// Records every request; answers each with a plausible token, so that only a client that
/// refuses to go there is safe from it.
#[derive(Debug)]
pub struct Trap {
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    server: tokio::task::JoinHandle<()>,
}

impl Trap {
    pub async fn start() -> Self {
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        let app = Router::new().fallback(move || {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    r#"{"token":"stolen","expires_in":300}"#,
                )
            }
        });
        let (addr, server) = serve(app).await;
        Self { addr, hits, server }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Requests that reached the trap so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Trap {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// What the stand-in does wrong.
#[derive(Debug, Clone)]
pub enum Hostility {
    /// Every request is a 401 asking for a bearer token from this URL.
    ForeignTokenRealm(String),
    /// Uploads are sent to this URL (`Location` of the upload session).
    ForeignUploadLocation(String),
}

#[derive(Debug)]
pub struct HostileRegistry {
    pub addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl HostileRegistry {
    pub async fn start(hostility: Hostility) -> Self {
        let app = Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap| {
            let hostility = hostility.clone();
            async move { answer(&hostility, &method, &uri, &headers) }
        });
        let (addr, server) = serve(app).await;
        Self { addr, server }
    }

    pub fn host(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for HostileRegistry {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn answer(
    hostility: &Hostility,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> axum::response::Response {
    let path = uri.path();
    match hostility {
        Hostility::ForeignTokenRealm(realm) => {
            if headers.contains_key(header::AUTHORIZATION) {
                return StatusCode::NOT_FOUND.into_response();
            }
            (
                StatusCode::UNAUTHORIZED,
                [(
                    header::WWW_AUTHENTICATE,
                    format!(r#"Bearer realm="{realm}",service="hostile""#),
                )],
            )
                .into_response()
        }
        Hostility::ForeignUploadLocation(location) => {
            if method == Method::POST && path.ends_with("/blobs/uploads/") {
                return (StatusCode::ACCEPTED, [(header::LOCATION, location.clone())])
                    .into_response();
            }
            if path.ends_with("/tags/list") {
                return (
                    [(header::CONTENT_TYPE, "application/json")],
                    r#"{"name":"x","tags":[]}"#,
                )
                    .into_response();
            }
            if path == "/v2/" {
                return StatusCode::OK.into_response();
            }
            StatusCode::NOT_FOUND.into_response()
        }
    }
}

async fn serve(app: Router) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding a loopback port");
    let addr = listener.local_addr().expect("a bound address");
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, server)
}
