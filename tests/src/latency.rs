//! A loopback TCP proxy that makes a local registry behave like a remote one: every chunk
//! (and the connection itself) is held for half the round-trip time in each direction
//! before it is forwarded. The kernel here has no `netem`; this is the same effect at the
//! application level, bandwidth untouched.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Runs until dropped, on its own thread and runtime (benchmarks and tests are sync).
#[derive(Debug)]
pub struct LatencyProxy {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LatencyProxy {
    /// Forwards `127.0.0.1:<port>` to `target` with `rtt` added to every round trip.
    pub fn start(target: SocketAddr, rtt: Duration) -> Self {
        let one_way = rtt / 2;
        let std_listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("binding the latency proxy");
        std_listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let addr = std_listener.local_addr().expect("a bound address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime for the latency proxy");
            runtime.block_on(async move {
                let listener = TcpListener::from_std(std_listener).expect("a tokio listener");
                let accept = async {
                    loop {
                        let Ok((client, _)) = listener.accept().await else {
                            continue;
                        };
                        tokio::spawn(relay(client, target, one_way));
                    }
                };
                tokio::select! {
                    () = accept => {}
                    _ = stopped => {}
                }
            });
        });
        Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `127.0.0.1:PORT` of the proxy, as `--registry` takes it.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for LatencyProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn relay(client: TcpStream, target: SocketAddr, one_way: Duration) {
    // The handshake costs a round trip, as it does over a real network.
    tokio::time::sleep(one_way * 2).await;
    let Ok(upstream) = TcpStream::connect(target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    tokio::join!(
        delayed_copy(client_read, upstream_write, one_way),
        delayed_copy(upstream_read, client_write, one_way),
    );
}

/// Copies `from` to `to`, each chunk sent `delay` after it arrived, in order.
async fn delayed_copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    // Bounded, so a slow receiver slows the sender as TCP would (at most 16 MiB held).
    let (sender, mut receiver) = mpsc::channel::<(Instant, Vec<u8>)>(256);
    let writer = async move {
        while let Some((due, chunk)) = receiver.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    let reader = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sender
                        .send((Instant::now() + delay, buffer[..n].to_vec()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    };
    tokio::join!(reader, writer);
}

/// The round-trip times a benchmark measures, in ms: `BENCH_RTT_MS` (default `0,20`).
pub fn bench_rtts() -> Vec<u64> {
    std::env::var("BENCH_RTT_MS")
        .unwrap_or_else(|_| "0,20".into())
        .split(',')
        .filter_map(|ms| ms.trim().parse().ok())
        .collect()
}

/// A fresh registry seen `rtt` ms away (through a [`LatencyProxy`] unless it is 0).
#[derive(Debug)]
pub struct DistantRegistry {
    pub registry: crate::registry::RegistryProcess,
    proxy: Option<LatencyProxy>,
}

impl DistantRegistry {
    pub fn start(rtt: u64) -> Self {
        let registry = crate::registry::RegistryProcess::start();
        let proxy =
            (rtt > 0).then(|| LatencyProxy::start(registry.addr(), Duration::from_millis(rtt)));
        Self { registry, proxy }
    }

    /// `HOST:PORT` to give oranc's `--registry`.
    pub fn host(&self) -> String {
        self.proxy
            .as_ref()
            .map_or_else(|| self.registry.host(), LatencyProxy::host)
    }
}
