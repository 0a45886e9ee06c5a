//! Any method, path and Authorization header through the real router and layers, over a
//! local OCI-layout cache: no panic, and never a 500 (bad input is the client's error).
#![no_main]

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt as _;

struct Fixture {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
    _dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut config = oranc_config::Config::default();
        config.caches.insert(
            "local".into(),
            oranc_config::CacheConfig {
                registry: dir.path().join("registry").display().to_string(),
                repository: "fuzz/cache".into(),
                ..Default::default()
            },
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let state = runtime
            .block_on(async { oranc_server::AppState::new(config) })
            .expect("a state");
        Fixture {
            router: oranc_server::router(state),
            runtime,
            _dir: dir,
        }
    })
}

fuzz_target!(|input: (u8, &str, Option<&str>)| {
    let (method, target, authorization) = input;
    let method = match method % 5 {
        0 => Method::GET,
        1 => Method::HEAD,
        2 => Method::PUT,
        3 => Method::DELETE,
        _ => Method::OPTIONS,
    };
    let mut request = Request::builder().method(method).uri(target);
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    // What hyper would refuse before routing is not the router's input.
    let Ok(request) = request.body(Body::from("StoreDir: /nix/store\n")) else {
        return;
    };
    let fixture = fixture();
    let response = fixture
        .runtime
        .block_on(fixture.router.clone().oneshot(request))
        .expect("infallible");
    assert_ne!(
        response.status(),
        StatusCode::INTERNAL_SERVER_ERROR,
        "{target:?}"
    );
});
