//! Realisations (`realisations/<drv hash>!<output>.doi`, Nix 2.4-2.34's experimental
//! content-addressed derivations) and their successor, build-trace entries
//! (`build-trace-v2/<drv>/<output>.doi`, Nix 2.35+): which store path one output of a
//! derivation is. Nix signs both like a narinfo, but over JSON, so a mirror or an anonymous
//! write can be checked for where it came from before it is kept.
//!
//! A realisation's file is the whole object, `id` included. A build-trace file is only the
//! entry's value (`outPath`, `signatures`); its key (`drvPath`, `outputName`) is the file's
//! path, so the fingerprint is built from both. Signatures are `"name:base64"` strings
//! (before 2.35) or `{"keyName": …, "sig": …}` objects (2.35+); both are read.

use serde_json::{Map, Value};

use crate::cache_key::{CacheKey, KeyKind};
use crate::{PublicKey, SecretKey, Signature};

/// What Nix signs, for the file `key` holding `json`: for a realisation, its JSON without
/// `signatures`; for a build trace, `{"key": {"drvPath", "outputName"}, "value": <the file
/// without signatures>}`. Keys sorted, no spaces, as nlohmann's `dump()` writes them. `None`
/// when `json` is not a JSON object or `key` is neither kind.
pub fn fingerprint(key: &CacheKey, json: &[u8]) -> Option<String> {
    let (fields, _) = split_signatures(json)?;
    fingerprint_of(key, fields)
}

/// The JSON object `json` without its `signatures`, and those.
fn split_signatures(json: &[u8]) -> Option<(Map<String, Value>, Option<Value>)> {
    let Value::Object(mut fields) = serde_json::from_slice(json).ok()? else {
        return None;
    };
    let signatures = fields.remove("signatures");
    Some((fields, signatures))
}

/// [`fingerprint`] of a file's fields, its signatures taken out.
fn fingerprint_of(key: &CacheKey, fields: Map<String, Value>) -> Option<String> {
    let signed = match key.kind() {
        KeyKind::Realisation => Value::Object(fields),
        KeyKind::BuildTrace => {
            let (drv, output) = key.drv_output()?;
            serde_json::json!({
                "key": {"drvPath": drv, "outputName": output},
                "value": Value::Object(fields),
            })
        }
        _ => return None,
    };
    serde_json::to_string(&sorted(signed)).ok()
}

