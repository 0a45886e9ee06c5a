//! Nix's ed25519 signatures: key files (`name:base64(...)`), `Sig:` values and the
//! fingerprint a signature covers. A path pushed with a signature Nix would not accept is
//! worse than one not pushed, so verification lives next to signing.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ed25519_dalek::{Signer as _, Verifier as _};

use crate::error::{Error, Result};
use crate::hash::Sha256Hash;
use crate::store_path::{StoreDir, StorePath};

/// The text a Nix signature covers:
/// `1;<store path>;<sha256:nix32 NarHash>;<NarSize>;<comma-separated reference paths>`.
pub fn fingerprint(
    store_dir: &StoreDir,
    path: &StorePath,
    nar_hash: &Sha256Hash,
    nar_size: u64,
    references: &[StorePath],
) -> String {
    let refs: Vec<String> = references.iter().map(|r| store_dir.display(r)).collect();
    format!(
        "1;{};{};{};{}",
        store_dir.display(path),
        nar_hash.to_nix_string(),
        nar_size,
        refs.join(",")
    )
}

fn split_named<'a>(input: &'a str, what: &str) -> Result<(&'a str, Vec<u8>)> {
    let invalid = |reason: String| Error::InvalidKey { reason };
    let (name, data) = input
        .trim()
        .split_once(':')
        .ok_or_else(|| invalid(format!("{what} must be NAME:BASE64, found no ':'")))?;
    if name.is_empty() {
        return Err(invalid(format!("{what} has an empty key name")));
    }
    let bytes = BASE64
        .decode(data)
        .map_err(|e| invalid(format!("{what} {name:?}: base64 part does not decode: {e}")))?;
    Ok((name, bytes))
}

/// A secret key as `nix key generate-secret` writes it: `name:base64(seed ++ public key)`.
#[derive(Clone)]
pub struct SecretKey {
    name: String,
    key: ed25519_dalek::SigningKey,
}

impl SecretKey {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn to_public(&self) -> PublicKey {
        PublicKey {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    pub fn sign(&self, fingerprint: &str) -> Signature {
        Signature {
            key_name: self.name.clone(),
            bytes: self.key.sign(fingerprint.as_bytes()).to_bytes(),
        }
    }

    /// `name:base64(64 bytes)`, the format Nix reads.
    pub fn to_nix_string(&self) -> String {
        format!(
            "{}:{}",
            self.name,
            BASE64.encode(self.key.to_keypair_bytes())
        )
    }

    pub fn from_seed(name: &str, seed: [u8; 32]) -> Self {
        Self {
            name: name.to_owned(),
            key: ed25519_dalek::SigningKey::from_bytes(&seed),
        }
    }
}

impl FromStr for SecretKey {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let (name, bytes) = split_named(s, "secret key")?;
        let keypair: [u8; 64] = bytes.try_into().map_err(|b: Vec<u8>| Error::InvalidKey {
            reason: if b.len() == 32 {
                format!("{name:?} is a public key (32 bytes); signing needs the secret key it was made from (`nix key generate-secret`)")
            } else {
                format!("secret key {name:?} has {} bytes, expected 64", b.len())
            },
        })?;
        let key = ed25519_dalek::SigningKey::from_keypair_bytes(&keypair).map_err(|_| {
            Error::InvalidKey {
                reason: format!("secret key {name:?}: its public half does not match its seed"),
            }
        })?;
        Ok(Self {
            name: name.to_owned(),
            key,
        })
    }
}

/// Never prints the key material.
impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A public key as in `trusted-public-keys`: `name:base64(32 bytes)`.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    name: String,
    key: ed25519_dalek::VerifyingKey,
}

impl PublicKey {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True when `signature` is by this key (same name) and covers `fingerprint`.
    pub fn verifies(&self, fingerprint: &str, signature: &Signature) -> bool {
        signature.key_name == self.name
            && self
                .key
                .verify(
                    fingerprint.as_bytes(),
                    &ed25519_dalek::Signature::from_bytes(&signature.bytes),
                )
                .is_ok()
    }
}

impl FromStr for PublicKey {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let (name, bytes) = split_named(s, "public key")?;
        let raw: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| Error::InvalidKey {
            reason: format!("public key {name:?} has {} bytes, expected 32", b.len()),
        })?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&raw).map_err(|_| Error::InvalidKey {
            reason: format!("public key {name:?} is not a valid ed25519 point"),
        })?;
        Ok(Self {
            name: name.to_owned(),
            key,
        })
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, BASE64.encode(self.key.as_bytes()))
    }
}

/// From `name:base64`, so a config's trusted keys are checked as it is read.
impl<'de> serde::Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// A `Sig:` value: `name:base64(64-byte ed25519 signature)`.
#[derive(Clone, PartialEq, Eq)]
pub struct Signature {
    key_name: String,
    bytes: [u8; 64],
}

