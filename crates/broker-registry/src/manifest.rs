//! Just enough of OCI and Docker schema2 manifests to walk an image graph:
//! which blobs and child manifests a manifest references. Manifest bytes are
//! always pushed exactly as read, so their digests never change.

use broker_oci::Digest;
use serde::Deserialize;

use crate::error::RegistryError;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker schema2 manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The `Accept` header for manifest requests: every type we can walk.
pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// A reference from a manifest to a blob or another manifest.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Descriptor {
    /// The referenced content's media type.
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// For index entries: the platform the manifest is for.
    #[serde(default)]
    pub platform: Option<Platform>,
}

/// The platform of an index entry.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Platform {
    /// e.g. `amd64`.
    pub architecture: String,
    /// e.g. `linux`.
    pub os: String,
    /// e.g. `v8` for arm64.
    #[serde(default)]
    pub variant: Option<String>,
}

/// A parsed manifest or index.
#[derive(Clone, Debug)]
pub enum Manifest {
    /// A single-platform image: config and layers.
    Image {
        /// The config blob.
        config: Descriptor,
        /// The layer blobs, bottom first.
        layers: Vec<Descriptor>,
    },
    /// A multi-platform index of manifests.
    Index {
        /// The child manifests.
        manifests: Vec<Descriptor>,
    },
}

#[derive(Deserialize)]
struct Raw {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
}

impl Manifest {
    /// Parses manifest bytes; `what` names it in errors.
    pub fn parse(bytes: &[u8], what: &str) -> Result<Self, RegistryError> {
        let raw: Raw = serde_json::from_slice(bytes).map_err(|e| RegistryError::BadManifest {
            what: what.to_owned(),
            why: e.to_string(),
        })?;
        match (raw.manifests, raw.config) {
            (Some(manifests), None) => Ok(Self::Index { manifests }),
            (None, Some(config)) => Ok(Self::Image {
                config,
                layers: raw.layers.unwrap_or_default(),
            }),
            _ => Err(RegistryError::BadManifest {
                what: what.to_owned(),
                why: format!(
                    "neither an image manifest nor an index (mediaType {})",
                    raw.media_type.as_deref().unwrap_or("absent")
                ),
            }),
        }
    }

    /// The media type a manifest declares, falling back on its shape.
    pub fn media_type_of(bytes: &[u8]) -> Option<String> {
        let raw: Raw = serde_json::from_slice(bytes).ok()?;
        raw.media_type.or_else(|| {
            Some(if raw.manifests.is_some() {
                OCI_INDEX.to_owned()
            } else {
                OCI_MANIFEST.to_owned()
            })
        })
    }

    /// The blobs an image manifest needs, config first; empty for an index.
    pub fn blobs(&self) -> Vec<&Descriptor> {
        match self {
            Self::Image { config, layers } => {
                std::iter::once(config).chain(layers.iter()).collect()
            }
            Self::Index { .. } => Vec::new(),
        }
    }
}

/// Picks the manifest for `os/arch[/variant]` from an index's entries.
pub fn select_platform<'a>(
    manifests: &'a [Descriptor],
    os: &str,
    arch: &str,
    variant: Option<&str>,
) -> Option<&'a Descriptor> {
    manifests.iter().find(|m| {
        m.platform.as_ref().is_some_and(|p| {
            p.os == os
                && p.architecture == arch
                && (variant.is_none() || p.variant.as_deref() == variant)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn walks_image_and_index() {
        let image = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"x","digest":"{}","size":3}},"layers":[{{"mediaType":"y","digest":"{}","size":5}}]}}"#,
            d('a'),
            d('b')
        );
        let m = Manifest::parse(image.as_bytes(), "test").unwrap();
        assert_eq!(m.blobs().len(), 2);
        assert_eq!(
            Manifest::media_type_of(image.as_bytes()).unwrap(),
            DOCKER_MANIFEST
        );
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":9,"platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}},{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":9,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
            d('c'),
            d('e')
        );
        let Manifest::Index { manifests } = Manifest::parse(index.as_bytes(), "test").unwrap()
        else {
            panic!("index expected")
        };
        assert_eq!(
            select_platform(&manifests, "linux", "amd64", None)
                .unwrap()
                .digest
                .to_string(),
            d('e')
        );
        assert!(select_platform(&manifests, "linux", "s390x", None).is_none());
    }

    #[test]
    fn rejects_what_is_not_a_manifest() {
        let err = Manifest::parse(b"{\"schemaVersion\":2}", "img")
            .unwrap_err()
            .to_string();
        assert!(err.contains("img is not a valid manifest"), "{err}");
    }
}
