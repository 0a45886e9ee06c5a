//! `oranc server`: the config file (or the embedded default), flags on top, then serve
//! until SIGINT/SIGTERM, letting in-flight transfers finish.

use anyhow::Context as _;
use oranc_config::{CacheConfig, Config, RegistryConfig};
use oranc_server::AppState;

use crate::cli::ServerArgs;
use crate::commands::plural;
use crate::registry_args::{local_registry_dir, DEFAULT_LOCAL_REPOSITORY};

/// Name of the embedded local cache served when no config file is given.
pub const LOCAL_CACHE: &str = "local";

fn effective_config(args: &ServerArgs) -> anyhow::Result<Config> {
    let mut config = match &args.config {
        Some(path) => oranc_config::load_file(path)?,
        None => {
            let mut config = Config::default();
            config.caches.insert(
                LOCAL_CACHE.to_owned(),
                CacheConfig {
                    registry: local_registry_dir().display().to_string(),
                    repository: DEFAULT_LOCAL_REPOSITORY.to_owned(),
                    allow_write: false,
                    ..CacheConfig::default()
                },
            );
            config
        }
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    match (&args.tls_cert, &args.tls_key) {
        (Some(cert_file), Some(key_file)) => {
            config.tls = Some(oranc_config::TlsConfig {
                cert_file: cert_file.clone(),
                key_file: key_file.clone(),
            });
        }
        (None, None) => {}
        _ => anyhow::bail!("--tls-cert and --tls-key go together: give both, or neither"),
    }
    if let Some(parts) = args.repository_parts {
        config.repository_parts = parts;
    }
    if let Some(retries) = args.max_retry {
        config.max_retry = retries;
    }
    config.allow_any_registry |= args.allow_any_registry;
    config.no_ssl |= args.no_ssl;
    for host in &args.registries {
        let entry = config
            .registries
            .entry(host.clone())
            .or_insert_with(RegistryConfig::default);
        entry.plain_http |= args.no_ssl;
    }
    config.upstream.urls.extend(args.upstreams.iter().cloned());
    if let Some(ignore) = &args.ignore_upstream {
        config.upstream.ignore = ignore.clone();
    }
    if let Some(encoding) = args.tag_encoding {
        config.tag_encoding = encoding;
    }
    if let Some(fallbacks) = &args.fallback_encodings {
        config.fallback_encodings = fallbacks.clone();
    }
    // Flags can make a config invalid too; check the result as a whole.
    oranc_config::validate(&config, "the configuration with command-line flags")?;
    Ok(config)
}

pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let config = effective_config(&args)?;
    let listen = config.listen;
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    if args.config.is_none() {
        eprintln!(
            "no --config: serving the embedded local registry as {scheme}://{listen}/{LOCAL_CACHE} (from {})",
            local_registry_dir().display()
        );
    }
    for warning in oranc_config::warnings(&config) {
        eprintln!("warning: {warning}");
    }
    for position in oranc_config::write_positions(&config) {
        eprintln!("writes: {position}");
    }
    let tls = oranc_server::tls_config(&config)?;
    let state = AppState::new(config)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let address = listener.local_addr()?;
    eprintln!("oranc server listening on {scheme}://{address}");
    for name in state.config().caches.keys() {
        eprintln!("cache /{name}: substituter {scheme}://{address}/{name} (the registry's answer to its credentials follows in the log)");
    }
    oranc_server::serve(listener, state, tls, shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        () = terminate => {}
    }
    eprintln!("shutting down: finishing requests in flight");
}

pub fn check(file: &std::path::Path, probe: bool) -> anyhow::Result<()> {
    let config = oranc_config::load_file(file)?;
    let problems = AppState::problems(&config);
    for problem in &problems {
        eprintln!("error: {problem}");
    }
    if !problems.is_empty() {
        anyhow::bail!(
            "{}: {} the server would refuse to start with",
            file.display(),
            plural(problems.len(), "problem", "problems")
        );
    }
    eprintln!(
        "{}: ok ({}, {}, listening on {})",
        file.display(),
        plural(config.registries.len(), "registry", "registries"),
        plural(config.caches.len(), "cache", "caches"),
        config.listen
    );
    for warning in oranc_config::warnings(&config) {
        eprintln!("warning: {warning}");
    }
    for position in oranc_config::write_positions(&config) {
        eprintln!("writes: {position}");
    }
    if probe {
        let state = AppState::new(config)?;
        let refused = super::runtime()?.block_on(async {
            let mut refused = 0usize;
            for (cache, outcome) in state.probe_caches().await {
                match outcome {
                    Ok(()) => eprintln!("probe: /{cache}: the registry answers its reads"),
                    Err(error) => {
                        refused += 1;
                        eprintln!("error: probe: /{cache}: the registry refused its reads with the cache's own credentials: {error}");
                    }
                }
            }
            refused
        });
        if refused > 0 {
            anyhow::bail!(
                "{}: {} cannot be read with {} own credentials",
                file.display(),
                plural(refused, "cache", "caches"),
                if refused == 1 { "its" } else { "their" }
            );
        }
    }
    Ok(())
}

pub const EXAMPLE: &str = include_str!("../../../oranc.example.toml");
