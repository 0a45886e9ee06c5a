//! Request handlers: the binary-cache files (reads, uploads), health and metrics.

pub mod body;
pub mod cache;
pub mod health;
pub mod metrics;
pub mod upload;
pub mod verified;
