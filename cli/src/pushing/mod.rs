//! The push pipeline `oranc push` and `oranc watch-store` share: which paths to push and
//! with what signatures (`plan`), one streaming pass per NAR (`nar`, `listing`), the upload
//! in push order (`upload`), the settings both commands take (`options`), `nix-cache-info`
//! (`initialize`), progress and the summary. Commands use it; they never import each other.

pub mod initialize;
mod listing;
mod nar;
pub mod options;
pub mod plan;
pub mod progress;
pub mod summary;
pub mod upload;
