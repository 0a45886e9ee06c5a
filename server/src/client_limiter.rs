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
        Self {
            quota,
            clients: moka::sync::Cache::builder()
                .max_capacity(max_clients.max(1) as u64)
                .time_to_idle(FORGET_AFTER)
                .build(),
        }
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
        let limiter = self
            .clients
            .get_with(client, || Arc::new(RateLimiter::direct(self.quota)));
        limiter
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
