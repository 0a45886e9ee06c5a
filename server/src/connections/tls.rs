//! The server's TLS: rustls with ALPN offering HTTP/2 and HTTP/1.1 (Nix speaks HTTP/2 only
//! over TLS; Lix relies on it to multiplex its queries), and a certificate that is read
//! again when its files change or on SIGHUP, without a restart. A handshake in progress and
//! every open connection keep the certificate they started with; only new handshakes see the
//! new one. A certificate that fails to load (a renewal caught half-written) is reported and
//! the old one kept.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::ServerError;

/// How often the certificate's files are checked for a change.
const POLL_INTERVAL: Duration = Duration::from_secs(5);

/// ALPN names, HTTP/2 first: what the server would rather speak.
pub const ALPN_H2: &[u8] = b"h2";
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// The certificate in use, replaced whole when its files change.
#[derive(Debug)]
pub struct ReloadingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' modification times when last loaded.
    loaded_at: RwLock<(Option<SystemTime>, Option<SystemTime>)>,
}

impl ReloadingCert {
    /// Loads the certificate; an error names the file and what is wrong with it.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Arc<Self>, ServerError> {
        let stamps = (modified(cert_file), modified(key_file));
        let key = certified_key(cert_file, key_file)?;
        Ok(Arc::new(Self {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            current: RwLock::new(Arc::new(key)),
            loaded_at: RwLock::new(stamps),
        }))
    }

    /// The rustls configuration serving this certificate, offering h2 and http/1.1.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, ServerError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ServerError::Tls(format!("TLS versions: {e}")))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
        Ok(Arc::new(config))
    }

    /// Reads the files again; on failure the certificate in use stays, and the error says
    /// why. Either way the files are not read again until they change once more (a
    /// renewal written in two steps is read when its second step lands).
    pub fn reload(&self) -> Result<(), ServerError> {
        let stamps = (modified(&self.cert_file), modified(&self.key_file));
        *self.loaded_at.write().unwrap_or_else(|p| p.into_inner()) = stamps;
        let key = certified_key(&self.cert_file, &self.key_file)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
        Ok(())
    }

    /// Whether either file changed since it was loaded.
    fn changed(&self) -> bool {
        let now = (modified(&self.cert_file), modified(&self.key_file));
        *self.loaded_at.read().unwrap_or_else(|p| p.into_inner()) != now
    }

    /// Reloads on SIGHUP and whenever the files change, for as long as the server runs.
    pub fn watch(self: Arc<Self>) {
        tokio::spawn(async move {
            #[cfg(unix)]
            let mut hangup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let mut poll = tokio::time::interval(POLL_INTERVAL);
            poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                #[cfg(unix)]
                let signalled = async {
                    match hangup.as_mut() {
                        Some(signal) => signal.recv().await,
                        None => std::future::pending().await,
                    }
                };
                #[cfg(not(unix))]
                let signalled = std::future::pending::<Option<()>>();
                let why = tokio::select! {
                    _ = signalled => "SIGHUP",
                    _ = poll.tick() => {
                        if !self.changed() {
                            continue;
                        }
                        "its files changed"
                    }
                };
                match self.reload() {
                    Ok(()) => tracing::info!(
                        cert_file = %self.cert_file.display(),
                        why,
                        "TLS certificate reloaded; new connections use it"
                    ),
                    Err(error) => tracing::error!(
                        %error,
                        why,
                        "TLS certificate not reloaded; the one in use stays"
                    ),
                }
            }
        });
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

fn modified(file: &Path) -> Option<SystemTime> {
    std::fs::metadata(file).and_then(|m| m.modified()).ok()
}

/// The chain in `cert_file` with the key in `key_file`, checked to belong together.
fn certified_key(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, ServerError> {
    let bad =
        |file: &Path, reason: String| ServerError::Tls(format!("{}: {reason}", file.display()));
    let chain = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| bad(cert_file, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(cert_file, e.to_string()))?;
    if chain.is_empty() {
        return Err(bad(
            cert_file,
            "no PEM certificate (BEGIN CERTIFICATE) in it".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => bad(
            key_file,
            "no PEM private key (BEGIN PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY) in it"
                .into(),
        ),
        other => bad(key_file, other.to_string()),
    })?;
    let provider = rustls::crypto::ring::default_provider();
    let key = CertifiedKey::from_der(chain, key, &provider).map_err(|e| {
        bad(
            key_file,
            format!("does not go with {}: {e}", cert_file.display()),
        )
    })?;
    Ok(key)
}
