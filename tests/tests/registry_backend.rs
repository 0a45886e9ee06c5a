//! The distribution backend against a real registry process: blobs (small, chunked, ranged),
//! manifests in the original's layout read back by skopeo, paginated tag listing, delete,
//! and the three ways registries authenticate.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: helpers outside #[test] panic on purpose"
)]

use std::sync::Arc;

use bytes::Bytes;
use oranc_backends::Credentials;
use oranc_core::{layout, ByteRange, Error, Registry, RepositoryName, Sha256Hash, Tag};
use oranc_tests::auth::{TokenIssuer, PASSWORD, USERNAME};
use oranc_tests::oci::{skopeo_raw_manifest, RawRegistry};
use oranc_tests::registry::{RegistryAuth, RegistryProcess};
use oranc_tests::{open_backend, read_blob};

fn repo(name: &str) -> RepositoryName {
    name.parse().unwrap()
}

fn tag(name: &str) -> Tag {
    name.parse().unwrap()
}

fn pseudo_random(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Stores `bytes` as the cache object `key` through `registry`; returns the manifest bytes.
async fn put_object(
    registry: &Arc<dyn Registry>,
    repo: &RepositoryName,
    tag: &Tag,
    key: &str,
    bytes: &[u8],
) -> Bytes {
    let layer = registry
        .put_blob_bytes(repo, Bytes::copy_from_slice(bytes))
        .await
        .unwrap();
    let config = registry
        .put_blob_bytes(repo, Bytes::from(layout::image_config(&layer)))
        .await
        .unwrap();
    let manifest = Bytes::from(layout::manifest(key, "text/plain", &layer, &config).unwrap());
    registry
        .put_manifest(repo, tag, layout::MANIFEST_MEDIA_TYPE, manifest.clone())
        .await
        .unwrap();
    manifest
}

#[tokio::test]
async fn blobs_round_trip_small_chunked_and_ranged() {
    let registry = RegistryProcess::start();
    let backend = open_backend(&registry.host(), Credentials::Anonymous, |t| {
        t.chunk_size = 1 << 20
    });
    let repo = repo("test/blobs");
    backend.ping().await.unwrap();

    let small = backend
        .put_blob_bytes(&repo, Bytes::from_static(b"hello"))
        .await
        .unwrap();
    assert_eq!(small.digest, Sha256Hash::of(b"hello"));
    assert_eq!(
        backend.head_blob(&repo, &small.digest).await.unwrap(),
        Some(5)
    );
    // Uploading it again finds it there.
    assert_eq!(
        backend
            .put_blob_bytes(&repo, Bytes::from_static(b"hello"))
            .await
            .unwrap(),
        small
    );

    // 5.5 chunks: POST, six PATCHes, PUT.
    let data = pseudo_random((11 << 20) / 2);
    let large = backend.put_blob(&repo, &mut &data[..]).await.unwrap();
    assert_eq!(large.digest, Sha256Hash::of(&data));
    assert_eq!(large.size, data.len() as u64);
    assert_eq!(
        backend.head_blob(&repo, &large.digest).await.unwrap(),
        Some(data.len() as u64)
    );
    let raw = RawRegistry::new(&registry.base_url());
    assert_eq!(
        raw.get_blob(repo.as_str(), &large.digest).await,
        data,
        "an independent reader sees the same bytes"
    );
    let whole = read_blob(backend.get_blob(&repo, &large.digest, None).await.unwrap())
        .await
        .unwrap();
    assert_eq!(whole, data);

    let ranged = backend
        .get_blob(
            &repo,
            &large.digest,
            Some(ByteRange {
                start: 1000,
                end: Some(1999),
            }),
        )
        .await
        .unwrap();
    let oranc_core::BlobBody::Stream { range, .. } = &ranged else {
        panic!("a stream")
    };
    assert_eq!(*range, Some((1000, 1999, data.len() as u64)));
    assert_eq!(read_blob(ranged).await.unwrap(), &data[1000..2000]);

    let absent = Sha256Hash::of(b"absent");
    assert_eq!(backend.head_blob(&repo, &absent).await.unwrap(), None);
    assert!(matches!(
        backend.get_blob(&repo, &absent, None).await,
        Err(Error::NotFound { .. })
    ));
}

#[tokio::test]
async fn manifests_in_the_original_layout_are_read_by_skopeo_listed_and_deleted() {
    let registry = RegistryProcess::start();
    let backend = open_backend(&registry.host(), Credentials::Anonymous, |t| {
        t.tags_page_size = 2
    });
    let repo = repo("test/manifests");
    assert!(
        backend.list_tags(&repo).await.unwrap().is_empty(),
        "an unknown repository has no tags"
    );

    let first = tag("nar_L_abc.nar.zst");
    let manifest = put_object(&backend, &repo, &first, "nar/abc.nar.zst", b"nar bytes").await;
    assert_eq!(
        skopeo_raw_manifest(&registry.host(), repo.as_str(), first.as_str()),
        manifest
    );
    let stored = backend
        .get_manifest(&repo, &first)
        .await
        .unwrap()
        .expect("the tag exists");
    assert_eq!(stored.bytes, manifest);
    assert_eq!(stored.digest, Sha256Hash::of(&manifest));
    let object = layout::read_manifest(&stored.bytes).unwrap();
    assert_eq!(object.key.as_deref(), Some("nar/abc.nar.zst"));

    let mut expected = vec![first.clone()];
    for index in 0..4 {
        let t = tag(&format!("t{index}"));
        put_object(
            &backend,
            &repo,
            &t,
            &format!("k{index}"),
            format!("object {index}").as_bytes(),
        )
        .await;
        expected.push(t);
    }
    let mut listed = backend.list_tags(&repo).await.unwrap();
    listed.sort();
    expected.sort();
    assert_eq!(listed, expected, "five tags over three pages of two");

    assert!(backend
        .get_manifest(&repo, &tag("absent"))
        .await
        .unwrap()
        .is_none());
    backend
        .delete_manifest(&repo, &stored.digest)
        .await
        .unwrap();
    assert!(backend.get_manifest(&repo, &first).await.unwrap().is_none());
}

#[tokio::test]
async fn htpasswd_basic_auth_accepts_the_right_password_only() {
    let registry = RegistryProcess::start_with_auth(RegistryAuth::Htpasswd);
    let repo = repo("test/basic");

    let anonymous = open_backend(&registry.host(), Credentials::Anonymous, |_| {});
    match anonymous.list_tags(&repo).await {
        Err(Error::Denied { hint, .. }) => {
            assert!(hint.unwrap_or_default().contains("ORANC_USERNAME"))
        }
        other => panic!("anonymous access must be denied, got {other:?}"),
    }
    let wrong = open_backend(
        &registry.host(),
        Credentials::basic(USERNAME, "wrong"),
        |_| {},
    );
    let error = wrong.list_tags(&repo).await.unwrap_err();
    assert!(matches!(error, Error::Denied { .. }), "{error}");
    assert!(
        !error.to_string().contains("wrong"),
        "no credential in errors: {error}"
    );

    let right = open_backend(
        &registry.host(),
        Credentials::basic(USERNAME, PASSWORD),
        |_| {},
    );
    let t = tag("nix-cache-info");
    put_object(
        &right,
        &repo,
        &t,
        "nix-cache-info",
        b"StoreDir: /nix/store\n",
    )
    .await;
    assert_eq!(right.list_tags(&repo).await.unwrap(), vec![t]);
}

#[tokio::test]
async fn bearer_tokens_are_fetched_once_per_scope_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = TokenIssuer::start(dir.path(), false, 300).await;
    let registry = RegistryProcess::start_with_auth(RegistryAuth::Token(issuer.config.clone()));
    let repo = repo("test/token");
    let backend = open_backend(
        &registry.host(),
        Credentials::basic(USERNAME, PASSWORD),
        |t| t.token_realms = vec![issuer.config.realm.clone()],
    );

    let t = tag("x.narinfo");
    put_object(&backend, &repo, &t, "x.narinfo", b"narinfo").await;
    let after_push = issuer.tokens_issued();
    assert!(after_push >= 1);
    for _ in 0..20 {
        assert!(backend.get_manifest(&repo, &t).await.unwrap().is_some());
    }
    assert!(
        issuer.tokens_issued() <= after_push + 1,
        "20 lookups cost at most one more token (the pull scope): {} after {after_push}",
        issuer.tokens_issued()
    );

    let anonymous = open_backend(&registry.host(), Credentials::Anonymous, |t| {
        t.token_realms = vec![issuer.config.realm.clone()]
    });
    assert!(matches!(
        anonymous.get_manifest(&repo, &t).await,
        Err(Error::Denied { .. })
    ));
    let wrong = open_backend(
        &registry.host(),
        Credentials::basic(USERNAME, "nope"),
        |t| t.token_realms = vec![issuer.config.realm.clone()],
    );
    assert!(matches!(
        wrong.get_manifest(&repo, &t).await,
        Err(Error::Denied { .. })
    ));
}

