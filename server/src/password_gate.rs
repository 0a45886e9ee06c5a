//! The one door every writer password check goes through. A check is slow and large on
//! purpose (argon2 at its defaults: 19 MiB, tens of milliseconds), so unbounded checks were
//! a way to take the server's memory: 200 guesses at once held 5 GB. Here at most
//! `password_checks.concurrent` run at once (a request waits `wait_millis` for its turn,
//! then gets 503), and each client (IP address) may cause `per_client_per_minute` of them
//! (then 429). Remembered verdicts (`writers.rs`) cost nothing and never come here.
//!
//! Checks run on `concurrent` threads of their own, not on tokio's blocking pool: the
//! allocator keeps a freed 19 MiB block in the arena of the thread that used it, so checks
//! spread over the pool's hundreds of threads held hundreds of MB (measured: 455 MB after
//! 200 guesses with only two at a time). A few long-lived threads hold a few blocks.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::client_addr::ClientAddr;
use crate::client_limiter::ClientLimiter;
use crate::error::ServerError;
use crate::metrics::Metrics;

/// Clients whose checks per minute are remembered.
const MAX_CLIENTS: usize = 10_000;

type Job = Box<dyn FnOnce() + Send>;

#[derive(Debug)]
pub struct PasswordGate {
    checks: Arc<Semaphore>,
    /// Jobs for the checking threads; never more than `checks` permits in it.
    jobs: std::sync::mpsc::SyncSender<Job>,
    wait: Duration,
    per_client: ClientLimiter,
    metrics: Metrics,
}

impl PasswordGate {
    pub fn new(config: &oranc_config::PasswordChecksConfig, metrics: Metrics) -> Self {
        let per_minute = NonZeroU32::new(config.per_client_per_minute).unwrap_or(NonZeroU32::MIN);
        let threads = config.concurrent.max(1);
        let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(threads);
        let queue = Arc::new(std::sync::Mutex::new(queue));
        for n in 0..threads {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("password-check-{n}"))
                .spawn(move || loop {
                    let job = queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    match job {
                        Ok(job) => job(),
                        Err(_) => break,
                    }
                });
            if let Err(error) = spawned {
                tracing::warn!(%error, "cannot start a password-checking thread");
            }
        }
        // Every outcome's series from the start (at 0): the alert on guesses reads them.
        for outcome in ["valid", "invalid", "busy", "limited"] {
            metrics.password_checks.with_label_values(&[outcome]);
        }
        Self {
            jobs,
            checks: Arc::new(Semaphore::new(threads)),
            wait: Duration::from_millis(config.wait_millis),
            per_client: ClientLimiter::per_minute(per_minute, MAX_CLIENTS),
            metrics,
        }
    }

    /// Runs `check` (a blocking password verification) when `client` may have one and a
    /// turn is free; its verdict, or why it did not run.
    pub async fn check(
        &self,
        client: Option<ClientAddr>,
        check: impl FnOnce() -> bool + Send + 'static,
    ) -> Result<bool, ServerError> {
        if let Err(wait) = self.per_client.check(client) {
            self.count("limited");
            return Err(ServerError::TooManyPasswordChecks(wait.as_secs().max(1)));
        }
        let permit = tokio::time::timeout(self.wait, self.checks.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok);
        let Some(permit) = permit else {
            self.count("busy");
            return Err(ServerError::PasswordChecksBusy);
        };
        // Off the request threads; the permit is held until the check is done.
        let (done, verdict) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(check());
            drop(permit);
        });
        if self.jobs.try_send(job).is_err() {
            self.count("busy");
            return Err(ServerError::PasswordChecksBusy);
        }
        let valid = verdict.await.unwrap_or(false);
        self.count(if valid { "valid" } else { "invalid" });
        Ok(valid)
    }

    fn count(&self, outcome: &str) {
        self.metrics
            .password_checks
            .with_label_values(&[outcome])
            .inc();
    }
}
