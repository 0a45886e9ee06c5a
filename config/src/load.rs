//! Reading and validating a config file. Validation happens once, at start, and says which
//! field is wrong and why, so the server never starts half-configured.

use std::path::Path;

use oranc_core::RepositoryName;

use crate::error::ConfigError;
use crate::model::Config;

pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse(&text, &path.display().to_string())
}

/// Parses and validates `text`; `path` names it in errors.
pub fn parse(text: &str, path: &str) -> Result<Config, ConfigError> {
    let config: Config = toml::from_str(text).map_err(|e| ConfigError::Syntax {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    validate(&config, path)?;
    Ok(config)
}

/// The backends never send smaller chunks (oranc-backends cannot be a dependency here).
const MIN_CHUNK_SIZE: usize = 64 << 10;

/// Checks a configuration however it was made (file, defaults, flags); `path` names its
/// origin in errors.
pub fn validate(config: &Config, path: &str) -> Result<(), ConfigError> {
    let invalid = |field: String, reason: String| ConfigError::Invalid {
        path: path.to_owned(),
        field,
        reason,
    };
    if let Some(url) = &config.public_url {
        let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
        let plain = url
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '?' | '#' | '"' | '<' | '>' | '\\'));
        if !scheme_ok || !plain || url.split("://").nth(1).is_none_or(str::is_empty) {
            return Err(invalid(
                "public_url".into(),
                "must be an http:// or https:// URL with no query, fragment or spaces, e.g. https://cache.example.com".into(),
            ));
        }
    }
    if !(1..=8).contains(&config.repository_parts) {
        return Err(invalid(
            "repository_parts".into(),
            "must be between 1 and 8".into(),
        ));
    }
    for (name, registry) in &config.registries {
        for (field, urls) in [
            ("token_realms", &registry.token_realms),
            ("blob_origins", &registry.blob_origins),
        ] {
            if let Some(url) = urls
                .iter()
                .find(|url| !(url.starts_with("http://") || url.starts_with("https://")))
            {
                return Err(invalid(
                    format!("registries.{name:?}.{field}"),
                    format!("{url:?} is not an http(s) URL"),
                ));
            }
        }
        if registry
            .chunk_size
            .is_some_and(|size| size < MIN_CHUNK_SIZE)
        {
            return Err(invalid(
                format!("registries.{name:?}.chunk_size"),
                format!("must be at least {MIN_CHUNK_SIZE} bytes (64 KiB)"),
            ));
        }
        if registry.max_in_flight == Some(0) {
            return Err(invalid(
                format!("registries.{name:?}.max_in_flight"),
                "must be at least 1".into(),
            ));
        }
    }
    for (name, cache) in &config.caches {
        let field = |f: &str| format!("caches.{name}.{f}");
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(invalid(
                format!("caches.{name:?}"),
                "a cache name is letters, digits, - _ .".into(),
            ));
        }
        if cache.registry.is_empty() {
            return Err(invalid(field("registry"), "is required".into()));
        }
        if !oranc_core::is_directory_location(&cache.registry)
            && !config.registries.contains_key(&cache.registry)
        {
            return Err(invalid(
                field("registry"),
                format!("{:?} is not listed under [registries]", cache.registry),
            ));
        }
        cache
            .repository
            .parse::<RepositoryName>()
            .map_err(|e| invalid(field("repository"), e.to_string()))?;
        if cache.password_env.is_some() && cache.password_file.is_some() {
            return Err(invalid(
                field("password_env"),
                "give password_env or password_file, not both".into(),
            ));
        }
        if (cache.password_env.is_some() || cache.password_file.is_some())
            && cache.username.is_none()
        {
            return Err(invalid(
                field("username"),
                "is required with a password".into(),
            ));
        }
        for (index, oidc) in cache.oidc.iter().enumerate() {
            check_oidc(oidc).map_err(|reason| invalid(field(&format!("oidc[{index}]")), reason))?;
        }
        if cache.allow_write && !cache.oidc.is_empty() {
            return Err(invalid(
                field("allow_write"),
                "lets anyone write, while oidc allows only the tokens it names: choose one".into(),
            ));
        }
        if cache.allow_write && cache.writers_file.is_some() {
            return Err(invalid(
                field("allow_write"),
                "lets anyone write, while writers_file allows only its users: choose one".into(),
            ));
        }
        if cache.allow_write
            && config.caches.iter().any(|(other, mirror)| {
                other != name
                    && !mirror.upstreams.is_empty()
                    && mirror.registry == cache.registry
                    && mirror.repository == cache.repository
            })
        {
            return Err(invalid(
                field("allow_write"),
                "lets anyone write into the repository of a mirror cache, whose file names are predictable. Use writers_file".into(),
            ));
        }
        if cache.allow_write && !cache.upstreams.is_empty() {
            return Err(invalid(
                field("allow_write"),
                "lets anyone write into a mirror, whose file names are predictable: an anonymous upload could take a NAR's name before the mirror stores it. Use writers_file for writers next to upstreams".into(),
            ));
        }
        if !cache.upstreams.is_empty() && cache.upstream_public_keys.is_empty() {
            return Err(invalid(
                field("upstream_public_keys"),
                "is required with upstreams: only narinfos signed by these keys are mirrored"
                    .into(),
            ));
        }
        if let Some(url) = cache.upstreams.iter().find(|url| {
            !(url.starts_with("https://")
                || url.starts_with("http://")
                || url.starts_with("file:///"))
        }) {
            return Err(invalid(
                field("upstreams"),
                format!("{url:?} is not an http://, https:// or file:/// binary cache"),
            ));
        }
        if cache.signing_key_file.is_some()
            && cache.writers_file.is_none()
            && cache.oidc.is_empty()
            && cache.upstreams.is_empty()
        {
            return Err(invalid(
                field("signing_key_file"),
                "signs what writers upload (and what a mirror stores), so it needs writers_file, oidc or upstreams (the server never signs for anonymous clients)".into(),
            ));
        }
    }
    if config.response_timeout_secs == 0 {
        return Err(invalid(
            "response_timeout_secs".into(),
            "must be at least 1".into(),
        ));
    }
    for (field, value) in [
        (
            "clients.header_read_timeout_secs",
            config.clients.header_read_timeout_secs,
        ),
        (
            "clients.body_stall_timeout_secs",
            config.clients.body_stall_timeout_secs,
        ),
        (
            "clients.max_connections",
            config.clients.max_connections as u64,
        ),
        (
            "clients.max_streams_per_connection",
            u64::from(config.clients.max_streams_per_connection),
        ),
        (
            "clients.max_requests_per_client",
            config.clients.max_requests_per_client as u64,
        ),
        ("max_decoded_body_bytes", config.max_decoded_body_bytes),
        (
            "clients.max_connections_per_client",
            config.clients.max_connections_per_client as u64,
        ),
        (
            "password_checks.concurrent",
            config.password_checks.concurrent as u64,
        ),
        (
            "password_checks.per_client_per_minute",
            u64::from(config.password_checks.per_client_per_minute),
        ),
        (
            "rate_limit.max_clients",
            config.rate_limit.max_clients as u64,
        ),
    ] {
        if value == 0 {
            return Err(invalid(field.into(), "must be at least 1".into()));
        }
    }
    if !(1 << 20..=u64::from(u32::MAX) << 10)
        .contains(&config.mirror.store_bytes_per_client_per_hour)
    {
        return Err(invalid(
            "mirror.store_bytes_per_client_per_hour".into(),
            "must be from 1 MiB (1048576) to 4 TiB (4398046510080)".into(),
        ));
    }
    if config.rate_limit.requests_per_second > 0 && config.rate_limit.burst == 0 {
        return Err(invalid(
            "rate_limit.burst".into(),
            "must be at least 1 when the limit is on".into(),
        ));
    }
    regex::Regex::new(&config.upstream.ignore)
        .map_err(|e| invalid("upstream.ignore".into(), e.to_string()))?;
    for url in &config.upstream.urls {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(invalid(
                "upstream.urls".into(),
                format!("{url:?} is not an http(s) URL"),
            ));
        }
    }
    Ok(())
}