#[tokio::test]
async fn public_pulls_work_anonymously_and_expired_tokens_are_renewed() {
    let dir = tempfile::tempdir().unwrap();
    // Tokens live 11 s; oranc renews 10 s early, so they are fresh for 1 s.
    let issuer = TokenIssuer::start(dir.path(), true, 11).await;
    let registry = RegistryProcess::start_with_auth(RegistryAuth::Token(issuer.config.clone()));
    let repo = repo("owner/public");
    let owner = open_backend(
        &registry.host(),
        Credentials::basic(USERNAME, PASSWORD),
        |t| t.token_realms = vec![issuer.config.realm.clone()],
    );
    let t = tag("nix-cache-info");
    put_object(
        &owner,
        &repo,
        &t,
        "nix-cache-info",
        b"StoreDir: /nix/store\n",
    )
    .await;

    let public = open_backend(&registry.host(), Credentials::Anonymous, |t| {
        t.token_realms = vec![issuer.config.realm.clone()]
    });
    assert!(
        public.get_manifest(&repo, &t).await.unwrap().is_some(),
        "anonymous pull, as from ghcr.io"
    );
    let pushed = public
        .put_blob_bytes(&repo, Bytes::from_static(b"not allowed"))
        .await;
    assert!(
        matches!(pushed, Err(Error::Denied { .. })),
        "anonymous push is refused: {pushed:?}"
    );

    let before = issuer.tokens_issued();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(public.get_manifest(&repo, &t).await.unwrap().is_some());
    assert_eq!(
        issuer.tokens_issued(),
        before + 1,
        "an expired token is replaced, once"
    );
}

