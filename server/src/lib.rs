//! The HTTP server Nix uses as a substituter (`substituters = http://HOST/{registry}/{repo}`
//! or `http://HOST/{cache}`) and as an upload target (`nix copy --to`): every binary-cache
//! file is read from or written to a registry through [`oranc_core::RegistryCache`],
//! streamed both ways.
//!
//! It talks only to registries its config allows, forwards a client's own credentials, and
//! uses a named cache's credentials for that cache alone.

mod cache_control;
mod client_addr;
mod client_auth;
mod client_limiter;
pub mod connections;
mod error;
#[cfg(test)]
mod forwarding_tests;
mod grants;
mod layers;
mod manifest_cache;
mod metered;
pub mod metrics;
pub mod metrics_endpoint;
mod mirror;
mod oidc;
mod password_gate;
mod refusal_log;
mod request_context;
mod resolve;
mod router;
mod routes;
mod state;
mod upstream;
mod write_locks;
mod writers;

use std::sync::Arc;

pub use error::ServerError;
pub use router::router;
pub use state::AppState;

/// Serves `state` on `listener` until `shutdown` completes; in-flight requests (NAR
/// streams included) may finish within `clients.shutdown_grace_secs`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Whether each registry checks credentials decides what forwarded ones may write;
    // asking now puts the answer in the start-up log (and a failure is asked again later).
    for grant in state.grants_to_probe() {
        tokio::spawn(async move {
            if let Err(error) = grant.allows_writes().await {
                tracing::warn!(%error, "cannot tell yet whether a registry checks credentials; asked again at the first write");
            }
        });
    }
    // Each named cache reads with its own credentials: a registry that refuses them is said
    // at start (and in /readyz), not only by every read failing.
    let probing = state.clone();
    tokio::spawn(async move {
        for (cache, outcome) in probing.probe_caches().await {
            match outcome {
                Ok(()) => tracing::info!(cache, "the registry answers this cache's reads"),
                Err(error) => tracing::warn!(
                    cache,
                    %error,
                    "the registry refused this cache's reads with its own credentials (username, password_file or password_env in its config); its reads fail until that is fixed"
                ),
            }
        }
    });
    let limits = connections::listener::ConnectionLimits::from_config(&state.config().clients);
    let metrics = state.metrics().clone();
    // The accept loop runs on a worker, not on the thread that called this (the runtime's
    // `block_on` thread): a connection it accepts then starts on that worker's own queue
    // instead of waking another thread (about 10 µs of each new connection's first byte on
    // loopback). Dropping this future still stops it.
    let accepting = tokio::spawn(connections::listener::serve(
        listener,
        router(state),
        limits,
        metrics,
        tls,
        shutdown,
    ));
    let _stops_with_this = AbortOnDrop(accepting.abort_handle());
    accepting.await.map_err(std::io::Error::other)?
}

/// The TLS configuration `[tls]` asks for (`None` without it), its certificate read and
/// checked now and read again whenever its files change or on SIGHUP. Call it inside the
/// runtime: the reloading runs there.
pub fn tls_config(
    config: &oranc_config::Config,
) -> Result<Option<Arc<rustls::ServerConfig>>, ServerError> {
    let Some(tls) = &config.tls else {
        return Ok(None);
    };
    let certificate = connections::tls::ReloadingCert::load(&tls.cert_file, &tls.key_file)?;
    let server_config = certificate.server_config()?;
    certificate.watch();
    Ok(Some(server_config))
}

/// Aborts a spawned task when dropped (a finished task is not affected).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
