//! A stand-in registry that answers as a hostile one would, for attacks a real registry will
//! not make on demand (a token realm or an upload `Location` on another host, endless or
//! looping answers, trickled or altered bytes), either alone or as a proxy in front of a
//! real `distribution` that injects its hostility into the matching answers; and a trap: a
//! listener that records every request it gets, standing for the attacker's host.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::Router;
use futures::StreamExt as _;

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
    /// Manifest GETs answer 200 with a body that never ends.
    EndlessManifest,
    /// Tag listings link to themselves as their next page.
    LoopingTagList,
    /// Tag listings never end.
    EndlessTagList,
    /// A tag listing's next page is on this other host.
    ForeignTagLink(String),
    /// Blob bodies come one byte a second.
    TrickledBlob,
    /// Blob bodies have their first byte flipped.
    FlippedBlob,
    /// Blob GETs redirect to this URL.
    RedirectedBlob(String),
    /// Tag listings never answer (everything else is 404, `/v2/` 200).
    SilentTagList,
    /// Tag listings leave out these tags (they are still there when asked for).
    HiddenTags(Vec<String>),
    /// Request bodies over this many bytes are refused as ghcr.io refuses them (416).
    BodyCap(usize),
}

#[derive(Debug)]
pub struct HostileRegistry {
    pub addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl HostileRegistry {
    /// A stand-in on its own (for hostilities that need no real registry behind).
    pub async fn start(hostility: Hostility) -> Self {
        let app = Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap| {
            let hostility = hostility.clone();
            async move {
                if matches!(hostility, Hostility::SilentTagList)
                    && uri.path().ends_with("/tags/list")
                {
                    tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
                }
                answer(&hostility, &method, &uri, &headers)
            }
        });
        let (addr, server) = serve(app).await;
        Self { addr, server }
    }

    /// A proxy to the registry at `upstream` (`http://host:port`) that injects `hostility`.
    pub async fn in_front_of(upstream: &str, hostility: Hostility) -> Self {
        let upstream = upstream.trim_end_matches('/').to_owned();
        let client = reqwest::Client::new();
        let app = Router::new()
            .fallback(
                move |method: Method, uri: Uri, headers: HeaderMap, body: bytes::Bytes| {
                    let (hostility, upstream, client) =
                        (hostility.clone(), upstream.clone(), client.clone());
                    async move {
                        proxied(&hostility, &client, &upstream, method, &uri, headers, body).await
                    }
                },
            )
            // Chunks of a NAR pass through whole (axum's default cap is 2 MB).
            .layer(axum::extract::DefaultBodyLimit::disable());
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
        Hostility::SilentTagList if path == "/v2/" => StatusCode::OK.into_response(),
        // The others alter a real registry's answers: see `in_front_of`.
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// A page of one tag whose next page is at `next`.
fn one_tag_then(next: &str) -> axum::response::Response {
    let link = format!("<{next}?last=a&n=1000>; rel=\"next\"");
    (
        [
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (header::LINK, link),
        ],
        r#"{"name":"x","tags":["a"]}"#,
    )
        .into_response()
}

/// Endless bytes, 64 KiB at a time.
fn endless(prefix: &'static [u8]) -> axum::body::Body {
    let chunk = bytes::Bytes::from(vec![b'a'; 64 << 10]);
    let rest = futures::stream::repeat(chunk).map(Ok::<_, std::io::Error>);
    let first = futures::stream::once(async move { Ok(bytes::Bytes::from_static(prefix)) });
    axum::body::Body::from_stream(first.chain(rest))
}

async fn proxied(
    hostility: &Hostility,
    client: &reqwest::Client,
    upstream: &str,
    method: Method,
    uri: &Uri,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> axum::response::Response {
    let path = uri.path();
    let get = method == Method::GET;
    let manifest = get && path.contains("/manifests/");
    let tags = get && path.ends_with("/tags/list");
    let blob = get && path.contains("/blobs/sha256:");
    match hostility {
        Hostility::EndlessManifest if manifest => {
            return (
                [(
                    header::CONTENT_TYPE,
                    oranc_core::layout::MANIFEST_MEDIA_TYPE,
                )],
                endless(b"{\"schemaVersion\":2,\"x\":\""),
            )
                .into_response();
        }
        Hostility::EndlessTagList if tags => {
            return (
                [(header::CONTENT_TYPE, "application/json")],
                endless(b"{\"name\":\"x\",\"tags\":[\""),
            )
                .into_response();
        }
        Hostility::LoopingTagList if tags => return one_tag_then(path),
        Hostility::ForeignTagLink(url) if tags => return one_tag_then(url),
        Hostility::BodyCap(cap) if body.len() > *cap => {
            return (
                StatusCode::RANGE_NOT_SATISFIABLE,
                "the request body is too large and exceeds the maximum permissible limit of 4.00MiB",
            )
                .into_response();
        }
        Hostility::RedirectedBlob(url) if blob => {
            return (
                StatusCode::TEMPORARY_REDIRECT,
                [(header::LOCATION, url.clone())],
            )
                .into_response();
        }
        _ => {}
    }
    let target = format!(
        "{upstream}{}",
        uri.path_and_query().map_or(path, |p| p.as_str())
    );
    // Every header goes through, `Host` too: the registry then names the stand-in in the
    // upload locations it hands out, as a registry behind a proxy does.
    let mut request = client.request(method, target).body(body);
    for (name, value) in &headers {
        request = request.header(name, value);
    }
    let Ok(answer) = request.send().await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let status = answer.status();
    let answer_headers = answer.headers().clone();
    let mut bytes = answer.bytes().await.unwrap_or_default().to_vec();
    let body = match hostility {
        Hostility::HiddenTags(hidden) if tags && status.is_success() => {
            let mut listing: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            if let Some(listed) = listing["tags"].as_array_mut() {
                listed.retain(|tag| !hidden.iter().any(|h| tag.as_str() == Some(h.as_str())));
            }
            axum::body::Body::from(listing.to_string())
        }
        Hostility::FlippedBlob if blob && status.is_success() && !bytes.is_empty() => {
            bytes[0] ^= 1;
            axum::body::Body::from(bytes)
        }
        Hostility::TrickledBlob if blob && status.is_success() => {
            let trickle = futures::stream::iter(bytes).then(|byte| async move {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                Ok::<_, std::io::Error>(bytes::Bytes::from(vec![byte]))
            });
            axum::body::Body::from_stream(trickle)
        }
        _ => axum::body::Body::from(bytes),
    };
    let mut response = axum::response::Response::new(body);
    *response.status_mut() = status;
    for (name, value) in &answer_headers {
        // The body may have changed length; hyper frames it anew.
        if name != header::TRANSFER_ENCODING && name != header::CONTENT_LENGTH {
            response.headers_mut().insert(name, value.clone());
        }
    }
    response
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
