//! Attacks on a running `oranc server`, shared by the bounded tests (`tests/abuse.rs`) and
//! the `bench-abuse` runner, and a legitimate Nix-like client that keeps asking for a
//! narinfo while an attack runs. The attacker connects from 127.0.0.2 and the legitimate
//! client from 127.0.0.1, so that they are two clients to the server, as they would be on a
//! network. Every loop is bounded in count and time; everything stays on loopback.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::oci::RawRegistry;
use crate::registry::RegistryProcess;
use crate::server::ServerProcess;

/// The attacker's source address (a second loopback address: a second client).
pub const ATTACKER: &str = "127.0.0.2";

/// A hash and the narinfo the server serves for it: the legitimate client's target.
pub const HOT: &str = "77777777777777777777777777777777";

/// What the legitimate client saw during an attack, and what the server held.
#[derive(Debug, Clone)]
pub struct Seen {
    pub peak_rss_mb: f64,
    pub requests: usize,
    pub failures: usize,
    pub p99: Duration,
}

impl std::fmt::Display for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "peak RSS {:.0} MB, legitimate narinfo p99 {:.1} ms over {} requests, {} failed",
            self.peak_rss_mb,
            self.p99.as_secs_f64() * 1000.0,
            self.requests,
            self.failures
        )
    }
}

/// A narinfo the server accepts for `/nix/store/<hash>-x`.
pub fn narinfo_of(hash: &str) -> String {
    format!(
        "StorePath: /nix/store/{hash}-x\nURL: nar/x.nar\nCompression: none\nNarHash: sha256:1111111111111111111111111111111111111111111111111111\nNarSize: 1\nReferences: \n"
    )
}

/// Stores the [`HOT`] narinfo in `repo` of `registry`.
pub fn store_hot_narinfo(registry: &RegistryProcess, repo: &str) {
    let raw = RawRegistry::new(&registry.base_url());
    let key = format!("{HOT}.narinfo");
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(raw.put_object(
        repo,
        &key,
        &key,
        "text/x-nix-narinfo",
        Bytes::from(narinfo_of(HOT)),
    ));
}

/// A registry with the [`HOT`] narinfo, and a server (started by `command`) whose `/ci`
/// serves it, with a writer `ci` whose password (`s3cret`) is argon2id at the crate's
/// defaults; `extra` is more config. The directory holds the writers file.
pub fn target_server(
    command: std::process::Command,
    extra: &str,
) -> (RegistryProcess, ServerProcess, tempfile::TempDir) {
    let registry = RegistryProcess::start();
    let repo = crate::fresh_repo("abuse");
    store_hot_narinfo(&registry, &repo);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let writers = dir.path().join("writers");
    std::fs::write(&writers, format!("ci:{}\n", argon2_default_hash("s3cret")))
        .expect("writing the writers file");
    let config = format!(
        "{extra}\n{}[caches.ci]\nregistry = \"{host}\"\nrepository = \"{repo}\"\nwriters_file = \"{writers}\"\n",
        crate::server::allow_plain_http(&registry.host()),
        host = registry.host(),
        writers = writers.display(),
    );
    let server = ServerProcess::start_logged(command, &config, &[]);
    (registry, server, dir)
}

/// The [`HOT`] narinfo's URL on a [`target_server`].
pub fn hot_url(server: &ServerProcess) -> String {
    server.url(&format!("ci/{HOT}.narinfo"))
}

