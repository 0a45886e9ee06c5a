//! The pull-through mirror of a named cache with `upstreams`: what the registry lacks is
//! looked for upstream, and what clients fetch is kept in the registry, so later requests
//! (and later days, when upstream is slow or gone) are served from the registry alone.
//!
//! The rules (docs/security.md):
//! - a narinfo comes from upstream only signed by one of `upstream_public_keys`; it is
//!   served but not stored, so lookups (`nix path-info`, `nix copy --to`'s checks) never
//!   make the mirror download NARs;
//! - a served narinfo names its NAR `nar/<store path hash>-<upstream file name>`, so a NAR
//!   request alone (at a replica that did not serve the narinfo) finds it upstream again;
//! - a NAR streams from upstream to the client while it is written to the registry (see
//!   `nar.rs`), at upstream's pace: what the registry has not taken yet waits on disk
//!   (`spool.rs`); it is tagged only when its bytes are the file the narinfo describes, and
//!   the narinfo is stored only after that: never a narinfo without its NAR;
//! - for a short while after the registry lacked a narinfo, its NAR is taken to be absent
//!   too, so that when Nix asks for the NAR next a cold one waits for upstream alone
//!   (`registry_word.rs`);
//! - concurrent requests for a NAR being fetched share its one fetch: they are served from
//!   its spool as it grows (their last chunk once the NAR passed its check), or once it is
//!   whole; upstream absences are remembered for the negative TTL;
//! - upstream failures are 502s for that file, and nothing partial is stored;
//! - listings, build logs, debuginfo entries, realisations and build traces follow the same
//!   rules, but are stored as soon as they are fetched (`beside.rs`).

mod beside;
mod nar;
mod other_upstreams;
mod registry_word;
mod shares;
mod spool;

pub use beside::{BesideAnswer, Limits};
pub use spool::SpoolBudget;

use std::sync::Arc;
use std::time::Duration;

use axum::response::Response;
use bytes::Bytes;
use futures::future::Either;
use oranc_backends::BinaryCache;
pub use oranc_backends::BinaryCacheTimeouts;
use oranc_core::cache_key::KeyKind;
use oranc_core::{CacheKey, CacheObject, NarInfo, PublicKey, RegistryCache, SecretKey, StoreDir};

use crate::client_addr::ClientAddr;
use crate::client_limiter::ClientLimiter;
use crate::error::ServerError;
use crate::metrics::Metrics;
use crate::refusal_log::Loggable;
use registry_word::{InRegistry, RegistryWord};

/// Narinfos served from upstream whose NAR may be asked for next, at most this many.
const MAX_PENDING: u64 = 100_000;
/// How long a served narinfo waits for its NAR to be asked for.
const PENDING_TTL: Duration = Duration::from_secs(3600);
/// NARs copied into the registry at once per mirror: each holds an upstream connection, a
/// registry upload and a thread checking its hash until it ends, client or not.
const CONCURRENT_COPIES: usize = 16;
/// NARs streamed to their clients alone at once per mirror (past the copies): each holds a
/// thread checking its hash for as long as its client reads, so together with the copies
/// they stay far below tokio's 512 blocking threads.
const CONCURRENT_PASS_THROUGHS: usize = 64;
/// Copies one client address may have started and not finished fetching: the rest of the
/// 16 stay for other clients.
const COPIES_PER_ADDRESS: usize = 4;
/// NARs streamed alone to one client address at once.
const PASS_THROUGHS_PER_ADDRESS: usize = 16;
/// Absences remembered at most.
const MAX_ABSENT: u64 = 100_000;

