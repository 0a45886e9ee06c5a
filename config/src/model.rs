//! The configuration model. Every field has its default here and a comment saying what it
//! does; `oranc.example.toml` in the repository shows them all and is parsed by a test.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use oranc_core::{PublicKey, TagEncoding};
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// `[tls]`: serve HTTPS (HTTP/2 and HTTP/1.1, chosen by ALPN) with this certificate
    /// instead of plain HTTP. Unset: plain HTTP/1.1, and HTTP/2 with prior knowledge (h2c).
    pub tls: Option<TlsConfig>,
    /// The URL clients reach the server at (`https://cache.example.com`), for the landing
    /// page's substituter URLs when the server is behind a proxy. Unset: `http://` and the
    /// request's `Host`.
    pub public_url: Option<String>,
    /// Show each named cache's registry and repository on the landing page (`/`). Off: the
    /// page names neither.
    pub show_registry: bool,
    /// How many path segments name the repository in `/{registry}/{repository}/{key}` URLs.
    pub repository_parts: usize,
    /// Serve any registry named in a URL, as the original oranc did (an open proxy). Off:
    /// only registries listed under `[registries]` and named caches are served.
    pub allow_any_registry: bool,
    /// Talk plain HTTP to registries that are not listed (with `allow_any_registry`), as the
    /// original's `--no-ssl`.
    pub no_ssl: bool,
    /// Registry requests retried after a failure (connection errors, 5xx, 429).
    pub max_retry: u32,
    /// Seconds a registry request may take (manifests, tags, tokens).
    pub request_timeout_secs: u64,
    /// Seconds a blob body may stall before the transfer is abandoned; also how long a
    /// mirror's upstream may keep an answer waiting (its start, or any part of its body).
    pub read_timeout_secs: u64,
    /// Seconds the server may take to start answering a request (the body may stream for
    /// longer); past it the client gets 504.
    pub response_timeout_secs: u64,
    /// Key -> tag encoding for writes, and the first tried for reads: `custom` or
    /// `base32-dnssec`.
    pub tag_encoding: TagEncoding,
    /// Encodings also tried when reading.
    pub fallback_encodings: Vec<TagEncoding>,
    /// Largest narinfo / nix-cache-info / realisation body accepted by PUT, in bytes, as
    /// sent and once its `Content-Encoding` is undone. NARs, logs and listings stream and
    /// are not limited here.
    pub max_small_body_bytes: usize,
    /// Largest log or listing a PUT sent with `Content-Encoding` (Nix 2.32+
    /// `log-compression`, `ls-compression`) may decode to, in bytes: a few KB of brotli can
    /// say terabytes. Plain uploads stream and are not limited here.
    pub max_decoded_body_bytes: u64,
    /// Registries the server may talk to, by host (`ghcr.io`, `127.0.0.1:5000`) or a local
    /// OCI layout directory.
    pub registries: BTreeMap<String, RegistryConfig>,
    /// Named caches served at `/{name}/...`.
    pub caches: BTreeMap<String, CacheConfig>,
    pub upstream: UpstreamConfig,
    /// `[response_cache]`; `[cache]`, its name before 0.2, is still read.
    #[serde(alias = "cache")]
    pub response_cache: ResponseCacheConfig,
    pub rate_limit: RateLimitConfig,
    pub clients: ClientLimitsConfig,
    pub password_checks: PasswordChecksConfig,
    pub mirror: MirrorConfig,
}

/// The server's certificate. Both files are read again when either changes (checked every
/// few seconds) or on SIGHUP; connections open at the time keep theirs.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, the server's certificate first (`fullchain.pem`).
    pub cert_file: std::path::PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: std::path::PathBuf,
}

/// What the named caches with `upstreams` (mirrors) may use of the server's machine.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MirrorConfig {
    /// Bytes of NARs being copied into the registry that may wait on disk (in the system's
    /// temporary directory, `$TMPDIR`) for a registry slower than upstream, across all
    /// mirrors. A copy that fits streams to its client at upstream's pace; one that does
    /// not (or any, with less than 1 MiB: the budget counts whole MiB) streams at the pace
    /// the registry stores it.
    pub spool_max_bytes: u64,
    /// Bytes of NAR files one client address may have a mirror start storing in an hour
    /// (each copy's FileSize counted as it starts; 1 MiB to 4 TiB). A copy outlives its
    /// client, so without it a client that asks for cold NARs and leaves at once makes the
    /// server fetch and store them all. Past it, that client still gets its NARs, streamed
    /// to it alone and not stored, until its allowance refills.
    pub store_bytes_per_client_per_hour: u64,
}

