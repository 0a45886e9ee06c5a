//! watch-store's own metrics, for `--metrics-listen` (a CI runner's Prometheus or agent
//! scrapes them): paths pushed, push failures (each failed attempt, retried or not), NAR
//! bytes pushed, paths queued or being pushed, and the process's memory, CPU and FDs.
//! The alert `OrancWatchStoreFailing` in deploy/prometheus/alerts.yml reads them.

use oranc_server::metrics::{counter, encode, gauge, process_registry};
use prometheus::{IntCounter, IntGauge, Registry};

#[derive(Debug, Clone)]
pub struct WatchMetrics {
    registry: Registry,
    pub pushed: IntCounter,
    pub pushed_bytes: IntCounter,
    pub failures: IntCounter,
    pub queued: IntGauge,
}

impl WatchMetrics {
    pub fn new() -> Self {
        let registry = process_registry();
        Self {
            pushed: counter(
                &registry,
                "oranc_watch_store_pushed_paths_total",
                "Store paths pushed to the cache",
            ),
            pushed_bytes: counter(
                &registry,
                "oranc_watch_store_pushed_nar_bytes_total",
                "NAR bytes (uncompressed) of the paths pushed",
            ),
            failures: counter(
                &registry,
                "oranc_watch_store_push_failures_total",
                "Failed push attempts (each is retried while watch-store runs)",
            ),
            queued: gauge(
                &registry,
                "oranc_watch_store_queued_paths",
                "Paths waiting to be pushed or being pushed",
            ),
            registry,
        }
    }

    /// The Prometheus text format.
    pub fn render(&self) -> String {
        encode(&self.registry)
    }
}
