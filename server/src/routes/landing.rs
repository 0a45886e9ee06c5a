//! The landing page (`GET /`) and one cache's settings (`GET /NAME`): what a person who
//! opens the server's address needs to use it, as attic, cachix and harmonia give. Every
//! named cache with its substituter URL, its public keys (which one is the cache's own),
//! the `nix.conf` lines to copy, its priority, whether it mirrors and what, and who may
//! write. HTML for browsers (no script; a CSP that allows only its own inline style),
//! plain text for anyone else (`curl`), JSON for tools asking `/NAME` for it.
//!
//! Nothing secret appears: no credentials, no registry or repository unless the config
//! says `show_registry = true`. The `Host` a client sends is shown only if it looks like a
//! host, and escaped like everything else; the answers are never stored by any cache.
//! What the registry says (`nix-cache-info`) is read once a minute per cache at most.

use std::fmt::Write as _;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use oranc_core::{CacheKey, NixCacheInfo};
use serde::Serialize;

use crate::state::{AppState, NamedCache};

/// How long a cache's `nix-cache-info` is remembered for the page.
pub const CACHE_INFO_TTL: Duration = Duration::from_secs(60);
/// How long the page waits for a registry's `nix-cache-info`.
const CACHE_INFO_WAIT: Duration = Duration::from_secs(2);
/// Largest `nix-cache-info` read for the page.
const CACHE_INFO_LIMIT: u64 = 64 << 10;

/// The page's only style, allowed by its hash in the CSP (no `unsafe-inline`).
const STYLE: &str = "body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em;line-height:1.4}pre{background:#f4f4f4;padding:.6em;overflow-x:auto}dt{font-weight:bold}code{word-break:break-all}";

/// A cache's `nix-cache-info` as the page shows it, remembered per cache.
pub type CacheInfoMemory = moka::future::Cache<String, Option<NixCacheInfo>>;

/// One named cache, as the page and `/NAME` show it.
#[derive(Debug, Serialize)]
struct CacheSummary {
    name: String,
    url: String,
    /// Every key a client should trust for it, the cache's own first.
    public_keys: Vec<String>,
    #[serde(skip)]
    keys_explained: Vec<(String, &'static str)>,
    /// `None` when the registry did not answer in time.
    priority: Option<u32>,
    want_mass_query: Option<bool>,
    upstreams: Vec<String>,
    writes: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    registry: Option<String>,
}

/// `GET /`: every named cache.
pub async fn index(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let base = base_url(&state, &headers);
    let mut names: Vec<&String> = state.config().caches.keys().collect();
    names.sort();
    let summaries =
        futures::future::join_all(names.into_iter().map(|name| summary(&state, name, &base)))
            .await
            .into_iter()
            .flatten()
            .collect::<Vec<_>>();
    if wants(&headers, "text/html") {
        html(&summaries)
    } else {
        text(&summaries)
    }
}

/// `GET /NAME`: a named cache's settings (JSON when asked for it); `None` when `name`
/// names no cache.
pub async fn one_cache(state: &AppState, name: &str, headers: &HeaderMap) -> Option<Response> {
    let summary = summary(state, name, &base_url(state, headers)).await?;
    Some(if wants(headers, "application/json") {
        let mut response = axum::Json(&summary).into_response();
        not_stored(&mut response);
        response
    } else if wants(headers, "text/html") {
        html(std::slice::from_ref(&summary))
    } else {
        text(std::slice::from_ref(&summary))
    })
}

fn wants(headers: &HeaderMap, media: &str) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.contains(media))
}

/// `public_url`, or `http://` and the request's `Host` when it looks like one.
fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(url) = &state.config().public_url {
        return url.trim_end_matches('/').to_owned();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .filter(|host| {
            !host.is_empty()
                && host.len() <= 255
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        })
        .unwrap_or("HOST");
    format!("http://{host}")
}

async fn summary(state: &AppState, name: &str, base: &str) -> Option<CacheSummary> {
    let config = state.config().caches.get(name)?;
    let named = state.named_cache(name)?;
    let mut keys_explained = Vec::new();
    if let Some(key) = &named.signing_key {
        keys_explained.push((
            key.to_public().to_string(),
            "this cache's own: it signs what writers upload",
        ));
    }
    for key in &config.trusted_public_keys {
        keys_explained.push((
            key.to_string(),
            "trusted: every narinfo uploaded here is signed by one of these",
        ));
    }
    for key in &config.upstream_public_keys {
        keys_explained.push((
            key.to_string(),
            "upstream's: what the mirror serves is signed by one of these",
        ));
    }
    keys_explained.dedup_by(|a, b| a.0 == b.0);
    let info = cache_info(state, name, named).await;
    Some(CacheSummary {
        name: name.to_owned(),
        url: format!("{base}/{name}"),
        public_keys: keys_explained.iter().map(|(key, _)| key.clone()).collect(),
        keys_explained,
        priority: info.as_ref().and_then(|info| info.priority),
        want_mass_query: info.as_ref().map(|info| info.want_mass_query),
        upstreams: config.upstreams.clone(),
        writes: oranc_config::who_writes(config),
        registry: state
            .config()
            .show_registry
            .then(|| format!("{}/{}", config.registry, config.repository)),
    })
}