/// One named cache's mirror.
#[derive(Debug)]
pub struct Mirror {
    /// The named cache's name, for metric labels and messages.
    name: String,
    upstreams: Vec<BinaryCache>,
    keys: Vec<PublicKey>,
    /// Adds the server's own signature to what it stores (`signing_key_file`).
    signing_key: Option<SecretKey>,
    store_dir: StoreDir,
    /// What the mirror knows of the NARs whose narinfos it served.
    nars: NarMemory,
    /// Narinfo keys no upstream has, for the negative TTL.
    absent: moka::sync::Cache<String, ()>,
    fetching: nar::InFlight,
    metrics: Metrics,
    /// How long a client may keep a chunk waiting before the store goes on without it.
    client_stall: Duration,
    /// NAR copies into the registry at once (each may outlive its client), a few per
    /// client address.
    copies: shares::Pool,
    /// NARs streamed to a client alone at once (past the copies), a share per address.
    pass_throughs: shares::Pool,
    /// Listings, logs, debuginfo entries and realisations held whole at once (`beside.rs`).
    beside_fetches: Arc<tokio::sync::Semaphore>,
    /// Requests waiting for one of those slots.
    beside_waiting: std::sync::atomic::AtomicUsize,
    limits: Limits,
    /// Where copies' bytes may wait for the registry (shared by the server's mirrors).
    spool: SpoolBudget,
    /// What each client address may have copies start storing an hour, in
    /// [`ALLOWANCE_UNIT`]s of NAR file (shared by the server's mirrors).
    store_allowance: Arc<ClientLimiter>,
    known_config: nar::KnownConfig,
    /// Upstream lookup failures are logged at most every [`FAILURE_LOG_PERIOD`].
    failure_log: governor::DefaultDirectRateLimiter,
}

/// A narinfo served from an upstream, waiting for its NAR.
#[derive(Debug)]
struct Pending {
    upstream: usize,
    /// The NAR file's `URL` at that upstream.
    upstream_url: String,
    /// As served and stored: `URL` is `nar_key`.
    narinfo: NarInfo,
    nar_key: CacheKey,
    /// The registry's word on `nar_key`: its narinfo's absence, when the narinfo was served.
    registry_word: RegistryWord,
    /// Upstreams whose NAR file failed its check (or broke off): asked last from then on.
    failed_upstreams: std::sync::Mutex<Vec<usize>>,
}

/// What a mirror knows of the NARs whose narinfos it served: shared with its copies, which
/// mark a NAR stored when they have stored it.
#[derive(Debug, Clone)]
struct NarMemory {
    /// Narinfos served from upstream, by their NAR's key: which upstream has the NAR, and
    /// what to check it against and store once it is stored.
    pending: moka::sync::Cache<String, Arc<Pending>>,
    /// NAR keys this mirror stored, or found stored, lately: asked again, they are read
    /// from the registry alone (even when a narinfo served meanwhile is pending for them).
    stored: moka::sync::Cache<String, ()>,
}

impl NarMemory {
    /// `key` is in the registry: read from there from now on, its narinfo forgotten.
    fn remember_stored(&self, key: &CacheKey) {
        self.stored.insert(key.as_str().to_owned(), ());
        self.pending.invalidate(key.as_str());
    }

    /// A fetch of `key` failed: the registry is asked again for it, in case the registry's
    /// word that it lacked the NAR was outdated (a replica stored it since).
    fn drop_registry_word(&self, key: &CacheKey) {
        if let Some(pending) = self.pending.get(key.as_str()) {
            pending.registry_word.drop_word();
        }
    }

    /// The NAR file `key` from `upstream` failed its check or broke off: the next fetch
    /// asks the other upstreams first.
    fn upstream_failed(&self, key: &CacheKey, upstream: usize) {
        if let Some(pending) = self.pending.get(key.as_str()) {
            let mut failed = pending
                .failed_upstreams
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if !failed.contains(&upstream) {
                failed.push(upstream);
            }
        }
    }
}