impl Signature {
    pub fn key_name(&self) -> &str {
        &self.key_name
    }
}

impl FromStr for Signature {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidSignature {
            signature: s.to_owned(),
            reason,
        };
        let (name, bytes) = split_named(s, "signature").map_err(|e| invalid(e.to_string()))?;
        let bytes: [u8; 64] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| invalid(format!("{} bytes, expected 64", b.len())))?;
        Ok(Self {
            key_name: name.to_owned(),
            bytes,
        })
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.key_name, BASE64.encode(self.bytes))
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The fixture the original oranc wrote (tests/fixtures/original-oranc): its public
    // key and the narinfo of the closure's root.
    const FIXTURE_KEY: &str = "oranc-fixture-1:0Gg/nW/ItQON70fVFJaMFIjq/v/Pz6NjvAjdy6S5L8I=";
    const FIXTURE_SIG: &str = "oranc-fixture-1:HneEgxUNv8dH4NAg29JxyMtVbtMe5gH6rhFAZpULQ9gO70DjDrBQmHdKE8zkaqgdYsc4k1bTvK+06JSkWx9PCg==";

    fn fixture_fingerprint() -> String {
        let dir = StoreDir::default();
        fingerprint(
            &dir,
            &StorePath::from_base_name("ghps7vpmpzhkq7dghlxfala5gjxsxa0l-fixture-app-shared")
                .unwrap(),
            &"sha256:0vz6fc1hgh1irh0s8x5qp7ykn2y0g7rb5ybcfsvfq6xln98r91bb"
                .parse()
                .unwrap(),
            608,
            &[
                StorePath::from_base_name("4qyafslvkxfpnnj5ia207zh7mkkq1hwh-fixture-tool-shared")
                    .unwrap(),
            ],
        )
    }

    #[test]
    fn verifies_a_signature_written_by_another_tool() {
        let key: PublicKey = FIXTURE_KEY.parse().unwrap();
        let sig: Signature = FIXTURE_SIG.parse().unwrap();
        assert!(key.verifies(&fixture_fingerprint(), &sig));
        assert!(!key.verifies(&fixture_fingerprint().replace("608", "609"), &sig));
    }

    #[test]
    fn sign_then_verify_round_trips_and_key_files_reparse() {
        let secret = SecretKey::from_seed("test-1", [7; 32]);
        let reparsed: SecretKey = secret.to_nix_string().parse().unwrap();
        let public = reparsed.to_public();
        assert_eq!(public.to_string().parse::<PublicKey>().unwrap(), public);
        let sig = secret.sign("1;x");
        assert_eq!(sig.to_string().parse::<Signature>().unwrap(), sig);
        assert!(public.verifies("1;x", &sig));
        assert!(!public.verifies("1;y", &sig));
    }

    #[test]
    fn a_signature_by_another_key_name_does_not_verify() {
        let a = SecretKey::from_seed("a", [1; 32]);
        let b = SecretKey::from_seed("b", [1; 32]);
        assert!(!a.to_public().verifies("f", &b.sign("f")));
    }

    #[test]
    fn malformed_keys_and_signatures_are_refused_with_reasons() {
        let err = "nocolon".parse::<SecretKey>().unwrap_err().to_string();
        assert!(err.contains("no ':'"), "{err}");
        let err = "k:AAAA".parse::<SecretKey>().unwrap_err().to_string();
        assert!(err.contains("expected 64"), "{err}");
        // A public key where a secret one belongs says so; no message calls a value a file.
        let public = SecretKey::from_seed("k", [3; 32]).to_public().to_string();
        let err = public.parse::<SecretKey>().unwrap_err().to_string();
        assert!(
            err.contains("is a public key") && !err.contains("file"),
            "{err}"
        );
        let err = "k:%%%".parse::<PublicKey>().unwrap_err().to_string();
        assert!(err.contains("does not decode"), "{err}");
        let err = "k:AAAA".parse::<Signature>().unwrap_err().to_string();
        assert!(err.contains("expected 64"), "{err}");
        // A keypair whose public half is not derived from the seed.
        let mut bytes = [1u8; 64];
        bytes[63] = 0;
        let bad = format!("k:{}", BASE64.encode(bytes));
        let err = bad.parse::<SecretKey>().unwrap_err().to_string();
        assert!(err.contains("does not match"), "{err}");
    }

    #[test]
    fn secret_key_debug_does_not_leak_material() {
        let secret = SecretKey::from_seed("n", [9; 32]);
        let shown = format!("{secret:?}");
        assert!(!shown.contains(&secret.to_nix_string()[2..10]));
    }
}
