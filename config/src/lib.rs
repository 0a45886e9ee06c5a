//! The TOML configuration model: registries, caches, credentials and limits, with their
//! defaults and validation in one place.
//!
//! Empty until the server issue lands; the crate exists so the workspace has its final shape.
