//! The registry's word on a NAR whose narinfo a mirror just served, asked in the background
//! while the client reads the narinfo: Nix asks for the NAR next, and a cold NAR then waits
//! for upstream alone instead of for the slower of upstream and the registry. This matters
//! most where the registry is farther away than upstream (ghcr.io across an ocean, a CDN
//! next door).
//!
//! The word stands for [`WORD_STANDS`] only: past it the registry is asked again, so a NAR
//! that a replica or a push stored meanwhile is read from the registry. Within it, such a
//! NAR is fetched from upstream again; when upstream then fails, the registry is asked
//! before the client is answered, and when what upstream sends fails its check, the word is
//! dropped, so the client's retry reads the registry's copy (docs/security.md).

use std::sync::Arc;
use std::time::{Duration, Instant};

use oranc_core::{CacheKey, CacheObject, RegistryCache};
use tokio::sync::{watch, OwnedSemaphorePermit};

use crate::error::ServerError;

/// How long the registry's word that it lacks a NAR stands.
const WORD_STANDS: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy)]
enum Said {
    /// The lookup is running.
    Asking,
    /// No such tag, at this instant.
    Lacks(Instant),
    /// Not asked, it has the NAR, the lookup failed, or the word was dropped: ask again.
    AskAgain,
}

/// The registry's word on one NAR, shared by the lookup that gives it and the requests
/// that read it.
#[derive(Debug, Clone)]
pub(super) struct RegistryWord(Arc<watch::Sender<Said>>);

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
    /// No word yet: the registry is asked when the NAR is.
    pub(super) fn none() -> Self {
        Self(Arc::new(watch::Sender::new(Said::AskAgain)))
    }

    /// Asks the registry for `key` in the background; `slot` bounds these lookups and is
    /// held until the answer.
    pub(super) fn ask_ahead(
        &self,
        cache: RegistryCache,
        key: CacheKey,
        slot: OwnedSemaphorePermit,
    ) {
        self.0.send_replace(Said::Asking);
        let word = self.0.clone();
        tokio::spawn(async move {
            // A probe, not a lookup: a remembered absence (the manifest cache's) would
            // outlive the word and hide a NAR a replica stores meanwhile.
            let said = match cache.contains(&key).await {
                Ok(false) => Said::Lacks(Instant::now()),
                Ok(true) | Err(_) => Said::AskAgain,
            };
            // Unless the word was dropped meanwhile (a failed copy): that stands.
            word.send_if_modified(|word| {
                let asking = matches!(word, Said::Asking);
                if asking {
                    *word = said;
                }
                asking
            });
            drop(slot);
        });
    }

    /// Drops the word: the next request for the NAR asks the registry itself.
    pub(super) fn drop_word(&self) {
        self.0.send_replace(Said::AskAgain);
    }

    /// What the registry has under `key`: its word when that still stands (waiting for a
    /// lookup still running), else asked now.
    pub(super) async fn lookup(
        &self,
        cache: &RegistryCache,
        key: &CacheKey,
    ) -> Result<InRegistry, ServerError> {
        let said = *self
            .0
            .subscribe()
            .wait_for(|said| !matches!(said, Said::Asking))
            .await
            .map_err(|_| ServerError::Internal("the registry's word was lost".into()))?;
        if matches!(said, Said::Lacks(at) if at.elapsed() < WORD_STANDS) {
            return Ok(InRegistry::Lacks { ahead: true });
        }
        Ok(match cache.get(key).await? {
            Some(object) => InRegistry::Has(object),
            None => InRegistry::Lacks { ahead: false },
        })
    }
}
