//! A rate limiter per client with a bounded table: one governor limiter per client in a
//! moka cache of at most `max_clients` entries, the least recently seen forgotten first (a
//! forgotten client starts again with a full allowance, as a new one would). governor's own
//! keyed limiter keeps every key it has seen until told to forget, so a flood of new
//! addresses would grow it without bound.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::client_addr::ClientAddr;

/// A client not seen for this long is forgotten early.
const FORGET_AFTER: Duration = Duration::from_secs(600);

#[derive(Debug)]
pub struct ClientLimiter {
    quota: Quota,
    clients: moka::sync::Cache<Option<ClientAddr>, Arc<DefaultDirectRateLimiter>>,
}

impl ClientLimiter {
    pub fn new(quota: Quota, max_clients: usize) -> Self {
        Self::forgetting_after(quota, max_clients, FORGET_AFTER)
    }

    /// As [`Self::new`], a client forgotten once not seen for `forget_after` (no earlier
    /// than its allowance is whole again, or forgetting would hand it a new one early).
    pub fn forgetting_after(quota: Quota, max_clients: usize, forget_after: Duration) -> Self {
        Self {
            quota,
            clients: moka::sync::Cache::builder()
                .max_capacity(max_clients.max(1) as u64)
                .time_to_idle(forget_after)
                .build(),
        }
    }

    /// `amount` an hour, all of it at once if the client wants; a client is remembered for
    /// the hour its allowance takes to refill.
    pub fn per_hour(amount: NonZeroU32, max_clients: usize) -> Self {
        Self::forgetting_after(
            Quota::per_hour(amount),
            max_clients,
            Duration::from_secs(3600),
        )
    }

    /// Takes `amount` from `client`'s allowance at once, or nothing when it has less left
    /// (or its whole allowance is less).
    pub fn take(&self, client: Option<ClientAddr>, amount: NonZeroU32) -> bool {
        matches!(self.limiter(client).check_n(amount), Ok(Ok(())))
    }

    /// `client`'s limiter (requests with no known address share one), made on first use.
    fn limiter(&self, client: Option<ClientAddr>) -> Arc<DefaultDirectRateLimiter> {
        self.clients
            .get_with(client, || Arc::new(RateLimiter::direct(self.quota)))
    }

    /// `rate` per second with `burst` at once.
    pub fn per_second(rate: NonZeroU32, burst: NonZeroU32, max_clients: usize) -> Self {
        Self::new(Quota::per_second(rate).allow_burst(burst), max_clients)
    }

    /// `per_minute` a minute, all of it at once if the client wants.
    pub fn per_minute(per_minute: NonZeroU32, max_clients: usize) -> Self {
        Self::new(Quota::per_minute(per_minute), max_clients)
    }

    /// Takes one from `client`'s allowance (requests with no known address share one);
    /// `Err` says how long until it has one again.
    pub fn check(&self, client: Option<ClientAddr>) -> Result<(), Duration> {
        self.limiter(client)
            .check()
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Clients remembered now.
    #[cfg(test)]
    fn clients(&self) -> u64 {
        self.clients.run_pending_tasks();
        self.clients.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(n: u32) -> Option<ClientAddr> {
        Some(ClientAddr::of_peer(std::net::IpAddr::V4(n.into())))
    }

    #[test]
    fn an_hourly_allowance_is_taken_in_amounts_and_never_past_it() {
        let amount = |n| NonZeroU32::new(n).unwrap();
        let limiter = ClientLimiter::per_hour(amount(100), 10);
        assert!(limiter.take(client(1), amount(60)));
        assert!(!limiter.take(client(1), amount(60)), "40 left");
        assert!(limiter.take(client(1), amount(40)));
        assert!(!limiter.take(client(2), amount(101)), "more than the whole");
        assert!(limiter.take(client(2), amount(100)), "each client its own");
    }

    #[test]
    fn the_table_stays_bounded_and_a_client_keeps_its_bucket() {
        let one = NonZeroU32::new(1).unwrap();
        let limiter = ClientLimiter::per_second(one, one, 100);
        assert!(limiter.check(client(0)).is_ok());
        assert!(
            limiter.check(client(0)).is_err(),
            "its one request is spent"
        );
        for n in 1..10_000 {
            let _ = limiter.check(client(n));
        }
        assert!(
            limiter.clients() <= 100,
            "{} clients kept",
            limiter.clients()
        );
    }
}