#[tokio::test]
async fn a_registry_without_monolithic_uploads_costs_no_extra_request_and_is_remembered() {
    // CNCF distribution 2.8 answers a POST carrying the blob with 202 and stores nothing:
    // the session it opened takes the PUT, and later uploads send an empty POST.
    let registry = RegistryProcess::start();
    let backend = open_backend(&registry.host(), Credentials::Anonymous, |_| {});
    let repository = repo("mono/fallback");
    let before = registry.requests().len();
    for i in 0..3 {
        let bytes = Bytes::from(format!("small blob {i}"));
        let blob = backend
            .put_blob_bytes(&repository, bytes.clone())
            .await
            .unwrap();
        let body = read_blob(
            backend
                .get_blob(&repository, &blob.digest, None)
                .await
                .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(body, bytes);
    }
    let uploads: Vec<_> = registry.requests()[before..]
        .iter()
        .filter(|r| r.method != "GET")
        .cloned()
        .collect();
    let methods: Vec<&str> = uploads.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(
        methods,
        ["POST", "PUT", "POST", "PUT", "POST", "PUT"],
        "{uploads:?}"
    );
    assert!(
        uploads[0].path.contains("digest=sha256"),
        "tried once: {uploads:?}"
    );
    assert!(
        !uploads[2].path.contains("digest="),
        "remembered: {uploads:?}"
    );
    assert!(
        !uploads[4].path.contains("digest="),
        "remembered: {uploads:?}"
    );
}

#[tokio::test]
async fn a_registry_with_monolithic_uploads_takes_a_small_blob_in_one_request() {
    // No registry packaged here implements the spec's single-POST upload, so a minimal
    // server stands in for one: it stores a POST whose body matches ?digest=.
    use axum::extract::{Query, State};
    use axum::http::{HeaderMap, StatusCode};
    use std::sync::Mutex;

    type Seen = Arc<Mutex<Vec<String>>>;
    async fn upload(
        State(seen): State<Seen>,
        Query(query): Query<std::collections::HashMap<String, String>>,
        body: Bytes,
    ) -> (StatusCode, HeaderMap) {
        seen.lock().unwrap().push("POST".into());
        let digest = query.get("digest").cloned().unwrap_or_default();
        let mut headers = HeaderMap::new();
        if digest == Sha256Hash::of(&body).to_oci_digest() {
            headers.insert(
                "location",
                format!("/v2/a/b/blobs/{digest}").parse().unwrap(),
            );
            return (StatusCode::CREATED, headers);
        }
        headers.insert("location", "/v2/a/b/blobs/uploads/session".parse().unwrap());
        (StatusCode::ACCEPTED, headers)
    }
    let seen: Seen = Arc::default();
    let app = axum::Router::new()
        .route("/v2/a/b/blobs/uploads/", axum::routing::post(upload))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let backend = open_backend(&host, Credentials::Anonymous, |_| {});
    for i in 0..2 {
        let bytes = Bytes::from(format!("narinfo {i}"));
        let blob = backend
            .put_blob_bytes(&repo("a/b"), bytes.clone())
            .await
            .unwrap();
        assert_eq!(blob.digest, Sha256Hash::of(&bytes));
    }
    assert_eq!(
        *seen.lock().unwrap(),
        ["POST", "POST"],
        "one request per blob"
    );
    server.abort();
}
