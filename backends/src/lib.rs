//! Implementations of the core traits: registry backends (generic OCI distribution,
//! ghcr.io, Docker Hub, a local OCI layout directory) and store sources (the Nix SQLite DB,
//! `nix path-info --json`). Policy that applies to every backend (retries, limits) is a
//! wrapper here, not repeated inside each one.
//!
//! Empty until the backend issues land; the crate exists so the workspace has its final shape.
