//! The embedded default backend: an OCI image layout directory that standard tools read,
//! so a cache built offline moves to any registry with `skopeo copy`.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: helpers outside #[test] panic on purpose"
)]

use std::sync::Arc;

use bytes::Bytes;
use oranc_backends::registry::OciLayoutRegistry;
use oranc_core::{layout, ByteRange, Error, Registry, RepositoryName, Sha256Hash, Tag};
use oranc_tests::oci::RawRegistry;
use oranc_tests::read_blob;
use oranc_tests::registry::RegistryProcess;

async fn put_object(
    registry: &Arc<dyn Registry>,
    repo: &RepositoryName,
    tag: &Tag,
    key: &str,
    content_type: &str,
    bytes: &[u8],
) -> Bytes {
    let layer = registry.put_blob(repo, &mut &bytes[..]).await.unwrap();
    let config = registry
        .put_blob_bytes(repo, Bytes::from(layout::image_config(&layer)))
        .await
        .unwrap();
    let manifest = Bytes::from(layout::manifest(key, content_type, &layer, &config).unwrap());
    registry
        .put_manifest(repo, tag, layout::MANIFEST_MEDIA_TYPE, manifest.clone())
        .await
        .unwrap();
    manifest
}

#[tokio::test]
async fn skopeo_reads_the_layout_and_copies_it_into_a_real_registry() {
    let dir = tempfile::tempdir().unwrap();
    let layout_backend: Arc<dyn Registry> = Arc::new(OciLayoutRegistry::new(dir.path()).unwrap());
    let repo: RepositoryName = "owner/cache".parse().unwrap();
    let tag: Tag = "nar_L_abc.nar.zst".parse().unwrap();
    let nar = vec![42u8; 300_000];
    // Written as push writes it: through the cache, with the repository's shared config.
    let cache = oranc_core::RegistryCache::new(
        layout_backend.clone(),
        repo.clone(),
        oranc_core::TagEncoding::Custom,
        Vec::new(),
    );
    let key: oranc_core::CacheKey = "nar/abc.nar.zst".parse().unwrap();
    cache
        .put_bytes(&key, "application/x-nix-nar", Bytes::from(nar.clone()))
        .await
        .unwrap();
    let manifest = layout_backend
        .get_manifest(&repo, &tag)
        .await
        .unwrap()
        .unwrap()
        .bytes;
    let config =
        serde_json::from_slice::<serde_json::Value>(&manifest).unwrap()["config"]["digest"].clone();
    assert_eq!(
        config,
        Sha256Hash::of(&layout::shared_config()).to_oci_digest(),
        "the shared config"
    );

    let layout_ref = format!("oci:{}/owner/cache:{tag}", dir.path().display());
    let inspected = std::process::Command::new("skopeo")
        .args(["inspect", "--raw", &layout_ref])
        .output()
        .unwrap();
    assert!(
        inspected.status.success(),
        "{}",
        String::from_utf8_lossy(&inspected.stderr)
    );
    assert_eq!(inspected.stdout, manifest);

    let registry = RegistryProcess::start();
    let copied = std::process::Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false", &layout_ref])
        .arg(format!("docker://{}/owner/cache:{tag}", registry.host()))
        .output()
        .unwrap();
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    let raw = RawRegistry::new(&registry.base_url());
    let (object, bytes) = raw
        .get_object("owner/cache", tag.as_str())
        .await
        .expect("copied");
    assert_eq!(object.content_type, "application/x-nix-nar");
    assert_eq!(bytes, nar);
}

#[tokio::test]
async fn concurrent_writers_lose_no_tags_and_reads_match_writes() {
    let dir = tempfile::tempdir().unwrap();
    let backend: Arc<dyn Registry> = Arc::new(OciLayoutRegistry::new(dir.path()).unwrap());
    let repo: RepositoryName = "c/repo".parse().unwrap();
    let writers = (0..24).map(|i| {
        let backend = backend.clone();
        let repo = repo.clone();
        tokio::spawn(async move {
            let tag: Tag = format!("t{i}").parse().unwrap();
            put_object(
                &backend,
                &repo,
                &tag,
                &format!("k{i}"),
                "text/plain",
                format!("body {i}").as_bytes(),
            )
            .await;
        })
    });
    for writer in writers.collect::<Vec<_>>() {
        writer.await.unwrap();
    }
    let mut tags: Vec<String> = backend
        .list_tags(&repo)
        .await
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    tags.sort();
    let mut expected: Vec<String> = (0..24).map(|i| format!("t{i}")).collect();
    expected.sort();
    assert_eq!(tags, expected);

    // Overwriting a tag replaces it; reading follows the new manifest.
    let t5: Tag = "t5".parse().unwrap();
    put_object(&backend, &repo, &t5, "k5", "text/plain", b"replaced").await;
    assert_eq!(backend.list_tags(&repo).await.unwrap().len(), 24);
    let stored = backend.get_manifest(&repo, &t5).await.unwrap().unwrap();
    let object = layout::read_manifest(&stored.bytes).unwrap();
    let body = read_blob(
        backend
            .get_blob(&repo, &object.layer.digest, None)
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(body, b"replaced");
    let part = backend
        .get_blob(
            &repo,
            &object.layer.digest,
            Some(ByteRange {
                start: 2,
                end: Some(4),
            }),
        )
        .await
        .unwrap();
    assert_eq!(read_blob(part).await.unwrap(), b"pla");

    backend
        .delete_manifest(&repo, &stored.digest)
        .await
        .unwrap();
    assert!(backend.get_manifest(&repo, &t5).await.unwrap().is_none());
    assert!(matches!(
        backend
            .get_blob(&repo, &Sha256Hash::of(b"absent"), None)
            .await,
        Err(Error::NotFound { .. })
    ));
    // No temporary files are left behind.
    let leftovers: Vec<_> = walk(dir.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn a_manifest_naming_missing_blobs_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let backend = OciLayoutRegistry::new(dir.path()).unwrap();
    let repo: RepositoryName = "r/x".parse().unwrap();
    let missing = oranc_core::BlobInfo {
        digest: Sha256Hash::of(b"missing"),
        size: 7,
    };
    let manifest = layout::manifest("k", "text/plain", &missing, &missing).unwrap();
    let error = backend
        .put_manifest(
            &repo,
            &"k".parse().unwrap(),
            layout::MANIFEST_MEDIA_TYPE,
            Bytes::from(manifest),
        )
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("MANIFEST_BLOB_UNKNOWN"),
        "{error}"
    );
    assert!(backend.list_tags(&repo).await.unwrap().is_empty());
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found
}
