//! Cross-cutting behaviour as tower layers, one file each, composed in [`crate::router`].

pub mod metrics;
pub mod rate_limit;
pub mod response_cache;
