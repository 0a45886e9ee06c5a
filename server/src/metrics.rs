//! The server's Prometheus metrics, in one registry rendered at `/metrics`. Names follow
//! Prometheus conventions (`oranc_..._total`, `_seconds`, `_bytes`). Labels never carry
//! credentials, keys or paths: only route kinds, methods, status codes and registry names.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tower_http::metrics::in_flight_requests::InFlightRequestsCounter;

use prometheus::{
    Encoder as _, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// The response cache's counters, which it bumps and `/metrics` reads. Kept here so the
/// metrics never depend on a layer (layers depend on metrics).
#[derive(Debug, Default)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    /// Misses answered by another request's registry lookup.
    pub coalesced: AtomicU64,
    pub evictions: AtomicU64,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The metrics, shared: a clone is one reference count, not one per metric family (layers
/// are cloned for every request, and cloning twenty families each time cost 4% of the warm
/// narinfo throughput).
#[derive(Debug, Clone)]
pub struct Metrics(Arc<Families>);

impl std::ops::Deref for Metrics {
    type Target = Families;

    fn deref(&self) -> &Families {
        &self.0
    }
}

#[derive(Debug)]
pub struct Families {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    /// `oranc_http_requests_in_flight`, read at each scrape from [`Self::in_flight_requests`].
    in_flight: IntGauge,
    /// Requests until their response body ends or is dropped (a NAR counts while it
    /// streams), kept by tower-http's in-flight layer (router.rs).
    pub in_flight_requests: InFlightRequestsCounter,
    pub response_bytes: IntCounterVec,
    pub request_bytes: IntCounterVec,
    pub registry_requests: IntCounterVec,
    pub registry_errors: IntCounterVec,
    pub registry_duration: HistogramVec,
    pub registry_slowdowns: IntCounterVec,
    pub rate_limited: IntCounter,
    /// Connections closed at accept: their client already held its share.
    pub connections_refused: IntCounter,
    /// Connections closed to make room for a client holding fewer, the server being full.
    pub connections_evicted: IntCounter,
    /// Requests answered 429 at once: their client had `clients.max_requests_per_client`
    /// open.
    pub requests_over_client_cap: IntCounter,
    /// Connections served, by protocol (`http/1.1`, `h2c`, `https/1.1`, `h2`), once its
    /// handshake is done.
    pub connections_served: IntCounterVec,
    /// Writer password checks, by outcome (`valid`, `invalid`, `busy`, `limited`).
    pub password_checks: IntCounterVec,
    /// Blobs whose bytes did not match their digest (answers cut short, nothing cached).
    pub digest_mismatches: IntCounter,
    /// Mirror caches' lookups upstream, by cache, file kind and outcome (`hit`, `miss`,
    /// `refused`: not signed by an upstream key, `error`).
    pub mirror_lookups: IntCounterVec,
    /// Bytes mirror caches fetched from upstream and stored in the registry, by cache.
    pub mirror_fetched_bytes: IntCounterVec,
    pub mirror_stored_bytes: IntCounterVec,
    /// Requests for a NAR another request was already fetching, by cache.
    pub mirror_coalesced: IntCounterVec,
    cache_hits: IntCounter,
    cache_misses: IntCounter,
    cache_coalesced: IntCounter,
    cache_evictions: IntCounter,
    cache_stats: Option<Arc<CacheStats>>,
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    registry
        .register(Box::new(metric.clone()))
        .unwrap_or_else(|e| panic!("registering {name}: {e}"));
    metric
}

/// A registry that already exports the process's own `process_*` metrics (resident
/// memory, CPU seconds, open and max file descriptors): the server's and watch-store's.
pub fn process_registry() -> Registry {
    let registry = Registry::new();
    registry
        .register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .unwrap_or_else(|e| panic!("registering the process collector: {e}"));
    registry
}

/// A counter registered in `registry`. The names are fixed strings: a failure is a bug
/// every test would catch.
pub fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let metric = IntCounter::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    registry
        .register(Box::new(metric.clone()))
        .unwrap_or_else(|e| panic!("registering {name}: {e}"));
    metric
}

/// A gauge registered in `registry`.
pub fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let metric = IntGauge::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    registry
        .register(Box::new(metric.clone()))
        .unwrap_or_else(|e| panic!("registering {name}: {e}"));
    metric
}

/// `registry` in the Prometheus text format.
pub fn encode(registry: &Registry) -> String {
    let mut out = Vec::new();
    if let Err(error) = TextEncoder::new().encode(&registry.gather(), &mut out) {
        tracing::warn!(%error, "cannot encode metrics");
    }
    String::from_utf8(out).unwrap_or_default()
}

fn histogram_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let metric = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
        labels,
    )
    .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    registry
        .register(Box::new(metric.clone()))
        .unwrap_or_else(|e| panic!("registering {name}: {e}"));
    metric
}