/// The cache's `nix-cache-info` (oranc's defaults where none is stored, as reads answer),
/// remembered a minute; `None` when the registry does not answer in time.
async fn cache_info(state: &AppState, name: &str, named: &NamedCache) -> Option<NixCacheInfo> {
    let read = async {
        let cache = state.named_cache_reader(name, named);
        let stored = tokio::time::timeout(CACHE_INFO_WAIT, async {
            match cache.get(&CacheKey::cache_info()).await.ok()? {
                None => Some(NixCacheInfo::default()),
                Some(object) => {
                    let bytes = cache
                        .read_small(&object.blob, CACHE_INFO_LIMIT)
                        .await
                        .ok()?;
                    std::str::from_utf8(&bytes).ok()?.parse().ok()
                }
            }
        })
        .await;
        stored.ok().flatten()
    };
    state
        .landing_cache_info()
        .get_with(name.to_owned(), read)
        .await
}

fn not_stored(response: &mut Response) {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
        .headers_mut()
        .insert(header::VARY, HeaderValue::from_static("accept, host"));
}

fn nix_conf(summary: &CacheSummary) -> String {
    let mut lines = format!("extra-substituters = {}\n", summary.url);
    if !summary.public_keys.is_empty() {
        let _ = writeln!(
            lines,
            "extra-trusted-public-keys = {}",
            summary.public_keys.join(" ")
        );
    }
    lines
}

fn described(summary: &CacheSummary) -> Vec<(&'static str, String)> {
    let mut facts = vec![("substituter", summary.url.clone())];
    let shown =
        |value: Option<String>| value.unwrap_or_else(|| "(the registry did not answer)".into());
    facts.push(("priority", shown(summary.priority.map(|p| p.to_string()))));
    facts.push((
        "want mass query",
        shown(
            summary
                .want_mass_query
                .map(|w| if w { "yes" } else { "no" }.to_owned()),
        ),
    ));
    if !summary.upstreams.is_empty() {
        facts.push(("mirror of", summary.upstreams.join(", ")));
    }
    facts.push(("writes", summary.writes.clone()));
    if let Some(registry) = &summary.registry {
        facts.push(("registry", registry.clone()));
    }
    facts
}

fn text(summaries: &[CacheSummary]) -> Response {
    let mut page = String::from("oranc: Nix binary caches kept in an OCI registry.\n");
    if summaries.is_empty() {
        page.push_str("\nNo named caches are configured ([caches.NAME] in the config).\n");
    }
    for summary in summaries {
        let _ = writeln!(page, "\n{}", summary.name);
        for (label, value) in described(summary) {
            let _ = writeln!(page, "  {label:<16}{value}");
        }
        for (key, role) in &summary.keys_explained {
            let _ = writeln!(page, "  {:<16}{key}  ({role})", "public key");
        }
        page.push_str("  nix.conf:\n");
        for line in nix_conf(summary).lines() {
            let _ = writeln!(page, "    {line}");
        }
    }
    let mut response = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        page,
    )
        .into_response();
    not_stored(&mut response);
    response
}

fn html(summaries: &[CacheSummary]) -> Response {
    let mut page = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>oranc</title><style>{STYLE}</style></head><body>\n<h1>oranc</h1>\n<p>Nix binary caches kept in an OCI registry. Add a cache's <code>nix.conf</code> lines to use it.</p>\n"
    );
    if summaries.is_empty() {
        page.push_str(
            "<p>No named caches are configured (<code>[caches.NAME]</code> in the config).</p>\n",
        );
    }
    for summary in summaries {
        let _ = writeln!(page, "<section><h2>{}</h2><dl>", escape(&summary.name));
        for (label, value) in described(summary) {
            let _ = writeln!(
                page,
                "<dt>{label}</dt><dd><code>{}</code></dd>",
                escape(&value)
            );
        }
        for (key, role) in &summary.keys_explained {
            let _ = writeln!(
                page,
                "<dt>public key</dt><dd><code>{}</code> ({})</dd>",
                escape(key),
                escape(role)
            );
        }
        let _ = writeln!(
            page,
            "</dl><p>nix.conf:</p><pre>{}</pre></section>",
            escape(&nix_conf(summary))
        );
    }
    page.push_str("</body></html>\n");
    let mut response = (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CONTENT_SECURITY_POLICY, content_security_policy()),
        ],
        page,
    )
        .into_response();
    not_stored(&mut response);
    response
}

/// Nothing but the page's own style: no script, image, frame, form or base of any kind.
fn content_security_policy() -> HeaderValue {
    use base64::Engine as _;
    use sha2::Digest as _;
    let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(STYLE));
    HeaderValue::from_str(&format!(
        "default-src 'none'; style-src 'sha256-{hash}'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"))
}

/// Text as HTML shows it literally. Five replacements: a template engine would be a
/// dependency for one page.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}