/// An OIDC issuer of writers: an https issuer (http only on loopback, for tests), an
/// audience, and at least one claim, each a valid glob.
fn check_oidc(oidc: &crate::model::OidcIssuerConfig) -> Result<(), String> {
    let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
        .iter()
        .any(|prefix| {
            oidc.issuer
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with([':', '/']))
        });
    if !(oidc.issuer.starts_with("https://") || loopback) {
        return Err(format!(
            "issuer {:?} must be an https:// URL (http:// only on loopback)",
            oidc.issuer
        ));
    }
    if oidc.audience.is_empty() {
        return Err("audience is required: tokens for other services must not write here".into());
    }
    if oidc.claims.is_empty() {
        return Err("needs at least one claim (e.g. repository = \"org/*\"): the issuer gives tokens to all of its users".into());
    }
    for (claim, pattern) in &oidc.claims {
        if pattern.globs().is_empty() {
            return Err(format!("claims.{claim}: an empty list matches nothing"));
        }
        for glob in pattern.globs() {
            glob::Pattern::new(glob).map_err(|e| format!("claims.{claim}: {glob:?}: {e}"))?;
        }
    }
    Ok(())
}

/// Who may write where, one sentence per named cache and listed registry, for `oranc config
/// check` and the server's start-up log (docs/security.md has the rules).
pub fn write_positions(config: &Config) -> Vec<String> {
    let forwarded = |registry: &str| {
        if oranc_core::is_directory_location(registry) {
            "a local directory: credentials a client sends grant nothing".to_owned()
        } else if config
            .registries
            .get(registry)
            .is_some_and(|r| r.trust_client_credentials)
        {
            format!("on {registry} with trust_client_credentials: any credentials a client sends are forwarded and may write")
        } else {
            format!("on {registry}: credentials a client sends are forwarded and may write only if {registry} checks them (asked at start)")
        }
    };
    let mut positions = Vec::new();
    for (name, cache) in &config.caches {
        // Reads of a named cache always use its own credentials (none forwarded).
        let who = who_writes(cache);
        // Only caches without writers of their own and without upstreams forward.
        let forwards =
            cache.writers_file.is_none() && cache.oidc.is_empty() && cache.upstreams.is_empty();
        let position = if forwards {
            format!("{who}; {}", forwarded(&cache.registry))
        } else {
            who
        };
        positions.push(format!("/{name}: {position}"));
    }
    for name in config.registries.keys() {
        positions.push(format!("/{name}/…: {}", forwarded(name)));
    }
    if config.allow_any_registry {
        positions.push("any other registry a URL names (allow_any_registry): credentials are forwarded and may write only if that registry checks them".to_owned());
    }
    positions
}

