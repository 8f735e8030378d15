//! The few OCI manifest shapes attachments are made of: descriptors with
//! annotations, image manifests with an optional `subject`. Written here
//! as plain serde types so their bytes (and digests) are fixed by this
//! crate alone.

use std::collections::BTreeMap;

use broker_pins::Digest;
use serde::{Deserialize, Serialize};

/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image config media type.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// A blob to store: its bytes, media type and digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    /// The media type its descriptor carries.
    pub media_type: String,
    /// The exact bytes.
    pub bytes: Vec<u8>,
    /// Their digest.
    pub digest: Digest,
}

impl Blob {
    /// A blob of `media_type` holding `bytes`.
    #[must_use]
    pub fn new(media_type: &str, bytes: Vec<u8>) -> Self {
        Self {
            media_type: media_type.to_owned(),
            digest: Digest::of(&bytes),
            bytes,
        }
    }

    /// Its descriptor, without annotations.
    #[must_use]
    pub fn descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: self.media_type.clone(),
            digest: self.digest,
            size: self.bytes.len() as u64,
            annotations: BTreeMap::new(),
        }
    }
}

/// A content descriptor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    /// The referenced content's media type.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// Annotations (a cosign signature sits in one).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    /// The annotation `key`, if set.
    #[must_use]
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.get(key).map(String::as_str)
    }
}

/// An OCI image manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageManifest {
    /// Always 2.
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// [`OCI_MANIFEST`].
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    /// What an artifact manifest holds (OCI 1.1), e.g. an in-toto
    /// statement.
    #[serde(
        rename = "artifactType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub artifact_type: Option<String>,
    /// The config blob.
    pub config: Descriptor,
    /// The layers.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    /// The image an artifact is about (OCI 1.1 referrers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// Manifest annotations (what an attestation's predicate is).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl ImageManifest {
    /// A manifest of `config` and `layers`.
    #[must_use]
    pub fn new(config: Descriptor, layers: Vec<Descriptor>) -> Self {
        Self {
            schema_version: 2,
            media_type: OCI_MANIFEST.to_owned(),
            artifact_type: None,
            config,
            layers,
            subject: None,
            annotations: BTreeMap::new(),
        }
    }

    /// The manifest's bytes (compact JSON).
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The smallest valid image config over `layers` (their digests as
/// diff IDs, as cosign writes it): registries and verifiers that read a
/// signature manifest as an image find a well-formed one.
#[must_use]
pub fn layers_config(layers: &[Descriptor]) -> Blob {
    let diff_ids: Vec<String> = layers.iter().map(|l| l.digest.to_string()).collect();
    let config = serde_json::json!({
        "architecture": "",
        "config": {},
        "os": "",
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    });
    Blob::new(OCI_CONFIG, serde_json::to_vec(&config).unwrap_or_default())
}

/// OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// The empty config of an artifact manifest (OCI 1.1).
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// The empty JSON object config blob artifact manifests carry.
#[must_use]
pub fn empty_config() -> Blob {
    Blob::new(OCI_EMPTY, b"{}".to_vec())
}

/// An artifact attached to an image: the manifest and the blobs it needs.
#[derive(Clone, Debug)]
pub struct Artifact {
    /// The manifest's exact bytes.
    pub manifest: Vec<u8>,
    /// Its digest.
    pub digest: Digest,
    /// The config and the content blob.
    pub blobs: Vec<Vec<u8>>,
    /// Its entry in a referrers list (with `artifactType`).
    pub entry: IndexEntry,
}

/// The artifact manifest holding `content` (one blob of `media_type`),
/// of `artifact_type`, about the image `subject`.
#[must_use]
pub fn artifact(
    artifact_type: &str,
    media_type: &str,
    content: Vec<u8>,
    subject: Descriptor,
) -> Artifact {
    annotated_artifact(artifact_type, media_type, content, subject, BTreeMap::new())
}

/// [`artifact`] with `annotations` on its manifest and its referrers
/// entry (as the OCI referrers API lists them).
#[must_use]
pub fn annotated_artifact(
    artifact_type: &str,
    media_type: &str,
    content: Vec<u8>,
    subject: Descriptor,
    annotations: BTreeMap<String, String>,
) -> Artifact {
    let config = empty_config();
    let content = Blob::new(media_type, content);
    let mut manifest = ImageManifest::new(config.descriptor(), vec![content.descriptor()]);
    manifest.artifact_type = Some(artifact_type.to_owned());
    manifest.subject = Some(subject);
    manifest.annotations = annotations.clone();
    let manifest = manifest.to_bytes();
    let digest = Digest::of(&manifest);
    let mut rest = BTreeMap::new();
    if !annotations.is_empty() {
        rest.insert(
            "annotations".to_owned(),
            serde_json::to_value(&annotations).unwrap_or_default(),
        );
    }
    Artifact {
        entry: IndexEntry {
            media_type: OCI_MANIFEST.to_owned(),
            digest,
            size: manifest.len() as u64,
            artifact_type: Some(artifact_type.to_owned()),
            rest,
        },
        manifest,
        digest,
        blobs: vec![config.bytes, content.bytes],
    }
}

/// One entry of an index, other fields (annotations, platform) kept as
/// another tool wrote them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// The manifest's media type.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// Its digest.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// Its artifact type, for referrers.
    #[serde(
        rename = "artifactType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub artifact_type: Option<String>,
    /// Whatever else the entry carries.
    #[serde(flatten)]
    pub rest: BTreeMap<String, serde_json::Value>,
}

#[derive(Serialize, Deserialize)]
struct Index {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType", default)]
    media_type: String,
    #[serde(default)]
    manifests: Vec<IndexEntry>,
    #[serde(flatten)]
    rest: BTreeMap<String, serde_json::Value>,
}

/// The referrers tag-schema index (`sha256-<hex>`) listing `entries`
/// besides everything `existing` lists (another tool's entries are kept as
/// they are). `None` when `existing` lists them all: nothing to push.
/// An `existing` that is not an index is replaced.
#[must_use]
pub fn referrers_index(existing: Option<&[u8]>, entries: &[IndexEntry]) -> Option<Vec<u8>> {
    let mut index = existing
        .and_then(|bytes| serde_json::from_slice::<Index>(bytes).ok())
        .unwrap_or_else(|| Index {
            schema_version: 2,
            media_type: OCI_INDEX.to_owned(),
            manifests: Vec::new(),
            rest: BTreeMap::new(),
        });
    let missing: Vec<&IndexEntry> = entries
        .iter()
        .filter(|e| !index.manifests.iter().any(|m| m.digest == e.digest))
        .collect();
    if missing.is_empty() && existing.is_some() {
        return None;
    }
    index.manifests.extend(missing.into_iter().cloned());
    index.media_type = OCI_INDEX.to_owned();
    Some(serde_json::to_vec(&index).unwrap_or_default())
}

/// The entries of a referrers list (an index's bytes, from the referrers
/// API or the tag schema); none when it is not an index.
#[must_use]
pub fn index_entries(bytes: &[u8]) -> Vec<IndexEntry> {
    serde_json::from_slice::<Index>(bytes)
        .map(|i| i.manifests)
        .unwrap_or_default()
}

/// The referrers tag-schema tag of `subject`: `sha256-<hex>`.
#[must_use]
pub fn referrers_tag(subject: &Digest) -> String {
    format!("sha256-{}", subject.hex())
}
