//! The command-line surface, kept compatible with the original oranc's flags so that its
//! users can switch by changing the binary only.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::registry_args::{EncodingArgs, RegistryArgs};

#[derive(Debug, Parser)]
#[command(
    name = "oranc",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("ORANC_COMMIT"), ")"),
    about = "OCI Registry As Nix Cache: keep a Nix binary cache in any OCI registry",
    long_about = "OCI Registry As Nix Cache: keep a Nix binary cache in any OCI registry \
        (ghcr.io, Docker Hub, Harbor, Zot, distribution) and serve it to Nix over HTTP.\n\n\
        Every cache file (nix-cache-info, <hash>.narinfo, nar/...) is one tag in the \
        repository, stored the way the original oranc stores it."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Push store paths (and their closures) into a registry as a Nix binary cache.
    ///
    /// Paths come from the arguments or, when there are none, from standard input (one per
    /// line; symlinks such as ./result are followed). Each path's NAR is streamed,
    /// compressed and uploaded, then its narinfo, so a reader never sees a narinfo whose NAR
    /// is missing. Paths already in the cache are skipped; a rerun after a crash finishes the
    /// job.
    Push(Box<PushArgs>),
    /// Push every store path that becomes valid while this runs (what a CI build makes),
    /// with the same registry, signing and filtering flags as `push`.
    ///
    /// Paths valid before it starts are left alone; each new path (and what of its closure
    /// the cache lacks) is pushed as soon as the Nix DB lists it. `.drv` files are not
    /// pushed. SIGTERM or Ctrl-C: one last look at the store, the queue is drained, a summary
    /// is printed, and the exit status says whether any path failed; a second signal stops
    /// at once. A path whose push fails is retried later, never dropped. Needs read access
    /// to the Nix DB (--nix-db) to see new paths, whatever --store-source says.
    WatchStore(Box<WatchStoreArgs>),
    /// Delete what the cache no longer needs: keep the closures of some paths and/or what
    /// was pushed recently, delete the rest; or remove given paths on purpose.
    ///
    /// Without --delete nothing changes: the plan is printed (what would go, how many
    /// bytes). With it, narinfos go first, then the NARs (and .ls, logs) no remaining
    /// narinfo names, so no narinfo ever points at a missing NAR, even if gc is killed
    /// half-way (a rerun finishes the job). Deleting needs a registry that allows it;
    /// the space comes back with the registry's own garbage collection (the local OCI
    /// layout frees it at the end of the run).
    Gc(Box<GcArgs>),
    /// Serve caches to Nix over HTTP: `substituters = http://HOST:8080/{registry}/{owner}/{repo}`
    /// (or `http://HOST:8080/{cache}` for a cache named in the config). Also accepts uploads
    /// from `nix copy --to`.
    ///
    /// With no --config, it serves the embedded local registry as the cache `local`
    /// (`http://HOST:8080/local`), which `oranc push` fills when no --registry is given.
    Server(Box<ServerArgs>),
    /// Configuration file tools.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Show how cache keys map to registry tags (for debugging a cache by hand).
    #[command(subcommand)]
    Tag(TagCommand),
    /// Print a shell completion script to standard output.
    Completion {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
#[command(subcommand_negates_reqs = true)]
pub struct PushArgs {
    #[command(subcommand)]
    pub command: Option<PushCommand>,

    #[command(flatten)]
    pub options: PushOptions,

    /// Store paths to push (read from standard input when none are given).
    pub paths: Vec<String>,

    /// Push only the given paths, not everything they reference.
    #[arg(long)]
    pub no_closure: bool,

    /// Show what would be pushed, change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Exit with an error when any path was skipped for want of a trusted signature (for CI
    /// that must notice); without it such paths are reported and the push succeeds.
    #[arg(long, env = "ORANC_FAIL_ON_SKIPPED", value_parser = clap::builder::BoolishValueParser::new())]
    pub fail_on_skipped: bool,

    /// Take the paths from another binary cache instead of the local store, to move a cache
    /// into the registry: `https://…` (an S3 website, nix-serve, attic, another oranc
    /// server's cache URL) or `file:///DIR` (what `nix copy --to file://DIR` writes). Paths
    /// are given as store paths; closures follow the narinfos' References. Each NAR file is
    /// copied as that cache stores it (no recompression, xz, zstd or none), NAR before
    /// narinfo; the NAR inside is checked against the signed NarHash. Only paths
    /// signed by a trusted key (--trusted-public-key, or the signing key's public half) are
    /// copied: nothing unsigned is signed, since its claims are another cache's. Paths
    /// signed by cache.nixos.org are left out unless --excluded-signing-key-pattern says
    /// otherwise. Options about making NARs from the local store (compression, listings,
    /// debug info, the store source, the Nix DB) cannot be given with it.
    #[arg(
        long,
        value_name = "URL",
        conflicts_with_all = [
            "compression",
            "zstd_level",
            "write_nar_listing",
            "index_debug_info",
            "store_source",
            "nix_db",
        ]
    )]
    pub from: Option<String>,
}