/// `value` with every object's keys in byte order, whatever order serde_json's map keeps
/// (its `preserve_order` feature), as nlohmann's objects are.
fn sorted(value: Value) -> Value {
    match value {
        Value::Object(fields) => {
            let mut fields: Vec<(String, Value)> = fields.into_iter().collect();
            fields.sort_by(|(a, _), (b, _)| a.cmp(b));
            Value::Object(
                fields
                    .into_iter()
                    .map(|(name, value)| (name, sorted(value)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// A signature as either format writes it.
fn signature_of(value: &Value) -> Option<Signature> {
    match value {
        Value::String(text) => text.parse().ok(),
        Value::Object(fields) => {
            let name = fields.get("keyName")?.as_str()?;
            let sig = fields.get("sig")?.as_str()?;
            format!("{name}:{sig}").parse().ok()
        }
        _ => None,
    }
}

/// Whether the file `key` holding `json` carries a signature by one of `keys` over its
/// fingerprint.
pub fn is_signed_by_any(key: &CacheKey, json: &[u8], keys: &[PublicKey]) -> bool {
    let Some((fields, signatures)) = split_signatures(json) else {
        return false;
    };
    let Some(fingerprint) = fingerprint_of(key, fields) else {
        return false;
    };
    let signatures = signatures
        .as_ref()
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    signatures.filter_map(signature_of).any(|signature| {
        keys.iter()
            .any(|public| public.verifies(&fingerprint, &signature))
    })
}

/// The file `key` holding `json`, signed with `secret` (a signature by another key of the
/// same name, stale or not, is replaced) in the format its kind uses, as compact JSON;
/// `None` when `json` is not a JSON object.
pub fn signed(key: &CacheKey, json: &[u8], secret: &SecretKey) -> Option<Vec<u8>> {
    let (mut fields, signatures) = split_signatures(json)?;
    let fingerprint = fingerprint_of(key, fields.clone())?;
    let mut signatures: Vec<Value> = match signatures {
        Some(Value::Array(signatures)) => signatures,
        _ => Vec::new(),
    };
    signatures.retain(|s| signature_of(s).is_none_or(|s| s.key_name() != secret.name()));
    let signature = secret.sign(&fingerprint);
    signatures.push(if key.kind() == KeyKind::BuildTrace {
        let text = signature.to_string();
        let (name, sig) = text.split_once(':')?;
        serde_json::json!({"keyName": name, "sig": sig})
    } else {
        Value::String(signature.to_string())
    });
    fields.insert("signatures".into(), Value::Array(signatures));
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

    fn v1() -> CacheKey {
        "realisations/sha256:83a34eade9f310f32ad658d2b9b643fddcc4ac07a1022edd6e5b4e13e1fe7dd4!out.doi"
            .parse()
            .unwrap()
    }

    const DRV: &str = "v873jj33sxxhc8d6jf84lbn85p09wm3i-rt-ca.drv";

    fn v2(output: &str) -> CacheKey {
        format!("build-trace-v2/{DRV}/{output}.doi")
            .parse()
            .unwrap()
    }

    #[test]
    fn a_build_trace_fingerprint_is_the_key_and_the_value_without_signatures() {
        let value = br#"{"signatures":[],"outPath":"a6d0a82k145airx8md9l4v42d8fq0xjz-rt-ca"}"#;
        assert_eq!(
            fingerprint(&v2("out"), value).unwrap(),
            format!(
                r#"{{"key":{{"drvPath":"{DRV}","outputName":"out"}},"value":{{"outPath":"a6d0a82k145airx8md9l4v42d8fq0xjz-rt-ca"}}}}"#
            )
        );
    }

    #[test]
    fn a_build_trace_signed_here_carries_a_structured_signature_bound_to_its_key() {
        let key = SecretKey::from_seed("ours-1", [7; 32]);
        let public = key.to_public();
        let ours = std::slice::from_ref(&public);
        let value = br#"{"outPath":"a6d0a82k145airx8md9l4v42d8fq0xjz-rt-ca"}"#;
        let signed_value = signed(&v2("out"), value, &key).unwrap();
        let json: Value = serde_json::from_slice(&signed_value).unwrap();
        assert_eq!(json["signatures"][0]["keyName"], "ours-1");
        assert!(is_signed_by_any(&v2("out"), &signed_value, ours));
        // The same value under another output or derivation is not signed.
        assert!(!is_signed_by_any(&v2("dev"), &signed_value, ours));
        // The string form of the same signature verifies too.
        let sig = json["signatures"][0]["sig"].as_str().unwrap();
        let strings = format!(
            r#"{{"outPath":"a6d0a82k145airx8md9l4v42d8fq0xjz-rt-ca","signatures":["ours-1:{sig}"]}}"#
        );
        assert!(is_signed_by_any(&v2("out"), strings.as_bytes(), ours));
        let resigned = signed(&v2("out"), strings.as_bytes(), &key).unwrap();
        let json: Value = serde_json::from_slice(&resigned).unwrap();
        assert_eq!(json["signatures"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn a_realisation_nix_signed_verifies_and_a_changed_one_does_not() {
        let key: PublicKey = NIX_KEY.parse().unwrap();
        let keys = std::slice::from_ref(&key);
        assert!(is_signed_by_any(&v1(), SIGNED_BY_NIX.as_bytes(), keys));
        let moved = SIGNED_BY_NIX.replace("a6d0a82k", "b6d0a82k");
        assert!(!is_signed_by_any(&v1(), moved.as_bytes(), keys));
        let other: PublicKey = "rt-1:9raM5MFaJdml8juTWsSY1WaHMr0GZDY1K72St60sbSk="
            .parse()
            .unwrap();
        assert!(!is_signed_by_any(&v1(), SIGNED_BY_NIX.as_bytes(), &[other]));
        assert!(!is_signed_by_any(&v1(), b"[1,2]", keys));
        assert!(!is_signed_by_any(&v1(), b"not json", keys));
    }

    #[test]
    fn a_realisation_signed_here_verifies_as_nix_signed_ones_do() {
        let key = SecretKey::from_seed("ours-1", [7; 32]);
        let public = key.to_public();
        let ours = std::slice::from_ref(&public);
        let nix: PublicKey = NIX_KEY.parse().unwrap();
        let both = signed(&v1(), SIGNED_BY_NIX.as_bytes(), &key).unwrap();
        assert!(is_signed_by_any(&v1(), &both, ours));
        assert!(
            is_signed_by_any(&v1(), &both, &[nix]),
            "Nix's signature is kept"
        );
        let unsigned =
            r#"{"id":"sha256:1!out","outPath":"a6d0a82k145airx8md9l4v42d8fq0xjz-rt-ca"}"#;
        assert!(!is_signed_by_any(&v1(), unsigned.as_bytes(), ours));
        let resigned = signed(
            &v1(),
            &signed(&v1(), unsigned.as_bytes(), &key).unwrap(),
            &key,
        )
        .unwrap();
        assert!(is_signed_by_any(&v1(), &resigned, ours));
        let value: Value = serde_json::from_slice(&resigned).unwrap();
        assert_eq!(value["signatures"].as_array().unwrap().len(), 1);
        assert!(signed(&v1(), b"[1]", &key).is_none());
    }
}
