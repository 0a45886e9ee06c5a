//! Request handlers: the binary-cache files, and health.

pub mod cache;
pub mod health;
pub mod metrics;