#[derive(Debug, Args)]
pub struct WatchStoreArgs {
    #[command(flatten)]
    pub options: PushOptions,

    /// Push only the new paths, not what of their closures the cache lacks.
    #[arg(long)]
    pub no_closure: bool,

    /// How often the Nix DB is asked for new paths (e.g. `250ms`, `2s`). One indexed query
    /// per look (measured: no CPU to speak of while idle); a path waits at most this long
    /// before its upload starts.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    pub poll_interval: std::time::Duration,

    /// Serve Prometheus metrics at http://ADDR/metrics (paths pushed, push failures, queue
    /// length, memory, CPU), e.g. `127.0.0.1:9101` for a runner's Prometheus or agent; see
    /// deploy/prometheus/alerts.yml.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    #[command(flatten)]
    pub registry: RegistryArgs,

    /// Keep these paths and their closures (as the cache's narinfos describe them).
    /// Each value is a store path, or a file listing store paths one per line.
    #[arg(long, value_name = "PATH", num_args = 1..)]
    pub keep_closure_of: Vec<String>,

    /// Keep paths pushed within this long (e.g. `30d`, `12h`), with their closures. Push
    /// records the time; objects written without one (older oranc, the original) are kept
    /// only if a root needs them.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub keep_newer_than: Option<std::time::Duration>,

    /// Remove these paths' narinfos whatever else says (and their NARs, when no remaining
    /// narinfo names them): for a path pushed by mistake. A store path or a file of them.
    #[arg(long, value_name = "PATH", num_args = 1..)]
    pub remove: Vec<String>,

    /// Nothing stored within this long is deleted (`0` turns it off), so a push running
    /// at the same time is not undercut. The rest of the race is in README.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub grace: std::time::Duration,

    /// Delete; without it gc only prints what it would delete.
    #[arg(long)]
    pub delete: bool,

    /// Registry requests at the same time.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub parallel: u16,

    /// The Nix store directory the cache's paths live in.
    #[arg(long, default_value = "/nix/store")]
    pub store_dir: String,

    /// GitHub's REST API, through which gc deletes on ghcr.io (ghcr.io refuses the OCI
    /// manifest DELETE). GitHub Enterprise Server: `https://HOST/api/v3`.
    #[arg(
        long,
        env = "ORANC_GITHUB_API_URL",
        value_name = "URL",
        default_value = "https://api.github.com"
    )]
    pub github_api_url: String,

    /// The token for GitHub's packages API on ghcr.io: a classic personal access token with
    /// read:packages and delete:packages, or a workflow's GITHUB_TOKEN with `packages: write`
    /// and admin rights on the package. Default: GITHUB_TOKEN, else the registry password
    /// (ORANC_PASSWORD).
    #[arg(
        long,
        env = "GITHUB_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub github_token: Option<String>,
}

