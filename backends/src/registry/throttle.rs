//! Slowing down as a whole when a registry pushes back (429).
//!
//! Retrying the one request that got a 429 is not enough: the other requests in flight
//! keep the registry just as busy and collect their own 429s. One throttle per registry,
//! shared by every request to it:
//!
//! - **Requests in flight adapt (AIMD):** each 429 halves the number allowed (down to one),
//!   and each run of as many successes as are allowed adds one back, up to the setting.
//!   Lowered permits are retired as requests finish, so nothing waits for a request to end.
//! - **`Retry-After` pauses every request**, not only the one that got it: a request that
//!   is about to start waits until the registry's pause is over. A 429 without one pauses
//!   for a short backoff.
//! - **Requests are spaced** to the rate the registry accepts, learnt from its 429s
//!   (pace.rs): fewer in flight alone still left 44% of a push's requests answered 429.
//! - The registry's pushback is counted (times asked, wall time paused) for the summary.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use oranc_core::registry::Backpressure;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

/// The pause after a 429 that did not say how long to wait, and the shortest one: a
/// `Retry-After: 0` (or a date already past, from a registry whose clock lags) must not
/// mean "again at once".
const DEFAULT_PAUSE: Duration = Duration::from_millis(500);
/// How long a registry may push back without one success before requests fail instead of
/// waiting: a registry that answers 429 for ever must not hold a push for days.
pub const MAX_PUSHBACK_SPELL: Duration = Duration::from_secs(600);

#[derive(Debug)]
pub struct Throttle {
    /// The registry's name, for the log.
    registry: String,
    /// The longest pause a registry may ask for: a Retry-After of a year must not stop
    /// every request to it for a year.
    max_pause: Duration,
    permits: Semaphore,
    max: usize,
    /// Requests allowed in flight now (at most `max`).
    allowed: AtomicUsize,
    /// Permits to retire as requests finish (after a decrease).
    to_retire: AtomicUsize,
    /// Successes since the last increase.
    successes: AtomicUsize,
    paused_until: Mutex<Option<Instant>>,
    /// The request rate learnt from its pushback.
    pace: super::pace::Pace,
    /// When the registry started pushing back without a success since.
    pushing_back_since: Mutex<Option<Instant>>,
    slowdowns: AtomicU64,
    paused_micros: AtomicU64,
}

/// Leave to send one request; hand it back with [`Throttle::finished`].
#[derive(Debug)]
pub struct Turn<'a> {
    permit: SemaphorePermit<'a>,
    /// When its request went out (after its slot in the pace).
    sent: Instant,
}

impl Throttle {
    pub fn new(registry: &str, max_in_flight: usize, max_pause: Duration) -> Self {
        let max = max_in_flight.max(1);
        Self {
            registry: registry.to_owned(),
            max_pause,
            permits: Semaphore::new(max),
            max,
            allowed: AtomicUsize::new(max),
            to_retire: AtomicUsize::new(0),
            successes: AtomicUsize::new(0),
            paused_until: Mutex::new(None),
            pace: super::pace::Pace::default(),
            pushing_back_since: Mutex::new(None),
            slowdowns: AtomicU64::new(0),
            paused_micros: AtomicU64::new(0),
        }
    }

