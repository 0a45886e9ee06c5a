//! GitHub's REST "packages" API, which is how anything is deleted from ghcr.io: ghcr.io
//! answers the OCI manifest DELETE with 405 UNSUPPORTED, so `oranc gc` lists a package's
//! versions here and deletes them here
//! (https://docs.github.com/en/rest/packages/packages).
//!
//! - An image `ghcr.io/OWNER/a/b` is the container package `a/b` of OWNER, sent
//!   percent-encoded (`a%2Fb`); OWNER is the token's own user (`/user/packages`), an
//!   organisation (`/orgs/OWNER/packages`) or another user (`/users/OWNER/packages`), tried in
//!   that order.
//! - A version is one manifest: `name` is its digest, `metadata.container.tags` its tags.
//!   Deleting a version deletes every tag on it.
//! - Versions are listed 100 a page, following the `Link` header.
//! - Rate limits: an answer with `X-RateLimit-Remaining: 0` pauses every request until
//!   `X-RateLimit-Reset`; a 403 or 429 with `Retry-After` (a secondary limit) is waited out and
//!   retried; deletes are paced below GitHub's secondary limit (a DELETE counts 5 points of
//!   900 a minute per endpoint, so at most 180 a minute).
//!
//! Not the `octocrab` crate: it covers these endpoints only partly (no container versions'
//! metadata, no secondary-limit handling), and four requests do not need a client library.

use std::time::Duration;

use serde::Deserialize;

use crate::error::BackendError;

/// GitHub's documented secondary limit, 900 points a minute per endpoint, at 5 points a
/// DELETE, is one delete every third of a second; a little slower, so that clocks and
/// windows that do not line up do not meet it.
const DELETE_INTERVAL: Duration = Duration::from_millis(350);
/// Longest a secondary limit's `Retry-After`, or the wait for a primary limit's reset, that
/// is waited out; past it the run stops with an error saying when to rerun.
const MAX_WAIT: Duration = Duration::from_secs(15 * 60);
/// Retries of one request that a secondary limit refused.
const SECONDARY_RETRIES: u32 = 10;

/// One version of a container package.
#[derive(Debug, Clone, Deserialize)]
pub struct PackageVersion {
    pub id: u64,
    /// The manifest's digest, `sha256:…`.
    pub name: String,
    #[serde(default)]
    pub updated_at: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    metadata: Option<VersionMetadata>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct VersionMetadata {
    #[serde(default)]
    container: Option<ContainerMetadata>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct ContainerMetadata {
    #[serde(default)]
    tags: Vec<String>,
}

impl PackageVersion {
    pub fn tags(&self) -> &[String] {
        self.metadata
            .as_ref()
            .and_then(|m| m.container.as_ref())
            .map_or(&[], |c| c.tags.as_slice())
    }

    /// When the version was last changed (pushed or re-tagged), as GitHub says.
    pub fn changed(&self) -> Option<std::time::SystemTime> {
        let at = self.updated_at.as_deref().or(self.created_at.as_deref())?;
        humantime::parse_rfc3339_weak(at).ok()
    }
}

/// What GitHub said to a delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deleted {
    /// Deleted (204).
    Yes,
    /// Already gone (404): an earlier run deleted it.
    AlreadyGone,
    /// GitHub refuses to delete it (a public version downloaded more than 5,000 times, the
    /// last tagged version of a package): its own words.
    Refused(String),
}

/// A container package on ghcr.io (or a GitHub Enterprise Server), through the API.
#[derive(Debug, Clone)]
pub struct GithubPackages {
    client: reqwest::Client,
    /// `https://api.github.com/{user|orgs/OWNER|users/OWNER}/packages/container/PACKAGE`.
    base: String,
    token: String,
    pacer: std::sync::Arc<tokio::sync::Mutex<tokio::time::Instant>>,
}

impl GithubPackages {
    /// The package behind `repository` (`OWNER/NAME…`) at the API `api` (e.g.
    /// `https://api.github.com`), found by asking which of the three owners' paths has it.
    pub async fn open(api: &str, repository: &str, token: &str) -> Result<Self, BackendError> {
        let (owner, package) =
            repository
                .split_once('/')
                .ok_or_else(|| BackendError::GithubApi {
                    what: format!("repository {repository}"),
                    reason: "ghcr.io repositories are OWNER/PACKAGE".into(),
                })?;
        let client = reqwest::Client::builder()
            .user_agent(concat!("oranc/", env!("CARGO_PKG_VERSION")))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| BackendError::HttpClient(e.to_string()))?;
        let api = api.trim_end_matches('/');
        let package =
            percent_encoding::utf8_percent_encode(package, percent_encoding::NON_ALPHANUMERIC)
                .to_string();
        let mut this = Self {
            client,
            base: String::new(),
            token: token.to_owned(),
            pacer: std::sync::Arc::new(tokio::sync::Mutex::new(tokio::time::Instant::now())),
        };
        let login = this.login(api).await.ok();
        let mut candidates = Vec::new();
        if login
            .as_deref()
            .is_some_and(|l| l.eq_ignore_ascii_case(owner))
        {
            candidates.push(format!("{api}/user/packages/container/{package}"));
        }
        candidates.push(format!("{api}/orgs/{owner}/packages/container/{package}"));
        candidates.push(format!("{api}/users/{owner}/packages/container/{package}"));
        let mut last = None;
        for base in candidates {
            let response = this
                .send(reqwest::Method::GET, &format!("{base}/versions?per_page=1"))
                .await?;
            match response.status().as_u16() {
                200 => {
                    this.base = base;
                    return Ok(this);
                }
                404 => last = Some(base),
                _ => return Err(refusal(&base, response).await),
            }
        }
        Err(BackendError::GithubApi {
            what: format!("package {repository}"),
            reason: format!(
                "not found as a package of the token's user, of organisation {owner}, or of user {owner} (last tried {}); is the token allowed to read it (read:packages)?",
                last.unwrap_or_default()
            ),
        })
    }

