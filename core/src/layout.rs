//! How one cache object (key, content type, bytes) is stored in a registry, exactly as the
//! original oranc stores it, so each tool reads what the other wrote:
//! an OCI image manifest with one `application/octet-stream` layer (the object's bytes)
//! annotated with its content type, an image config naming that layer, and the key in the
//! manifest's annotations. See `docs/layout.md`.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::SystemTime;

use oci_spec::image::{Descriptor, ImageManifest, ImageManifestBuilder, MediaType};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::hash::Sha256Hash;
use crate::registry::BlobInfo;

pub const KEY_ANNOTATION: &str = "com.linyinfeng.oranc.key";
pub const CONTENT_TYPE_ANNOTATION: &str = "com.linyinfeng.oranc.content.type";
pub const DESCRIPTION_ANNOTATION: &str = "org.opencontainers.image.description";
/// When oranc stored the object (RFC 3339), for `oranc gc --keep-newer-than` and `--grace`.
/// The original neither writes nor reads it.
pub const CREATED_ANNOTATION: &str = "org.opencontainers.image.created";
pub const LAYER_MEDIA_TYPE: &str = "application/octet-stream";
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// An image config as the original writes it: empty architecture and os.
///
/// Our own struct rather than `oci_spec::image::ImageConfiguration`: that type's `Arch` and
/// `Os` cannot hold the empty strings the original writes.
#[derive(Serialize)]
struct ImageConfig<'a> {
    architecture: &'a str,
    os: &'a str,
    rootfs: RootFs,
}

#[derive(Serialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Vec<String>,
}

fn config_bytes(diff_ids: Vec<String>) -> Vec<u8> {
    let config = ImageConfig {
        architecture: "",
        os: "",
        rootfs: RootFs {
            kind: "layers",
            diff_ids,
        },
    };
    serde_json::to_vec(&config).unwrap_or_else(|_| unreachable!("a plain struct serialises"))
}

/// The config the original writes for each object, naming its layer as the only diff id:
/// one more blob per object. Kept to write caches exactly as the original does (tests).
pub fn image_config(layer: &BlobInfo) -> Vec<u8> {
    config_bytes(vec![layer.digest.to_oci_digest()])
}

/// The one config blob every object oranc writes shares: the original's config with no diff
/// ids. Readers (the original's and ours) never read a config; sharing one saves two
/// requests per object. See `docs/layout.md`.
pub fn shared_config() -> Vec<u8> {
    config_bytes(Vec::new())
}

fn descriptor(media_type: MediaType, blob: &BlobInfo) -> Result<Descriptor> {
    let digest = oci_spec::image::Digest::from_str(&blob.digest.to_oci_digest()).map_err(|e| {
        Error::InvalidManifest {
            reason: format!("digest: {e}"),
        }
    })?;
    Ok(Descriptor::new(media_type, blob.size, digest))
}

/// The manifest for the object `key` of `content_type`, whose bytes are the blob `layer`
/// and whose config blob is `config` (made by [`image_config`]), as the original writes it.
pub fn manifest(
    key: &str,
    content_type: &str,
    layer: &BlobInfo,
    config: &BlobInfo,
) -> Result<Vec<u8>> {
    build_manifest(key, content_type, layer, config, None)
}

/// [`manifest`] with the time the object is stored, in [`CREATED_ANNOTATION`].
pub fn manifest_created_at(
    key: &str,
    content_type: &str,
    layer: &BlobInfo,
    config: &BlobInfo,
    created: SystemTime,
) -> Result<Vec<u8>> {
    let created = humantime::format_rfc3339_seconds(created).to_string();
    build_manifest(key, content_type, layer, config, Some(created))
}

fn build_manifest(
    key: &str,
    content_type: &str,
    layer: &BlobInfo,
    config: &BlobInfo,
    created: Option<String>,
) -> Result<Vec<u8>> {
    let mut layer_descriptor = descriptor(MediaType::Other(LAYER_MEDIA_TYPE.into()), layer)?;
    layer_descriptor.set_annotations(Some(HashMap::from([(
        CONTENT_TYPE_ANNOTATION.to_owned(),
        content_type.to_owned(),
    )])));
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(descriptor(MediaType::ImageConfig, config)?)
        .layers(vec![layer_descriptor])
        .annotations(
            [
                (KEY_ANNOTATION.to_owned(), key.to_owned()),
                (DESCRIPTION_ANNOTATION.to_owned(), key.to_owned()),
            ]
            .into_iter()
            .chain(created.map(|at| (CREATED_ANNOTATION.to_owned(), at)))
            .collect::<HashMap<_, _>>(),
        )
        .build()
        .map_err(|e| Error::InvalidManifest {
            reason: format!("cannot build: {e}"),
        })?;
    serde_json::to_vec(&manifest).map_err(|e| Error::InvalidManifest {
        reason: format!("cannot serialise: {e}"),
    })
}

/// What a stored object's manifest says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    /// The key annotation, when the writer set one.
    pub key: Option<String>,
    /// When it was stored ([`CREATED_ANNOTATION`]), when the writer said and it parses.
    pub created: Option<SystemTime>,
    pub content_type: String,
    pub layer: BlobInfo,
}

