//! SHA-256 hashes as Nix writes them: `sha256:<nix32>` in narinfo, `sha256:<base16>` in the
//! Nix DB, `sha256-<base64>` (SRI) in `nix path-info --json`. One type, every spelling.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// The nix32 alphabet: digits and lower-case letters without e, o, u and t.
pub const NIX32_ALPHABET: &str = "0123456789abcdfghijklmnpqrsvwxyz";

/// Length of a SHA-256 digest in nix32.
pub const SHA256_NIX32_LEN: usize = 52;

pub fn is_nix32_char(c: char) -> bool {
    NIX32_ALPHABET.contains(c)
}

/// A SHA-256 digest (NarHash, FileHash, a blob digest).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256Hash([u8; 32]);

impl Sha256Hash {
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn of(data: &[u8]) -> Self {
        Self(Sha256::digest(data).into())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// `<52 nix32 chars>`, as in NAR file names.
    pub fn to_nix32(&self) -> String {
        nix_base32::to_nix_base32(&self.0)
    }

    /// `sha256:<nix32>`, as narinfo's NarHash and FileHash.
    pub fn to_nix_string(&self) -> String {
        format!("sha256:{}", self.to_nix32())
    }

    /// `<64 hex chars>`, as OCI digests and the Nix DB use.
    pub fn to_hex(&self) -> String {
        data_encoding::HEXLOWER.encode(&self.0)
    }

    /// `sha256:<hex>`: an OCI content digest.
    pub fn to_oci_digest(&self) -> String {
        format!("sha256:{}", self.to_hex())
    }

    /// `sha256-<base64>`: the SRI form `nix path-info --json` prints.
    pub fn to_sri(&self) -> String {
        format!(
            "sha256-{}",
            base64::engine::general_purpose::STANDARD.encode(self.0)
        )
    }

    /// Parses the digest part alone, in nix32 (52), hex (64) or base64 (44) characters.
    pub fn parse_digest(digest: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidHash {
            input: digest.to_owned(),
            reason: reason.to_owned(),
        };
        let bytes = match digest.len() {
            SHA256_NIX32_LEN => {
                if !digest.chars().all(is_nix32_char) {
                    return Err(invalid("not nix32"));
                }
                nix_base32::from_nix_base32(digest).ok_or_else(|| invalid("not nix32"))?
            }
            64 => data_encoding::HEXLOWER_PERMISSIVE
                .decode(digest.as_bytes())
                .map_err(|_| invalid("not base16"))?,
            44 => base64::engine::general_purpose::STANDARD
                .decode(digest)
                .map_err(|_| invalid("not base64"))?,
            _ => {
                return Err(invalid(
                    "a sha256 digest has 52 nix32, 64 base16 or 44 base64 characters",
                ))
            }
        };
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| invalid("does not decode to 32 bytes"))?;
        Ok(Self(bytes))
    }
}

impl FromStr for Sha256Hash {
    type Err = Error;

    /// Accepts `sha256:<nix32|hex|base64>` and `sha256-<base64>`.
    fn from_str(s: &str) -> Result<Self> {
        let digest = s
            .strip_prefix("sha256:")
            .or_else(|| s.strip_prefix("sha256-"))
            .ok_or_else(|| Error::InvalidHash {
                input: s.to_owned(),
                reason: "expected sha256:<digest> or sha256-<base64>".into(),
            })?;
        Self::parse_digest(digest).map_err(|e| match e {
            Error::InvalidHash { reason, .. } => Error::InvalidHash {
                input: s.to_owned(),
                reason,
            },
            other => other,
        })
    }
}

impl fmt::Display for Sha256Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_nix_string())
    }
}

impl fmt::Debug for Sha256Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256Hash({})", self.to_nix_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // From tests/fixtures/original-oranc/path-info.json and the narinfo the original
    // wrote for the same path: the same NarHash in SRI and nix32.
    const SRI: &str = "sha256-a4WUUbK0G+y2dmz5svJ5wAs7/bm4dKQBzDHABwNz5m8=";
    const NIX: &str = "sha256:0vz6fc1hgh1irh0s8x5qp7ykn2y0g7rb5ybcfsvfq6xln98r91bb";

    #[test]
    fn sri_and_nix32_spellings_name_the_same_hash() {
        let sri: Sha256Hash = SRI.parse().unwrap();
        let nix: Sha256Hash = NIX.parse().unwrap();
        assert_eq!(sri, nix);
        assert_eq!(sri.to_nix_string(), NIX);
        assert_eq!(nix.to_sri(), SRI);
        let hex: Sha256Hash = format!("sha256:{}", nix.to_hex()).parse().unwrap();
        assert_eq!(hex, nix);
    }

    #[test]
    fn nix32_matches_nix_for_a_known_digest() {
        // sha256 of the empty string, as `nix hash to-base32` prints it.
        assert_eq!(
            Sha256Hash::of(b"").to_nix32(),
            "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"
        );
    }

    #[test]
    fn rejects_malformed_hashes_with_reasons() {
        for (input, needle) in [
            ("md5:abc", "expected sha256"),
            ("sha256:abc", "52 nix32"),
            (
                "sha256:0vz6fc1hgh1irh0s8x5qp7ykn2y0g7rb5ybcfsvfq6xln98r91be",
                "not nix32",
            ),
            (
                "sha256-!!!!UbK0G+y2dmz5svJ5wAs7/bm4dKQBzDHABwNz5m8=",
                "not base64",
            ),
        ] {
            let err = input.parse::<Sha256Hash>().unwrap_err().to_string();
            assert!(err.contains(needle), "{input}: {err}");
        }
    }
}
