//! The OCI image model: a base image plus appended source layers, with the
//! runtime settings and provenance labels, written as OCI config and
//! manifest.
//!
//! Everything written uses OCI media types. A base stored with Docker
//! schema 2 media types has its descriptors converted; the blobs are the
//! same bytes either way, so their digests do not change.

use std::collections::{BTreeMap, HashMap};

use broker_pins::Platform;
use oci_spec::image::{
    Arch, Descriptor, History, HistoryBuilder, ImageConfiguration, ImageIndex, ImageIndexBuilder,
    ImageManifest, ImageManifestBuilder, MediaType, Os, PlatformBuilder,
};

use crate::epoch::SourceDateEpoch;
use crate::layer::SourceLayer;
use crate::store::{Store, StoreError, StoredImage};

pub use crate::media_type::{
    DOCKER_CONFIG, DOCKER_LAYER_FOREIGN, DOCKER_LAYER_GZIP, DOCKER_LAYER_TAR, DOCKER_MANIFEST,
};

/// Label: where the sources come from (a repository URL).
pub const LABEL_SOURCE: &str = "org.opencontainers.image.source";
/// Label: the source revision (a commit).
pub const LABEL_REVISION: &str = "org.opencontainers.image.revision";
/// Label: when the image was made (RFC 3339, from `SOURCE_DATE_EPOCH`).
pub const LABEL_CREATED: &str = "org.opencontainers.image.created";
/// Label: the base image's manifest digest.
pub const LABEL_BASE_DIGEST: &str = "org.opencontainers.image.base.digest";
/// Label: the base image's name.
pub const LABEL_BASE_NAME: &str = "org.opencontainers.image.base.name";
/// Label: the manifest digest of the image the source layers were appended
/// to (the deps image), when the base labels name the image that one was
/// built from.
pub const LABEL_DEPS_DIGEST: &str = "io.github.broker-images.deps.digest";

/// The OCI media type for `m`: Docker schema 2 types map to their OCI
/// equivalents, others pass through.
#[must_use]
pub fn oci_media_type(m: &MediaType) -> MediaType {
    match m {
        MediaType::Other(t) => match t.as_str() {
            DOCKER_MANIFEST => MediaType::ImageManifest,
            DOCKER_CONFIG => MediaType::ImageConfig,
            DOCKER_LAYER_GZIP => MediaType::ImageLayerGzip,
            DOCKER_LAYER_TAR => MediaType::ImageLayer,
            DOCKER_LAYER_FOREIGN => MediaType::ImageLayerNonDistributableGzip,
            _ => m.clone(),
        },
        _ => m.clone(),
    }
}

/// `d` with its media type converted by [`oci_media_type`].
#[must_use]
pub fn oci_descriptor(d: &Descriptor) -> Descriptor {
    let mut d = d.clone();
    d.set_media_type(oci_media_type(d.media_type()));
    d
}

/// How the container runs. `None` and empty fields keep the base's value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// `user[:group]`, e.g. `broker`.
    pub user: Option<String>,
    /// Working directory.
    pub working_dir: Option<String>,
    /// Environment variables set or replaced, by name.
    pub env: BTreeMap<String, String>,
    /// Entrypoint. Setting it drops the base's `cmd` unless `cmd` is set
    /// too, as a Dockerfile `ENTRYPOINT` does.
    pub entrypoint: Option<Vec<String>>,
    /// Command (arguments to the entrypoint).
    pub cmd: Option<Vec<String>>,
    /// Ports added to the base's, e.g. `1883/tcp`.
    pub exposed_ports: Vec<String>,
    /// Labels added to (or replacing) the base's.
    pub labels: BTreeMap<String, String>,
}

