//! A client for another binary cache as Nix serves them (`https://cache.nixos.org`, an S3
//! website, nix-serve, attic, another oranc server, a `nix copy --to file://DIR` directory):
//! its `nix-cache-info`, narinfos and NAR files. `oranc push --from` reads paths from one;
//! the server's pull-through mirror is meant to fetch from one.
//!
//! It never sends credentials (none are configured for it, and a redirect cannot add any),
//! bounds small files in size, and streams NAR files rather than holding them.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use oranc_core::cache_key::KeyKind;
use oranc_core::registry::ByteStream;
use oranc_core::{CacheKey, Error, NarInfo, NixCacheInfo, Result, StoreDir, StorePath};
use tokio_util::io::ReaderStream;

use crate::BackendError;

/// Largest narinfo or `nix-cache-info` read; real ones are a few KiB.
const MAX_SMALL_FILE: usize = 1 << 20;
/// How long a narinfo or `nix-cache-info` may take, from the request to its last byte, at
/// most (a shorter read timeout bounds it further): real ones come in well under a second,
/// and a client waits on each. Without it, an upstream sending one byte a second held a
/// request for 90 s.
const SMALL_FILE_DEADLINE: Duration = Duration::from_secs(15);
/// What `content_encoding` undoes.
const ACCEPTED_ENCODINGS: &str = "br, gzip, zstd, xz";

/// One binary cache, by URL.
#[derive(Debug, Clone)]
pub struct BinaryCache {
    location: Location,
    /// The URL as given, for messages.
    url: String,
}

#[derive(Debug, Clone)]
enum Location {
    Http {
        base: String,
        client: reqwest::Client,
        /// The window in which a body must make progress (see `registry::bounded`).
        read: Duration,
    },
    Directory(PathBuf),
}

impl BinaryCache {
    /// `http(s)://HOST/PATH` or `file:///DIR`; trailing slashes are ignored.
    pub fn open(url: &str, timeouts: BinaryCacheTimeouts) -> Result<Self, BackendError> {
        let trimmed = url.trim_end_matches('/');
        let location = if let Some(dir) = trimmed.strip_prefix("file://") {
            if !dir.starts_with('/') {
                return Err(BackendError::BinaryCacheUrl {
                    url: url.to_owned(),
                    reason: "a file:// cache needs an absolute path (file:///DIR)".into(),
                });
            }
            Location::Directory(PathBuf::from(dir))
        } else if trimmed.starts_with("http://") || trimmed.starts_with("https://") {
            let base_url = url::Url::parse(trimmed).map_err(|e| BackendError::BinaryCacheUrl {
                url: url.to_owned(),
                reason: e.to_string(),
            })?;
            let client = reqwest::Client::builder()
                .connect_timeout(timeouts.connect)
                .read_timeout(timeouts.read)
                .dns_resolver(crate::redirects::resolver(&base_url))
                .redirect(crate::redirects::policy(base_url))
                .build()
                .map_err(|e| BackendError::HttpClient(e.to_string()))?;
            Location::Http {
                base: trimmed.to_owned(),
                client,
                read: timeouts.read,
            }
        } else {
            return Err(BackendError::BinaryCacheUrl {
                url: url.to_owned(),
                reason: "a binary cache is http://, https:// or file:///DIR".into(),
            });
        };
        Ok(Self {
            location,
            url: without_credentials(trimmed),
        })
    }

