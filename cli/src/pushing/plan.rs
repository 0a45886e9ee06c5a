//! Deciding what to push: which paths were asked for, their closure, and for each path
//! whether it is pushed (and with which signatures), skipped, or refused.
//!
//! The rule that matters: nothing is pushed unsigned. A path is pushed when it is signed by
//! a trusted key or when we sign it; a signature that claims a trusted key but does not
//! verify is an error, never ignored.

use std::collections::HashSet;

use oranc_core::{CacheKey, PathInfo, PublicKey, SecretKey, Signature, StoreDir};
use regex::Regex;

/// What to do with one path.
#[derive(Debug)]
pub enum Decision {
    /// Push with these signatures.
    Push(Vec<Signature>),
    /// The narinfo is already in the cache.
    AlreadyThere,
    /// Signed by an excluded key (in a public cache already).
    Excluded(String),
    /// No signature by a trusted key, and no key to sign with.
    Unsigned,
    /// A signature by a trusted key name that does not verify.
    BadSignature(String),
}

/// Signing and trust, from the flags.
#[derive(Debug)]
pub struct SigningPolicy {
    pub signer: Option<SecretKey>,
    pub trusted: Vec<PublicKey>,
    pub excluded: Regex,
}

impl SigningPolicy {
    pub fn decide(&self, store_dir: &StoreDir, info: &PathInfo) -> Decision {
        if let Some(sig) = info
            .signatures
            .iter()
            .find(|s| self.excluded.is_match(s.key_name()))
        {
            return Decision::Excluded(sig.key_name().to_owned());
        }
        let fingerprint = info.fingerprint(store_dir);
        let mut trusted: Vec<&PublicKey> = self.trusted.iter().collect();
        let own_public = self.signer.as_ref().map(SecretKey::to_public);
        trusted.extend(own_public.as_ref());
        for sig in &info.signatures {
            let claimed: Vec<&&PublicKey> = trusted
                .iter()
                .filter(|k| k.name() == sig.key_name())
                .collect();
            if !claimed.is_empty() && !claimed.iter().any(|k| k.verifies(&fingerprint, sig)) {
                return Decision::BadSignature(sig.key_name().to_owned());
            }
        }
        let mut signatures = info.signatures.clone();
        if let Some(signer) = &self.signer {
            if !signatures.iter().any(|s| s.key_name() == signer.name()) {
                signatures.push(signer.sign(&fingerprint));
            }
            return Decision::Push(signatures);
        }
        let verified = signatures
            .iter()
            .any(|sig| trusted.iter().any(|k| k.verifies(&fingerprint, sig)));
        if verified {
            Decision::Push(signatures)
        } else {
            Decision::Unsigned
        }
    }
}

/// The narinfo keys present in the cache.
pub fn present_narinfos(keys: &HashSet<String>, info: &PathInfo) -> bool {
    keys.contains(CacheKey::narinfo(&info.path).as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oranc_core::{Sha256Hash, StorePath};

    fn info(signatures: Vec<Signature>) -> PathInfo {
        PathInfo {
            path: StorePath::from_base_name("5kk4mwqi310s9ssry90al6mxrb47vdiw-app").unwrap(),
            nar_hash: Sha256Hash::of(b"nar"),
            nar_size: 3,
            references: vec![],
            deriver: None,
            signatures,
            ca: None,
        }
    }

    fn policy(signer: Option<SecretKey>, trusted: Vec<PublicKey>) -> SigningPolicy {
        SigningPolicy {
            signer,
            trusted,
            excluded: Regex::new(r"^cache\.nixos\.org-.*$").unwrap(),
        }
    }

    #[test]
    fn signs_on_the_fly_and_keeps_existing_signatures() {
        let dir = StoreDir::default();
        let other = SecretKey::from_seed("other-1", [2; 32]);
        let existing = other.sign(&info(vec![]).fingerprint(&dir));
        let signer = SecretKey::from_seed("mine-1", [1; 32]);
        let public = signer.to_public();
        let Decision::Push(sigs) =
            policy(Some(signer), vec![]).decide(&dir, &info(vec![existing.clone()]))
        else {
            panic!("pushed");
        };
        assert_eq!(sigs.len(), 2);
        assert_eq!(sigs[0], existing);
        assert!(public.verifies(&info(vec![]).fingerprint(&dir), &sigs[1]));
    }

    #[test]
    fn without_a_signer_only_trusted_signatures_push() {
        let dir = StoreDir::default();
        let key = SecretKey::from_seed("trusted-1", [3; 32]);
        let good = key.sign(&info(vec![]).fingerprint(&dir));
        let policy = policy(None, vec![key.to_public()]);
        assert!(matches!(
            policy.decide(&dir, &info(vec![good])),
            Decision::Push(_)
        ));
        assert!(matches!(
            policy.decide(&dir, &info(vec![])),
            Decision::Unsigned
        ));
        let stranger =
            SecretKey::from_seed("stranger-1", [4; 32]).sign(&info(vec![]).fingerprint(&dir));
        assert!(matches!(
            policy.decide(&dir, &info(vec![stranger])),
            Decision::Unsigned
        ));
        let forged = key.sign("1;something else");
        assert!(matches!(
            policy.decide(&dir, &info(vec![forged])),
            Decision::BadSignature(_)
        ));
    }

    #[test]
    fn paths_signed_by_the_public_cache_are_excluded() {
        let dir = StoreDir::default();
        let public_cache = SecretKey::from_seed("cache.nixos.org-1", [5; 32]).sign("x");
        let signer = SecretKey::from_seed("mine-1", [1; 32]);
        assert!(matches!(
            policy(Some(signer), vec![]).decide(&dir, &info(vec![public_cache])),
            Decision::Excluded(_)
        ));
    }
}
