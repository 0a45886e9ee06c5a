//! Store sources: where push learns about store paths. The local ones (the DB, `nix
//! path-info`) give the same [`oranc_core::PathInfo`] for the same path (an end-to-end test
//! compares them); another binary cache gives what its narinfos say.

pub mod binary_cache;
pub mod nix_cli;
pub mod sqlite;

pub use binary_cache::BinaryCacheSource;
pub use nix_cli::NixCliSource;
pub use sqlite::SqliteSource;