    /// Waits out any pause the registry asked for, then for a free slot. `None` once the
    /// client is shutting down (the semaphore is closed).
    pub async fn turn(&self) -> Option<Turn<'_>> {
        loop {
            let until = *self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
            match until {
                Some(until) if until > Instant::now() => tokio::time::sleep_until(until).await,
                _ => break,
            }
        }
        let permit = self.permits.acquire().await.ok()?;
        self.pace.wait_turn().await;
        Some(Turn {
            permit,
            sent: Instant::now(),
        })
    }

    /// How long the registry's pause has left, if it is paused.
    pub fn paused_for(&self) -> Option<Duration> {
        let until = *self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
        until.and_then(|until| until.checked_duration_since(Instant::now()))
    }

    /// The request of `turn` is done; `pushed_back` when the registry answered 429, with
    /// the wait its `Retry-After` asked for.
    pub fn finished(&self, turn: Turn<'_>, pushed_back: Option<Option<Duration>>) {
        match pushed_back {
            Some(retry_after) => {
                self.pace.pushed_back(turn.sent);
                self.slow_down(retry_after);
            }
            None => {
                self.pace.accepted();
                self.speed_up();
            }
        }
        let retire = self
            .to_retire
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok();
        if retire {
            turn.permit.forget();
        }
    }

    /// Whether the registry has pushed back, without a success, for longer than
    /// [`MAX_PUSHBACK_SPELL`]: then a 429 fails its request instead of being waited out.
    pub fn pushback_spell_over(&self) -> bool {
        let since = *self
            .pushing_back_since
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        since.is_some_and(|since| since.elapsed() > MAX_PUSHBACK_SPELL)
    }

    fn slow_down(&self, retry_after: Option<Duration>) {
        self.slowdowns.fetch_add(1, Ordering::Relaxed);
        self.pushing_back_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(Instant::now);
        let halved = self
            .allowed
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n > 1).then_some(n.div_ceil(2))
            });
        if let Ok(before) = halved {
            self.to_retire
                .fetch_add(before - before.div_ceil(2), Ordering::AcqRel);
        }
        self.successes.store(0, Ordering::Relaxed);
        let pause = retry_after
            .unwrap_or(DEFAULT_PAUSE)
            .clamp(DEFAULT_PAUSE, self.max_pause.max(DEFAULT_PAUSE));
        let until = Instant::now() + pause;
        let mut paused = self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let from = paused.filter(|p| *p > now).unwrap_or(now);
        if until > from {
            let added = until - from;
            self.paused_micros
                .fetch_add(added.as_micros() as u64, Ordering::Relaxed);
            *paused = Some(until);
            // One line per pause, not one per 429.
            if from == now {
                tracing::warn!(
                    registry = %self.registry,
                    pause = ?(until - now),
                    in_flight = self.allowed.load(Ordering::Acquire),
                    "the registry asked to slow down (429): every request waits, and fewer go at once"
                );
            }
        }
    }

    fn speed_up(&self) {
        *self
            .pushing_back_since
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
        let allowed = self.allowed.load(Ordering::Acquire);
        if allowed >= self.max || self.successes.fetch_add(1, Ordering::AcqRel) + 1 < allowed {
            return;
        }
        self.successes.store(0, Ordering::Relaxed);
        if self
            .allowed
            .compare_exchange(allowed, allowed + 1, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        // A permit still waiting to be retired is simply kept; otherwise one is added.
        let kept = self
            .to_retire
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok();
        if !kept {
            self.permits.add_permits(1);
        }
    }

    /// How often the registry pushed back, and for how long requests were held.
    pub fn backpressure(&self) -> Backpressure {
        Backpressure {
            slowdowns: self.slowdowns.load(Ordering::Relaxed),
            paused: Duration::from_micros(self.paused_micros.load(Ordering::Relaxed)),
        }
    }

    #[cfg(test)]
    fn allowed(&self) -> usize {
        self.allowed.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn halves_on_pushback_and_grows_back_one_at_a_time() {
        let throttle = Throttle::new("test", 8, Duration::from_secs(60));
        let turn = throttle.turn().await.unwrap();
        throttle.finished(turn, Some(Some(Duration::from_secs(2))));
        assert_eq!(throttle.allowed(), 4);
        // Everyone waits out the Retry-After.
        let started = Instant::now();
        let turn = throttle.turn().await.unwrap();
        assert!(started.elapsed() >= Duration::from_secs(2));
        throttle.finished(turn, None);
        // The four permits over the new bound were retired as requests finished.
        for _ in 0..3 {
            let turn = throttle.turn().await.unwrap();
            throttle.finished(turn, None);
        }
        // Four successes at four allowed make five.
        assert_eq!(throttle.allowed(), 5);
        assert_eq!(throttle.permits.available_permits(), 5);
        let pressure = throttle.backpressure();
        assert_eq!(pressure.slowdowns, 1);
        assert_eq!(pressure.paused, Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_is_never_longer_than_the_bound() {
        let throttle = Throttle::new("test", 4, Duration::from_secs(60));
        let turn = throttle.turn().await.unwrap();
        throttle.finished(turn, Some(Some(Duration::from_secs(365 * 24 * 3600))));
        let started = Instant::now();
        let _turn = throttle.turn().await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn asked_for_no_pause_it_still_pauses_and_a_long_spell_ends_the_waiting() {
        let throttle = Throttle::new("test", 4, Duration::from_secs(60));
        let turn = throttle.turn().await.unwrap();
        throttle.finished(turn, Some(Some(Duration::ZERO)));
        let started = Instant::now();
        let turn = throttle.turn().await.unwrap();
        assert_eq!(started.elapsed(), DEFAULT_PAUSE);
        assert!(!throttle.pushback_spell_over());
        tokio::time::advance(MAX_PUSHBACK_SPELL).await;
        throttle.finished(turn, Some(None));
        assert!(throttle.pushback_spell_over());
        let turn = throttle.turn().await.unwrap();
        throttle.finished(turn, None);
        assert!(!throttle.pushback_spell_over(), "a success ends the spell");
    }

    #[tokio::test(start_paused = true)]
    async fn never_below_one_and_never_above_the_setting() {
        let throttle = Throttle::new("test", 2, Duration::from_secs(60));
        for _ in 0..5 {
            let turn = throttle.turn().await.unwrap();
            throttle.finished(turn, Some(None));
        }
        assert_eq!(throttle.allowed(), 1);
        for _ in 0..100 {
            let turn = throttle.turn().await.unwrap();
            throttle.finished(turn, None);
        }
        assert_eq!(throttle.allowed(), 2);
        assert_eq!(throttle.permits.available_permits(), 2);
    }
}
