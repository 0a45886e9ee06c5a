//! The vocabulary every other oranc crate speaks: Nix store paths, hashes, narinfo,
//! signatures, binary-cache keys, the key -> OCI tag encodings and the one-layer manifest
//! layout the original oranc stores objects in, plus the [`Registry`] and [`StoreSource`]
//! traits that backends implement.
//!
//! This crate does no I/O and makes no policy choices: no HTTP client, no SQLite, no
//! runtime. Retries, caching and limits are wrappers around the traits, elsewhere.

pub mod cache;
pub mod cache_info;
pub mod cache_key;
pub mod debug_info;
pub mod error;
pub mod hash;
pub mod layout;
pub mod narinfo;
pub mod path_info;
pub mod realisation;
pub mod registry;
pub mod signing;
pub mod store_path;
pub mod store_source;
pub mod tag;

pub use cache::{CacheObject, RegistryCache};
pub use cache_info::NixCacheInfo;
pub use cache_key::CacheKey;
pub use debug_info::DebugInfoEntry;
pub use error::{Error, Result};
pub use hash::Sha256Hash;
pub use narinfo::NarInfo;
pub use path_info::PathInfo;
pub use registry::{
    is_directory_location, BlobBody, BlobInfo, ByteRange, ByteStream, Registry, RegistryKind,
    RepositoryName, StoredManifest, UploadSlot,
};
pub use signing::{PublicKey, SecretKey, Signature};
pub use store_path::{StoreDir, StorePath};
pub use store_source::StoreSource;
pub use tag::{Tag, TagEncoding};