impl Default for MirrorConfig {
    fn default() -> Self {
        Self {
            spool_max_bytes: 4 << 30,
            store_bytes_per_client_per_hour: 32 << 30,
        }
    }
}

/// What one client may hold of the server: connections, time, and where it is from.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClientLimitsConfig {
    /// Seconds a client may take to send a request's headers, counted from when the server
    /// waits for them; on a kept-alive connection that includes the idle time between
    /// requests. A connection that sends nothing, or half a request, is closed after it.
    pub header_read_timeout_secs: u64,
    /// Seconds an upload's body may stall (no bytes at all) before it is abandoned. A slow
    /// upload that keeps sending is never cut off, however long it takes.
    pub body_stall_timeout_secs: u64,
    /// Connections open at once. When full, a new connection from a client holding fewer
    /// than the client holding the most takes the place of that one's longest-idle
    /// connection; any other is closed at once. Also kept below the process's open-file
    /// limit (raised to its hard limit at start).
    pub max_connections: usize,
    /// Connections one client (IP address, or IPv6 /64) may hold at once; more are closed at
    /// accept.
    /// Trusted proxies are exempt (all their clients share their address).
    pub max_connections_per_client: usize,
    /// Addresses of reverse proxies in front of the server: from them, the client is the
    /// last address in `X-Forwarded-For` (what the proxy saw), for rate limits and the
    /// per-client connection cap. From anyone else `X-Forwarded-For` is ignored.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Seconds requests in flight may take to finish after SIGTERM/SIGINT; then the server
    /// exits anyway.
    pub shutdown_grace_secs: u64,
    /// Requests one HTTP/2 connection may have open at once (its concurrent streams). An
    /// HTTP/2 connection with no request open is closed after `header_read_timeout_secs`,
    /// as an idle HTTP/1.1 one is.
    pub max_streams_per_connection: u32,
    /// Requests one client may have open at once over all its connections (an answer is
    /// open until its body is sent): HTTP/2 carries many on one connection, so the
    /// connection cap alone does not bound them. More get 429 with `Retry-After: 1`.
    /// Trusted proxies are exempt.
    pub max_requests_per_client: usize,
}

impl Default for ClientLimitsConfig {
    fn default() -> Self {
        Self {
            header_read_timeout_secs: 15,
            body_stall_timeout_secs: 60,
            max_connections: 4096,
            max_connections_per_client: 256,
            trusted_proxies: Vec::new(),
            shutdown_grace_secs: 30,
            max_streams_per_connection: 100,
            max_requests_per_client: 256,
        }
    }
}

/// Checks of writer passwords (`writers_file`): slow on purpose (argon2 at its defaults
/// takes 19 MiB and tens of milliseconds), so each is bounded.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordChecksConfig {
    /// Checks running at once (each holds the hash's memory); others wait.
    pub concurrent: usize,
    /// Milliseconds a request waits for a check to start; then 503 with Retry-After.
    pub wait_millis: u64,
    /// Checks one client (IP address) may cause per minute (a remembered verdict costs
    /// none); past it 429. Guessing passwords is slow, and cannot crowd out writers.
    pub per_client_per_minute: u32,
}

impl Default for PasswordChecksConfig {
    fn default() -> Self {
        Self {
            concurrent: 2,
            wait_millis: 2000,
            per_client_per_minute: 30,
        }
    }
}

/// Per-client request rate limit: a client is its IP address (an IPv6 client its /64), or
/// the address a trusted proxy forwarded. Credentials do not make a client: anyone can
/// make up new ones. Over the limit, requests get 429 with Retry-After.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Sustained requests per second per client; 0 turns the limit off.
    pub requests_per_second: u32,
    /// Requests a client may make at once above the sustained rate (Nix asks for many
    /// narinfo files in a burst when it plans a closure).
    pub burst: u32,
    /// Clients remembered at once; the least recently seen are forgotten first (a
    /// forgotten client starts with a full burst).
    pub max_clients: usize,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            requests_per_second: 0,
            burst: 1000,
            max_clients: 100_000,
        }
    }
}

