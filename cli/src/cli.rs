//! The command-line surface, kept compatible with the original oranc's flags so that its
//! users can switch by changing the binary only.

use clap::{Args, Parser, Subcommand};
use oranc_core::TagEncoding;

#[derive(Debug, Parser)]
#[command(
    name = "oranc",
    version,
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
    /// Show how cache keys map to registry tags (for debugging a cache by hand).
    #[command(subcommand)]
    Tag(TagCommand),
    /// Print a shell completion script to standard output.
    Completion {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum TagCommand {
    /// Print the tag a cache key is stored under, e.g. `nar/abc.nar.zst` -> `nar_L_abc.nar.zst`.
    Encode {
        /// The cache key (`nix-cache-info`, `<hash>.narinfo`, `nar/<file>`, ...).
        key: String,
        /// Also print the key under each fallback encoding, one per line, after the first.
        #[arg(long)]
        fallbacks: bool,
        #[command(flatten)]
        encodings: EncodingArgs,
    },
    /// Print the cache key a tag stands for.
    Decode {
        /// The tag as listed by the registry.
        tag: String,
        #[command(flatten)]
        encodings: EncodingArgs,
    },
}

#[derive(Debug, Args)]
pub struct EncodingArgs {
    /// How keys are turned into tags: `custom` (the original oranc's default) or
    /// `base32-dnssec` (older caches).
    #[arg(long, default_value = "custom", value_parser = parse_encoding)]
    pub tag_encoding: TagEncoding,
    /// Encodings tried after --tag-encoding when reading (comma separated).
    #[arg(long, value_delimiter = ',', default_value = "base32-dnssec", value_parser = parse_encoding)]
    pub fallback_encodings: Vec<TagEncoding>,
}

fn parse_encoding(name: &str) -> Result<TagEncoding, String> {
    name.parse().map_err(|e: oranc_core::Error| e.to_string())
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
