//! Files Nix reads beside narinfos and NARs, from a mirror's upstreams: NAR listings
//! (`<hash>.ls`), build logs (`log/<drv>`), debuginfo entries, realisations and build-trace
//! entries. Unlike a narinfo, each is stored as soon as it is fetched: no lookup asks for
//! them in bulk, and none names a NAR that must be stored first. The rules:
//! - the first upstream that has the file answers; concurrent requests for it wait for one
//!   fetch, and absences are remembered like a narinfo's;
//! - a realisation or build-trace entry is kept only signed by one of
//!   `upstream_public_keys` (Nix signs them like narinfos); a debuginfo entry or listing
//!   only well-formed. Logs are not signed in Nix's protocol: a mirror trusts its upstreams
//!   for them as Nix trusts a substituter;
//! - a file is read whole, bounded (see [`Limits`]), with upstream's `Content-Encoding`
//!   undone; at most [`CONCURRENT_FETCHES`] are held at once, each fetched within
//!   [`FETCH_DEADLINE`], in a task that finishes for the requests waiting on it even when
//!   its own client leaves. A request waits for a slot only while its client does, and at
//!   most [`MAX_WAITING`] wait at once (then 503).

use std::time::Duration;

use bytes::Bytes;
use oranc_backends::BinaryCache;
use oranc_core::cache_key::KeyKind;
use oranc_core::{CacheKey, PublicKey, RegistryCache};

use super::{nar, Mirror};
use crate::error::ServerError;
use crate::metrics::Metrics;
use crate::routes::small_file::check_small_file;

/// Files read from upstream at once per mirror: each is held whole, up to its limit.
pub(super) const CONCURRENT_FETCHES: usize = 4;
/// How long one file may take to fetch: well below the server's response timeout, so a
/// trickling upstream cannot keep the slots.
const FETCH_DEADLINE: Duration = Duration::from_secs(30);
/// Requests waiting for a fetch slot at once per mirror; past that, 503.
const MAX_WAITING: usize = 32;
/// How long a request waits for a slot: longer than one fetch may take, so a request that
/// finds them all taken gets the first one to free up.
const SLOT_WAIT: Duration = Duration::from_secs(45);
/// The largest listing or build log a mirror keeps, decoded (a NAR listing of a large
/// package or a long build's log runs to a few MiB).
const MAX_LISTING_OR_LOG: usize = 16 << 20;

/// How large a file beside a NAR may be.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Debuginfo entries and realisations: what the server reads whole from the registry
    /// (`max_small_body_bytes`), so that what is stored can be served.
    pub small_file: usize,
}

/// What a mirror says about a file beside NARs that the registry lacks.
#[derive(Debug)]
pub enum BesideAnswer {
    /// Fetched from upstream (and stored, unless storing failed: it is served anyway).
    Found(Bytes),
    /// Another request fetched it meanwhile: read it from the registry.
    Stored,
    /// No upstream has it (or none has one that may be kept).
    Absent,
}

impl Mirror {
    /// The listing, log, debuginfo entry or realisation `key`, which the registry lacks.
    pub async fn file_beside(
        &self,
        cache: &RegistryCache,
        key: &CacheKey,
    ) -> Result<BesideAnswer, ServerError> {
        if self.absent.contains_key(key.as_str()) {
            return Ok(BesideAnswer::Absent);
        }
        let lead = match self.fetching.join_or_lead(key.as_str()) {
            nar::Role::Follower(done) => {
                self.metrics
                    .mirror_coalesced
                    .with_label_values(&[&self.name])
                    .inc();
                nar::wait(done).await;
                return Ok(if self.absent.contains_key(key.as_str()) {
                    BesideAnswer::Absent
                } else {
                    BesideAnswer::Stored
                });
            }
            nar::Role::Leader(lead) => lead,
        };
        let fetch = Fetch {
            cache_name: self.name.clone(),
            upstreams: self.upstreams.clone(),
            keys: self.keys.clone(),
            limit: match key.kind() {
                KeyKind::Listing | KeyKind::Log => MAX_LISTING_OR_LOG,
                _ => self.limits.small_file,
            },
            metrics: self.metrics.clone(),
            absent: self.absent.clone(),
            cache: cache.clone(),
            key: key.clone(),
        };
        // The wait for a slot belongs to this request (it ends if the client leaves), and
        // at most MAX_WAITING wait at once: made-up names cannot queue up work for later.
        let slot = match self.beside_fetches.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                let Some(_waiting) = Waiting::join(&self.beside_waiting) else {
                    return Err(ServerError::MirrorBusy(format!(
                        "the mirror {} has {MAX_WAITING} requests waiting to fetch from upstream",
                        self.name
                    )));
                };
                tokio::time::timeout(SLOT_WAIT, self.beside_fetches.clone().acquire_owned())
                    .await
                    .map_err(|_| timed_out(key, "no fetch slot freed up", SLOT_WAIT))?
                    .map_err(|_| ServerError::Internal("the mirror's fetch slots closed".into()))?
            }
        };
        // The fetch itself is a task of its own: requests waiting on this one get the file
        // even if this client leaves; a trickling upstream holds the slot for at most
        // FETCH_DEADLINE.
        let fetched = tokio::spawn(async move {
            let key = fetch.key.clone();
            let answer = tokio::time::timeout(FETCH_DEADLINE, fetch.run())
                .await
                .map_err(|_| timed_out(&key, "upstream did not deliver it", FETCH_DEADLINE))
                .and_then(|answer| answer);
            drop(slot);
            drop(lead);
            answer
        });
        fetched
            .await
            .map_err(|error| ServerError::Internal(format!("fetching {key}: {error}")))?
    }
}

