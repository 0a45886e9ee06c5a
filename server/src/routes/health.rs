//! `/healthz`: the process answers. (Readiness against registries comes with the layer stack.)

pub async fn healthz() -> &'static str {
    "ok\n"
}