/// Who may write to a named cache through the server, in a sentence that names no registry
/// (the landing page shows it; `write_positions` adds what forwarded credentials do).
pub fn who_writes(cache: &crate::CacheConfig) -> String {
    if cache.writers_file.is_some() || !cache.oidc.is_empty() {
        let who = match (cache.writers_file.is_some(), cache.oidc.len()) {
            (true, 0) => "the users in writers_file".to_owned(),
            (false, n) => format!("bearers of a token of its {n} oidc issuer(s)"),
            (true, n) => format!(
                "the users in writers_file and bearers of a token of its {n} oidc issuer(s)"
            ),
        };
        format!("{who} may add and replace; other credentials are refused (401), never forwarded")
    } else if !cache.upstreams.is_empty() {
        "a mirror: it stores what it fetches from upstream; credentials a client sends grant nothing (403)".to_owned()
    } else if cache.allow_write {
        "anyone may add files (allow_write), never replace one".to_owned()
    } else {
        "anonymous clients read only".to_owned()
    }
}

/// Combinations that are allowed but that an operator should know about, one sentence each
/// (`oranc config check` prints them; the server logs them at start).
pub fn warnings(config: &Config) -> Vec<String> {
    let mut warnings = Vec::new();
    if config.allow_any_registry {
        warnings.push(
            "allow_any_registry: the server talks to any registry a URL names (an open proxy, as the original oranc); list [registries] instead where you can".to_owned(),
        );
    }
    for (name, cache) in &config.caches {
        if cache.allow_write && cache.trusted_public_keys.is_empty() {
            warnings.push(format!(
                "caches.{name}: allow_write without trusted_public_keys: anyone who reaches the server can add paths (never replace one; Nix still checks signatures). Set trusted_public_keys, or writers_file for authenticated writers"
            ));
        }
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_the_defaults() {
        assert_eq!(parse("", "x.toml").unwrap(), Config::default());
    }

    #[test]
    fn the_example_config_parses_and_validates() {
        let text = include_str!("../../oranc.example.toml");
        let config = parse(text, "oranc.example.toml").unwrap();
        assert!(config.caches.contains_key("main"));
        assert!(!config.allow_any_registry);
    }

    #[test]
    fn the_response_cache_is_read_under_its_old_name_too() {
        for table in ["response_cache", "cache"] {
            let config = parse(&format!("[{table}]\nttl_secs = 7"), "x.toml").unwrap();
            assert_eq!(config.response_cache.ttl_secs, 7, "[{table}]");
        }
    }

    #[test]
    fn errors_name_the_field() {
        for (text, needle) in [
            ("listen = 5", "listen"),
            ("unknown_field = 1", "unknown field"),
            ("repository_parts = 0", "repository_parts"),
            ("tag_encoding = \"rot13\"", "tag_encoding"),
            ("[registries.\"x\"]\nkind = \"s3\"", "kind"),
            ("[caches.main]\nregistry = \"ghcr.io\"\nrepository = \"a/b\"", "not listed under [registries]"),
            ("[registries.\"ghcr.io\"]\n[caches.main]\nregistry = \"ghcr.io\"\nrepository = \"A/B\"", "caches.main.repository"),
            ("[registries.\"ghcr.io\"]\n[caches.main]\nregistry = \"ghcr.io\"\nrepository = \"a/b\"\npassword_env = \"X\"", "username"),
            ("[upstream]\nurls = [\"ftp://x\"]", "upstream.urls"),
            ("[caches.c]\nregistry = \"/d\"\nrepository = \"a/b\"\nallow_write = true\nwriters_file = \"/w\"", "caches.c.allow_write"),
            ("[caches.c]\nregistry = \"/d\"\nrepository = \"a/b\"\nsigning_key_file = \"/k\"", "caches.c.signing_key_file"),
            ("[caches.c]\nregistry = \"/d\"\nrepository = \"a/b\"\nallow_write = true\nupstreams = [\"https://cache.nixos.org\"]\nupstream_public_keys = [\"cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=\"]", "predictable"),
            ("[caches.m]\nregistry = \"/d\"\nrepository = \"a/b\"\nupstreams = [\"https://cache.nixos.org\"]\nupstream_public_keys = [\"cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=\"]\n[caches.w]\nregistry = \"/d\"\nrepository = \"a/b\"\nallow_write = true", "caches.w.allow_write"),
            ("[caches.c]\nregistry = \"/d\"\nrepository = \"a/b\"\ntrusted_public_keys = [\"nope\"]", "trusted_public_keys"),
        ] {
            let err = parse(text, "bad.toml").unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
            assert!(err.contains("bad.toml"), "{err}");
        }
    }

    #[test]
    fn an_oidc_issuer_must_be_https_with_an_audience_and_a_claim() {
        let cache = "[caches.c]\nregistry = \"/d\"\nrepository = \"a/b\"\n[[caches.c.oidc]]\n";
        let good = "issuer = \"https://token.actions.githubusercontent.com\"\naudience = \"a\"\n[caches.c.oidc.claims]\nrepository = \"org/*\"\nref = [\"refs/heads/main\", \"refs/tags/*\"]\n";
        let config = parse(&format!("{cache}{good}"), "x.toml").unwrap();
        let oidc = &config.caches["c"].oidc[0];
        assert_eq!(oidc.claims["ref"].globs().len(), 2);
        for (text, needle) in [
            (good.replace("https://token", "http://token"), "https://"),
            (
                good.replace(
                    "https://token.actions.githubusercontent.com",
                    "http://localhost.evil",
                ),
                "https://",
            ),
            (
                good.replace("audience = \"a\"", "audience = \"\""),
                "audience",
            ),
            (
                good.replace(
                    "repository = \"org/*\"\nref = [\"refs/heads/main\", \"refs/tags/*\"]\n",
                    "",
                ),
                "at least one claim",
            ),
            (good.replace("\"org/*\"", "\"org/[\""), "claims.repository"),
            (format!("{good}[caches.c.oidc.x]\n"), "unknown field"),
        ] {
            let err = parse(&format!("{cache}{text}"), "x.toml")
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
        let loopback = good.replace(
            "https://token.actions.githubusercontent.com",
            "http://127.0.0.1:8123",
        );
        assert!(parse(&format!("{cache}{loopback}"), "x.toml").is_ok());
    }

    #[test]
    fn an_anonymously_writable_cache_without_trusted_keys_is_warned_about() {
        let open = "[caches.c]\nregistry = \"/d\"\nrepository = \"a/b\"\nallow_write = true";
        let said = warnings_of(open);
        assert!(said.iter().any(|w| w.contains("anyone")), "{said:?}");
        let guarded = format!(
            "{open}\ntrusted_public_keys = [\"k-1:{}\"]",
            "A".repeat(43) + "="
        );
        assert!(warnings_of(&guarded).is_empty());
    }

    fn warnings_of(text: &str) -> Vec<String> {
        warnings(&parse(text, "x.toml").unwrap())
    }
}
