//! Files Nix reads beside narinfos and NARs, from a mirror's upstreams: NAR listings
//! (`<hash>.ls`), build logs (`log/<drv>`), debuginfo entries and realisations. Unlike a
//! narinfo, each is stored as soon as it is fetched: no lookup asks for them in bulk, and
//! none names a NAR that must be stored first. The rules:
//! - the first upstream that has the file answers; concurrent requests for it wait for one
//!   fetch, and absences are remembered like a narinfo's;
//! - a realisation is kept only signed by one of `upstream_public_keys` (Nix signs them
//!   like narinfos); a debuginfo entry or listing only well-formed. Logs are not signed in
//!   Nix's protocol: a mirror trusts its upstreams for them as Nix trusts a substituter;
//! - a file is read whole, bounded (see [`Limits`]), with upstream's `Content-Encoding`
//!   undone, and at most [`CONCURRENT_FETCHES`] are held at once.

use bytes::Bytes;
use oranc_core::cache_key::KeyKind;
use oranc_core::{CacheKey, RegistryCache};

use super::{nar, Mirror};
use crate::error::ServerError;
use crate::routes::small_file::check_small_file;

/// Files read from upstream at once per mirror: each is held whole, up to its limit.
pub(super) const CONCURRENT_FETCHES: usize = 4;
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
        let _permit = self
            .beside_fetches
            .acquire()
            .await
            .map_err(|_| ServerError::Internal("the mirror's fetch limit closed".into()))?;
        let answer = self.fetch_beside(cache, key).await;
        drop(lead);
        answer
    }

    async fn fetch_beside(
        &self,
        cache: &RegistryCache,
        key: &CacheKey,
    ) -> Result<BesideAnswer, ServerError> {
        let kind = key.kind().label();
        let limit = match key.kind() {
            KeyKind::Listing | KeyKind::Log => MAX_LISTING_OR_LOG,
            _ => self.limits.small_file,
        };
        let mut failure = None;
        for upstream in &self.upstreams {
            let bytes = match upstream.file_beside(key, limit).await {
                Ok(Some(bytes)) => bytes,
                Ok(None) => continue,
                Err(error) => {
                    self.count(kind, "error");
                    tracing::warn!(cache = %self.name, upstream = upstream.url(), %error, "upstream fetch failed");
                    failure = Some(error);
                    continue;
                }
            };
            if let Err(reason) = self.may_keep(key, &bytes) {
                self.count(kind, "refused");
                tracing::warn!(cache = %self.name, upstream = upstream.url(), %key, %reason, "upstream file refused");
                continue;
            }
            self.count(kind, "hit");
            if let Err(error) = cache
                .put_bytes(key, key.content_type(), bytes.clone())
                .await
            {
                // Served all the same: the client asked for upstream's file, and it passed.
                tracing::warn!(cache = %self.name, %key, %error, "storing a mirrored file failed");
            } else {
                self.metrics
                    .mirror_stored_bytes
                    .with_label_values(&[&self.name])
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

    /// Whether upstream's `bytes` for `key` may be served and kept.
    fn may_keep(&self, key: &CacheKey, bytes: &[u8]) -> Result<(), String> {
        match key.kind() {
            KeyKind::Realisation => {
                check_small_file(key, bytes)?;
                if !oranc_core::realisation::is_signed_by_any(bytes, &self.keys) {
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
}
