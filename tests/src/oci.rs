//! A deliberately tiny OCI distribution client for the tests: plain HTTP calls, written
//! independently of oranc's backends, so a test can check what a backend stored (or plant
//! objects for it to read) without trusting the code under test. `skopeo` is the other
//! independent reader.

use bytes::Bytes;
use oranc_core::layout;
use oranc_core::registry::BlobInfo;
use oranc_core::Sha256Hash;

#[derive(Debug, Clone)]
pub struct RawRegistry {
    base_url: String,
    http: reqwest::Client,
}

impl RawRegistry {
    pub fn new(base_url: &str) -> Self {
        Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
        }
    }

    pub async fn ping(&self) -> reqwest::StatusCode {
        self.http
            .get(format!("{}/v2/", self.base_url))
            .send()
            .await
            .expect("GET /v2/")
            .status()
    }

    /// Uploads `bytes` as a blob with a monolithic POST + PUT.
    pub async fn put_blob(&self, repo: &str, bytes: Bytes) -> BlobInfo {
        let blob = BlobInfo {
            digest: Sha256Hash::of(&bytes),
            size: bytes.len() as u64,
        };
        let started = self
            .http
            .post(format!("{}/v2/{repo}/blobs/uploads/", self.base_url))
            .send()
            .await
            .expect("POST blob upload");
        assert_eq!(started.status(), reqwest::StatusCode::ACCEPTED);
        let location = started
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .expect("the upload has a Location");
        let mut url = if location.starts_with('/') {
            format!("{}{location}", self.base_url)
        } else {
            location.to_owned()
        };
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&format!("digest={}", blob.digest.to_oci_digest()));
        let finished = self
            .http
            .put(url)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(bytes)
            .send()
            .await
            .expect("PUT blob");
        assert_eq!(finished.status(), reqwest::StatusCode::CREATED);
        blob
    }

    /// Stores a cache object in the one-layer layout; returns the manifest bytes.
    pub async fn put_object(
        &self,
        repo: &str,
        tag: &str,
        key: &str,
        content_type: &str,
        bytes: Bytes,
    ) -> Vec<u8> {
        let layer = self.put_blob(repo, bytes).await;
        let config = self
            .put_blob(repo, Bytes::from(layout::image_config(&layer)))
            .await;
        let manifest =
            layout::manifest(key, content_type, &layer, &config).expect("building a manifest");
        let answer = self
            .http
            .put(format!("{}/v2/{repo}/manifests/{tag}", self.base_url))
            .header(reqwest::header::CONTENT_TYPE, layout::MANIFEST_MEDIA_TYPE)
            .body(manifest.clone())
            .send()
            .await
            .expect("PUT manifest");
        assert_eq!(
            answer.status(),
            reqwest::StatusCode::CREATED,
            "{:?}",
            answer.text().await
        );
        manifest
    }

    pub async fn get_manifest(&self, repo: &str, tag: &str) -> Option<Bytes> {
        let answer = self
            .http
            .get(format!("{}/v2/{repo}/manifests/{tag}", self.base_url))
            .header(reqwest::header::ACCEPT, layout::MANIFEST_MEDIA_TYPE)
            .send()
            .await
            .expect("GET manifest");
        if answer.status() == reqwest::StatusCode::NOT_FOUND {
            return None;
        }
        assert!(
            answer.status().is_success(),
            "GET manifest: {}",
            answer.status()
        );
        Some(answer.bytes().await.expect("manifest body"))
    }

    pub async fn get_blob(&self, repo: &str, digest: &Sha256Hash) -> Bytes {
        let answer = self
            .http
            .get(format!(
                "{}/v2/{repo}/blobs/{}",
                self.base_url,
                digest.to_oci_digest()
            ))
            .send()
            .await
            .expect("GET blob");
        assert!(
            answer.status().is_success(),
            "GET blob: {}",
            answer.status()
        );
        answer.bytes().await.expect("blob body")
    }

    /// The bytes of the object stored under `tag`, read through its manifest.
    pub async fn get_object(&self, repo: &str, tag: &str) -> Option<(layout::StoredObject, Bytes)> {
        let manifest = self.get_manifest(repo, tag).await?;
        let object = layout::read_manifest(&manifest).expect("an oranc object manifest");
        let bytes = self.get_blob(repo, &object.layer.digest).await;
        Some((object, bytes))
    }
}

/// `skopeo inspect --raw` of a tag: what an independent OCI tool reads.
pub fn skopeo_raw_manifest(registry_host: &str, repo: &str, tag: &str) -> Vec<u8> {
    let output = std::process::Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--raw"])
        .arg(format!("docker://{registry_host}/{repo}:{tag}"))
        .output()
        .expect("cannot start skopeo; install it with `apt-get install skopeo` (.ci/run does)");
    assert!(
        output.status.success(),
        "skopeo failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

impl RawRegistry {
    /// Copies the cache objects for `paths` (narinfo and NAR) and nix-cache-info out of
    /// `repo` into `dir`, laid out as a `file://` binary cache, so real Nix can substitute
    /// from what oranc pushed without trusting oranc to serve it.
    pub async fn export_file_cache(&self, repo: &str, paths: &[String], dir: &std::path::Path) {
        use oranc_core::{NarInfo, StoreDir, TagEncoding};
        let tag = |key: &str| {
            TagEncoding::Custom
                .encode(key)
                .expect("an encodable key")
                .to_string()
        };
        std::fs::create_dir_all(dir.join("nar")).expect("creating the cache directory");
        let (_, info) = self
            .get_object(repo, "nix-cache-info")
            .await
            .expect("nix-cache-info was pushed");
        std::fs::write(dir.join("nix-cache-info"), info).expect("writing nix-cache-info");
        for path in paths {
            let path = StoreDir::default().parse_path(path).expect("a store path");
            let key = format!("{}.narinfo", path.hash_part());
            let (_, narinfo) = self
                .get_object(repo, &tag(&key))
                .await
                .expect("the narinfo was pushed");
            let parsed =
                NarInfo::parse(std::str::from_utf8(&narinfo).expect("UTF-8")).expect("a narinfo");
            let (_, nar) = self
                .get_object(repo, &tag(&parsed.url))
                .await
                .expect("the NAR was pushed");
            std::fs::write(dir.join(&key), &narinfo).expect("writing the narinfo");
            std::fs::write(dir.join(&parsed.url), &nar).expect("writing the NAR");
        }
    }
}