/// What `push` and `watch-store` share: where to push, how to sign and filter, how to
/// compress, and where path metadata comes from.
#[derive(Debug, Args)]
pub struct PushOptions {
    #[command(flatten)]
    pub registry: RegistryArgs,

    /// The Nix store directory.
    #[arg(long, default_value = "/nix/store")]
    pub store_dir: String,

    /// Paths with a signature by a key whose name matches are not pushed (they are in that
    /// public cache already).
    #[arg(long, default_value = r"^cache\.nixos\.org-.*$")]
    pub excluded_signing_key_pattern: String,

    /// Sign on the fly with this secret key file (as `nix key generate-secret` writes it):
    /// unsigned paths get its signature; paths that already carry it (`nix store sign`) are
    /// checked and pushed as they are. ORANC_SIGNING_KEY may hold the key itself instead.
    #[arg(long, value_name = "FILE")]
    pub signing_key: Option<PathBuf>,

    /// Also push paths that are already signed (the original oranc's flag for paths signed
    /// with `nix store sign`). oranc always does: a path signed by the signing key or a
    /// --trusted-public-key is pushed, an unsigned one is signed when there is a signing key.
    /// This flag never turns signing off; --no-sign does.
    #[arg(long)]
    pub already_signed: bool,

    /// Never sign, even with a signing key: push only paths already signed by a trusted key
    /// (--trusted-public-key, or the signing key's public half) and skip unsigned ones.
    #[arg(long)]
    pub no_sign: bool,

    /// A public key (`name:base64`) whose signatures make a path pushable; repeatable. The
    /// signing key's own public key is always trusted.
    #[arg(
        long = "trusted-public-key",
        value_name = "KEY",
        env = "ORANC_TRUSTED_PUBLIC_KEYS",
        value_delimiter = ' '
    )]
    pub trusted_public_keys: Vec<String>,

    /// Paths pushed at the same time. Pushing is bound by round trips to the registry, so
    /// more in flight helps a registry that is far away (measured: 16 beats 4 and 8 at 20 and
    /// 50 ms); large paths are held to a memory budget whatever this says.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub parallel: u16,

    /// NAR compression.
    #[arg(long, value_enum, default_value_t = Compression::Zstd)]
    pub compression: Compression,

    /// Also upload each path's `<hash>.ls` (the file listing Nix writes with
    /// `write-nar-listing = true`): what file browsers and indexers of a cache read (Hydra,
    /// nix-index-style tools). Nix 2.8's own `nix store ls` downloads the NAR anyway. Built
    /// while the NAR streams; not made for a NAR the cache already has.
    #[arg(long)]
    pub write_nar_listing: bool,

    /// Also upload a `debuginfo/<build-id>.debug` entry for each ELF debug file
    /// (`lib/debug/.build-id/xx/….debug`) in a path, as `nix copy --to
    /// '…?index-debug-info=true'` does, so debuginfod servers (nixseparatedebuginfod) find
    /// debug symbols in the cache. Found in the same pass as the listing.
    #[arg(long)]
    pub index_debug_info: bool,

    /// zstd level (1-19).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=19))]
    pub zstd_level: i32,

    /// Where path metadata comes from: the Nix DB (fast) or `nix path-info` (no DB access
    /// needed, works with --store).
    #[arg(long, value_enum, default_value_t = StoreSourceKind::Sqlite)]
    pub store_source: StoreSourceKind,

    /// The Nix DB, for --store-source sqlite.
    #[arg(long, default_value = "/nix/var/nix/db/db.sqlite", value_name = "FILE")]
    pub nix_db: PathBuf,

    /// Open the Nix DB with immutable=1 when its directory is not writable. Safe only while
    /// no Nix process writes to it, and it does not see paths registered since Nix last
    /// checkpointed the DB (use --store-source nix for those).
    #[arg(long)]
    pub allow_immutable_db: bool,

    /// The Nix store to ask, for --store-source nix (e.g. `local?root=/tmp/x`).
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// TOML configuration file (see oranc.example.toml); flags override it.
    #[arg(long, short, env = "ORANC_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: [::]:8080].
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key; the config's [tls]
    /// cert_file). HTTP/2 and HTTP/1.1 are offered by ALPN; Nix uses HTTP/2 only over TLS.
    /// The files are read again when they change, or on SIGHUP.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Path segments that name the repository in /{registry}/{repository}/{file} [default: 2].
    #[arg(long)]
    pub repository_parts: Option<usize>,
    /// Retries of a failed registry request [default: 3].
    #[arg(long)]
    pub max_retry: Option<u32>,
    /// Serve any registry a URL names, as the original oranc did (an open proxy).
    #[arg(long)]
    pub allow_any_registry: bool,
    /// Allow this registry (host[:port]); repeatable. Adds to the config's [registries].
    #[arg(long = "registry", value_name = "HOST")]
    pub registries: Vec<String>,
    /// Talk plain HTTP to registries given by --registry or reached through
    /// --allow-any-registry.
    #[arg(long)]
    pub no_ssl: bool,
    /// Upstream cache to redirect to when it has a file; repeatable.
    #[arg(long = "upstream", value_name = "URL")]
    pub upstreams: Vec<String>,
    /// Keys matching this are never looked for upstream [default: nix-cache-info].
    #[arg(long)]
    pub ignore_upstream: Option<String>,
    /// Accepted for compatibility: oranc never sends credentials upstream.
    #[arg(long)]
    pub upstream_anonymous: bool,
    /// How keys become tags: custom or base32-dnssec.
    #[arg(long, value_parser = crate::registry_args::parse_encoding)]
    pub tag_encoding: Option<oranc_core::TagEncoding>,
    /// Encodings also tried when reading (comma separated).
    #[arg(long, value_delimiter = ',', value_parser = crate::registry_args::parse_encoding)]
    pub fallback_encodings: Option<Vec<oranc_core::TagEncoding>>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Parse and validate a configuration file, and read every file and environment
    /// variable it names (password_file, password_env, writers_file, signing_key_file) as
    /// the server would; each problem is named, and any makes the exit status non-zero.
    Check {
        file: PathBuf,
        /// Also ask each named cache's registry for its nix-cache-info with the cache's own
        /// credentials, as the server does at start: a wrong password shows here.
        #[arg(long)]
        probe: bool,
    },
    /// Print the example configuration, every option with its default.
    Example,
}