/// The in-memory cache of small answers (narinfo, nix-cache-info) and of 404s, so a warm
/// lookup costs no registry round trip; tag -> manifest lookups (for NARs) are kept with the
/// same TTLs.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ResponseCacheConfig {
    /// Seconds a narinfo or nix-cache-info answer is reused.
    pub ttl_secs: u64,
    /// Seconds a 404 is reused (a path pushed meanwhile shows up after at most this long,
    /// at once when pushed through this server).
    pub negative_ttl_secs: u64,
    /// Memory the cached answers may use, in bytes (manifest lookups get a quarter of this
    /// on top); 0 turns both caches off.
    pub max_bytes: u64,
}

impl Default for ResponseCacheConfig {
    fn default() -> Self {
        Self {
            ttl_secs: 600,
            negative_ttl_secs: 30,
            max_bytes: 64 << 20,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 0], 8080)),
            tls: None,
            public_url: None,
            show_registry: false,
            repository_parts: 2,
            allow_any_registry: false,
            no_ssl: false,
            max_retry: 3,
            request_timeout_secs: 60,
            read_timeout_secs: 60,
            response_timeout_secs: 120,
            tag_encoding: TagEncoding::Custom,
            fallback_encodings: vec![TagEncoding::Base32Dnssec],
            max_small_body_bytes: 4 << 20,
            max_decoded_body_bytes: 256 << 20,
            registries: BTreeMap::new(),
            caches: BTreeMap::new(),
            upstream: UpstreamConfig::default(),
            response_cache: ResponseCacheConfig::default(),
            rate_limit: RateLimitConfig::default(),
            clients: ClientLimitsConfig::default(),
            password_checks: PasswordChecksConfig::default(),
            mirror: MirrorConfig::default(),
        }
    }
}

pub use oranc_core::RegistryKind;

/// How to talk to one registry.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// `distribution`, `ghcr`, `docker-hub` or `oci-layout`; inferred from the name when
    /// absent.
    pub kind: Option<RegistryKind>,
    /// Plain HTTP (the original's `--no-ssl`), for registries on a trusted network.
    pub plain_http: bool,
    /// Requests in flight to this registry at once.
    pub max_in_flight: Option<usize>,
    /// Largest upload request body in bytes (a chunk of a NAR); default 4194304 (4 MiB,
    /// ghcr.io's cap). Halved for the rest of the run whenever the registry refuses a body
    /// as too large (413, or ghcr.io's 416), so a lower cap only costs one refusal.
    pub chunk_size: Option<usize>,
    /// When the registry answers a blob GET with a redirect to its storage or CDN (ghcr.io,
    /// distribution/Harbor/Zot on S3), hand that redirect (307) to the client for NARs
    /// instead of streaming the bytes through this server. narinfo and nix-cache-info are
    /// still read and checked here. The URL is the registry's own presigned one; it never
    /// carries the server's or the client's credentials.
    pub redirect_blobs: bool,
    /// Stream NARs without hashing them against their digest. The check (on by default)
    /// keeps a registry's altered or corrupt bytes out of every cache in front of the
    /// server; it costs a SHA-256 pass over each NAR, which halves the server's NAR
    /// throughput on loopback (850 against 1,800 MB/s on 2 cores), far above most links.
    /// Only for a registry trusted end to end. Small files are always checked.
    pub skip_digest_check: bool,
    /// Token services besides the registry itself that may be sent credentials, as URLs
    /// (e.g. GitLab's `https://gitlab.com/jwt/auth`). A registry that asks for tokens from
    /// anywhere else is refused: it could be collecting credentials. Docker Hub's is known.
    pub token_realms: Vec<String>,
    /// Storage a blob GET's redirect may lead the server to (URLs or origins), when the
    /// server fetches the bytes itself (`redirect_blobs` off): the registry's own origin and
    /// its backend's known storage (ghcr.io's, Docker Hub's) are allowed without listing.
    /// Anywhere else is refused (502): a registry must not make the server fetch internal
    /// URLs for it. E.g. a distribution on S3: `["https://BUCKET.s3.REGION.amazonaws.com"]`.
    pub blob_origins: Vec<String>,
    /// Let credentials that clients send be forwarded to this registry as a grant to write
    /// even though the registry checks none (it answers an anonymous `GET /v2/`). Off, such
    /// a registry gets writes only from a named cache's writers or `allow_write`; a registry
    /// that checks credentials decides for itself either way. Only for a registry that
    /// nobody untrusted can reach through this server.
    pub trust_client_credentials: bool,
}