    /// The URL, for messages: credentials in it (`https://user:token@host`) are replaced
    /// by `***`, so no log line or error carries them.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The cache's `nix-cache-info`, if it has one.
    pub async fn cache_info(&self) -> Result<Option<NixCacheInfo>> {
        let Some(bytes) = self.small_file("nix-cache-info").await? else {
            return Ok(None);
        };
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| self.protocol("nix-cache-info", "not UTF-8"))?;
        text.parse::<NixCacheInfo>().map(Some)
    }

    /// The narinfo of `path`, if the cache has it. Its `StorePath` must be `path`.
    pub async fn narinfo(&self, store_dir: &StoreDir, path: &StorePath) -> Result<Option<NarInfo>> {
        let found = self.narinfo_by_hash(store_dir, path.hash_part()).await?;
        let key = format!("{}.narinfo", path.hash_part());
        match found {
            Some(narinfo) if narinfo.store_path != *path => Err(self.protocol(
                &key,
                &format!("it describes {}, not {path}", narinfo.store_path),
            )),
            found => Ok(found),
        }
    }

    /// The narinfo `<hash_part>.narinfo`, if the cache has it: for `store_dir`, and of a
    /// path with that hash part.
    pub async fn narinfo_by_hash(
        &self,
        store_dir: &StoreDir,
        hash_part: &str,
    ) -> Result<Option<NarInfo>> {
        let key = format!("{hash_part}.narinfo");
        let Some(bytes) = self.small_file(&key).await? else {
            return Ok(None);
        };
        let text = std::str::from_utf8(&bytes).map_err(|_| self.protocol(&key, "not UTF-8"))?;
        // The parser's reasons quote the offending line: not another cache's text into our
        // log, only where it is.
        let narinfo = NarInfo::parse(text).map_err(|error| match error {
            Error::InvalidNarinfo { line, .. } => {
                self.protocol(&key, &format!("not a valid narinfo (line {line})"))
            }
            other => other,
        })?;
        if narinfo.store_dir != *store_dir || narinfo.store_path.hash_part() != hash_part {
            return Err(self.protocol(
                &key,
                &format!(
                    "it describes {}/{}, not a path {}/{hash_part}-…",
                    narinfo.store_dir, narinfo.store_path, store_dir
                ),
            ));
        }
        Ok(Some(narinfo))
    }

    /// The file at `relative` (a narinfo's `URL`), streamed; `None` when the cache lacks it.
    pub async fn open_file(&self, relative: &str) -> Result<Option<ByteStream>> {
        check_relative(relative).map_err(|reason| self.protocol(relative, &reason))?;
        match &self.location {
            Location::Directory(dir) => {
                let path = dir.join(relative);
                if self.regular_file(relative, &path).await?.is_none() {
                    return Ok(None);
                }
                match tokio::fs::File::open(&path).await {
                    Ok(file) => Ok(Some(ReaderStream::new(file).boxed())),
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(source) => Err(Error::Io {
                        what: format!("{}/{relative}", self.url),
                        source,
                    }),
                }
            }
            Location::Http { read, .. } => {
                let Some(answer) = self.get(relative, false).await? else {
                    return Ok(None);
                };
                // A NAR file must keep coming at a minimum pace: one sent a byte a second
                // held a copy slot for as long as upstream liked.
                Ok(Some(paced_body(answer, *read).boxed()))
            }
        }
    }

    /// A small file whole, bounded by [`MAX_SMALL_FILE`].
    async fn small_file(&self, relative: &str) -> Result<Option<Bytes>> {
        let deadline = match &self.location {
            Location::Http { read, .. } => SMALL_FILE_DEADLINE.min(*read),
            Location::Directory(_) => SMALL_FILE_DEADLINE,
        };
        let file =
            tokio::time::timeout(deadline, self.bounded_file(relative, MAX_SMALL_FILE, false))
                .await
                .map_err(|_| Error::TimedOut {
                    what: format!("{}/{relative}", self.url),
                    reason: Some(format!("not whole within {} s", deadline.as_secs())),
                })??;
        Ok(file.map(|(bytes, _)| bytes))
    }

    /// A listing, build log, debuginfo entry or realisation (`key`), whole and with any
    /// `Content-Encoding` undone, at most `limit` bytes; `None` when the cache lacks it. A
    /// debuginfo entry is also looked for without `.debug`, as Hydra's indexer (which
    /// fills cache.nixos.org) names them.
    pub async fn file_beside(&self, key: &CacheKey, limit: usize) -> Result<Option<Bytes>> {
        let hydra_name = (key.kind() == KeyKind::DebugInfo)
            .then(|| key.as_str().strip_suffix(".debug"))
            .flatten();
        for relative in std::iter::once(key.as_str()).chain(hydra_name) {
            let Some((bytes, encoding)) = self.bounded_file(relative, limit, true).await? else {
                continue;
            };
            let Some(encoding) = encoding else {
                return Ok(Some(bytes));
            };
            let decoded = tokio::task::spawn_blocking(move || {
                crate::content_encoding::decode(&encoding, &bytes, limit)
            })
            .await
            .map_err(|e| self.protocol(relative, &e.to_string()))?
            .map_err(|reason| self.protocol(relative, &reason))?;
            return Ok(Some(Bytes::from(decoded)));
        }
        Ok(None)
    }

    /// The file at `relative` whole, at most `limit` bytes, with the `Content-Encoding` it
    /// came with (over HTTP, when `encoded` allows one).
    async fn bounded_file(
        &self,
        relative: &str,
        limit: usize,
        encoded: bool,
    ) -> Result<Option<(Bytes, Option<String>)>> {
        let too_large = || self.protocol(relative, &format!("larger than {limit} bytes"));
        match &self.location {
            Location::Directory(dir) => {
                use tokio::io::AsyncReadExt as _;
                let path = dir.join(relative);
                match self.regular_file(relative, &path).await? {
                    None => return Ok(None),
                    Some(length) if length > limit as u64 => return Err(too_large()),
                    Some(_) => {}
                }
                let what = || format!("{}/{relative}", self.url);
                let file = tokio::fs::File::open(&path)
                    .await
                    .map_err(|source| Error::Io {
                        what: what(),
                        source,
                    })?;
                // Bounded even if the file grows between the look and the read.
                let mut bytes = Vec::new();
                file.take(limit as u64 + 1)
                    .read_to_end(&mut bytes)
                    .await
                    .map_err(|source| Error::Io {
                        what: what(),
                        source,
                    })?;
                if bytes.len() > limit {
                    return Err(too_large());
                }
                Ok(Some((Bytes::from(bytes), None)))
            }
            Location::Http { read, .. } => {
                let Some(answer) = self.get(relative, encoded).await? else {
                    return Ok(None);
                };
                let encoding = answer
                    .headers()
                    .get(reqwest::header::CONTENT_ENCODING)
                    .and_then(|value| value.to_str().ok())
                    .map(str::to_owned);
                let what = format!("{}/{relative}", self.url);
                let length = answer.content_length();
                let body = paced_body(answer, *read);
                let bytes = crate::registry::read_stream_capped(body, length, limit, &what).await?;
                Ok(Some((bytes, encoding)))
            }
        }
    }

    /// The length of `path` when it is a regular file (symlinks followed); `None` when it is
    /// absent. Anything else (a FIFO, a device like `/dev/zero`) is refused: reading it could
    /// block for ever or never end.
    async fn regular_file(&self, relative: &str, path: &std::path::Path) -> Result<Option<u64>> {
        match tokio::fs::metadata(path).await {
            Ok(meta) if meta.is_file() => Ok(Some(meta.len())),
            Ok(_) => Err(self.protocol(relative, "not a regular file")),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::Io {
                what: format!("{}/{relative}", self.url),
                source,
            }),
        }
    }

    /// GET of `relative`: the answer when it is a success, `None` for 404 (and 403, which S3
    /// answers for a missing key of a bucket that cannot be listed). `encoded`: whether the
    /// answer may come with a `Content-Encoding` (which the caller then undoes).
    async fn get(&self, relative: &str, encoded: bool) -> Result<Option<reqwest::Response>> {
        let Location::Http { base, client, .. } = &self.location else {
            return Ok(None);
        };
        let what = format!("{}/{relative}", self.url);
        // Keys are validated (no `..`, no `%`), but `?` may name a realisation's output and
        // must not start a query.
        let path = relative.replace('?', "%3F");
        let answer = client
            .get(format!("{base}/{path}"))
            // Asked for listings and logs only: S3 serves those as Nix uploaded them (see
            // `content_encoding`), whereas a NAR file read through a compressing proxy
            // would no longer be the file its narinfo describes.
            .header(
                reqwest::header::ACCEPT_ENCODING,
                if encoded {
                    ACCEPTED_ENCODINGS
                } else {
                    "identity"
                },
            )
            .send()
            .await
            .map_err(|error| {
                let error = error.without_url();
                if error.is_timeout() {
                    Error::TimedOut {
                        what: what.clone(),
                        reason: None,
                    }
                } else {
                    Error::Unavailable {
                        what: what.clone(),
                        reason: error.to_string(),
                    }
                }
            })?;
        let status = answer.status();
        if status.is_success() {
            return Ok(Some(answer));
        }
        if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::FORBIDDEN {
            return Ok(None);
        }
        Err(
            if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                Error::Unavailable {
                    what,
                    reason: status.to_string(),
                }
            } else {
                Error::Protocol {
                    what,
                    reason: status.to_string(),
                }
            },
        )
    }

    fn protocol(&self, relative: &str, reason: &str) -> Error {
        Error::Protocol {
            what: format!("{}/{relative}", self.url),
            reason: reason.to_owned(),
        }
    }
}

