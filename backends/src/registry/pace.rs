//! The request rate a registry accepts, learnt from its 429s, and requests spaced to it.
//!
//! Fewer requests in flight (throttle.rs) is not enough against a registry that limits
//! requests per second: with nginx `limit_req` at 20 r/s in front of distribution, a push
//! at `--parallel 16` had 44% of its requests answered 429 (1,429 of 3,237), since a few
//! fast requests in flight still go over any rate. Real registries (ghcr.io's secondary
//! limits, Docker Hub's abuse limits) ban clients that keep bouncing off them.
//!
//! So once the registry refuses a request sent after its first 429 (a first burst refused
//! may be its burst allowance, not its rate), every request takes a turn in a queue spaced
//! by the learnt rate (one slot every `1/rate` s: a token bucket holding one token). The
//! rate starts just under what the registry accepted lately, and follows it: each refusal
//! of a request sent since the last decrease (the 429s of requests sent before it are one
//! signal) takes it down to 90%, or to just under what was accepted, whichever is lower;
//! each second without one adds 2.5% (half a request a second at least), and from 3 s
//! after the last decrease 10%, so that a limit that rose, or was only a burst's, is found
//! again.
//!
//! Measured with `bench-push-limited` (300 small paths, `--parallel 16`, nginx burst 20):
//! at 20 r/s, 4.3% of requests refused (44% before) within 1.11x the floor; at 400 r/s no
//! loss, but 13 s where the unpaced push took 7 s: the price of not bouncing off a limit.
//!
//! Written here rather than with `governor`: its quota is fixed when built, and this rate
//! moves with every pushback.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// And up at most this often, and not within this long of going down.
const INCREASE_SPACING: Duration = Duration::from_secs(1);
/// How long after a decrease the rate grows by 2.5% a second; later by 10%.
const CAREFUL_AFTER_DECREASE: Duration = Duration::from_secs(3);
/// The slowest the rate goes: a request every two seconds.
const MIN_RATE: f64 = 0.5;
/// Accepted requests are counted over this window, in `BUCKETS` buckets.
const WINDOW: Duration = Duration::from_secs(2);
const BUCKETS: usize = 20;

/// What the pace knows; `rate` is `None` until the registry first pushes back.
#[derive(Debug)]
struct State {
    rate: Option<f64>,
    /// When the next request may start.
    next: Instant,
    last_decrease: Option<Instant>,
    last_increase: Option<Instant>,
    /// Accepted requests per `WINDOW / BUCKETS`, the bucket of `bucket_began` last.
    accepted: [u32; BUCKETS],
    bucket: usize,
    bucket_began: Instant,
    /// When the registry first refused a request.
    first_refusal: Option<Instant>,
    /// The first accepted request: a window younger than `WINDOW` is counted as long as
    /// it is.
    first_accepted: Option<Instant>,
}

/// The learnt rate of one registry (see the module docs).
#[derive(Debug)]
pub struct Pace(Mutex<State>);

impl Default for Pace {
    fn default() -> Self {
        let now = Instant::now();
        Self(Mutex::new(State {
            rate: None,
            next: now,
            last_decrease: None,
            last_increase: None,
            accepted: [0; BUCKETS],
            bucket: 0,
            bucket_began: now,
            first_refusal: None,
            first_accepted: None,
        }))
    }
}

impl Pace {
    /// Takes the next slot; waits until it comes.
    pub async fn wait_turn(&self) {
        let slot = {
            let mut state = self.lock();
            let Some(rate) = state.rate else { return };
            let now = Instant::now();
            let slot = state.next.max(now);
            state.next = slot + Duration::from_secs_f64(1.0 / rate);
            slot
        };
        tokio::time::sleep_until(slot).await;
    }

    /// A request was accepted.
    pub fn accepted(&self) {
        let mut state = self.lock();
        let now = Instant::now();
        state.roll(now);
        let bucket = state.bucket;
        state.accepted[bucket] = state.accepted[bucket].saturating_add(1);
        state.first_accepted.get_or_insert(now);
        let Some(rate) = state.rate else { return };
        let quiet = [state.last_decrease, state.last_increase]
            .into_iter()
            .flatten()
            .all(|at| now.duration_since(at) >= INCREASE_SPACING);
        if quiet {
            // Gently near the rate that was refused; then faster, so a limit that was only
            // a burst's (or that rose) is soon found again.
            let settled = state
                .last_decrease
                .is_none_or(|at| now.duration_since(at) >= CAREFUL_AFTER_DECREASE);
            let step = if settled {
                rate / 10.0
            } else {
                (rate / 40.0).max(0.5)
            };
            state.rate = Some(rate + step);
            state.last_increase = Some(now);
        }
    }

