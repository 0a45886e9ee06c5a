//! Store sources: where push learns about store paths. Both give the same
//! [`oranc_core::PathInfo`] for the same path (an end-to-end test compares them).

pub mod nix_cli;
pub mod sqlite;

pub use nix_cli::NixCliSource;
pub use sqlite::SqliteSource;