/// The key a mirror serves and stores the NAR file `upstream_url` of the path `hash_part`
/// under: `nar/<hash_part>-<upstream's file name>`. The store path's hash in it lets any
/// replica of the mirror (or this one, once it has forgotten the narinfo it served) find
/// the narinfo again upstream when the NAR is asked for; and two paths whose NARs are the
/// same file (same contents, other names) each get their own, stored with their narinfo.
/// Where that makes too long a tag in `cache`'s encoding (base32-dnssec makes tags of 1.6
/// characters per byte; cache.nixos.org's names with the custom one), the file name is
/// replaced by a digest of it: the key always begins with the hash of the path whose
/// narinfo named it, never upstream's own name alone, or an upstream could name another
/// path's stored NAR (`URL` is not signed) and have this path's bytes stored over it.
/// `None` when upstream's `URL` is not a `nar/` file or no key fits.
fn mirrored_nar_key(
    cache: &RegistryCache,
    hash_part: &str,
    upstream_url: &str,
) -> Option<CacheKey> {
    let upstream: CacheKey = upstream_url.parse().ok()?;
    if upstream.kind() != KeyKind::Nar {
        return None;
    }
    let name = upstream.as_str().strip_prefix("nar/")?;
    let extension = name.find(".nar").map_or("", |start| &name[start..]);
    let digest = oranc_core::Sha256Hash::of(name.as_bytes()).to_nix32();
    let short_name = format!("{}{extension}", &digest[..SHORT_NAME_CHARS]);
    let key = [name, short_name.as_str()]
        .into_iter()
        .filter_map(|name| format!("nar/{hash_part}-{name}").parse::<CacheKey>().ok())
        .find(|key| cache.has_own_tag(key));
    key
}

/// The unsigned field of `narinfo` Nix defines that is longer than any real one is, if
/// any (`URL` is checked where it is renamed).
fn implausible_field(narinfo: &NarInfo) -> Option<&'static str> {
    let too_long = |value: Option<&String>, limit: usize| value.is_some_and(|v| v.len() > limit);
    if too_long(narinfo.compression.as_ref(), 16) {
        Some("Compression")
    } else if too_long(narinfo.system.as_ref(), 64) {
        Some("System")
    } else if too_long(narinfo.ca.as_ref(), 512) {
        Some("CA")
    } else {
        None
    }
}

/// Characters of the digest of upstream's file name that stand for it in a NAR key where
/// the whole name makes too long a tag (80 bits: two names of one path never share it).
const SHORT_NAME_CHARS: usize = 16;

/// What the mirror's upstreams said about a narinfo.
enum Lookup {
    Found(Arc<Pending>),
    /// Every upstream that answered lacks it (or had it unsigned).
    Absent,
    /// No upstream answered.
    Unreachable,
}

/// What the mirror says about a narinfo the registry lacks.
#[derive(Debug)]
pub enum NarinfoAnswer {
    /// From upstream, as this mirror serves it.
    Found(Bytes),
    Absent,
    /// No upstream answered: a miss all the same (Nix builds it), said as such.
    UpstreamUnreachable,
}

/// How often an upstream lookup failure is logged at most: it may come with every request
/// while an upstream is down, and the log should say it is down, not how many asked.
const FAILURE_LOG_PERIOD: Duration = Duration::from_secs(20);

/// What the mirror says about a NAR the registry lacks.
#[derive(Debug)]
pub enum NarAnswer {
    /// It streams from upstream (and into the registry).
    Streaming(Response),
    /// Another request stored it meanwhile: read it from the registry.
    Stored,
    /// No upstream narinfo named it.
    Unknown,
}

/// A NAR GET on a mirror that asked the registry and upstream at once (see
/// [`Mirror::nar_alongside_registry`]).
#[derive(Debug)]
pub enum Alongside {
    /// The registry has it: serve it from there.
    InRegistry(CacheObject),
    /// It streams from upstream (and into the registry).
    Streaming(Response),
}

/// What a mirror is made of, from a named cache's config.
#[derive(Debug)]
pub struct MirrorSettings<'a> {
    pub name: &'a str,
    pub upstreams: &'a [String],
    pub keys: Vec<PublicKey>,
    pub signing_key: Option<SecretKey>,
    pub negative_ttl: Duration,
    pub client_stall: Duration,
    /// How long an upstream may take to connect, and to send each part of an answer.
    pub upstream_timeouts: BinaryCacheTimeouts,
    pub metrics: Metrics,
    pub limits: Limits,
    pub shared: Shared,
}

/// What the server's mirrors share: where copies' bytes may wait, and what each client
/// address may have them store.
#[derive(Debug, Clone)]
pub struct Shared {
    spool: SpoolBudget,
    store_allowance: Arc<ClientLimiter>,
}

