//! The HTTP server Nix uses as a substituter: an axum router over the core's cache-over-a-
//! registry type, with caching, rate limiting and metrics as tower layers.
//!
//! Empty until the server issue lands; the crate exists so the workspace has its final shape.
