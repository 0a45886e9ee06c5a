//! Faults a real registry will not produce on demand (see `oranc_tests::faults`): the
//! backend retries what may pass, honours Retry-After, gives up in bounded time with an
//! error that says "unavailable", and never hangs on a stalled body.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: helpers outside #[test] panic on purpose"
)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use oranc_backends::Credentials;
use oranc_core::{Error, RepositoryName, Sha256Hash, Tag};
use oranc_tests::faults::{
    FaultServer, ResettingPort, DOWN, FLAKY, REDIRECTED_BODY, REDIRECTING, STALLED, THROTTLED,
};
use oranc_tests::{open_backend, read_blob};

const MANIFEST: &[u8] = br#"{"schemaVersion":2,"layers":[]}"#;

fn fast_retries(tuning: &mut oranc_backends::registry::HttpTuning) {
    tuning.retry.base_delay = Duration::from_millis(10);
    tuning.retry.max_retries = 3;
}

fn repo(name: &str) -> RepositoryName {
    name.parse().unwrap()
}

fn any_tag() -> Tag {
    "nix-cache-info".parse().unwrap()
}

#[tokio::test]
async fn server_errors_that_pass_are_retried() {
    let faults = FaultServer::start(2, Bytes::from_static(MANIFEST)).await;
    let backend = open_backend(&faults.host(), Credentials::Anonymous, fast_retries);
    let manifest = backend
        .get_manifest(&repo(FLAKY), &any_tag())
        .await
        .unwrap();
    assert_eq!(manifest.unwrap().bytes, MANIFEST);
    assert_eq!(faults.requests().0, 3, "two 500s, then the answer");
}

#[tokio::test]
async fn too_many_requests_waits_for_retry_after() {
    let faults = FaultServer::start(0, Bytes::from_static(MANIFEST)).await;
    let backend = open_backend(&faults.host(), Credentials::Anonymous, fast_retries);
    let started = Instant::now();
    assert!(backend
        .get_manifest(&repo(THROTTLED), &any_tag())
        .await
        .unwrap()
        .is_some());
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was honoured"
    );
    assert_eq!(faults.requests().1, 2);
}

#[tokio::test]
async fn a_registry_that_stays_down_is_unavailable_after_bounded_retries() {
    let faults = FaultServer::start(0, Bytes::from_static(MANIFEST)).await;
    let backend = open_backend(&faults.host(), Credentials::Anonymous, fast_retries);
    let error = backend
        .get_manifest(&repo(DOWN), &any_tag())
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Unavailable { .. }), "{error}");
    assert!(error.to_string().contains("503"), "{error}");
    assert_eq!(faults.requests().2, 4, "one try and three retries");
}

#[tokio::test]
async fn connections_closed_before_an_answer_are_retried_then_unavailable() {
    let port = ResettingPort::start().await;
    let backend = open_backend(&port.addr.to_string(), Credentials::Anonymous, fast_retries);
    let error = backend.ping().await.unwrap_err();
    assert!(matches!(error, Error::Unavailable { .. }), "{error}");
    assert_eq!(port.connections(), 4, "one try and three retries");
}

#[tokio::test]
async fn a_stalled_blob_body_fails_after_the_read_timeout() {
    let faults = FaultServer::start(0, Bytes::from_static(MANIFEST)).await;
    let backend = open_backend(&faults.host(), Credentials::Anonymous, |t| {
        fast_retries(t);
        t.read_timeout = Duration::from_millis(500);
    });
    let started = Instant::now();
    let body = backend
        .get_blob(&repo(STALLED), &Sha256Hash::of(b"x"), None)
        .await
        .unwrap();
    let read = read_blob(body).await;
    assert!(read.is_err(), "a stalled body is an error, not a hang");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn blob_redirects_are_followed_without_our_authorization() {
    let faults = FaultServer::start(0, Bytes::from_static(MANIFEST)).await;
    let backend = open_backend(
        &faults.host(),
        Credentials::basic("user", "secret-password"),
        fast_retries,
    );
    let body = backend
        .get_blob(&repo(REDIRECTING), &Sha256Hash::of(b"x"), None)
        .await
        .unwrap();
    assert_eq!(read_blob(body).await.unwrap(), REDIRECTED_BODY);
    assert_eq!(
        faults.blob_store_saw_authorization(),
        vec![false],
        "the blob store got one request, without the registry's credentials"
    );
}