/// Where an image's sources come from, for the OCI labels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Provenance {
    /// Repository URL (`org.opencontainers.image.source`).
    pub source: Option<String>,
    /// Revision, e.g. a commit (`org.opencontainers.image.revision`).
    pub revision: Option<String>,
    /// The image the appended-to image was itself built from (e.g.
    /// `python:3.10` below a deps stage), for `org.opencontainers.image.base.name`.
    /// `None` names the appended-to image itself. When set, that image's
    /// digest moves to [`LABEL_DEPS_DIGEST`]: users care which public base
    /// they run on, not which internal tag.
    pub base_name: Option<String>,
    /// The manifest digest of [`base_name`](Self::base_name), when known
    /// (`org.opencontainers.image.base.digest`; left out otherwise rather
    /// than naming the wrong image).
    pub base_digest: Option<String>,
}

/// Why an image could not be assembled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildImageError {
    /// The base's config and manifest disagree.
    #[error("base image `{name}` is inconsistent: {reason}; re-import or rebuild it")]
    InconsistentBase {
        /// The base's name.
        name: String,
        /// What disagrees.
        reason: String,
    },
    /// oci-spec refused a document.
    #[error("cannot assemble the image on `{base}`")]
    Assemble {
        /// The base's name.
        base: String,
        /// The cause.
        #[source]
        source: oci_spec::OciSpecError,
    },
    /// Writing to the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A base image with layers appended.
#[derive(Debug, Clone)]
pub struct ImageBuilder {
    base_name: String,
    base_digest: String,
    base_config: ImageConfiguration,
    base_layers: Vec<Descriptor>,
    layers: Vec<(SourceLayer, String)>,
    runtime: RuntimeConfig,
    provenance: Provenance,
    epoch: SourceDateEpoch,
    platform: Option<Platform>,
}

impl ImageBuilder {
    /// Start from `base` (read from the store), known as `base_name`.
    ///
    /// # Errors
    /// The base's config lists another number of layers than its manifest.
    pub fn new(base: &StoredImage, base_name: &str) -> Result<Self, BuildImageError> {
        let diff_ids = base.config.rootfs().diff_ids().len();
        let layers = base.manifest.layers().len();
        if diff_ids != layers {
            return Err(BuildImageError::InconsistentBase {
                name: base_name.to_owned(),
                reason: format!(
                    "{layers} layers in the manifest, {diff_ids} diff_ids in the config"
                ),
            });
        }
        Ok(Self {
            base_name: base_name.to_owned(),
            base_digest: base.manifest_descriptor.digest().to_string(),
            base_config: base.config.clone(),
            base_layers: base.manifest.layers().iter().map(oci_descriptor).collect(),
            layers: Vec::new(),
            runtime: RuntimeConfig::default(),
            provenance: Provenance::default(),
            epoch: SourceDateEpoch::DEFAULT,
            platform: None,
        })
    }

    /// Append `layer`; `description` says which source tree it holds and
    /// goes into the layer's history entry.
    pub fn append_layer(&mut self, layer: &SourceLayer, description: &str) -> &mut Self {
        self.layers.push((layer.clone(), description.to_owned()));
        self
    }

    /// Set how the container runs.
    pub fn runtime(&mut self, runtime: RuntimeConfig) -> &mut Self {
        self.runtime = runtime;
        self
    }

    /// Set the provenance labels.
    pub fn provenance(&mut self, provenance: Provenance) -> &mut Self {
        self.provenance = provenance;
        self
    }

    /// Set the image's `created` time (and the history entries').
    pub fn epoch(&mut self, epoch: SourceDateEpoch) -> &mut Self {
        self.epoch = epoch;
        self
    }

    /// Set the platform the config declares. The base's own claim is not
    /// trusted: Docker 20.10's legacy builder labels an image with the
    /// host's architecture even when every binary in it is arm64.
    pub fn platform(&mut self, platform: &Platform) -> &mut Self {
        self.platform = Some(platform.clone());
        self
    }