/// The body of `answer`, failing with `TimedOut` when a `read` window passes without the
/// minimum progress (`registry::bounded`): reqwest's read timeout alone is met by a byte
/// every few seconds.
fn paced_body(
    answer: reqwest::Response,
    read: Duration,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    let length = answer.content_length();
    crate::registry::with_progress_deadline(crate::registry::body_of(answer), length, read)
}

/// `url` with any user name and password in it replaced by `***`.
fn without_credentials(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
            let _ = parsed.set_password(None);
            let _ = parsed.set_username("***");
            parsed.to_string().trim_end_matches('/').to_owned()
        }
        _ => url.to_owned(),
    }
}

/// How long a binary cache may take: to connect, and between two reads of an answer.
#[derive(Debug, Clone, Copy)]
pub struct BinaryCacheTimeouts {
    pub connect: Duration,
    pub read: Duration,
}

impl Default for BinaryCacheTimeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            read: Duration::from_secs(60),
        }
    }
}

/// A narinfo's `URL` as this client follows it: relative, inside the cache, no `..`, and
/// only characters Nix's own file names use (no `%`: `%2e%2e` is `..` to an HTTP client).
fn check_relative(relative: &str) -> std::result::Result<(), String> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "._+-/".contains(c);
    let ok = !relative.is_empty()
        && relative.chars().all(plain)
        && !relative.starts_with('/')
        && relative
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..");
    if ok {
        Ok(())
    } else {
        Err(format!("URL {relative:?} is not a file inside the cache"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn credentials_in_a_cache_url_never_reach_a_message() {
        let cache = BinaryCache::open(
            "https://user:s3cret@cache.example.org/path/",
            BinaryCacheTimeouts::default(),
        )
        .unwrap();
        assert_eq!(cache.url(), "https://***@cache.example.org/path");
        let error = cache.protocol("x.narinfo", "broken").to_string();
        assert!(
            !error.contains("s3cret") && !error.contains("user"),
            "{error}"
        );
        let plain = BinaryCache::open("https://cache.nixos.org", BinaryCacheTimeouts::default());
        assert_eq!(plain.unwrap().url(), "https://cache.nixos.org");
    }

    #[test]
    fn only_files_inside_the_cache_are_followed() {
        for good in ["nar/abc.nar.xz", "nar/x"] {
            assert!(check_relative(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "nar/../../x",
            "https://evil/x",
            "nar//x",
            "a\\b",
            "nar/%2e%2e/%2e%2e/x",
            "nar/x?y",
        ] {
            assert!(check_relative(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_cache_is_http_https_or_an_absolute_directory() {
        let open = |url: &str| BinaryCache::open(url, BinaryCacheTimeouts::default());
        assert!(open("https://cache.nixos.org/").is_ok());
        assert!(open("file:///srv/cache").is_ok());
        assert!(open("file://relative").is_err());
        assert!(open("s3://bucket").is_err());
    }
}
