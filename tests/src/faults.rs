//! Faults a real registry will not produce on demand, served from loopback: 500s that pass,
//! 429 with `Retry-After`, a registry that stays down, a body that stalls mid-way, and a
//! port that resets every connection. Everything else is tested against the real registry.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;

/// Repositories of the fault server and what they do.
pub const FLAKY: &str = "flaky/repo"; // the first `flaky_failures` answers are 500
pub const THROTTLED: &str = "throttled/repo"; // the first answer is 429, Retry-After: 1
pub const DOWN: &str = "down/repo"; // always 503
pub const PUSHING_BACK: &str = "pushing-back/repo"; // always 429, Retry-After: 30
pub const STALLED: &str = "stalled/repo"; // blob bodies stop after 16 bytes
pub const HANGING: &str = "hanging/repo"; // manifest requests never get an answer
/// Asks for Basic credentials, then redirects blob GETs (307) to a separate blob store on
/// another port, as ghcr.io and Docker Hub send clients to their storage.
pub const REDIRECTING: &str = "redirecting/repo";
pub const REDIRECTED_BODY: &[u8] = b"bytes from the blob store";

#[derive(Debug, Default)]
struct Counters {
    flaky: AtomicUsize,
    throttled: AtomicUsize,
    down: AtomicUsize,
}

#[derive(Debug)]
struct FaultState {
    counters: Counters,
    blob_store: SocketAddr,
    flaky_failures: usize,
    manifest: Bytes,
}

#[derive(Debug)]
pub struct FaultServer {
    pub addr: SocketAddr,
    state: Arc<FaultState>,
    server: tokio::task::JoinHandle<()>,
    blob_store: tokio::task::JoinHandle<()>,
    blob_store_saw_authorization: Arc<std::sync::Mutex<Vec<bool>>>,
}

impl FaultServer {
    /// Serves `manifest` for any tag once a repository's faults have passed.
    pub async fn start(flaky_failures: usize, manifest: Bytes) -> Self {
        let saw_authorization = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = saw_authorization.clone();
        let store = Router::new().route(
            "/storage/blob",
            get(move |headers: axum::http::HeaderMap| async move {
                if let Ok(mut seen) = seen.lock() {
                    seen.push(headers.contains_key(header::AUTHORIZATION));
                }
                REDIRECTED_BODY
            }),
        );
        let store_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding");
        let blob_store_addr = store_listener.local_addr().expect("an address");
        let blob_store = tokio::spawn(async move {
            let _ = axum::serve(store_listener, store).await;
        });
        let state = Arc::new(FaultState {
            blob_store: blob_store_addr,
            counters: Counters::default(),
            flaky_failures,
            manifest,
        });
        let app = Router::new()
            .route("/v2/", get(|| async { StatusCode::OK }))
            .route("/v2/{owner}/{name}/manifests/{tag}", get(serve_manifest))
            .route("/v2/{owner}/{name}/blobs/{digest}", get(serve_blob))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding");
        let addr = listener.local_addr().expect("an address");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            state,
            server,
            blob_store,
            blob_store_saw_authorization: saw_authorization,
        }
    }

    /// For each request the blob store got: did it carry an Authorization header?
    pub fn blob_store_saw_authorization(&self) -> Vec<bool> {
        self.blob_store_saw_authorization
            .lock()
            .map(|seen| seen.clone())
            .unwrap_or_default()
    }

    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Requests each repository has seen: (flaky, throttled, down).
    pub fn requests(&self) -> (usize, usize, usize) {
        let c = &self.state.counters;
        (
            c.flaky.load(Ordering::SeqCst),
            c.throttled.load(Ordering::SeqCst),
            c.down.load(Ordering::SeqCst),
        )
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.server.abort();
        self.blob_store.abort();
    }
}

async fn serve_manifest(
    State(state): State<Arc<FaultState>>,
    Path((owner, name, _tag)): Path<(String, String, String)>,
) -> Response {
    let ok = || {
        (
            [(
                header::CONTENT_TYPE,
                "application/vnd.oci.image.manifest.v1+json",
            )],
            state.manifest.clone(),
        )
            .into_response()
    };
    match format!("{owner}/{name}").as_str() {
        FLAKY => {
            let seen = state.counters.flaky.fetch_add(1, Ordering::SeqCst);
            if seen < state.flaky_failures {
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            } else {
                ok()
            }
        }
        THROTTLED => {
            if state.counters.throttled.fetch_add(1, Ordering::SeqCst) == 0 {
                (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "1")]).into_response()
            } else {
                ok()
            }
        }
        DOWN => {
            state.counters.down.fetch_add(1, Ordering::SeqCst);
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
        PUSHING_BACK => {
            (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "30")]).into_response()
        }
        STALLED => ok(),
        HANGING => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::OK.into_response()
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn serve_blob(
    State(state): State<Arc<FaultState>>,
    Path((owner, name, _digest)): Path<(String, String, String)>,
    headers: axum::http::HeaderMap,
) -> Response {
    match format!("{owner}/{name}").as_str() {
        STALLED => {
            let first = futures::stream::once(async {
                Ok::<_, std::io::Error>(Bytes::from_static(&[7u8; 16]))
            });
            let stall = futures::stream::once(async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok::<_, std::io::Error>(Bytes::new())
            });
            use futures::StreamExt as _;
            (
                [(header::CONTENT_LENGTH, "1000")],
                Body::from_stream(first.chain(stall)),
            )
                .into_response()
        }
        REDIRECTING if !headers.contains_key(header::AUTHORIZATION) => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"faults\"")],
        )
            .into_response(),
        REDIRECTING => (
            StatusCode::TEMPORARY_REDIRECT,
            [(
                header::LOCATION,
                format!("http://{}/storage/blob", state.blob_store),
            )],
        )
            .into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// A loopback port that accepts connections and closes them at once, before any answer.
#[derive(Debug)]
pub struct ResettingPort {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl ResettingPort {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding");
        let addr = listener.local_addr().expect("an address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                drop(socket);
            }
        });
        Self {
            addr,
            accepted,
            task,
        }
    }

    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for ResettingPort {
    fn drop(&mut self) {
        self.task.abort();
    }
}