/// One request among those waiting for a fetch slot; counted off when dropped.
struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Waiting<'a> {
    fn join(count: &'a std::sync::atomic::AtomicUsize) -> Option<Self> {
        use std::sync::atomic::Ordering;
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |waiting| {
                (waiting < MAX_WAITING).then_some(waiting + 1)
            })
            .ok()
            .map(|_| Self(count))
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

fn timed_out(key: &CacheKey, reason: &str, after: Duration) -> ServerError {
    ServerError::Core(oranc_core::Error::TimedOut {
        what: format!("{key} from the mirror's upstreams"),
        reason: Some(format!("{reason} within {} s", after.as_secs())),
    })
}

/// One file beside NARs fetched from upstream, owned by the task that fetches it.
struct Fetch {
    cache_name: String,
    upstreams: Vec<BinaryCache>,
    keys: Vec<PublicKey>,
    limit: usize,
    metrics: Metrics,
    absent: moka::sync::Cache<String, ()>,
    cache: RegistryCache,
    key: CacheKey,
}

impl Fetch {
    async fn run(self) -> Result<BesideAnswer, ServerError> {
        let key = &self.key;
        let kind = key.kind().label();
        let mut failure = None;
        for upstream in &self.upstreams {
            let bytes = match upstream.file_beside(key, self.limit).await {
                Ok(Some(bytes)) => bytes,
                Ok(None) => continue,
                Err(error) => {
                    self.count(kind, "error");
                    tracing::warn!(cache = %self.cache_name, upstream = upstream.url(), %error, "upstream fetch failed");
                    failure = Some(error);
                    continue;
                }
            };
            if let Err(reason) = self.may_keep(&bytes) {
                self.count(kind, "refused");
                tracing::warn!(cache = %self.cache_name, upstream = upstream.url(), %key, %reason, "upstream file refused");
                continue;
            }
            self.count(kind, "hit");
            if let Err(error) = self
                .cache
                .put_bytes(key, key.content_type(), bytes.clone())
                .await
            {
                // Served all the same: the client asked for upstream's file, and it passed.
                tracing::warn!(cache = %self.cache_name, %key, %error, "storing a mirrored file failed");
            } else {
                self.metrics
                    .mirror_stored_bytes
                    .with_label_values(&[&self.cache_name])
                    .inc_by(bytes.len() as u64);
            }
            return Ok(BesideAnswer::Found(bytes));
        }
        if let Some(error) = failure {
            return Err(ServerError::UpstreamFailed(error.to_string()));
        }
        self.count(kind, "miss");
        self.absent.insert(key.as_str().to_owned(), ());
        Ok(BesideAnswer::Absent)
    }

    /// Whether upstream's `bytes` for the key may be served and kept.
    fn may_keep(&self, bytes: &[u8]) -> Result<(), String> {
        let key = &self.key;
        match key.kind() {
            KeyKind::Realisation | KeyKind::BuildTrace => {
                check_small_file(key, bytes)?;
                if !oranc_core::realisation::is_signed_by_any(key, bytes, &self.keys) {
                    return Err("not signed by upstream_public_keys".into());
                }
                Ok(())
            }
            KeyKind::DebugInfo => check_small_file(key, bytes).map(|_| ()),
            KeyKind::Listing => match serde_json::from_slice::<serde_json::Value>(bytes) {
                Ok(listing) if listing.get("root").is_some() => Ok(()),
                _ => Err("not a NAR listing (a JSON object with a root)".into()),
            },
            _ => Ok(()),
        }
    }

    fn count(&self, kind: &str, outcome: &str) {
        self.metrics
            .mirror_lookups
            .with_label_values(&[&self.cache_name, kind, outcome])
            .inc();
    }
}
