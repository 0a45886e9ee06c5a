//! A realisation (`realisations/<drv hash>!<output>.doi`, Nix's experimental
//! content-addressed derivations): which store path one output of a derivation is. Nix signs
//! it like a narinfo, but over the realisation's own JSON, so a mirror can check where it
//! came from before it keeps one.

use crate::{PublicKey, SecretKey, Signature};

/// What Nix signs: the realisation's JSON without its `signatures`, keys sorted, no spaces
/// (nlohmann's `dump()` of the object, which keeps keys sorted). `None` when `json` is not a
/// JSON object.
pub fn fingerprint(json: &[u8]) -> Option<String> {
    let serde_json::Value::Object(mut fields) = serde_json::from_slice(json).ok()? else {
        return None;
    };
    fields.remove("signatures");
    // Sorted here whatever order serde_json's map keeps (its `preserve_order` feature).
    let sorted: std::collections::BTreeMap<_, _> = fields.into_iter().collect();
    serde_json::to_string(&sorted).ok()
}

/// Whether the realisation `json` carries a signature by one of `keys` over its fingerprint.
pub fn is_signed_by_any(json: &[u8], keys: &[PublicKey]) -> bool {
    let Some(fingerprint) = fingerprint(json) else {
        return false;
    };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(json) else {
        return false;
    };
    let signatures = value["signatures"].as_array().into_iter().flatten();
    signatures
        .filter_map(|s| s.as_str()?.parse::<Signature>().ok())
        .any(|signature| {
            keys.iter()
                .any(|key| key.verifies(&fingerprint, &signature))
        })
}

/// The realisation `json` signed with `key` (a signature by another key of the same name,
/// stale or not, is replaced), as compact JSON; `None` when `json` is not a JSON object.
pub fn signed(json: &[u8], key: &SecretKey) -> Option<Vec<u8>> {
    let fingerprint = fingerprint(json)?;
    let serde_json::Value::Object(mut fields) = serde_json::from_slice(json).ok()? else {
        return None;
    };
    let mut signatures: Vec<serde_json::Value> = match fields.remove("signatures") {
        Some(serde_json::Value::Array(signatures)) => signatures,
        _ => Vec::new(),
    };
    signatures.retain(|s| {
        s.as_str()
            .and_then(|s| s.parse::<Signature>().ok())
            .is_none_or(|s| s.key_name() != key.name())
    });
    signatures.push(serde_json::Value::String(
        key.sign(&fingerprint).to_string(),
    ));
    fields.insert("signatures".into(), serde_json::Value::Array(signatures));
    serde_json::to_vec(&fields).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Written and signed by Nix 2.8 (`nix-build --option secret-key-files`, then `nix copy
    /// --to file://`).
    const SIGNED_BY_NIX: &str = r#"{"dependentRealisations":{},"id":"sha256:83a34eade9f310f32ad658d2b9b643fddcc4ac07a1022edd6e5b4e13e1fe7dd4!out","outPath":"a6d0a82k145airx8md9l4v42d8fq0xjz-rt-ca","signatures":["rt-1:LefATLgtU+aTFr6phkNNE8vx+q+eQl3zDm0g1A5KC1CZOvoBVv4Muk77JD/GrE1K/X8x+Y+kvDae2tCgMGyrAA=="]}"#;
    const NIX_KEY: &str = "rt-1:dSsOHaUlyU8663LOjpSOYzBPhwXYg2/jUNXedeV96NY=";

    #[test]
    fn a_realisation_nix_signed_verifies_and_a_changed_one_does_not() {
        let key: PublicKey = NIX_KEY.parse().unwrap();
        let keys = std::slice::from_ref(&key);
        assert!(is_signed_by_any(SIGNED_BY_NIX.as_bytes(), keys));
        let moved = SIGNED_BY_NIX.replace("a6d0a82k", "b6d0a82k");
        assert!(!is_signed_by_any(moved.as_bytes(), keys));
        let other: PublicKey = "rt-1:9raM5MFaJdml8juTWsSY1WaHMr0GZDY1K72St60sbSk="
            .parse()
            .unwrap();
        assert!(!is_signed_by_any(SIGNED_BY_NIX.as_bytes(), &[other]));
        assert!(!is_signed_by_any(b"[1,2]", keys));
        assert!(!is_signed_by_any(b"not json", keys));
    }

    #[test]
    fn a_realisation_signed_here_verifies_as_nix_signed_ones_do() {
        let key = SecretKey::from_seed("ours-1", [7; 32]);
        let public = key.to_public();
        let ours = std::slice::from_ref(&public);
        let nix: PublicKey = NIX_KEY.parse().unwrap();
        let both = signed(SIGNED_BY_NIX.as_bytes(), &key).unwrap();
        assert!(is_signed_by_any(&both, ours));
        assert!(is_signed_by_any(&both, &[nix]), "Nix's signature is kept");
        let unsigned =
            r#"{"id":"sha256:1!out","outPath":"a6d0a82k145airx8md9l4v42d8fq0xjz-rt-ca"}"#;
        assert!(!is_signed_by_any(unsigned.as_bytes(), ours));
        let resigned = signed(&signed(unsigned.as_bytes(), &key).unwrap(), &key).unwrap();
        assert!(is_signed_by_any(&resigned, ours));
        let value: serde_json::Value = serde_json::from_slice(&resigned).unwrap();
        assert_eq!(value["signatures"].as_array().unwrap().len(), 1);
        assert!(signed(b"[1]", &key).is_none());
    }
}
