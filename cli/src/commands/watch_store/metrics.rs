//! watch-store's own metrics, for `--metrics-listen` (a CI runner's Prometheus or agent
//! scrapes them): paths pushed, push failures (each failed attempt, retried or not), NAR
//! bytes pushed, paths queued or being pushed, and the process's memory, CPU and FDs.
//! The alert `OrancWatchStoreFailing` in deploy/prometheus/alerts.yml reads them.

use prometheus::{Encoder as _, IntCounter, IntGauge, Registry, TextEncoder};

#[derive(Debug, Clone)]
pub struct WatchMetrics {
    registry: Registry,
    pub pushed: IntCounter,
    pub pushed_bytes: IntCounter,
    pub failures: IntCounter,
    pub queued: IntGauge,
}

fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    registry
        .register(Box::new(metric.clone()))
        .unwrap_or_else(|e| panic!("registering a metric: {e}"));
    metric
}

impl WatchMetrics {
    /// The names are fixed strings; a failure here is a bug every test would catch.
    pub fn new() -> Self {
        let registry = Registry::new();
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .unwrap_or_else(|e| panic!("registering the process collector: {e}"));
        let counter = |name: &str, help: &str| {
            register(
                &registry,
                IntCounter::new(name, help).unwrap_or_else(|e| panic!("{name}: {e}")),
            )
        };
        let pushed = counter(
            "oranc_watch_store_pushed_paths_total",
            "Store paths pushed to the cache",
        );
        let pushed_bytes = counter(
            "oranc_watch_store_pushed_nar_bytes_total",
            "NAR bytes (uncompressed) of the paths pushed",
        );
        let failures = counter(
            "oranc_watch_store_push_failures_total",
            "Failed push attempts (each is retried while watch-store runs)",
        );
        let queued = register(
            &registry,
            IntGauge::new(
                "oranc_watch_store_queued_paths",
                "Paths waiting to be pushed or being pushed",
            )
            .unwrap_or_else(|e| panic!("queued: {e}")),
        );
        Self {
            registry,
            pushed,
            pushed_bytes,
            failures,
            queued,
        }
    }

    /// The Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(%error, "cannot encode metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}