impl Metrics {
    /// The metric names are fixed strings; a failure here is a bug caught by every test.
    pub fn new(cache_stats: Option<Arc<CacheStats>>) -> Self {
        let registry = process_registry();
        let in_flight = gauge(
            &registry,
            "oranc_http_requests_in_flight",
            "HTTP requests being served",
        );
        Self(Arc::new(Families {
            requests: counter_vec(
                &registry,
                "oranc_http_requests_total",
                "HTTP requests answered, by cache (a named cache, `url` for URL-addressed ones, `-` for the server's own endpoints), route kind, method and status",
                &["cache", "route", "method", "status"],
            ),
            request_duration: histogram_vec(
                &registry,
                "oranc_http_request_duration_seconds",
                "Time to the response head, by route kind",
                &["route"],
            ),
            response_bytes: counter_vec(
                &registry,
                "oranc_http_response_bytes_total",
                "Bytes served (by Content-Length), by route kind",
                &["route"],
            ),
            request_bytes: counter_vec(
                &registry,
                "oranc_http_request_bytes_total",
                "Bytes uploaded (by Content-Length), by route kind",
                &["route"],
            ),
            registry_requests: counter_vec(
                &registry,
                "oranc_registry_requests_total",
                "Registry operations, by registry and operation",
                &["registry", "operation"],
            ),
            registry_errors: counter_vec(
                &registry,
                "oranc_registry_errors_total",
                "Failed registry operations, by registry, operation and kind",
                &["registry", "operation", "kind"],
            ),
            registry_duration: histogram_vec(
                &registry,
                "oranc_registry_request_duration_seconds",
                "Registry operation latency, by registry and operation",
                &["registry", "operation"],
            ),
            registry_slowdowns: counter_vec(
                &registry,
                "oranc_registry_slowdowns_total",
                "Answers from a registry asking to slow down (429); every request to it then waits out its Retry-After",
                &["registry"],
            ),
            rate_limited: counter(
                &registry,
                "oranc_http_rate_limited_total",
                "Requests refused with 429 by the rate limiter",
            ),
            connections_refused: counter(
                &registry,
                "oranc_http_connections_refused_total",
                "Connections closed at once: their client held clients.max_connections_per_client, or the server held clients.max_connections and their client held as many as any other",
            ),
            connections_evicted: counter(
                &registry,
                "oranc_http_connections_evicted_total",
                "Connections closed to make room for a client holding fewer, while the server held clients.max_connections (the heaviest address's longest-idle connection goes first)",
            ),
            requests_over_client_cap: counter(
                &registry,
                "oranc_http_requests_over_client_cap_total",
                "Requests answered 429 at once because their client had clients.max_requests_per_client requests open (HTTP/2 carries many on one connection)",
            ),
            connections_served: counter_vec(
                &registry,
                "oranc_http_connections_served_total",
                "Connections served, by the protocol agreed: http/1.1 and h2c (HTTP/2 with prior knowledge) on plain listeners, https/1.1 and h2 over TLS (by ALPN)",
                &["protocol"],
            ),
            password_checks: counter_vec(
                &registry,
                "oranc_password_checks_total",
                "Writer password checks, by outcome: valid, invalid, busy (no check could start in time), limited (the client's checks per minute were spent)",
                &["outcome"],
            ),
            mirror_lookups: counter_vec(
                &registry,
                "oranc_mirror_upstream_lookups_total",
                "Files a mirror cache asked its upstreams for, by cache, kind and outcome (hit, miss, refused, error, unreachable; unstored: a NAR streamed to its client alone while the mirror's copies were all busy; over_allowance: one streamed to its client alone because its address had used its hourly allowance of bytes to store)",
                &["cache", "kind", "outcome"],
            ),
            mirror_fetched_bytes: counter_vec(
                &registry,
                "oranc_mirror_fetched_bytes_total",
                "NAR bytes mirror caches fetched from upstream",
                &["cache"],
            ),
            mirror_stored_bytes: counter_vec(
                &registry,
                "oranc_mirror_stored_bytes_total",
                "NAR bytes mirror caches stored in the registry (checked against the narinfo)",
                &["cache"],
            ),
            mirror_coalesced: counter_vec(
                &registry,
                "oranc_mirror_coalesced_total",
                "Requests for a NAR that another request was already fetching from upstream",
                &["cache"],
            ),
            digest_mismatches: counter(
                &registry,
                "oranc_blob_digest_mismatches_total",
                "Blobs from a registry whose bytes did not match their digest; the answer was cut short",
            ),
            cache_hits: counter(
                &registry,
                "oranc_response_cache_hits_total",
                "Answers served from the response cache",
            ),
            cache_misses: counter(
                &registry,
                "oranc_response_cache_misses_total",
                "Cacheable requests not found in the response cache",
            ),
            cache_coalesced: counter(
                &registry,
                "oranc_response_cache_coalesced_total",
                "Misses answered by another request's registry lookup",
            ),
            cache_evictions: counter(
                &registry,
                "oranc_response_cache_evictions_total",
                "Entries evicted to stay within the size bound",
            ),
            in_flight,
            in_flight_requests: InFlightRequestsCounter::new(),
            cache_stats,
            registry,
        }))
    }

    /// Brings a counter up to a value kept elsewhere (counters only go up).
    fn sync(counter: &IntCounter, value: u64) {
        let current = counter.get();
        if value > current {
            counter.inc_by(value - current);
        }
    }

    /// The Prometheus text format.
    pub fn render(&self) -> String {
        self.in_flight
            .set(i64::try_from(self.in_flight_requests.get()).unwrap_or(i64::MAX));
        if let Some(stats) = &self.cache_stats {
            Self::sync(&self.cache_hits, stats.hits.load(Ordering::Relaxed));
            Self::sync(&self.cache_misses, stats.misses.load(Ordering::Relaxed));
            Self::sync(
                &self.cache_coalesced,
                stats.coalesced.load(Ordering::Relaxed),
            );
            Self::sync(
                &self.cache_evictions,
                stats.evictions.load(Ordering::Relaxed),
            );
        }
        encode(&self.registry)
    }
}

/// A registry's name as metrics and unauthenticated answers show it: a local layout's
/// directory is nobody's business outside the host, so all of them are `oci-layout`.
pub fn registry_label(name: &str) -> &str {
    if oranc_core::is_directory_location(name) {
        "oci-layout"
    } else {
        name
    }
}

/// An HTTP method as a label: one of a closed set, whatever a client sends.
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