    async fn login(&self, api: &str) -> Result<String, BackendError> {
        #[derive(Deserialize)]
        struct User {
            login: String,
        }
        let response = self
            .send(reqwest::Method::GET, &format!("{api}/user"))
            .await?;
        if !response.status().is_success() {
            return Err(refusal(&format!("{api}/user"), response).await);
        }
        let user: User = response.json().await.map_err(|e| BackendError::GithubApi {
            what: "GET /user".into(),
            reason: e.to_string(),
        })?;
        Ok(user.login)
    }

    /// Every version of the package, all pages.
    pub async fn versions(&self) -> Result<Vec<PackageVersion>, BackendError> {
        let mut url = Some(format!("{}/versions?per_page=100", self.base));
        let mut versions = Vec::new();
        while let Some(page) = url.take() {
            let response = self.send(reqwest::Method::GET, &page).await?;
            if !response.status().is_success() {
                return Err(refusal(&page, response).await);
            }
            url = next_link(response.headers());
            let mut batch: Vec<PackageVersion> =
                response.json().await.map_err(|e| BackendError::GithubApi {
                    what: format!("GET {page}"),
                    reason: format!("not a list of package versions: {e}"),
                })?;
            versions.append(&mut batch);
        }
        Ok(versions)
    }

    /// Deletes the version `id` (and with it every tag on it), paced below GitHub's
    /// secondary limit.
    pub async fn delete(&self, id: u64) -> Result<Deleted, BackendError> {
        let url = format!("{}/versions/{id}", self.base);
        let response = self.send(reqwest::Method::DELETE, &url).await?;
        match response.status().as_u16() {
            204 | 200 => Ok(Deleted::Yes),
            404 => Ok(Deleted::AlreadyGone),
            400 | 409 | 422 => Ok(Deleted::Refused(github_message(response).await)),
            _ => Err(refusal(&url, response).await),
        }
    }

    /// Waits for the next delete's turn: every DELETE, a retry too, takes one, so deletes
    /// made `--parallel` at once still keep to the pace.
    async fn paced(&self) {
        let mut next = self.pacer.lock().await;
        tokio::time::sleep_until(*next).await;
        *next = tokio::time::Instant::now() + DELETE_INTERVAL;
    }

    /// Holds every delete back for `wait` (a secondary limit met): not only the one refused.
    async fn hold_deletes(&self, wait: Duration) {
        let mut next = self.pacer.lock().await;
        *next = (*next).max(tokio::time::Instant::now() + wait);
    }

