//! Upstream caches (the original's `--upstream`): before asking the registry, look for the
//! key upstream with a HEAD and send the client there (302) when it is found. Credentials
//! are never sent upstream.

use std::time::Duration;

use regex::Regex;

use crate::error::ServerError;

#[derive(Debug)]
pub struct Upstreams {
    urls: Vec<String>,
    ignore: Regex,
    http: reqwest::Client,
}

impl Upstreams {
    pub fn new(config: &oranc_config::UpstreamConfig) -> Result<Self, ServerError> {
        Ok(Self {
            urls: config
                .urls
                .iter()
                .map(|u| u.trim_end_matches('/').to_owned())
                .collect(),
            ignore: Regex::new(&config.ignore).map_err(ServerError::UpstreamIgnore)?,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .redirect(reqwest::redirect::Policy::limited(3))
                .build()
                .map_err(ServerError::UpstreamClient)?,
        })
    }

    /// The first upstream URL that has `key`, if any.
    pub async fn find(&self, key: &str) -> Option<String> {
        if self.urls.is_empty() || self.ignore.is_match(key) {
            return None;
        }
        for base in &self.urls {
            let url = format!("{base}/{key}");
            match self.http.head(&url).send().await {
                Ok(answer) if answer.status().is_success() => return Some(url),
                Ok(_) => {}
                Err(error) => {
                    tracing::debug!(upstream = %base, error = %error.without_url(), "upstream unreachable")
                }
            }
        }
        None
    }
}
