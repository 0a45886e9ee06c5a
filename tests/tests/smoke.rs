//! The harness's own proof: the registry and the Nix store are real, and the core model
//! agrees with both of them.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: helpers outside #[test] panic on purpose"
)]

use bytes::Bytes;
use oranc_core::{CacheKey, NarInfo, PublicKey, Sha256Hash, StoreDir, TagEncoding};
use oranc_tests::nix::{path_info_from_nix, SignedClosure};
use oranc_tests::oci::{skopeo_raw_manifest, RawRegistry};
use oranc_tests::registry::RegistryProcess;

#[test]
fn nix_signatures_on_a_real_closure_verify_with_the_core_model() {
    let closure = SignedClosure::build(100_000);
    let store_dir = StoreDir::default();
    let key: PublicKey = closure.public_key.parse().unwrap();
    let infos = closure.path_info_json();
    let infos = infos.as_array().expect("a JSON list");
    assert_eq!(infos.len(), 3, "app, tool and lib");
    assert_eq!(closure.paths.len(), 3);
    for entry in infos {
        let info = path_info_from_nix(&store_dir, entry);
        assert!(
            info.verified_signature(&store_dir, std::slice::from_ref(&key))
                .is_some(),
            "Nix's signature on {} verifies with our fingerprint",
            info.path
        );
        // A NarHash that differs by one bit does not verify: the check is real.
        let mut tampered = info.clone();
        let mut bytes = *tampered.nar_hash.as_bytes();
        bytes[0] ^= 1;
        tampered.nar_hash = Sha256Hash::from_bytes(bytes);
        assert!(tampered
            .verified_signature(&store_dir, std::slice::from_ref(&key))
            .is_none());
    }
}

#[tokio::test]
async fn a_narinfo_stored_in_the_real_registry_reads_back_through_skopeo() {
    let registry = RegistryProcess::start();
    let raw = RawRegistry::new(&registry.base_url());
    assert_eq!(raw.ping().await, reqwest::StatusCode::OK);

    let closure = SignedClosure::build(1_000);
    let store_dir = StoreDir::default();
    let infos = closure.path_info_json();
    let root = infos
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == closure.root.as_str())
        .expect("the root is in its closure");
    let info = path_info_from_nix(&store_dir, root);
    let narinfo = NarInfo::for_path(
        &store_dir,
        &info,
        format!("nar/{}.nar.zst", info.nar_hash.to_nix32()),
    );
    let key = CacheKey::narinfo(&info.path);
    let tag = TagEncoding::Custom.encode(key.as_str()).unwrap();

    let repo = oranc_tests::fresh_repo("smoke");
    let written = raw
        .put_object(
            &repo,
            tag.as_str(),
            key.as_str(),
            key.content_type(),
            Bytes::from(narinfo.to_string()),
        )
        .await;

    assert_eq!(
        skopeo_raw_manifest(&registry.host(), &repo, tag.as_str()),
        written
    );
    let (object, bytes) = raw
        .get_object(&repo, tag.as_str())
        .await
        .expect("the tag exists");
    assert_eq!(object.content_type, "text/x-nix-narinfo");
    assert_eq!(object.key.as_deref(), Some(key.as_str()));
    let read_back = NarInfo::parse(std::str::from_utf8(&bytes).unwrap()).unwrap();
    assert_eq!(read_back, narinfo);
    assert!(read_back.is_signed_by_any(&[closure.public_key.parse().unwrap()]));
    assert!(raw.get_manifest(&repo, "absent.narinfo").await.is_none());
}
