//! Cache key -> OCI tag encodings, exactly as the original oranc does them, so that either
//! tool finds what the other stored.
//!
//! `custom` (the default) keeps letters, digits and non-leading `-`/`.`, and writes any
//! other character as `_<code point in base 64>_` with the digits `0-9a-zA-Z-.`.
//! `base32-dnssec` (older caches) is RFC 4648 extended-hex base32, lower case, unpadded.
//!
//! A key whose encoding would not fit in a tag (128 characters: a build log of a derivation
//! with a long name, a `build-trace-v2/` entry) is stored under a [long-key
//! tag](long_key_tag) instead: a fixed prefix and the SHA-256 of the key. That tag says
//! nothing of the key, so the manifest's key annotation does, and every reader checks it.
//! The original oranc could not store such keys at all, so nothing it wrote changes.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// The longest tag the OCI distribution spec allows.
pub const MAX_TAG_LEN: usize = 128;

const CUSTOM_DIGITS: &[u8; 64] =
    b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-.";
const ESCAPE: char = '_';

/// What starts every [`long_key_tag`]. It decodes, in every encoding, to no cache key (the
/// custom encoding reads it as itself; the dots are not base32), so it never stands for a
/// key that has a tag of its own.
pub const LONG_KEY_TAG_PREFIX: &str = "oranc-long-key.sha256.";

/// The tag a key too long for its encoding is stored under: [`LONG_KEY_TAG_PREFIX`] and the
/// key's SHA-256 in hex (86 characters in all).
pub fn long_key_tag(key: &str) -> Tag {
    Tag(format!(
        "{LONG_KEY_TAG_PREFIX}{}",
        crate::Sha256Hash::of(key.as_bytes()).to_hex()
    ))
}

/// Whether `tag` is a [`long_key_tag`], whose key only its manifest tells.
pub fn is_long_key_tag(tag: &Tag) -> bool {
    tag.0.starts_with(LONG_KEY_TAG_PREFIX)
}

/// A valid OCI tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = Error;

    fn from_str(tag: &str) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidTag {
            tag: tag.to_owned(),
            reason,
        };
        if tag.is_empty() || tag.len() > MAX_TAG_LEN {
            return Err(invalid(format!(
                "a tag has 1 to {MAX_TAG_LEN} characters, this has {}",
                tag.len()
            )));
        }
        if !tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
            return Err(invalid("a tag starts with a letter, digit or '_'".into()));
        }
        if let Some(bad) = tag
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
        {
            return Err(invalid(format!("{bad:?} is not allowed in a tag")));
        }
        Ok(Self(tag.to_owned()))
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How cache keys are turned into tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TagEncoding {
    #[default]
    Custom,
    Base32Dnssec,
}

/// From its name (`custom`, `base32-dnssec`), so a config names it and is checked as it is
/// read.
impl<'de> serde::Deserialize<'de> for TagEncoding {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

impl TagEncoding {
    pub const ALL: [Self; 2] = [Self::Custom, Self::Base32Dnssec];

    pub fn name(self) -> &'static str {
        match self {
            Self::Custom => "custom",
            Self::Base32Dnssec => "base32-dnssec",
        }
    }

    pub fn encode(self, key: &str) -> Result<Tag> {
        let encoded = match self {
            Self::Custom => encode_custom(key),
            Self::Base32Dnssec => data_encoding::BASE32_DNSSEC.encode(key.as_bytes()),
        };
        encoded.parse().map_err(|e| match e {
            Error::InvalidTag { reason, .. } => Error::UnencodableKey {
                key: key.to_owned(),
                reason: format!("{} encoding gives {encoded:?}: {reason}", self.name()),
            },
            other => other,
        })
    }

    /// The tag `key` is stored under: its encoding, or its [`long_key_tag`] when that does
    /// not fit.
    pub fn tag_for(self, key: &str) -> Tag {
        self.encode(key).unwrap_or_else(|_| long_key_tag(key))
    }

    pub fn decode(self, tag: &Tag) -> Result<String> {
        let invalid = |reason: String| Error::InvalidTag {
            tag: tag.0.clone(),
            reason: format!("not {} encoded: {reason}", self.name()),
        };
        match self {
            Self::Custom => decode_custom(&tag.0).map_err(invalid),
            Self::Base32Dnssec => {
                let bytes = data_encoding::BASE32_DNSSEC
                    .decode(tag.0.as_bytes())
                    .map_err(|e| invalid(e.to_string()))?;
                String::from_utf8(bytes).map_err(|_| invalid("the bytes are not UTF-8".into()))
            }
        }
    }
}

