//! Implementations of the core traits: registry backends (generic OCI distribution,
//! ghcr.io, Docker Hub, a local OCI layout directory) and store sources (the Nix SQLite DB,
//! `nix path-info --json`, another binary cache), and the client for other binary caches.
//!
//! Each backend is one module behind [`oranc_core::Registry`]; [`registry::open`] is the one
//! place that picks a backend from settings. Policy every HTTP backend shares (auth,
//! retries, limits) lives in its own module and is used by the one HTTP client, not copied.

pub mod binary_cache;
mod content_encoding;
pub mod error;
pub mod nar_check;
mod redirects;
pub mod registry;
pub mod store;

pub use binary_cache::{BinaryCache, BinaryCacheTimeouts};
pub use error::BackendError;
pub use registry::{
    open, open_handle, Credentials, RegistryHandle, RegistryKind, RegistrySettings,
};