/// What a store allowance counts in: KiB (governor counts in `u32`s, so at most 4 TiB an
/// hour).
const ALLOWANCE_UNIT: u64 = 1 << 10;

/// Client addresses whose store allowance is remembered at most (the least recently seen
/// beyond it start again with a whole one).
const MAX_ALLOWANCE_CLIENTS: usize = 100_000;

impl Shared {
    pub fn new(config: &oranc_config::MirrorConfig) -> Self {
        let units = config.store_bytes_per_client_per_hour / ALLOWANCE_UNIT;
        let units = u32::try_from(units).unwrap_or(u32::MAX);
        Self {
            spool: SpoolBudget::new(config.spool_max_bytes),
            store_allowance: Arc::new(ClientLimiter::per_hour(
                std::num::NonZeroU32::new(units).unwrap_or(std::num::NonZeroU32::MIN),
                MAX_ALLOWANCE_CLIENTS,
            )),
        }
    }
}

impl Mirror {
    pub fn new(settings: MirrorSettings<'_>) -> Result<Self, ServerError> {
        // Its series from the start (at 0), so a rate of them is 0 rather than nothing.
        let name = settings.name;
        for (kind, outcomes) in [
            (
                "narinfo",
                &["hit", "miss", "refused", "error", "unreachable"][..],
            ),
            (
                "nar",
                &["hit", "miss", "error", "unstored", "over_allowance"][..],
            ),
        ] {
            for outcome in outcomes {
                settings
                    .metrics
                    .mirror_lookups
                    .with_label_values(&[name, kind, outcome]);
            }
        }
        for bytes in [
            &settings.metrics.mirror_fetched_bytes,
            &settings.metrics.mirror_stored_bytes,
            &settings.metrics.mirror_coalesced,
        ] {
            bytes.with_label_values(&[name]);
        }
        let upstreams = settings
            .upstreams
            .iter()
            .map(|url| BinaryCache::open(url, settings.upstream_timeouts))
            .collect::<Result<Vec<_>, _>>()
            .map_err(ServerError::Backend)?;
        Ok(Self {
            name: settings.name.to_owned(),
            upstreams,
            keys: settings.keys,
            signing_key: settings.signing_key,
            store_dir: StoreDir::default(),
            nars: NarMemory {
                pending: moka::sync::Cache::builder()
                    .max_capacity(MAX_PENDING)
                    .time_to_live(PENDING_TTL)
                    .build(),
                stored: moka::sync::Cache::builder()
                    .max_capacity(MAX_PENDING)
                    .time_to_live(PENDING_TTL)
                    .build(),
            },
            absent: moka::sync::Cache::builder()
                .max_capacity(MAX_ABSENT)
                .time_to_live(settings.negative_ttl.max(Duration::from_secs(1)))
                .build(),
            fetching: nar::InFlight::default(),
            metrics: settings.metrics,
            client_stall: settings.client_stall,
            copies: shares::Pool::new(CONCURRENT_COPIES, COPIES_PER_ADDRESS),
            pass_throughs: shares::Pool::new(CONCURRENT_PASS_THROUGHS, PASS_THROUGHS_PER_ADDRESS),
            beside_fetches: Arc::new(tokio::sync::Semaphore::new(beside::CONCURRENT_FETCHES)),
            beside_waiting: std::sync::atomic::AtomicUsize::new(0),
            limits: settings.limits,
            spool: settings.shared.spool,
            store_allowance: settings.shared.store_allowance,
            known_config: nar::KnownConfig::default(),
            failure_log: governor::RateLimiter::direct(
                governor::Quota::with_period(FAILURE_LOG_PERIOD)
                    .ok_or_else(|| ServerError::Internal("a zero log period".into()))?,
            ),
        })
    }