#[derive(Debug, Subcommand)]
pub enum PushCommand {
    /// Write the cache's nix-cache-info (a push writes the defaults itself when the cache has
    /// none; use this to set the priority or mass-query flag).
    Initialize {
        /// Substituter priority; lower is tried first (cache.nixos.org is 40).
        #[arg(long, default_value_t = 41)]
        priority: u32,
        /// Tell Nix not to query this cache in bulk.
        #[arg(long)]
        no_mass_query: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Compression {
    Zstd,
    Xz,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreSourceKind {
    Sqlite,
    Nix,
}

#[derive(Debug, Subcommand)]
pub enum TagCommand {
    /// Print the tag a cache key is stored under, e.g. `nar/abc.nar.zst` -> `nar_L_abc.nar.zst`.
    ///
    /// A key too long for a tag (128 characters), such as the build log of a derivation with
    /// a long name, is stored under its long-key tag, `oranc-long-key.sha256.<SHA-256 of the
    /// key>`, with the key in the manifest; that tag is printed, and a note says so.
    Encode {
        /// The cache key (`nix-cache-info`, `<hash>.narinfo`, `nar/<file>`, ...).
        key: String,
        /// Also print the key under each fallback encoding, one per line after the one
        /// written, each labelled with its encoding (`custom: nix-cache-info`).
        #[arg(long)]
        fallbacks: bool,
        #[command(flatten)]
        encodings: EncodingArgs,
    },
    /// Print the cache key a tag stands for (a long-key tag's key is only in its manifest).
    Decode {
        /// The tag as listed by the registry.
        tag: String,
        #[command(flatten)]
        encodings: EncodingArgs,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
