//! Which registry credentials a client sent. Nix (through curl and a netrc file) sends HTTP
//! Basic; Nix's S3 store, as the original oranc documents it for `nix copy --to s3://…`,
//! sends an AWS Signature V4 whose access key id is base64 of `user:password`.
//!
//! The server checks neither: it cannot verify a SigV4 signature (the secret is a
//! placeholder) and it does not own the registry's passwords. Both forms only say which
//! credentials to forward to the registry, which decides; they are trusted for nothing more.
//! Because a SigV4 header changes with every request, layers that tell clients apart (the
//! response cache) use the credentials' [`fingerprint`], not the raw header; both are read
//! once per request into its context (request_context.rs).

use axum::http::{header, HeaderMap};
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use oranc_backends::Credentials;
use sha2::{Digest as _, Sha256};

/// Standard base64, with or without padding (`base64 --wrap 0` pads; hand-made keys may not).
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The registry credentials in the client's `Authorization` header, if it sent usable ones.
pub fn client_credentials(headers: &HeaderMap) -> Option<Credentials> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.trim().split_once(' ')?;
    let encoded = if scheme.eq_ignore_ascii_case("basic") {
        rest.trim()
    } else if scheme == "AWS4-HMAC-SHA256" {
        sigv4_access_key_id(rest)?
    } else {
        return None;
    };
    let text = String::from_utf8(BASE64.decode(encoded).ok()?).ok()?;
    let (username, password) = text.split_once(':')?;
    Some(Credentials::basic(username, password))
}

/// The token of `Authorization: Bearer <token>`, if that is what the client sent.
pub fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
        .filter(|token| !token.is_empty())
}

/// The access key id of `Credential=<id>/<date>/<region>/<service>/aws4_request, …`. The id is
/// everything before the last four `/`-separated parts: base64 may itself contain `/`.
fn sigv4_access_key_id(parameters: &str) -> Option<&str> {
    let credential = parameters
        .split(',')
        .find_map(|part| part.trim().strip_prefix("Credential="))?;
    let mut parts = credential.rsplitn(5, '/');
    let scope: Vec<&str> = parts.by_ref().take(4).collect();
    let id = parts.next()?;
    (scope.len() == 4 && scope[0] == "aws4_request" && !id.is_empty()).then_some(id)
}

/// A digest that tells credentials apart without holding them; zero for anonymous.
pub fn fingerprint(credentials: &Credentials) -> [u8; 32] {
    match credentials {
        Credentials::Anonymous => [0; 32],
        Credentials::Basic { username, password } => credential_digest(username, password),
    }
}

/// SHA-256 of a user and password, framed by the user's length so that no two pairs share
/// an input (`a\0` + `b` and `a` + `\0b` would, joined by a separator alone).
pub fn credential_digest(username: &str, password: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update((username.len() as u64).to_be_bytes());
    hasher.update(username.as_bytes());
    hasher.update(password.as_bytes());
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn headers(authorization: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, authorization.parse().unwrap());
        headers
    }

    fn basic(user: &str, password: &str) -> Option<Credentials> {
        Some(Credentials::basic(user, password))
    }

    #[test]
    fn basic_credentials_are_read() {
        assert_eq!(client_credentials(&headers("Basic dTpw")), basic("u", "p"));
        assert_eq!(client_credentials(&headers("basic  dTpw")), basic("u", "p"));
        assert_eq!(client_credentials(&headers("Basic !!!")), None);
        assert_eq!(client_credentials(&headers("Bearer eyJabc")), None);
    }

    #[test]
    fn a_sigv4_access_key_id_is_base64_of_user_and_password() {
        // base64 of this has a '/' in it, which must not end the id.
        let id = BASE64.encode("me:???");
        assert!(id.contains('/'), "{id}");
        let value = format!(
            "AWS4-HMAC-SHA256 Credential={id}/20261126/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=0123abcd"
        );
        assert_eq!(client_credentials(&headers(&value)), basic("me", "???"));
        // An id without its base64 padding is read too.
        let id = BASE64.encode("u:p1");
        let trimmed = id.trim_end_matches('=');
        let value = format!("AWS4-HMAC-SHA256 Credential={trimmed}/d/r/s3/aws4_request");
        assert_eq!(client_credentials(&headers(&value)), basic("u", "p1"));
    }

    #[test]
    fn a_malformed_sigv4_header_is_anonymous() {
        for value in [
            "AWS4-HMAC-SHA256 Credential=dTpw",
            "AWS4-HMAC-SHA256 Credential=/d/r/s3/aws4_request",
            "AWS4-HMAC-SHA256 Credential=dTpw/d/r/s3/other",
            "AWS4-HMAC-SHA256 SignedHeaders=host",
            "AWS4-HMAC-SHA256 Credential=bm9jb2xvbg==/d/r/s3/aws4_request",
        ] {
            assert_eq!(client_credentials(&headers(value)), None, "{value}");
        }
    }

    fn client_fingerprint(headers: &HeaderMap) -> [u8; 32] {
        client_credentials(headers).map_or([0; 32], |c| fingerprint(&c))
    }

    #[test]
    fn both_forms_of_the_same_credentials_share_a_fingerprint() {
        let sigv4 = format!(
            "AWS4-HMAC-SHA256 Credential={}/20261126/us-east-1/s3/aws4_request, Signature=1",
            BASE64.encode("u:p")
        );
        assert_eq!(
            client_fingerprint(&headers("Basic dTpw")),
            client_fingerprint(&headers(&sigv4))
        );
        assert_ne!(client_fingerprint(&headers("Basic dTpw")), [0; 32]);
        assert_eq!(client_fingerprint(&HeaderMap::new()), [0; 32]);
    }

    #[test]
    fn a_separator_in_a_name_does_not_make_two_pairs_one() {
        assert_ne!(credential_digest("a\0", "b"), credential_digest("a", "\0b"));
        assert_ne!(credential_digest("ab", ""), credential_digest("a", "b"));
    }
}