    /// The narinfo `key` from the first upstream that has it, signed by an upstream key;
    /// `None` when none has it (remembered for the negative TTL). It is stored only with
    /// its NAR, once that has been fetched and checked.
    pub async fn narinfo(
        &self,
        cache: &RegistryCache,
        key: &CacheKey,
    ) -> Result<NarinfoAnswer, ServerError> {
        // Asked only once the registry lacked the narinfo.
        let narinfo_absent_at = std::time::Instant::now();
        let hash_part = key.as_str().trim_end_matches(".narinfo");
        let pending = match self.lookup(cache, hash_part).await? {
            Lookup::Found(pending) => pending,
            Lookup::Absent => return Ok(NarinfoAnswer::Absent),
            Lookup::Unreachable => return Ok(NarinfoAnswer::UpstreamUnreachable),
        };
        // Nix asks for the NAR next: the narinfo's absence is the registry's word on it.
        pending.registry_word.narinfo_absent(narinfo_absent_at);
        Ok(NarinfoAnswer::Found(Bytes::from(
            pending.narinfo.to_string(),
        )))
    }

    /// The upstream narinfo of the path `hash_part`, as this mirror serves it (its `URL`
    /// renamed, see [`mirrored_nar_key`]), remembered for its NAR.
    async fn lookup(&self, cache: &RegistryCache, hash_part: &str) -> Result<Lookup, ServerError> {
        let key = format!("{hash_part}.narinfo");
        if self.absent.contains_key(&key) {
            return Ok(Lookup::Absent);
        }
        let mut answered = false;
        for (index, upstream) in self.upstreams.iter().enumerate() {
            let mut narinfo = match upstream.narinfo_by_hash(&self.store_dir, hash_part).await {
                Ok(Some(narinfo)) => narinfo,
                Ok(None) => {
                    answered = true;
                    continue;
                }
                Err(error) => {
                    self.count("narinfo", "error");
                    if self.failure_log.check().is_ok() {
                        tracing::warn!(cache = %self.name, upstream = upstream.url(), %error, "upstream lookup failed (said at most every 20 s)");
                    }
                    continue;
                }
            };
            answered = true;
            if !narinfo.is_signed_by_any(&self.keys) {
                self.count("narinfo", "refused");
                tracing::warn!(cache = %self.name, upstream = upstream.url(), path = %narinfo.store_path, "upstream narinfo not signed by upstream_public_keys; not served");
                continue;
            }
            // Only what the signature covers is vouched for: fields Nix does not define go
            // (a signed narinfo with a 900 KB `X-Junk:` line was stored and served on every
            // lookup), and the unsigned ones Nix does define must be of a plausible size.
            narinfo.unknown_fields.clear();
            if let Some(field) = implausible_field(&narinfo) {
                self.count("narinfo", "refused");
                tracing::warn!(cache = %self.name, upstream = upstream.url(), path = %narinfo.store_path, field, "upstream narinfo has an implausibly long unsigned field; not served");
                continue;
            }
            // `URL` is not signed: one this mirror cannot name (not a plain nar/ file) is
            // upstream's problem, and the next upstream may do better.
            let Some(nar_key) = mirrored_nar_key(cache, hash_part, &narinfo.url) else {
                self.count("narinfo", "refused");
                tracing::warn!(cache = %self.name, upstream = upstream.url(), url = %Loggable(&narinfo.url), "upstream narinfo's URL is not a nar/ file this mirror can name; not served");
                continue;
            };
            self.count("narinfo", "hit");
            let upstream_url = std::mem::replace(&mut narinfo.url, nar_key.as_str().to_owned());
            let pending = Arc::new(Pending {
                upstream: index,
                upstream_url,
                narinfo: self.signed(narinfo),
                nar_key,
                registry_word: RegistryWord::default(),
                failed_upstreams: std::sync::Mutex::default(),
            });
            self.nars
                .pending
                .insert(pending.nar_key.as_str().to_owned(), pending.clone());
            return Ok(Lookup::Found(pending));
        }
        if !answered {
            // No upstream answered at all (gone, or an air-gapped network after the first
            // fill): a miss, so Nix builds the path instead of giving up on the build. Not
            // remembered here, so the next request asks upstream again.
            self.count("narinfo", "unreachable");
            return Ok(Lookup::Unreachable);
        }
        self.count("narinfo", "miss");
        self.absent.insert(key, ());
        Ok(Lookup::Absent)
    }

