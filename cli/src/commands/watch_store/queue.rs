//! What `watch-store` still has to push: paths waiting their turn, paths waiting to be
//! retried after a failure, and every path already dealt with, so a path seen twice (in two
//! closures, or listed again) is pushed once. A failed path is never dropped while
//! watching: it waits, longer after each failure, and goes again.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use oranc_core::{PathInfo, Signature, StorePath};
use tokio::time::Instant;

/// One path to push, with the signatures its narinfo gets.
#[derive(Debug)]
pub struct Job {
    pub info: PathInfo,
    pub signatures: Vec<Signature>,
    /// Failed pushes so far.
    pub failures: u32,
    /// When the path was found valid: the start of its "valid to visible" time.
    pub found_at: Instant,
}

#[derive(Debug, Default)]
pub struct PushQueue {
    ready: VecDeque<Job>,
    /// Failed jobs and when each may go again, in no particular order.
    waiting: Vec<(Instant, Job)>,
    /// Paths queued, in flight, pushed or decided against: never queued again.
    seen: HashSet<StorePath>,
}

/// The wait before retrying a path that failed `failures` times: 5 s, doubling, at most a
/// minute (a registry outage is usually over in minutes; a retry costs one path's requests).
pub fn retry_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(4);
    Duration::from_secs(5 << doublings).min(Duration::from_secs(60))
}

impl PushQueue {
    /// Whether `path` was queued or decided on before.
    pub fn has_seen(&self, path: &StorePath) -> bool {
        self.seen.contains(path)
    }

    /// Remembers a path decided against (unsigned, excluded, already in the cache).
    pub fn mark_seen(&mut self, path: StorePath) {
        self.seen.insert(path);
    }

    pub fn push(&mut self, job: Job) {
        if self.seen.insert(job.info.path.clone()) {
            self.ready.push_back(job);
        }
    }

    /// A job that failed: it waits [`retry_delay`] and goes again.
    pub fn retry_later(&mut self, mut job: Job, now: Instant) {
        job.failures += 1;
        self.waiting.push((now + retry_delay(job.failures), job));
    }

    /// Makes every waiting job due now (when draining: no more waiting).
    pub fn retry_all_now(&mut self) {
        let waiting = std::mem::take(&mut self.waiting);
        self.ready.extend(waiting.into_iter().map(|(_, job)| job));
    }

    /// The next job to start at `now`: a due retry first, then the oldest new path.
    pub fn next_ready(&mut self, now: Instant) -> Option<Job> {
        if let Some(due) = self.waiting.iter().position(|(at, _)| *at <= now) {
            return Some(self.waiting.swap_remove(due).1);
        }
        self.ready.pop_front()
    }

    /// When the earliest waiting job is due, if any waits.
    pub fn next_retry_at(&self) -> Option<Instant> {
        self.waiting.iter().map(|(at, _)| *at).min()
    }

    /// Jobs not yet pushed (ready or waiting).
    pub fn len(&self) -> usize {
        self.ready.len() + self.waiting.len()
    }

    /// Every job not yet pushed, for the message of a hard stop.
    pub fn paths(&self) -> impl Iterator<Item = &StorePath> {
        self.ready
            .iter()
            .chain(self.waiting.iter().map(|(_, job)| job))
            .map(|job| &job.info.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oranc_core::Sha256Hash;

    fn job(name: &str) -> Job {
        Job {
            info: PathInfo {
                path: StorePath::from_base_name(&format!(
                    "5kk4mwqi310s9ssry90al6mxrb47vdiw-{name}"
                ))
                .expect("a valid store path"),
                nar_hash: Sha256Hash::of(name.as_bytes()),
                nar_size: 1,
                references: vec![],
                deriver: None,
                signatures: vec![],
                ca: None,
            },
            signatures: vec![],
            failures: 0,
            found_at: Instant::now(),
        }
    }

    #[test]
    fn a_path_is_queued_once() {
        let mut queue = PushQueue::default();
        queue.push(job("a"));
        queue.push(job("a"));
        assert_eq!(queue.len(), 1);
        let started = queue.next_ready(Instant::now()).expect("a job");
        assert!(queue.next_ready(Instant::now()).is_none());
        // Pushed or in flight, it is still known: a later closure does not queue it again.
        queue.push(job("a"));
        assert_eq!(queue.len(), 0);
        assert!(queue.has_seen(&started.info.path));
    }

    #[test]
    fn a_failed_path_waits_then_goes_again() {
        let mut queue = PushQueue::default();
        let now = Instant::now();
        queue.retry_later(job("a"), now);
        assert_eq!(queue.len(), 1, "a failed path is kept");
        assert!(queue.next_ready(now).is_none(), "not before its delay");
        assert_eq!(queue.next_retry_at(), Some(now + Duration::from_secs(5)));
        let again = queue
            .next_ready(now + Duration::from_secs(5))
            .expect("due after its delay");
        assert_eq!(again.failures, 1);
    }

    #[test]
    fn draining_retries_at_once() {
        let mut queue = PushQueue::default();
        let now = Instant::now();
        queue.retry_later(job("a"), now);
        queue.retry_all_now();
        assert!(queue.next_ready(now).is_some());
        assert_eq!(queue.next_retry_at(), None);
    }

    #[test]
    fn retry_delays_grow_to_a_minute() {
        let delays: Vec<u64> = (1..=7).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(delays, [5, 10, 20, 40, 60, 60, 60]);
    }
}