    /// The image config.
    #[must_use]
    pub fn config(&self) -> ImageConfiguration {
        let created = self.epoch.rfc3339();
        let mut image = self.base_config.clone();
        if let Some(platform) = &self.platform {
            image.set_os(Os::from(platform.os()));
            image.set_architecture(Arch::from(platform.architecture()));
            image.set_variant(platform.variant().map(str::to_owned));
        }
        image.set_created(Some(created.clone()));
        image.set_author(None);

        let mut config = image.config().clone().unwrap_or_default();
        let rt = &self.runtime;
        if let Some(user) = &rt.user {
            config.set_user(Some(user.clone()));
        }
        if let Some(dir) = &rt.working_dir {
            config.set_working_dir(Some(dir.clone()));
        }
        if !rt.env.is_empty() {
            config.set_env(Some(merge_env(config.env().as_deref(), &rt.env)));
        }
        if let Some(ep) = &rt.entrypoint {
            config.set_entrypoint(Some(ep.clone()));
            if rt.cmd.is_none() {
                config.set_cmd(None);
            }
        }
        if let Some(cmd) = &rt.cmd {
            config.set_cmd(Some(cmd.clone()));
        }
        if !rt.exposed_ports.is_empty() {
            let mut ports = config.exposed_ports().clone().unwrap_or_default();
            ports.extend(rt.exposed_ports.iter().cloned());
            ports.sort();
            ports.dedup();
            config.set_exposed_ports(Some(ports));
        }
        config.set_labels(Some(self.labels(config.labels().as_ref())));
        image.set_config(Some(config));

        for (layer, _) in &self.layers {
            image
                .rootfs_mut()
                .diff_ids_mut()
                .push(layer.diff_id.to_string());
        }
        let mut history = image.history().clone().unwrap_or_default();
        for (layer, description) in &self.layers {
            history.push(history_entry(&created, layer, description));
        }
        image.set_history(Some(history));
        image
    }

    /// The labels: the base's, the runtime's, then the provenance ones.
    fn labels(&self, base: Option<&HashMap<String, String>>) -> HashMap<String, String> {
        let mut labels: HashMap<String, String> = base.cloned().unwrap_or_default();
        labels.extend(self.runtime.labels.clone());
        // Base labels inherited from below describe that image's base, and
        // a label naming the wrong image is worse than none.
        labels.remove(LABEL_BASE_DIGEST);
        labels.remove(LABEL_DEPS_DIGEST);
        labels.extend(self.base_labels());
        if let Some(s) = &self.provenance.source {
            labels.insert(LABEL_SOURCE.to_owned(), s.clone());
        }
        if let Some(r) = &self.provenance.revision {
            labels.insert(LABEL_REVISION.to_owned(), r.clone());
        }
        labels
    }

    /// `created` and the base labels, shared by the config's labels and
    /// the manifest's annotations.
    fn base_labels(&self) -> Vec<(String, String)> {
        let mut out = vec![(LABEL_CREATED.to_owned(), self.epoch.rfc3339())];
        match &self.provenance.base_name {
            Some(name) => {
                out.push((LABEL_BASE_NAME.to_owned(), name.clone()));
                if let Some(digest) = &self.provenance.base_digest {
                    out.push((LABEL_BASE_DIGEST.to_owned(), digest.clone()));
                }
                out.push((LABEL_DEPS_DIGEST.to_owned(), self.base_digest.clone()));
            }
            None => {
                out.push((LABEL_BASE_NAME.to_owned(), self.base_name.clone()));
                out.push((LABEL_BASE_DIGEST.to_owned(), self.base_digest.clone()));
            }
        }
        out
    }

    /// The manifest for a config stored as `config`.
    ///
    /// # Errors
    /// oci-spec refuses the manifest.
    pub fn manifest(&self, config: Descriptor) -> Result<ImageManifest, BuildImageError> {
        let mut layers = self.base_layers.clone();
        layers.extend(self.layers.iter().map(|(l, _)| l.descriptor()));
        let annotations: HashMap<String, String> = self.base_labels().into_iter().collect();
        ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(config)
            .layers(layers)
            .annotations(annotations)
            .build()
            .map_err(|source| BuildImageError::Assemble {
                base: self.base_name.clone(),
                source,
            })
    }