    /// What the mirror knows of the NAR `key`: from the narinfo it served, or else (another
    /// replica served it, or it has expired here) from upstream again, found by the store
    /// path's hash the key begins with.
    async fn pending_nar(
        &self,
        cache: &RegistryCache,
        key: &CacheKey,
    ) -> Result<Option<Arc<Pending>>, ServerError> {
        if let Some(pending) = self.nars.pending.get(key.as_str()) {
            return Ok(Some(pending));
        }
        let Some(hash_part) = key
            .as_str()
            .strip_prefix("nar/")
            .and_then(|name| name.split_once('-'))
            .map(|(hash_part, _)| hash_part)
            .filter(|hash_part| oranc_core::store_path::validate_hash_part(hash_part).is_ok())
        else {
            return Ok(None);
        };
        match self.lookup(cache, hash_part).await? {
            Lookup::Found(pending) => Ok(Some(pending).filter(|pending| pending.nar_key == *key)),
            Lookup::Absent => Ok(None),
            // A NAR whose narinfo was served: its client needs it, and a 404 would say the
            // cache never had it.
            Lookup::Unreachable => Err(ServerError::UpstreamFailed(format!(
                "no upstream answered for the narinfo that names {key}"
            ))),
        }
    }

    /// The NAR `key`, which the registry lacks: fetched from the upstream whose narinfo
    /// named it, streamed to the client while it is stored.
    pub async fn nar(
        &self,
        cache: &RegistryCache,
        key: &CacheKey,
        head: bool,
        address: Option<ClientAddr>,
    ) -> Result<NarAnswer, ServerError> {
        let Some(pending) = self.pending_nar(cache, key).await? else {
            return Ok(NarAnswer::Unknown);
        };
        if head {
            return Ok(NarAnswer::Streaming(nar::head_answer(
                &pending.narinfo,
                key,
            )));
        }
        let mut role = self.fetching.join_or_lead(key.as_str());
        // A fetch can end without storing the NAR (its client left before upstream
        // answered, it failed, or no copy slot was free): a request that waited for it then
        // leads the next fetch, or waits for it; after two such fetches it streams the NAR
        // itself.
        for _ in 0..2 {
            let nar::Role::Follower(done) = role else {
                break;
            };
            self.metrics
                .mirror_coalesced
                .with_label_values(&[&self.name])
                .inc();
            match nar::wait(done).await {
                nar::Waited::Spooled(spool) => {
                    return Ok(NarAnswer::Streaming(nar::from_spool(
                        key,
                        spool,
                        self.client_stall,
                    )));
                }
                // Being spooled: served from the spool as it grows, never fetched again.
                nar::Waited::Growing(spool, verdict) => {
                    return Ok(NarAnswer::Streaming(nar::from_growing_spool(
                        key,
                        spool,
                        verdict,
                        self.client_stall,
                    )));
                }
                // A fetch that goes at the registry's pace (no room in the spool) or whose
                // upstream has not answered: this client need not wait for it; it gets its
                // own stream (not stored twice), within its address's share.
                nar::Waited::TooLong => return self.pass_through(&pending, key, address).await,
                nar::Waited::Ended => {}
            }
            if self.nars.stored.contains_key(key.as_str()) {
                return Ok(NarAnswer::Stored);
            }
            role = self.fetching.join_or_lead(key.as_str());
        }
        match role {
            nar::Role::Follower(_) => self.pass_through(&pending, key, address).await,
            nar::Role::Leader(lead) => {
                // Stored by a fetch that ended between this request's registry lookup and
                // its lead (looked up again: gc may have removed it since).
                if self.nars.stored.contains_key(key.as_str()) && cache.get(key).await?.is_some() {
                    return Ok(NarAnswer::Stored);
                }
                // A copy outlives its client (others will read what it stores), so copies
                // are bounded; past the bound a NAR streams to its client alone, unstored,
                // for as long as that client stays.
                let Ok(slot) = self.copies.try_take(address) else {
                    drop(lead);
                    self.metrics
                        .mirror_lookups
                        .with_label_values(&[&self.name, "nar", "unstored"])
                        .inc();
                    return self.pass_through(&pending, key, address).await;
                };
                // So is what one address may have stored: asked for cold NARs and left at
                // once, copies would fetch and store them all (192 MiB for 1 KB of
                // requests, in review).
                if !self.within_store_allowance(&pending, address) {
                    drop((slot, lead));
                    self.count("nar", "over_allowance");
                    return self.pass_through(&pending, key, address).await;
                }
                let (upstream, body) = self.open_upstream_nar(&pending).await?;
                self.copy(slot, cache, &pending, upstream)
                    .start(body, lead)
                    .map(NarAnswer::Streaming)
                    .map_err(ServerError::UpstreamFailed)
            }
        }
    }