/// Reads an object's manifest, refusing what the original's reader refuses: not exactly one
/// layer, a layer of another media type, or no content-type annotation.
pub fn read_manifest(bytes: &[u8]) -> Result<StoredObject> {
    let invalid = |reason: String| Error::InvalidManifest { reason };
    let manifest: ImageManifest = serde_json::from_slice(bytes)
        .map_err(|e| invalid(format!("not an OCI image manifest: {e}")))?;
    let [layer] = manifest.layers().as_slice() else {
        return Err(invalid(format!(
            "expected exactly one layer, found {}",
            manifest.layers().len()
        )));
    };
    if layer.media_type().to_string() != LAYER_MEDIA_TYPE {
        return Err(invalid(format!(
            "the layer's media type is {}, expected {LAYER_MEDIA_TYPE}",
            layer.media_type()
        )));
    }
    let content_type = layer
        .annotations()
        .as_ref()
        .and_then(|a| a.get(CONTENT_TYPE_ANNOTATION))
        .ok_or_else(|| {
            invalid(format!(
                "the layer has no {CONTENT_TYPE_ANNOTATION} annotation"
            ))
        })?
        .clone();
    let digest = layer.digest();
    if digest.algorithm().to_string() != "sha256" {
        return Err(invalid(format!("the layer digest {digest} is not sha256")));
    }
    let digest = Sha256Hash::parse_digest(digest.digest())
        .map_err(|e| invalid(format!("the layer digest: {e}")))?;
    let annotation = |name: &str| {
        manifest
            .annotations()
            .as_ref()
            .and_then(|a| a.get(name))
            .cloned()
    };
    Ok(StoredObject {
        key: annotation(KEY_ANNOTATION),
        created: annotation(CREATED_ANNOTATION)
            .and_then(|at| humantime::parse_rfc3339_weak(&at).ok()),
        content_type,
        layer: BlobInfo {
            digest,
            size: layer.size(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The nix-cache-info manifest the original oranc wrote into
    /// tests/fixtures/original-oranc, and its config blob.
    const ORIGINAL_MANIFEST: &str = r#"{"annotations":{"com.linyinfeng.oranc.key":"nix-cache-info","org.opencontainers.image.description":"nix-cache-info"},"config":{"digest":"sha256:69a972910386b3f3a0189c1b3c1e6e3232ad841f31bfab6177b2e7c7d442fb6a","mediaType":"application/vnd.oci.image.config.v1+json","size":141},"layers":[{"annotations":{"com.linyinfeng.oranc.content.type":"text/x-nix-cache-info"},"digest":"sha256:67bd01fd9f36ab7f22fc8e11ee9f2d1fe3c882f44059353985ec3711513ed5fb","mediaType":"application/octet-stream","size":51}],"schemaVersion":2}"#;
    const ORIGINAL_CONFIG: &str = r#"{"architecture":"","os":"","rootfs":{"type":"layers","diff_ids":["sha256:67bd01fd9f36ab7f22fc8e11ee9f2d1fe3c882f44059353985ec3711513ed5fb"]}}"#;

    fn blob(bytes: &[u8]) -> BlobInfo {
        BlobInfo {
            digest: Sha256Hash::of(bytes),
            size: bytes.len() as u64,
        }
    }

    #[test]
    fn reads_the_manifest_the_original_wrote() {
        let object = read_manifest(ORIGINAL_MANIFEST.as_bytes()).unwrap();
        assert_eq!(object.key.as_deref(), Some("nix-cache-info"));
        assert_eq!(object.content_type, "text/x-nix-cache-info");
        assert_eq!(
            object.layer,
            blob(b"StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 41\n")
        );
    }

    #[test]
    fn writes_the_config_blob_the_original_wrote_byte_for_byte() {
        let layer = blob(b"StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 41\n");
        assert_eq!(image_config(&layer), ORIGINAL_CONFIG.as_bytes());
    }

    #[test]
    fn the_shared_config_is_the_originals_without_diff_ids() {
        assert_eq!(
            shared_config(),
            br#"{"architecture":"","os":"","rootfs":{"type":"layers","diff_ids":[]}}"#
        );
    }

    #[test]
    fn what_we_write_reads_back_and_matches_the_original_structure() {
        let layer = blob(b"StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 41\n");
        let config = blob(&image_config(&layer));
        let ours = manifest("nix-cache-info", "text/x-nix-cache-info", &layer, &config).unwrap();
        let object = read_manifest(&ours).unwrap();
        assert_eq!(object.layer, layer);
        assert_eq!(object.key.as_deref(), Some("nix-cache-info"));
        let ours: serde_json::Value = serde_json::from_slice(&ours).unwrap();
        let mut theirs: serde_json::Value = serde_json::from_str(ORIGINAL_MANIFEST).unwrap();
        // We add the manifest media type (the OCI spec recommends it); otherwise identical.
        theirs["mediaType"] = MANIFEST_MEDIA_TYPE.into();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn refuses_manifests_the_original_reader_refuses() {
        let mut two_layers: serde_json::Value = serde_json::from_str(ORIGINAL_MANIFEST).unwrap();
        let layer = two_layers["layers"][0].clone();
        two_layers["layers"] = serde_json::json!([layer, layer]);
        let mut wrong_type: serde_json::Value = serde_json::from_str(ORIGINAL_MANIFEST).unwrap();
        wrong_type["layers"][0]["mediaType"] = "application/vnd.oci.image.layer.v1.tar".into();
        let mut no_annotation: serde_json::Value = serde_json::from_str(ORIGINAL_MANIFEST).unwrap();
        no_annotation["layers"][0]["annotations"] = serde_json::json!({});
        for (manifest, needle) in [
            (two_layers, "exactly one layer"),
            (wrong_type, "media type"),
            (no_annotation, "annotation"),
            (serde_json::json!({"hello": 1}), "not an OCI image manifest"),
        ] {
            let err = read_manifest(manifest.to_string().as_bytes())
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{err}");
        }
    }
}