impl FromStr for TagEncoding {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|e| e.name() == s)
            .ok_or_else(|| Error::InvalidTag {
                tag: s.to_owned(),
                reason: "unknown tag encoding; known are custom and base32-dnssec".into(),
            })
    }
}

impl fmt::Display for TagEncoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn encode_custom(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for (index, c) in key.chars().enumerate() {
        let kept = c.is_ascii_alphanumeric() || (index > 0 && matches!(c, '-' | '.'));
        if kept {
            out.push(c);
        } else {
            out.push(ESCAPE);
            push_base64_digits(&mut out, u32::from(c));
            out.push(ESCAPE);
        }
    }
    out
}

fn push_base64_digits(out: &mut String, mut value: u32) {
    let mut digits = Vec::with_capacity(4);
    loop {
        digits.push(CUSTOM_DIGITS[(value % 64) as usize] as char);
        value /= 64;
        if value == 0 {
            break;
        }
    }
    out.extend(digits.iter().rev());
}

fn decode_custom(tag: &str) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(tag.len());
    let mut chars = tag.chars();
    while let Some(c) = chars.next() {
        if c != ESCAPE {
            out.push(c);
            continue;
        }
        let mut value: u32 = 0;
        let mut digits = 0;
        loop {
            match chars.next() {
                None => return Err("an escape is not closed with '_'".into()),
                Some(ESCAPE) => break,
                Some(d) => {
                    let digit = CUSTOM_DIGITS
                        .iter()
                        .position(|x| *x as char == d)
                        .ok_or_else(|| format!("{d:?} is not a base-64 digit"))?;
                    value = value
                        .checked_mul(64)
                        .and_then(|v| v.checked_add(digit as u32))
                        .ok_or("an escape is too large")?;
                    digits += 1;
                }
            }
        }
        if digits == 0 {
            return Err("an escape '__' has no digits".into());
        }
        out.push(char::from_u32(value).ok_or(format!("{value} is not a Unicode code point"))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_mirrors_nar_key_fits_a_custom_tag_but_not_a_base32_one() {
        // cache.nixos.org's NAR file, renamed by a mirror to nar/<path hash>-<file name>.
        let key = "nar/0cn5ij2xiyp7fbpxpjz6j7rm7rm1k91d-1w1fff338fvdw53sqgamddn1b2xgds473pv6y13gizdbqjv4i5p3.nar.xz";
        assert!(TagEncoding::Custom.encode(key).is_ok());
        assert!(TagEncoding::Base32Dnssec.encode(key).is_err());
    }

    fn custom(key: &str) -> String {
        TagEncoding::Custom.encode(key).unwrap().to_string()
    }

    #[test]
    fn custom_encoding_matches_the_original_oranc_examples() {
        assert_eq!(custom("/"), "_L_");
        assert_eq!(custom(":"), "_W_");
        assert_eq!(custom("!"), "_x_");
        assert_eq!(custom("_"), "_1v_");
        assert_eq!(custom("--"), "_J_-");
        assert_eq!(custom("nar/abc.nar.zst"), "nar_L_abc.nar.zst");
        assert_eq!(custom("nix-cache-info"), "nix-cache-info");
        assert_eq!(
            custom("5kk4mwqi310s9ssry90al6mxrb47vdiw.narinfo"),
            "5kk4mwqi310s9ssry90al6mxrb47vdiw.narinfo"
        );
        let digest = "67890abcdef1234567890abcdef1234567890abcdef1234567890abcdef12345";
        assert_eq!(
            custom(&format!("realisations/sha256:{digest}!libgcc.doi")),
            format!("realisations_L_sha256_W_{digest}_x_libgcc.doi")
        );
    }

    #[test]
    fn custom_decoding_reads_the_fixture_tags() {
        // Tags the original oranc wrote into tests/fixtures/original-oranc.
        let tag: Tag = "nar_L_08mjwad4r6dxq2x7b7ljxki6hzacr0f4kbpr6pbqcvi0vrh7iipm.nar.zst"
            .parse()
            .unwrap();
        assert_eq!(
            TagEncoding::Custom.decode(&tag).unwrap(),
            "nar/08mjwad4r6dxq2x7b7ljxki6hzacr0f4kbpr6pbqcvi0vrh7iipm.nar.zst"
        );
    }

    #[test]
    fn base32_dnssec_is_lowercase_extended_hex_without_padding() {
        let tag = TagEncoding::Base32Dnssec.encode("nix-cache-info").unwrap();
        assert_eq!(tag.as_str(), "dpkngbb3c5hmgp9dd5n6cro");
        assert_eq!(
            TagEncoding::Base32Dnssec.decode(&tag).unwrap(),
            "nix-cache-info"
        );
    }

    #[test]
    fn too_long_keys_and_bad_tags_are_errors_not_panics() {
        let err = TagEncoding::Custom.encode(&"/".repeat(50)).unwrap_err();
        assert!(err.to_string().contains("1 to 128"), "{err}");
        for (tag, needle) in [
            ("", "1 to 128"),
            ("-a", "starts with"),
            ("a/b", "'/' is not allowed"),
            ("ab_", "not closed"),
            ("a__b", "no digits"),
            ("a_!_", "is not allowed"),
            ("a_zzzzzzzz_", "too large"),
        ] {
            let err = tag
                .parse::<Tag>()
                .and_then(|t| TagEncoding::Custom.decode(&t))
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{tag:?}: {err}");
        }
        // A surrogate code point is not a char.
        let err = TagEncoding::Custom
            .decode(&"_dw0_".parse().unwrap())
            .unwrap_err();
        assert!(err.to_string().contains("not a Unicode"), "{err}");
    }

    #[test]
    fn a_key_too_long_for_a_tag_gets_a_long_key_tag_no_encoding_decodes() {
        let key = format!(
            "log/v873jj33sxxhc8d6jf84lbn85p09wm3i-{}.drv",
            "a".repeat(180)
        );
        for encoding in TagEncoding::ALL {
            let tag = encoding.tag_for(&key);
            assert_eq!(tag, long_key_tag(&key));
            assert!(is_long_key_tag(&tag));
            assert_eq!(tag.as_str().len(), LONG_KEY_TAG_PREFIX.len() + 64);
            assert!(tag.as_str().parse::<Tag>().is_ok());
            // No encoding reads it as a cache key.
            for reader in TagEncoding::ALL {
                let decoded = reader.decode(&tag);
                assert!(
                    decoded.map_or(true, |k| k.parse::<crate::CacheKey>().is_err()),
                    "{reader}"
                );
            }
        }
        assert_ne!(long_key_tag(&key), long_key_tag(&format!("{key}x")));
        // A key that fits keeps the original's tag.
        assert_eq!(
            TagEncoding::Custom.tag_for("nar/abc.nar.zst").as_str(),
            "nar_L_abc.nar.zst"
        );
        assert!(!is_long_key_tag(
            &TagEncoding::Custom.tag_for("nix-cache-info")
        ));
    }

    proptest! {
        #[test]
        fn every_encodable_key_round_trips_to_a_valid_tag(key in "\\PC{0,60}") {
            for encoding in TagEncoding::ALL {
                match encoding.encode(&key) {
                    Ok(tag) => {
                        prop_assert!(tag.as_str().parse::<Tag>().is_ok());
                        prop_assert_eq!(encoding.decode(&tag).unwrap(), key.clone());
                    }
                    Err(Error::UnencodableKey { .. }) => {
                        prop_assert!(key.is_empty() || encode_custom(&key).len() > MAX_TAG_LEN
                            || data_encoding::BASE32_DNSSEC.encode(key.as_bytes()).len() > MAX_TAG_LEN);
                    }
                    Err(other) => prop_assert!(false, "unexpected error {other}"),
                }
            }
        }

        #[test]
        fn cache_shaped_keys_always_encode(hash in "[0-9a-df-np-sv-z]{52}", ext in "(zst|xz|bz2)") {
            let key = format!("nar/{hash}.nar.{ext}");
            let tag = TagEncoding::Custom.encode(&key).unwrap();
            prop_assert_eq!(TagEncoding::Custom.decode(&tag).unwrap(), key);
        }
    }
}