    /// A NAR whose narinfo this mirror served from upstream, and has not stored since, is
    /// most likely missing from the registry (a narinfo is stored only after its NAR), so
    /// the registry and upstream are asked at once: a cold first byte costs the slower of
    /// the two instead of both; and shortly after the registry lacked its narinfo, only
    /// upstream's (see `registry_word.rs`). The registry decides all the same: upstream's
    /// answer is used only once the registry has said it lacks the NAR, and dropped when it
    /// has it (a replica or a push stored it), so the registry's copy and the
    /// one-store-per-NAR rule hold as in the usual order. A word said ahead may be
    /// outdated, so when upstream fails the registry is asked again before the client hears
    /// of it. `None` where the usual order applies: no such narinfo, the NAR stored by this
    /// mirror already, another request fetching it, or every copy slot taken.
    pub async fn nar_alongside_registry(
        &self,
        cache: &RegistryCache,
        key: &CacheKey,
        address: Option<ClientAddr>,
    ) -> Result<Option<Alongside>, ServerError> {
        if !self.nars.pending.contains_key(key.as_str())
            || self.nars.stored.contains_key(key.as_str())
        {
            return Ok(None);
        }
        // The slot before the lead: a lead let go without a fetch would tell the requests
        // that joined it that the NAR is stored.
        let Ok(slot) = self.copies.try_take(address) else {
            return Ok(None);
        };
        let nar::Role::Leader(lead) = self.fetching.join_or_lead(key.as_str()) else {
            return Ok(None);
        };
        // Looked up again under the lead: a copy marks its NAR stored (and forgets its
        // narinfo) before it lets go of the lead.
        let Some(pending) = self
            .nars
            .pending
            .get(key.as_str())
            .filter(|_| !self.nars.stored.contains_key(key.as_str()))
        else {
            return Ok(None);
        };
        if !self.within_store_allowance(&pending, address) {
            return Ok(None);
        }
        let registry = std::pin::pin!(pending.registry_word.lookup(cache, key));
        let upstream = std::pin::pin!(self.upstream_nar(&pending));
        let (said_ahead, opened) = match futures::future::select(registry, upstream).await {
            Either::Left((in_registry, upstream)) => match in_registry? {
                InRegistry::Has(object) => return Ok(Some(self.found_in_registry(key, object))),
                InRegistry::Lacks { ahead } => (ahead, upstream.await),
            },
            Either::Right((opened, registry)) => match registry.await? {
                InRegistry::Has(object) => return Ok(Some(self.found_in_registry(key, object))),
                InRegistry::Lacks { ahead } => (ahead, opened),
            },
        };
        if said_ahead && !matches!(opened, (_, Ok(Some(_)))) {
            pending.registry_word.drop_word();
            if let Some(object) = cache.get(key).await? {
                return Ok(Some(self.found_in_registry(key, object)));
            }
        }
        let (upstream, body) = self.counted_upstream_nar(&pending, opened)?;
        self.copy(slot, cache, &pending, upstream)
            .start(body, lead)
            .map(|response| Some(Alongside::Streaming(response)))
            .map_err(ServerError::UpstreamFailed)
    }

    /// The registry has a NAR whose narinfo this mirror served: a replica or a push stored
    /// it, so it is read from the registry from now on.
    fn found_in_registry(&self, key: &CacheKey, object: CacheObject) -> Alongside {
        self.nars.remember_stored(key);
        Alongside::InRegistry(object)
    }

