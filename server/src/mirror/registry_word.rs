//! The registry's word on a NAR whose narinfo a mirror just served: Nix asks for the NAR
//! next, and a cold NAR then waits for upstream alone instead of for the slower of upstream
//! and the registry. This matters most where the registry is farther away than upstream
//! (ghcr.io across an ocean, a CDN next door), and it costs the registry no request.
//!
//! The word is the narinfo's own absence from the registry (why it was served from
//! upstream): a narinfo is stored only after its NAR, so the NAR is most likely absent too.
//! An earlier version probed the NAR's tag in the background instead, and a NAR asked at
//! once (as Nix and curl do) waited for the probe: a cold first byte of 1.5 ms instead of
//! 0.5 ms on loopback, and of 35 ms instead of 13 ms with the registry 40 ms away and
//! upstream 10 ms (README, bench-mirror).
//!
//! The word stands for [`WORD_STANDS`] only: past it the registry is asked again, so a NAR
//! that a replica or a push stored meanwhile is read from the registry. Within it, such a
//! NAR is fetched from upstream again (the same bytes, stored again); when upstream then
//! fails, the registry is asked before the client is answered, and when what upstream sends
//! fails its check, the word is dropped, so the client's retry reads the registry's copy
//! (docs/security.md).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use oranc_core::{CacheKey, CacheObject, RegistryCache};

use crate::error::ServerError;

/// How long the registry's word that it lacks a NAR stands.
const WORD_STANDS: Duration = Duration::from_secs(2);

/// The registry's word on one NAR: when it lacked the NAR's narinfo (`None`: no word, or
/// dropped), shared by the narinfo request that gives it and the NAR requests that read it.
#[derive(Debug, Clone, Default)]
pub(super) struct RegistryWord(Arc<Mutex<Option<Instant>>>);

/// What the registry has under a NAR's key.
#[derive(Debug)]
pub(super) enum InRegistry {
    Has(CacheObject),
    /// It lacks it: said ahead (`ahead`), or asked just now.
    Lacks {
        ahead: bool,
    },
}

impl RegistryWord {
    /// The registry lacked the NAR's narinfo at `at`.
    pub(super) fn narinfo_absent(&self, at: Instant) {
        *self.lacked_at() = Some(at);
    }

    /// Drops the word: the next request for the NAR asks the registry itself.
    pub(super) fn drop_word(&self) {
        *self.lacked_at() = None;
    }

    fn lacked_at(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What the registry has under `key`: its word when that still stands, else asked now.
    pub(super) async fn lookup(
        &self,
        cache: &RegistryCache,
        key: &CacheKey,
    ) -> Result<InRegistry, ServerError> {
        let lacked_at = *self.lacked_at();
        if lacked_at.is_some_and(|at| at.elapsed() < WORD_STANDS) {
            return Ok(InRegistry::Lacks { ahead: true });
        }
        Ok(match cache.get(key).await? {
            Some(object) => InRegistry::Has(object),
            None => InRegistry::Lacks { ahead: false },
        })
    }
}