    /// The registry pushed back (429) a request sent at `sent`.
    pub fn pushed_back(&self, sent: Instant) {
        let mut state = self.lock();
        let now = Instant::now();
        state.roll(now);
        // Only a request sent at the rate as it is now tells anything of that rate.
        if state.last_decrease.is_some_and(|at| sent < at) {
            return;
        }
        // One burst refused is not yet a rate: requests that went out together at the start
        // can overrun a registry's burst allowance, far below its rate limit. Pacing starts
        // when a request sent after that first refusal is refused too.
        if state.rate.is_none() && state.first_refusal.is_none_or(|at| sent < at) {
            state.first_refusal.get_or_insert(now);
            return;
        }
        let under_accepted = (state.accepted_rate(now) * 0.95).max(MIN_RATE);
        let rate = match state.rate {
            None => under_accepted,
            Some(rate) => (rate * 0.9).min(under_accepted),
        };
        state.rate = Some(rate.max(MIN_RATE));
        state.last_decrease = Some(now);
        tracing::debug!(rate, "requests to the registry now paced");
    }

    /// The learnt rate, in requests a second; `None` while the registry never pushed back.
    #[cfg(test)]
    pub fn rate(&self) -> Option<f64> {
        self.lock().rate
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    /// Moves the window on to `now`, emptying the buckets it leaves behind.
    fn roll(&mut self, now: Instant) {
        let width = WINDOW / BUCKETS as u32;
        let mut passed = now.duration_since(self.bucket_began).as_nanos() / width.as_nanos();
        if passed == 0 {
            return;
        }
        self.bucket_began += width * u32::try_from(passed.min(BUCKETS as u128)).unwrap_or(1);
        if passed >= BUCKETS as u128 {
            self.accepted = [0; BUCKETS];
            self.bucket_began = now;
            return;
        }
        while passed > 0 {
            self.bucket = (self.bucket + 1) % BUCKETS;
            self.accepted[self.bucket] = 0;
            passed -= 1;
        }
    }

    /// Accepted requests a second over the window (or since the first, if that is sooner).
    fn accepted_rate(&self, now: Instant) -> f64 {
        let total: u32 = self.accepted.iter().sum();
        let span = self
            .first_accepted
            .map_or(WINDOW, |first| now.duration_since(first).min(WINDOW))
            .max(WINDOW / BUCKETS as u32);
        f64::from(total) / span.as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn unpaced_until_pushed_back_then_spaced_at_what_was_accepted() {
        let pace = Pace::default();
        let started = Instant::now();
        for _ in 0..50 {
            pace.wait_turn().await;
            pace.accepted();
        }
        assert_eq!(started.elapsed(), Duration::ZERO, "no pushback, no pacing");
        tokio::time::advance(Duration::from_secs(3)).await;
        // 20 a second for two seconds.
        for _ in 0..40 {
            pace.accepted();
            tokio::time::advance(Duration::from_millis(50)).await;
        }
        pace.pushed_back(Instant::now());
        assert!(pace.rate().is_none(), "one burst refused is not yet a rate");
        tokio::time::advance(Duration::from_millis(1)).await;
        pace.pushed_back(Instant::now());
        let rate = pace.rate().unwrap();
        assert!(
            (18.0..=20.0).contains(&rate),
            "just under the 20 accepted: {rate}"
        );
        let started = Instant::now();
        for _ in 0..10 {
            pace.wait_turn().await;
        }
        let spent = started.elapsed().as_secs_f64();
        assert!((0.4..0.6).contains(&spent), "ten slots at ~19/s: {spent} s");
    }

    #[tokio::test(start_paused = true)]
    async fn the_429s_of_requests_sent_before_a_decrease_are_one_and_quiet_seconds_raise_it() {
        let pace = Pace::default();
        for _ in 0..40 {
            pace.accepted();
            tokio::time::advance(Duration::from_millis(25)).await;
        }
        pace.pushed_back(Instant::now());
        tokio::time::advance(Duration::from_millis(1)).await;
        let sent_before = Instant::now();
        tokio::time::advance(Duration::from_millis(10)).await;
        pace.pushed_back(sent_before);
        let first = pace.rate().unwrap();
        assert!((30.0..=40.0).contains(&first), "{first}");
        for _ in 0..10 {
            pace.pushed_back(sent_before);
        }
        assert_eq!(
            pace.rate(),
            Some(first),
            "requests sent before the decrease: one signal"
        );
        tokio::time::advance(Duration::from_millis(100)).await;
        pace.pushed_back(Instant::now());
        let second = pace.rate().unwrap();
        assert!(second <= first * 0.9 + 1e-9, "{second} after {first}");
        tokio::time::advance(Duration::from_millis(1100)).await;
        pace.accepted();
        assert!(pace.rate().unwrap() > second);
        for _ in 0..1000 {
            pace.pushed_back(Instant::now());
            tokio::time::advance(Duration::from_secs(2)).await;
        }
        assert!(pace.rate().unwrap() >= MIN_RATE);
    }
}