    /// Write config and manifest to `store` (blobs only; tag it with
    /// [`Store::tag`]). The layers must already be in the store.
    ///
    /// # Errors
    /// A store write fails or a layer blob is missing.
    pub fn write(&self, store: &Store) -> Result<StoredImage, BuildImageError> {
        for (layer, _) in &self.layers {
            if !store.has_blob(&layer.digest) {
                return Err(StoreError::MissingBlob {
                    digest: layer.digest,
                    path: store.blob_path(&layer.digest),
                }
                .into());
            }
        }
        let config = self.config();
        let config_descriptor = store.put_config(&config)?;
        let manifest = self.manifest(config_descriptor)?;
        let manifest_descriptor = store.put_manifest(&manifest)?;
        let digest = crate::store::descriptor_digest(&manifest_descriptor, "new manifest")?;
        let raw_manifest = store.read_blob(&digest)?;
        Ok(StoredImage {
            manifest_descriptor,
            manifest,
            config,
            raw_manifest,
        })
    }
}

/// The OCI image index over one manifest per platform, in the order
/// given (the build's platform order, so the same build gives the same
/// bytes). No annotations: nothing in it may depend on when or where it
/// was made.
///
/// # Errors
/// oci-spec refuses the index.
pub fn image_index(manifests: &[(Descriptor, Platform)]) -> Result<ImageIndex, BuildImageError> {
    let entries = manifests
        .iter()
        .map(|(descriptor, platform)| {
            let mut entry = Descriptor::new(
                descriptor.media_type().clone(),
                descriptor.size(),
                descriptor.digest().clone(),
            );
            let mut built = PlatformBuilder::default()
                .os(Os::from(platform.os()))
                .architecture(Arch::from(platform.architecture()));
            if let Some(variant) = platform.variant() {
                built = built.variant(variant.to_owned());
            }
            let built = built.build().map_err(|source| BuildImageError::Assemble {
                base: platform.to_string(),
                source,
            })?;
            entry.set_platform(Some(built));
            Ok(entry)
        })
        .collect::<Result<Vec<_>, BuildImageError>>()?;
    ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(entries)
        .build()
        .map_err(|source| BuildImageError::Assemble {
            base: "the image index".to_owned(),
            source,
        })
}

fn history_entry(created: &str, layer: &SourceLayer, description: &str) -> History {
    let built = HistoryBuilder::default()
        .created(created.to_owned())
        .created_by(format!("broker-images: {description} → {}", layer.target))
        .comment(format!("source layer {}", layer.diff_id))
        .build();
    // Every field is optional; the builder cannot fail.
    built.unwrap_or_default()
}

