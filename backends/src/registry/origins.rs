//! Where a registry may send us. A registry's answers carry URLs (a token `realm`, an
//! upload `Location`, a tag list's `Link`), and a registry is someone else's machine: left
//! unchecked, those URLs would carry the user's credentials, a token or a NAR's bytes to any
//! host the registry names. The rule, in one place: requests that carry credentials or data
//! go only to the registry's own origin (scheme, host and port), or, for tokens, to a realm
//! the backend knows (Docker Hub's) or the user listed. https never falls back to http.
//! Blob redirects (credential-free) lead where the caller allows: anywhere for the CLI,
//! and for the server only to the registry, its backend's storage or `blob_origins`.

use reqwest::Url;

use crate::error::BackendError;

/// The origins one registry's answers may point us at.
#[derive(Debug, Clone)]
pub struct Origins {
    own: url::Origin,
    token_realms: Vec<url::Origin>,
    /// Where blob redirects may lead besides the registry itself; `None`: anywhere.
    blob_storage: Option<Vec<url::Origin>>,
}

fn origin_of(url: &str) -> Option<url::Origin> {
    let origin = Url::parse(url).ok()?.origin();
    origin.is_tuple().then_some(origin)
}

impl Origins {
    /// `base_url` is the registry's (`https://host[:port]`); `token_realms` are URLs or
    /// origins of token services allowed besides the registry itself; `blob_storage`, where
    /// blob redirects may lead besides it (`None`: anywhere).
    pub fn new(
        base_url: &str,
        token_realms: &[String],
        blob_storage: Option<&[String]>,
    ) -> Result<Self, BackendError> {
        let own = origin_of(base_url).ok_or_else(|| BackendError::InvalidSetting {
            setting: "registry",
            reason: format!("{base_url:?} is not a usable URL"),
        })?;
        let token_realms = Self::parse_all(token_realms, "token_realms")?;
        let blob_storage = blob_storage
            .map(|urls| Self::parse_all(urls, "blob_origins"))
            .transpose()?;
        Ok(Self {
            own,
            token_realms,
            blob_storage,
        })
    }

    /// The origins of `urls` (a config list named `setting`), refusing any that is not an
    /// http(s) URL.
    fn parse_all(urls: &[String], setting: &'static str) -> Result<Vec<url::Origin>, BackendError> {
        urls.iter()
            .map(|url| {
                origin_of(url).ok_or_else(|| BackendError::InvalidSetting {
                    setting,
                    reason: format!("{url:?} is not an http(s) URL"),
                })
            })
            .collect()
    }

    /// Whether a blob redirect to `url` may be followed (without credentials).
    pub fn allows_blob_redirect(&self, url: &str) -> bool {
        match &self.blob_storage {
            None => true,
            Some(allowed) => {
                origin_of(url).is_some_and(|origin| origin == self.own || allowed.contains(&origin))
            }
        }
    }

    /// Whether `url` is on the registry's own origin.
    pub fn is_own(&self, url: &str) -> bool {
        origin_of(url).is_some_and(|origin| origin == self.own)
    }

    /// Whether credentials may be sent to the token service at `realm`: the registry's own
    /// origin or a listed one, and never plain http for a registry reached over https.
    pub fn allows_token_realm(&self, realm: &str) -> bool {
        let Some(origin) = origin_of(realm) else {
            return false;
        };
        if origin == self.own {
            return true;
        }
        let downgrade = matches!(
            (&self.own, &origin),
            (url::Origin::Tuple(own, ..), url::Origin::Tuple(theirs, ..)) if own == "https" && theirs == "http"
        );
        !downgrade && self.token_realms.contains(&origin)
    }

    /// `scheme://host[:port]` of `url`, for messages (never its path or query, which may
    /// carry a signature).
    pub fn display(url: &str) -> String {
        origin_of(url).map_or_else(|| "an unusable URL".to_owned(), |o| o.ascii_serialization())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origins(base: &str, realms: &[&str]) -> Origins {
        let realms: Vec<String> = realms.iter().map(|r| (*r).to_owned()).collect();
        Origins::new(base, &realms, None).unwrap()
    }

    #[test]
    fn only_the_registry_itself_is_its_own_origin() {
        let o = origins("https://ghcr.io", &[]);
        assert!(o.is_own("https://ghcr.io/v2/x/blobs/uploads/1?state=a"));
        assert!(o.is_own("https://ghcr.io:443/token"));
        assert!(!o.is_own("http://ghcr.io/v2/"), "no downgrade");
        assert!(!o.is_own("https://ghcr.io:8443/v2/"), "another port");
        assert!(!o.is_own("https://evil.example/v2/"));
        assert!(!o.is_own("https://ghcr.io.evil.example/v2/"));
        assert!(!o.is_own("file:///etc/passwd"));
    }

    #[test]
    fn token_realms_are_the_registry_or_listed_and_never_a_downgrade() {
        let o = origins("https://registry-1.docker.io", &["https://auth.docker.io"]);
        assert!(o.allows_token_realm("https://auth.docker.io/token"));
        assert!(o.allows_token_realm("https://registry-1.docker.io/token"));
        assert!(!o.allows_token_realm("http://auth.docker.io/token"));
        assert!(!o.allows_token_realm("https://auth.docker.io.evil.example/token"));
        assert!(!o.allows_token_realm("https://127.0.0.1:9/token"));
        let plain = origins("http://127.0.0.1:5000", &["http://127.0.0.1:5001/token"]);
        assert!(plain.allows_token_realm("http://127.0.0.1:5001/token"));
        assert!(!plain.allows_token_realm("http://127.0.0.1:5002/token"));
        assert!(Origins::new("https://x", &["not a url".into()], None).is_err());
    }

    #[test]
    fn blob_redirects_lead_anywhere_or_only_where_allowed() {
        let anywhere = origins("https://r.example", &[]);
        assert!(anywhere.allows_blob_redirect("http://10.0.0.1/internal"));
        let storage = vec!["https://bucket.s3.example".to_owned()];
        let listed = Origins::new("https://r.example", &[], Some(&storage)).unwrap();
        assert!(listed.allows_blob_redirect("https://bucket.s3.example/x?sig=1"));
        assert!(listed.allows_blob_redirect("https://r.example/v2/x"));
        assert!(!listed.allows_blob_redirect("http://bucket.s3.example/x"));
        assert!(!listed.allows_blob_redirect("http://10.0.0.1/internal"));
    }
}
