//! What a build records of one image: its summary for the caller and its
//! `images.lock` entry, assembled from what went into it.

use std::collections::BTreeMap;

use broker_oci::{Digest, SourceLayer};
use broker_pins::{LockedImage, LockedPlatform, Platform, SourceRecord, UNKNOWN_REVISION};

use crate::build::deps_image::DepsOrigin;
use crate::deps::{self, DepsInputs, DepsKey};
use crate::sources::SourceTree;
use crate::spec::ImageSpec;

/// One image built into the store.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BuiltImage {
    /// The image name.
    pub name: String,
    /// The manifest digest.
    pub digest: Digest,
    /// The deps key.
    pub deps_key: String,
    /// Where the deps image came from.
    pub deps_origin: DepsOrigin,
    /// The source layers, by layer name: digest and whether it came from
    /// the layer cache.
    pub layers: BTreeMap<String, (Digest, bool)>,
    /// The tag of its deps image, `deps-<key>`: under its name in the store
    /// ([`BuiltImage::deps_store_tag`]) and in a registry.
    #[serde(skip)]
    pub deps_tag: String,
    /// The base manifest its deps stage started from, when the base is an
    /// index in a registry (this platform's entry of it); what the lock
    /// records per platform.
    #[serde(skip)]
    pub platform_base: Option<Digest>,
    /// A multi-platform image: each platform's manifest and deps image, in
    /// the index's order. `digest` is then the index's, and the fields
    /// above are the first platform's.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<BuiltPlatform>,
}

/// One platform of a multi-platform [`BuiltImage`].
#[derive(Clone, Debug, serde::Serialize)]
pub struct BuiltPlatform {
    /// The platform.
    pub platform: Platform,
    /// Its manifest digest.
    pub digest: Digest,
    /// Its deps key.
    pub deps_key: String,
    /// Where its deps image came from.
    pub deps_origin: DepsOrigin,
    /// Its deps image's tag, `deps-<key>`.
    #[serde(skip)]
    pub deps_tag: String,
}

/// The summary and lock entry of a multi-platform image whose index is
/// `index`, from each platform's (in the index's order).
pub(crate) fn indexed(
    index: Digest,
    platforms: Vec<(Platform, (BuiltImage, LockedImage))>,
) -> (BuiltImage, LockedImage) {
    let mut summaries = Vec::with_capacity(platforms.len());
    let mut records = BTreeMap::new();
    let mut first = None;
    for (platform, (built, locked)) in platforms {
        summaries.push(BuiltPlatform {
            platform: platform.clone(),
            digest: built.digest,
            deps_key: built.deps_key.clone(),
            deps_origin: built.deps_origin,
            deps_tag: built.deps_tag.clone(),
        });
        records.insert(
            platform,
            LockedPlatform {
                digest: locked.digest,
                deps_key: locked.deps_key.clone(),
                deps_digest: locked.deps_digest,
                base_digest: built.platform_base.or(locked.base_digest),
                sbom: None,
            },
        );
        first.get_or_insert((built, locked));
    }
    let Some((mut built, mut locked)) = first else {
        unreachable!("an index has at least one platform")
    };
    built.digest = index;
    built.platforms = summaries;
    locked.reference = format!("{}@{index}", built.name);
    locked.digest = index;
    locked.platforms = records;
    locked.platform = None;
    (built, locked)
}

impl BuiltImage {
    /// The store tag of its deps image: `NAME:deps-<key>`.
    pub fn deps_store_tag(&self) -> String {
        format!("{}:{}", self.name, self.deps_tag)
    }
}

/// Everything one image was built from and into, gathered for its records.
pub(crate) struct BuildRecord<'a> {
    /// The image's spec.
    pub spec: &'a ImageSpec,
    /// The run's source trees.
    pub trees: &'a BTreeMap<String, SourceTree>,
    /// The source layers, in the spec's order.
    pub layers: &'a [SourceLayer],
    /// The deps stage's inputs.
    pub inputs: &'a DepsInputs,
    /// Their key.
    pub key: &'a DepsKey,
    /// The image's manifest digest.
    pub digest: Digest,
    /// The deps image's manifest digest.
    pub deps_digest: Digest,
    /// Where the deps image came from.
    pub deps_origin: DepsOrigin,
}

impl BuildRecord<'_> {
    /// The image's summary and its lock entry.
    pub(crate) fn entries(self) -> (BuiltImage, LockedImage) {
        let Self {
            spec,
            trees,
            layers,
            inputs,
            key,
            digest,
            deps_digest,
            deps_origin,
        } = self;
        let name = spec.name.as_str();
        let mut sources_record = BTreeMap::new();
        let mut layer_summary = BTreeMap::new();
        for (layer_spec, layer) in spec.layers.iter().zip(layers) {
            let tree = &trees[&layer_spec.tree];
            sources_record.insert(
                layer_spec.name.clone(),
                SourceRecord {
                    target: layer_spec.to.clone(),
                    source: tree.origin.clone(),
                    revision: Some(
                        tree.revision
                            .clone()
                            .unwrap_or_else(|| UNKNOWN_REVISION.to_owned()),
                    ),
                    layer: layer.digest,
                },
            );
            layer_summary.insert(layer_spec.name.clone(), (layer.digest, layer.from_cache));
        }
        let locked = LockedImage {
            reference: format!("{name}@{digest}"),
            tag: None,
            digest,
            deps_key: key.to_string(),
            base: inputs.base.clone(),
            base_digest: inputs.base_digest.map(|b| b.digest),
            base_local: inputs.base_digest.is_some_and(|b| b.local),
            build_args: inputs
                .args
                .iter()
                .filter(|(k, _)| k.as_str() != deps::BASE_ARG)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            deps_digest,
            sources: sources_record,
            signature: None,
            provenance: None,
            sbom: None,
            platforms: BTreeMap::new(),
            platform: Some(inputs.platform.clone()),
        };
        let built = BuiltImage {
            name: name.to_owned(),
            digest,
            deps_key: key.to_string(),
            deps_origin,
            layers: layer_summary,
            deps_tag: key.tag(),
            platform_base: inputs.platform_base,
            platforms: Vec::new(),
        };
        (built, locked)
    }
}