/// The base's `NAME=value` list with `set` applied: replaced in place,
/// new names appended in name order.
fn merge_env(base: Option<&[String]>, set: &BTreeMap<String, String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut done: Vec<&str> = Vec::new();
    for entry in base.unwrap_or_default() {
        let name = entry.split_once('=').map_or(entry.as_str(), |(n, _)| n);
        match set.get_key_value(name) {
            Some((k, v)) => {
                out.push(format!("{k}={v}"));
                done.push(k);
            }
            None => out.push(entry.clone()),
        }
    }
    for (k, v) in set {
        if !done.contains(&k.as_str()) {
            out.push(format!("{k}={v}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;

    #[test]
    fn env_is_merged_by_name() {
        let base = vec!["PATH=/bin".to_owned(), "LANG=C".to_owned()];
        let mut set = BTreeMap::new();
        set.insert("LANG".to_owned(), "C.UTF-8".to_owned());
        set.insert("APP".to_owned(), "1".to_owned());
        assert_eq!(
            merge_env(Some(&base), &set),
            ["PATH=/bin", "LANG=C.UTF-8", "APP=1"]
        );
    }

    fn docker_base() -> StoredImage {
        let layer = Descriptor::new(
            MediaType::from(DOCKER_LAYER_GZIP),
            10,
            crate::oci_digest::to_oci(&Digest::of(b"l")),
        );
        let config_desc = Descriptor::new(
            MediaType::from(DOCKER_CONFIG),
            5,
            crate::oci_digest::to_oci(&Digest::of(b"c")),
        );
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::from(DOCKER_MANIFEST))
            .config(config_desc)
            .layers(vec![layer])
            .build()
            .unwrap();
        let config: ImageConfiguration = serde_json::from_value(serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"], "Labels": {"base": "yes"}},
            "rootfs": {"type": "layers", "diff_ids": [Digest::of(b"d").to_string()]},
            "history": [{"created_by": "base layer"}]
        }))
        .unwrap();
        StoredImage {
            manifest_descriptor: Descriptor::new(
                MediaType::from(DOCKER_MANIFEST),
                100,
                crate::oci_digest::to_oci(&Digest::of(b"m")),
            ),
            manifest,
            config,
            raw_manifest: Vec::new(),
        }
    }

    fn source_layer() -> SourceLayer {
        SourceLayer {
            digest: Digest::of(b"new"),
            diff_id: Digest::of(b"new-diff"),
            size: 3,
            uncompressed_size: 1024,
            target: "/app".into(),
            entries: 2,
            from_cache: false,
        }
    }

    #[test]
    fn appending_to_a_docker_base_gives_an_oci_image() {
        let mut b = ImageBuilder::new(&docker_base(), "busybox").unwrap();
        b.append_layer(&source_layer(), "python sources")
            .epoch(SourceDateEpoch::new(0))
            .runtime(RuntimeConfig {
                entrypoint: Some(vec!["/app/run".into()]),
                exposed_ports: vec!["1883/tcp".into()],
                ..RuntimeConfig::default()
            })
            .provenance(Provenance {
                source: None,
                revision: Some("abc".into()),
                ..Provenance::default()
            });
        let config = b.config();
        let c = config.config().as_ref().unwrap();
        assert_eq!(
            c.entrypoint().as_deref(),
            Some(&["/app/run".to_owned()][..])
        );
        assert_eq!(*c.cmd(), None, "ENTRYPOINT drops the base's CMD");
        assert_eq!(c.env().as_deref(), Some(&["PATH=/bin".to_owned()][..]));
        let labels = c.labels().as_ref().unwrap();
        assert_eq!(labels["base"], "yes");
        assert_eq!(labels[LABEL_REVISION], "abc");
        assert_eq!(labels[LABEL_CREATED], "1970-01-01T00:00:00Z");
        assert_eq!(labels[LABEL_BASE_NAME], "busybox");
        assert!(!labels.contains_key(LABEL_SOURCE));
        assert!(!labels.contains_key(LABEL_DEPS_DIGEST));

        // Issue 12: on a deps image, the base labels name the public base
        // the deps stage started from; the deps image gets a label of its own.
        let deps_digest = labels[LABEL_BASE_DIGEST].clone();
        b.provenance(Provenance {
            base_name: Some("python:3.10".into()),
            ..Provenance::default()
        });
        let config = b.config();
        let labels = config.config().as_ref().unwrap().labels().clone().unwrap();
        assert_eq!(labels[LABEL_BASE_NAME], "python:3.10");
        assert!(!labels.contains_key(LABEL_BASE_DIGEST), "unknown: left out");
        assert_eq!(labels[LABEL_DEPS_DIGEST], deps_digest);
        let real = format!("sha256:{}", "a".repeat(64));
        b.provenance(Provenance {
            base_name: Some(format!("python:3.10@{real}")),
            base_digest: Some(real.clone()),
            ..Provenance::default()
        });
        let labels = b
            .config()
            .config()
            .as_ref()
            .unwrap()
            .labels()
            .clone()
            .unwrap();
        assert_eq!(labels[LABEL_BASE_DIGEST], real);
        assert_eq!(config.created().as_deref(), Some("1970-01-01T00:00:00Z"));
        assert_eq!(config.rootfs().diff_ids().len(), 2);
        let history = config.history().as_ref().unwrap();
        assert_eq!(history.len(), 2);
        assert!(
            history[1]
                .created_by()
                .as_ref()
                .unwrap()
                .contains("python sources → /app")
        );

        let m = b
            .manifest(Descriptor::new(
                MediaType::ImageConfig,
                1,
                crate::oci_digest::to_oci(&Digest::of(b"x")),
            ))
            .unwrap();
        assert_eq!(m.media_type().as_ref(), Some(&MediaType::ImageManifest));
        let types: Vec<MediaType> = m.layers().iter().map(|l| l.media_type().clone()).collect();
        assert_eq!(
            types,
            [MediaType::ImageLayerGzip, MediaType::ImageLayerGzip]
        );
        // The blob is the same: only the descriptor's media type changed.
        assert_eq!(
            m.layers()[0].digest().to_string(),
            Digest::of(b"l").to_string()
        );
        assert_eq!(
            m.layers()[1].digest().to_string(),
            Digest::of(b"new").to_string()
        );
    }

    #[test]
    fn the_platform_is_declared_by_the_tool_and_indexed_in_order() {
        let mut b = ImageBuilder::new(&docker_base(), "busybox").unwrap();
        let arm64: Platform = "linux/arm64".parse().unwrap();
        b.platform(&arm64);
        let config = serde_json::to_value(b.config()).unwrap();
        assert_eq!(config["architecture"], "arm64", "the base said amd64");
        assert_eq!(config["os"], "linux");
        assert!(config.get("variant").is_none(), "{config}");
        let arm: Platform = "linux/arm/v7".parse().unwrap();
        b.platform(&arm);
        assert_eq!(serde_json::to_value(b.config()).unwrap()["variant"], "v7");

        let manifest = |c: &[u8]| {
            Descriptor::new(
                MediaType::ImageManifest,
                7,
                crate::oci_digest::to_oci(&Digest::of(c)),
            )
        };
        let index = image_index(&[
            (manifest(b"amd"), Platform::linux_amd64()),
            (manifest(b"arm"), arm64),
        ])
        .unwrap();
        let json = serde_json::to_value(&index).unwrap();
        assert_eq!(json["mediaType"], "application/vnd.oci.image.index.v1+json");
        let platforms: Vec<String> = json["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                format!(
                    "{}/{}",
                    m["platform"]["os"].as_str().unwrap(),
                    m["platform"]["architecture"].as_str().unwrap()
                )
            })
            .collect();
        assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
        assert_eq!(
            json["manifests"][1]["digest"],
            Digest::of(b"arm").to_string()
        );
        assert!(json.get("annotations").is_none(), "{json}");
    }

    #[test]
    fn the_config_json_is_the_same_every_time() {
        let mut b = ImageBuilder::new(&docker_base(), "busybox").unwrap();
        let mut labels = BTreeMap::new();
        for i in 0..20 {
            labels.insert(format!("label.{i}"), i.to_string());
        }
        b.append_layer(&source_layer(), "x").runtime(RuntimeConfig {
            labels,
            ..RuntimeConfig::default()
        });
        let first = crate::json::canonical_json(&b.config()).unwrap();
        for _ in 0..5 {
            assert_eq!(
                crate::json::canonical_json(&b.clone().config()).unwrap(),
                first
            );
        }
    }

    #[test]
    fn an_inconsistent_base_is_refused() {
        let mut base = docker_base();
        base.manifest.layers_mut().clear();
        let e = ImageBuilder::new(&base, "busybox").unwrap_err();
        assert!(e.to_string().contains("busybox"), "{e}");
    }

    #[test]
    fn docker_media_types_become_oci() {
        for (docker, oci) in [
            (DOCKER_MANIFEST, MediaType::ImageManifest),
            (DOCKER_CONFIG, MediaType::ImageConfig),
            (DOCKER_LAYER_GZIP, MediaType::ImageLayerGzip),
            (DOCKER_LAYER_TAR, MediaType::ImageLayer),
            (
                DOCKER_LAYER_FOREIGN,
                MediaType::ImageLayerNonDistributableGzip,
            ),
        ] {
            assert_eq!(oci_media_type(&MediaType::from(docker)), oci);
        }
        assert_eq!(
            oci_media_type(&MediaType::ImageLayerZstd),
            MediaType::ImageLayerZstd
        );
    }
}
