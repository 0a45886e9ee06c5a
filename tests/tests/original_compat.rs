//! The cache the original oranc wrote (tests/fixtures/original-oranc), served by a real
//! registry, reads correctly through the core model: tags, manifests, narinfo, signatures.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: helpers outside #[test] panic on purpose"
)]

use oranc_core::{CacheKey, NarInfo, PublicKey, StoreDir, TagEncoding};
use oranc_tests::fixture;
use oranc_tests::oci::RawRegistry;
use oranc_tests::registry::RegistryProcess;

const REPO: &str = "fixture/cache";

#[tokio::test]
async fn every_path_of_the_original_cache_reads_back_signed_and_matching_nix() {
    let registry =
        RegistryProcess::start_with_data_from(&fixture("original-oranc/registry-data.tar.gz"));
    let raw = RawRegistry::new(&registry.base_url());
    let key: PublicKey = std::fs::read_to_string(fixture("original-oranc/public-key"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("original-oranc/path-info.json")).unwrap())
            .unwrap();
    let store_dir = StoreDir::default();

    let (info_object, info_bytes) = raw
        .get_object(REPO, "nix-cache-info")
        .await
        .expect("nix-cache-info");
    assert_eq!(info_object.content_type, "text/x-nix-cache-info");
    let cache_info: oranc_core::NixCacheInfo =
        std::str::from_utf8(&info_bytes).unwrap().parse().unwrap();
    assert_eq!(cache_info, oranc_core::NixCacheInfo::default());

    for entry in expected.as_array().unwrap() {
        let path = store_dir
            .parse_path(entry["path"].as_str().unwrap())
            .unwrap();
        let key_name = CacheKey::narinfo(&path);
        let tag = TagEncoding::Custom.encode(key_name.as_str()).unwrap();
        let (object, bytes) = raw
            .get_object(REPO, tag.as_str())
            .await
            .expect("narinfo tag");
        assert_eq!(object.content_type, "text/x-nix-narinfo");
        let text = std::str::from_utf8(&bytes).unwrap();
        let narinfo = NarInfo::parse(text).unwrap();
        assert_eq!(narinfo.to_string(), text, "byte-exact round trip");
        assert_eq!(narinfo.store_path, path);
        assert_eq!(
            narinfo.nar_hash,
            entry["narHash"].as_str().unwrap().parse().unwrap()
        );
        assert_eq!(narinfo.nar_size, entry["narSize"].as_u64().unwrap());
        assert!(
            narinfo.is_signed_by_any(std::slice::from_ref(&key)),
            "{path} is signed"
        );

        // The NAR is stored under nar/<NarHash>.nar.zst, and its blob has FileSize bytes.
        assert_eq!(
            narinfo.url,
            format!("nar/{}.nar.zst", narinfo.nar_hash.to_nix32())
        );
        let nar_tag = TagEncoding::Custom.encode(&narinfo.url).unwrap();
        let manifest = raw
            .get_manifest(REPO, nar_tag.as_str())
            .await
            .expect("NAR tag");
        let nar = oranc_core::layout::read_manifest(&manifest).unwrap();
        assert_eq!(nar.content_type, "application/x-nix-nar");
        assert_eq!(Some(nar.layer.size), narinfo.file_size);
    }
}