/// The server's peak resident memory so far, in MB.
pub fn peak_rss_mb(server: &ServerProcess) -> f64 {
    server
        .peak_memory()
        .and_then(|text| text.trim_end_matches(" kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Runs `attack` while a legitimate client GETs `legit_url` (one keep-alive connection,
/// a request every 10 ms); what that client saw.
pub fn during(server: &ServerProcess, legit_url: &str, attack: impl FnOnce()) -> Seen {
    let running = Arc::new(AtomicBool::new(true));
    let client = {
        let (running, url) = (running.clone(), legit_url.to_owned());
        std::thread::spawn(move || legitimate_client(&url, &running))
    };
    std::thread::sleep(Duration::from_millis(100));
    attack();
    running.store(false, Ordering::SeqCst);
    let (mut latencies, failures) = client.join().expect("the legitimate client");
    latencies.sort();
    let p99 = latencies
        .get((latencies.len() * 99 / 100).min(latencies.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default();
    Seen {
        peak_rss_mb: peak_rss_mb(server),
        requests: latencies.len() + failures,
        failures,
        p99,
    }
}

fn legitimate_client(url: &str, running: &AtomicBool) -> (Vec<Duration>, usize) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .local_address("127.0.0.1".parse::<std::net::IpAddr>().ok())
            .build()
            .expect("a client");
        let (mut latencies, mut failures) = (Vec::new(), 0);
        while running.load(Ordering::SeqCst) {
            let started = Instant::now();
            let ok = match client.get(url).send().await {
                Ok(answer) if answer.status().is_success() => answer.bytes().await.is_ok(),
                _ => false,
            };
            if ok {
                latencies.push(started.elapsed());
            } else {
                failures += 1;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (latencies, failures)
    })
}

/// A TCP connection to `server` from the attacker's address (std's `TcpStream` cannot
/// bind before connecting; tokio's socket can, and hands back a std stream).
pub fn attacker_connection(server: SocketAddr) -> std::io::Result<TcpStream> {
    connect_from_attacker(server, None)
}

/// [`attacker_connection`] with a receive buffer of a few KiB: a client that asks for a
/// large answer and reads none of it holds the server's stream at once.
pub fn starved_attacker_connection(server: SocketAddr) -> std::io::Result<TcpStream> {
    connect_from_attacker(server, Some(4096))
}

/// GETs of `paths` (`/mirror/nar/…`), one connection each from the attacker's address with
/// a receive buffer of a few KiB, none of them ever read: held open while the result lives.
pub fn unread_requests(
    server: SocketAddr,
    paths: impl IntoIterator<Item = String>,
) -> Vec<TcpStream> {
    use std::io::Write as _;
    paths
        .into_iter()
        .filter_map(|path| {
            let mut connection = starved_attacker_connection(server).ok()?;
            let request = format!("GET {path} HTTP/1.1\r\nHost: oranc\r\n\r\n");
            connection.write_all(request.as_bytes()).ok()?;
            Some(connection)
        })
        .collect()
}

/// GETs of `paths` from the attacker's address, each connection closed as soon as the
/// status line has come: the bytes of requests sent.
pub fn requests_left_after_the_status_line(
    server: SocketAddr,
    paths: impl IntoIterator<Item = String>,
) -> usize {
    use std::io::{Read as _, Write as _};
    let mut sent = 0;
    for path in paths {
        let Ok(mut connection) = attacker_connection(server) else {
            continue;
        };
        let request = format!("GET {path} HTTP/1.1\r\nHost: oranc\r\n\r\n");
        if connection.write_all(request.as_bytes()).is_err() {
            continue;
        }
        sent += request.len();
        let _ = connection.set_read_timeout(Some(Duration::from_secs(10)));
        let mut status = [0u8; 12];
        let _ = connection.read_exact(&mut status);
    }
    sent
}

fn connect_from_attacker(
    server: SocketAddr,
    receive_buffer: Option<u32>,
) -> std::io::Result<TcpStream> {
    connect_from(ATTACKER, server, receive_buffer)
}

/// A TCP connection to `server` from `source` (a loopback address), with a receive buffer
/// of `receive_buffer` bytes if given.
fn connect_from(
    source: &str,
    server: SocketAddr,
    receive_buffer: Option<u32>,
) -> std::io::Result<TcpStream> {
    let source: SocketAddr = format!("{source}:0")
        .parse()
        .map_err(std::io::Error::other)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        if let Some(size) = receive_buffer {
            socket.set_recv_buffer_size(size)?;
        }
        socket.bind(source)?;
        let stream = tokio::time::timeout(Duration::from_secs(5), socket.connect(server))
            .await
            .map_err(std::io::Error::other)??;
        stream.into_std()
    })?;
    stream.set_nonblocking(false)?;
    Ok(stream)
}

/// Many addresses crowding a server: from each of `addresses` (127.0.0.3 onwards),
/// `per_address` kept-alive connections, each sending `GET /healthz` every `every` and
/// reconnecting when the server closed it, until `running` is cleared. Every address stays within its own
/// connection cap; together they hold more than the server allows. Returns the
/// connections made, in all.
pub fn crowding_addresses(
    server: SocketAddr,
    addresses: u8,
    per_address: usize,
    every: Duration,
    running: &AtomicBool,
) -> usize {
    use std::sync::atomic::AtomicUsize;
    // Every connection on its own task, so that one waiting unanswered (in the listen
    // queue, or connecting) delays no other.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let made = Arc::new(AtomicUsize::new(0));
    runtime.block_on(async {
        let stop = Arc::new(tokio::sync::Notify::new());
        let mut tasks = Vec::new();
        for n in 0..addresses {
            let source: SocketAddr = SocketAddr::from(([127, 0, 0, 3 + n], 0));
            for _ in 0..per_address {
                let (made, stop) = (made.clone(), stop.clone());
                tasks.push(tokio::spawn(async move {
                    tokio::select! {
                        () = keep_one_connection(source, server, every, &made) => {}
                        () = stop.notified() => {}
                    }
                }));
            }
        }
        while running.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for task in tasks {
            task.abort();
        }
    });
    made.load(Ordering::SeqCst)
}

/// One connection of [`crowding_addresses`]: sends `GET /healthz` every `every`, and
/// connects again when the server closed it (not when it is merely unanswered: one waiting
/// in the listen queue holds its place there, as an attacker's would).
async fn keep_one_connection(
    source: SocketAddr,
    server: SocketAddr,
    every: Duration,
    made: &std::sync::atomic::AtomicUsize,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let healthz = b"GET /healthz HTTP/1.1\r\nHost: oranc\r\n\r\n";
    loop {
        let connected = async {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(source)?;
            socket.connect(server).await
        };
        let Ok(Ok(mut stream)) = tokio::time::timeout(Duration::from_secs(5), connected).await
        else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        made.fetch_add(1, Ordering::SeqCst);
        let mut answer = [0u8; 4096];
        loop {
            if stream.write_all(healthz).await.is_err() {
                break;
            }
            match tokio::time::timeout(every, stream.read(&mut answer)).await {
                Ok(Ok(0) | Err(_)) => break,
                Ok(Ok(_)) => tokio::time::sleep(every).await,
                Err(_) => {}
            }
        }
    }
}

/// `count` GETs of `url`, each on a new connection from 127.0.0.1 (a client arriving),
/// `pause` apart, each given `timeout`: how long each took, `None` where it failed.
pub fn new_clients(
    url: &str,
    count: usize,
    pause: Duration,
    timeout: Duration,
) -> Vec<Option<Duration>> {
    let max_time = format!("{:.1}", timeout.as_secs_f64());
    (0..count)
        .map(|_| {
            std::thread::sleep(pause);
            let started = Instant::now();
            let (status, _, _) =
                crate::curl(&["--interface", "127.0.0.1", "--max-time", &max_time, url]);
            (status == "200").then(|| started.elapsed())
        })
        .collect()
}

/// Sends `requests` (raw HTTP/1.1, pipelined in batches on one connection from the
/// attacker) and reads until as many answers came back; returns how many did.
pub fn pipelined(server: SocketAddr, requests: impl Iterator<Item = String>) -> usize {
    let Ok(mut stream) = attacker_connection(server) else {
        return 0;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut answered = 0;
    let requests: Vec<String> = requests.collect();
    for batch in requests.chunks(200) {
        if stream.write_all(batch.concat().as_bytes()).is_err() {
            break;
        }
        let mut seen = 0;
        let mut buffer = vec![0u8; 64 << 10];
        let mut tail = Vec::new();
        while seen < batch.len() {
            match stream.read(&mut buffer) {
                Ok(0) | Err(_) => return answered + seen,
                Ok(n) => {
                    tail.extend_from_slice(&buffer[..n]);
                    let text = String::from_utf8_lossy(&tail);
                    let found = text.matches("HTTP/1.1 ").count();
                    seen = found;
                }
            }
        }
        answered += seen;
    }
    answered
}

/// `curl` from the attacker's address; the status code.
pub fn attacker_curl(args: &[&str]) -> String {
    let mut all = vec!["--interface", ATTACKER];
    all.extend_from_slice(args);
    crate::curl(&all).0
}

/// Holds `count` connections from the attacker, each with half a request sent; returns
/// them (still open as far as the attacker knows).
pub fn half_sent_connections(server: SocketAddr, count: usize) -> Vec<TcpStream> {
    (0..count)
        .filter_map(|_| {
            let mut stream = attacker_connection(server).ok()?;
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                .ok()?;
            Some(stream)
        })
        .collect()
}

/// How many of `connections` the server has closed (a read sees the end, or a reset).
pub fn closed_by_server(connections: &mut [TcpStream]) -> usize {
    let mut closed = 0;
    for stream in connections.iter_mut() {
        let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
        let mut byte = [0u8; 1];
        let ended = match stream.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        };
        closed += usize::from(ended);
    }
    closed
}

/// The argon2id hash of `password` at the argon2 crate's defaults (19 MiB, t=2), as a
/// writers file would hold it.
pub fn argon2_default_hash(password: &str) -> String {
    use argon2::password_hash::{PasswordHasher as _, SaltString};
    let salt = SaltString::encode_b64(b"abuse test salt!").expect("a salt");
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("hashing")
        .to_string()
}

/// One request of an attack: method, URL, Basic credentials.
pub type AttackRequest = (reqwest::Method, String, Option<(String, String)>);

/// Sends `requests` from the attacker's address, `concurrency` at a time; each answer's
/// status (0 where none came).
pub fn attacker_requests(requests: Vec<AttackRequest>, concurrency: usize) -> Vec<u16> {
    use futures::StreamExt as _;
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .local_address(ATTACKER.parse::<std::net::IpAddr>().ok())
            .build()
            .expect("a client");
        futures::stream::iter(requests)
            .map(|(method, url, credentials)| {
                let mut request = client.request(method, url);
                if let Some((user, password)) = credentials {
                    request = request.basic_auth(user, Some(password));
                }
                async move {
                    match request.send().await {
                        Ok(answer) => {
                            let status = answer.status().as_u16();
                            let _ = answer.bytes().await;
                            status
                        }
                        Err(_) => 0,
                    }
                }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await
    })
}