    /// One request, waiting out rate limits: a secondary limit's `Retry-After` (403 or
    /// 429), and an exhausted primary limit until its reset. DELETEs are paced.
    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
    ) -> Result<reqwest::Response, BackendError> {
        let failed = |e: reqwest::Error| BackendError::GithubApi {
            what: format!("{method} {url}"),
            reason: e.to_string(),
        };
        let delete = method == reqwest::Method::DELETE;
        for _ in 0..=SECONDARY_RETRIES {
            if delete {
                self.paced().await;
            }
            let response = self
                .client
                .request(method.clone(), url)
                .bearer_auth(&self.token)
                .header("Accept", "application/vnd.github+json")
                .header("X-GitHub-Api-Version", "2022-11-28")
                .send()
                .await
                .map_err(failed)?;
            let headers = response.headers();
            let status = response.status().as_u16();
            let retry_after = headers
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let exhausted = header_u64(headers, "x-ratelimit-remaining") == Some(0);
            let reset_in = header_u64(headers, "x-ratelimit-reset").map(|reset| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                Duration::from_secs(reset.saturating_sub(now) + 1)
            });
            let wait = match (status, retry_after) {
                (403 | 429, Some(wait)) => Some(wait),
                (403 | 429, None) if exhausted => reset_in,
                _ => None,
            };
            let Some(wait) = wait else {
                if exhausted {
                    // The next request would be refused: wait for the reset now.
                    if let Some(reset_in) = reset_in.filter(|w| *w <= MAX_WAIT) {
                        tracing::warn!(
                            ?reset_in,
                            "GitHub API rate limit used up; waiting for its reset"
                        );
                        tokio::time::sleep(reset_in).await;
                    }
                }
                return Ok(response);
            };
            if wait > MAX_WAIT {
                return Err(BackendError::GithubApi {
                    what: format!("{method} {url}"),
                    reason: format!(
                        "GitHub's rate limit asks to wait {} s; rerun gc after that (it finishes what is left)",
                        wait.as_secs()
                    ),
                });
            }
            tracing::warn!(?wait, status, "GitHub API rate limit; waiting");
            if delete {
                self.hold_deletes(wait).await;
            } else {
                tokio::time::sleep(wait).await;
            }
        }
        Err(BackendError::GithubApi {
            what: format!("{method} {url}"),
            reason: format!("still rate-limited after {SECONDARY_RETRIES} waits; rerun gc later"),
        })
    }
}

fn header_u64(headers: &reqwest::header::HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// The `rel="next"` URL of a `Link` header.
fn next_link(headers: &reqwest::header::HeaderMap) -> Option<String> {
    let link = headers.get(reqwest::header::LINK)?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params
            .split(';')
            .any(|p| p.trim() == "rel=\"next\"")
            .then(|| {
                url.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_owned()
            })
    })
}

/// GitHub's own words in an error answer (`{"message": …}`), or its status.
async fn github_message(response: reqwest::Response) -> String {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{status}: {}", body.chars().take(200).collect::<String>()))
}

/// An error saying what GitHub refused and, for 401 and 403 ([`BackendError::GithubDenied`]),
/// which credential is missing.
async fn refusal(url: &str, response: reqwest::Response) -> BackendError {
    let status = response.status().as_u16();
    let needed = response
        .headers()
        .get("x-accepted-oauth-scopes")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let has = response
        .headers()
        .get("x-oauth-scopes")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let message = github_message(response).await;
    let hint = match status {
        401 => " (the token is wrong or expired: pass --github-token, GITHUB_TOKEN, or ORANC_PASSWORD)".to_owned(),
        403 => format!(
            " (the token needs {} — a classic personal access token with read:packages and delete:packages, or a workflow's GITHUB_TOKEN with `packages: write` and admin rights on the package{})",
            needed.as_deref().filter(|n| !n.is_empty()).unwrap_or("read:packages and delete:packages"),
            has.map(|h| format!("; it has: {h}")).unwrap_or_default()
        ),
        _ => {
            return BackendError::GithubApi {
                what: url.to_owned(),
                reason: format!("{status} {message}"),
            }
        }
    };
    BackendError::GithubDenied {
        what: url.to_owned(),
        reason: format!("{status} {message}{hint}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_page_is_read_from_the_link_header() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::LINK,
            r#"<https://api.github.com/x?page=2>; rel="next", <https://api.github.com/x?page=5>; rel="last""#
                .parse()
                .unwrap(),
        );
        assert_eq!(
            next_link(&headers).as_deref(),
            Some("https://api.github.com/x?page=2")
        );
        headers.insert(
            reqwest::header::LINK,
            r#"<https://api.github.com/x?page=1>; rel="prev""#.parse().unwrap(),
        );
        assert_eq!(next_link(&headers), None);
    }

    #[test]
    fn a_version_s_tags_and_time_are_read_as_github_writes_them() {
        let version: PackageVersion = serde_json::from_str(
            r#"{"id": 7, "name": "sha256:ab", "updated_at": "2026-12-01T10:00:00Z",
                "metadata": {"package_type": "container", "container": {"tags": ["a", "b"]}}}"#,
        )
        .unwrap();
        assert_eq!(version.tags(), ["a", "b"]);
        assert!(version.changed().is_some());
        let untagged: PackageVersion =
            serde_json::from_str(r#"{"id": 8, "name": "sha256:cd"}"#).unwrap();
        assert!(untagged.tags().is_empty());
    }
}