    fn copy(
        &self,
        slot: shares::Place,
        cache: &RegistryCache,
        pending: &Pending,
        upstream: usize,
    ) -> nar::Copy {
        nar::Copy {
            slot: Some(slot),
            upstream,
            cache: self.known_config.shared_by(cache),
            narinfo: pending.narinfo.clone(),
            nar_key: pending.nar_key.clone(),
            cache_name: self.name.clone(),
            metrics: self.metrics.clone(),
            client_stall: self.client_stall,
            nars: self.nars.clone(),
            spool: self.spool.clone(),
            known_config: self.known_config.clone(),
        }
    }

    /// The NAR `key` streamed from upstream to this client alone, unstored: at most
    /// [`CONCURRENT_PASS_THROUGHS`] at once (each holds a thread checking its hash for as
    /// long as its client reads), then 503.
    async fn pass_through(
        &self,
        pending: &Pending,
        key: &CacheKey,
        address: Option<ClientAddr>,
    ) -> Result<NarAnswer, ServerError> {
        let slot = self.pass_throughs.try_take(address).map_err(|refused| {
            ServerError::MirrorBusy(match refused {
                shares::Refused::Full => format!(
                    "the mirror {} is streaming {CONCURRENT_PASS_THROUGHS} NARs it cannot store yet",
                    self.name
                ),
                shares::Refused::AddressShare => format!(
                    "the mirror {} is streaming {PASS_THROUGHS_PER_ADDRESS} NARs it cannot store yet to this address",
                    self.name
                ),
            })
        })?;
        let (_, body) = self.open_upstream_nar(pending).await?;
        nar::pass_through(body, &pending.narinfo, key, slot, self.client_stall)
            .map(NarAnswer::Streaming)
            .map_err(ServerError::UpstreamFailed)
    }

    /// The NAR file `pending`'s narinfo names, from the upstream that served the narinfo
    /// or another with the same file (`other_upstreams.rs`), and which upstream that is.
    async fn open_upstream_nar(
        &self,
        pending: &Pending,
    ) -> Result<(usize, oranc_core::registry::ByteStream), ServerError> {
        let opened = self.upstream_nar(pending).await;
        self.counted_upstream_nar(pending, opened)
    }

    /// Upstream's answer for `pending`'s NAR file, counted, as the body to stream.
    fn counted_upstream_nar(
        &self,
        pending: &Pending,
        opened: other_upstreams::Opened,
    ) -> Result<(usize, oranc_core::registry::ByteStream), ServerError> {
        let (index, opened) = opened;
        match opened {
            Ok(Some(body)) => {
                self.count("nar", "hit");
                Ok((index, body))
            }
            Ok(None) => {
                self.count("nar", "miss");
                Err(ServerError::UpstreamFailed(format!(
                    "{}/{}: upstream served its narinfo but not the NAR (nor did another upstream have the same file)",
                    self.upstreams[pending.upstream].url(),
                    pending.upstream_url
                )))
            }
            Err(error) => {
                self.count("nar", "error");
                Err(ServerError::UpstreamFailed(error.to_string()))
            }
        }
    }

    /// Takes `pending`'s NAR file size (in KiB) from `address`'s hourly allowance of bytes
    /// to store (`[mirror] store_bytes_per_client_per_hour`), or nothing when it has less
    /// left.
    fn within_store_allowance(&self, pending: &Pending, address: Option<ClientAddr>) -> bool {
        let bytes = pending
            .narinfo
            .file_size
            .unwrap_or(pending.narinfo.nar_size);
        let kib = u32::try_from(bytes.div_ceil(ALLOWANCE_UNIT).max(1)).unwrap_or(u32::MAX);
        std::num::NonZeroU32::new(kib).is_some_and(|kib| self.store_allowance.take(address, kib))
    }

    /// `narinfo` with the server's own signature added, when it has a signing key.
    fn signed(&self, mut narinfo: NarInfo) -> NarInfo {
        if let Some(key) = &self.signing_key {
            narinfo.sign(key);
        }
        narinfo
    }

    fn count(&self, kind: &str, outcome: &str) {
        self.metrics
            .mirror_lookups
            .with_label_values(&[&self.name, kind, outcome])
            .inc();
    }
}