/// A named cache: `/{name}/...` serves `repository` in `registry`.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// A key of `[registries]`, or a local directory.
    pub registry: String,
    pub repository: String,
    /// Registry user for this cache only.
    pub username: Option<String>,
    /// Environment variable holding the password or token (never the secret itself here).
    pub password_env: Option<String>,
    /// File holding the password or token (for systemd credentials).
    pub password_file: Option<String>,
    /// Accept PUT (`nix copy --to`) without client credentials, using this cache's own.
    /// Such anonymous writers may add files, never replace one (a narinfo that differs from
    /// the stored one is refused with 409). Cannot be combined with `writers_file`.
    pub allow_write: bool,
    /// Users who may write through the server, one `user:hash` line each (an argon2 PHC
    /// string or a bcrypt hash, e.g. from `htpasswd -nbB user`). Clients send them as HTTP
    /// Basic (a netrc file); the registry sees this cache's own credentials. A writer may
    /// replace files. With writers, anonymous writes are refused.
    pub writers_file: Option<String>,
    /// Secret key file (`nix key generate-secret`): a narinfo a writer uploads is signed
    /// with it before it is stored, so CI runners need no signing key. Needs `writers_file`.
    pub signing_key_file: Option<String>,
    /// Public keys (`name:base64`): a narinfo uploaded to this cache must carry a valid
    /// signature by one of them (the signing key's own counts), or it is refused.
    pub trusted_public_keys: Vec<PublicKey>,
    /// Binary caches this cache mirrors (`https://cache.nixos.org`; `file:///DIR` too),
    /// tried in order when the registry lacks a narinfo. One found upstream and signed by
    /// `upstream_public_keys` is served, not stored (lookups must not download NARs); its
    /// NAR, when asked for, streams to the client while it is stored in the registry, and
    /// the narinfo is stored once the NAR is and matches its FileHash. Later requests, and
    /// later days when upstream is slow or gone, are served from the registry.
    pub upstreams: Vec<String>,
    /// Keys (`name:base64`) an upstream narinfo must be signed by to be served or stored.
    /// Required with `upstreams`.
    pub upstream_public_keys: Vec<PublicKey>,
    /// OIDC issuers whose tokens make their bearer a writer (`[[caches.NAME.oidc]]`), so a CI
    /// job writes with the token its platform gives it (GitHub Actions' `id-token: write`)
    /// and no stored secret. The token is sent as the password of HTTP Basic credentials
    /// (any user name: a netrc line) or as a Bearer token.
    pub oidc: Vec<OidcIssuerConfig>,
}

/// One trusted OIDC issuer of a named cache's writers.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct OidcIssuerConfig {
    /// The issuer (`iss`), e.g. `https://token.actions.githubusercontent.com`; its keys are
    /// read from `{issuer}/.well-known/openid-configuration`. `http://` only on loopback.
    pub issuer: String,
    /// What the token's `aud` must hold (on GitHub Actions, the `audience` the job asks for).
    pub audience: String,
    /// Claims the token must carry, each a glob (`*` any text but `/`, `?` one character
    /// but `/`, `**` a whole path of components); a list
    /// means any of its globs. All must match. At least one is required: an issuer such as
    /// GitHub's gives tokens to every repository on it.
    pub claims: BTreeMap<String, ClaimPattern>,
}

/// What one claim must match.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum ClaimPattern {
    One(String),
    AnyOf(Vec<String>),
}

impl ClaimPattern {
    /// The globs, any of which may match.
    pub fn globs(&self) -> &[String] {
        match self {
            Self::One(glob) => std::slice::from_ref(glob),
            Self::AnyOf(globs) => globs,
        }
    }
}

/// Upstream caches: when one has a key, the client is redirected there (302).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    pub urls: Vec<String>,
    /// Keys matching this are never looked for upstream.
    pub ignore: String,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            ignore: "nix-cache-info".into(),
        }
    }
}
