//! `/healthz` (the process answers) and `/readyz` (every configured registry answers).

use axum::extract::State;
use axum::http::StatusCode;

use crate::state::AppState;

pub async fn healthz() -> &'static str {
    "ok\n"
}

/// How long a readiness verdict is reused: probes from load balancers (or anyone) must not
/// turn into a registry request each.
const VERDICT_TTL: std::time::Duration = std::time::Duration::from_secs(5);

/// The last readiness verdict and when it was reached; the lock also makes concurrent
/// checks wait for one round of pings.
pub type ReadinessVerdict = tokio::sync::Mutex<Option<(std::time::Instant, StatusCode, String)>>;

/// 200 when every registry of the config answers its ping and every named cache can be
/// read with its own credentials, else 503 naming the ones that cannot (by name only,
/// never with credentials). Reused for a few seconds.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, String) {
    let mut verdict = state.readiness().lock().await;
    if let Some((at, status, text)) = verdict.as_ref() {
        if at.elapsed() < VERDICT_TTL {
            return (*status, text.clone());
        }
    }
    let (status, text) = check_registries(&state).await;
    *verdict = Some((std::time::Instant::now(), status, text.clone()));
    (status, text)
}

async fn check_registries(state: &AppState) -> (StatusCode, String) {
    let checks = state.registries_to_check();
    let results = futures::future::join_all(checks.iter().map(|(name, registry)| async move {
        let label = crate::metrics::registry_label(name).to_owned();
        // The error may name the directory too; say only that it failed.
        let outcome = registry.ping().await.map_err(|e| {
            if label == name.as_str() {
                e.to_string()
            } else {
                tracing::warn!(error = %e, "readiness: a local layout is not readable");
                "not readable (see the server log)".to_owned()
            }
        });
        (label, outcome)
    }))
    .await;
    let caches = state.probe_caches().await;
    let failing: Vec<String> = results
        .into_iter()
        .filter_map(|(name, result)| result.err().map(|e| format!("{name}: {e}")))
        .chain(caches.into_iter().filter_map(|(name, result)| {
            result
                .err()
                .map(|e| format!("cache {name}, with its own credentials: {e}"))
        }))
        .collect();
    if failing.is_empty() {
        (StatusCode::OK, "ready\n".into())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready:\n{}\n", failing.join("\n")),
        )
    }
}
