//! What an image says about itself: the spec's runtime settings and
//! labels, and the provenance labels of the trees and the base it is built
//! from.

use std::collections::BTreeMap;

use broker_oci::image::{Provenance, RuntimeConfig};

use crate::deps::DepsInputs;
use crate::sources::{BROKER_TREE, SourceTree};
use crate::spec::ImageSpec;

/// Prefix of the labels that record each further tree baked into an image
/// (every tree but the broker's, whose provenance has the standard
/// `org.opencontainers.image.source` / `.revision`):
/// `io.github.broker-images.source.<tree>.source` holds where the tree came
/// from (its git URL) and `io.github.broker-images.source.<tree>.revision`
/// its commit, e.g. `io.github.broker-images.source.ttn-formatters.revision`.
pub const TREE_LABEL_PREFIX: &str = "io.github.broker-images.source.";

/// The provenance label `field` (`source` or `revision`) of `tree`; see
/// [`TREE_LABEL_PREFIX`].
pub fn tree_label(tree: &str, field: &str) -> String {
    format!("{TREE_LABEL_PREFIX}{tree}.{field}")
}

/// The standard provenance of an image: the broker tree's origin and
/// revision, and the public base it is built on.
pub(crate) fn provenance(broker: &SourceTree, inputs: &DepsInputs) -> Provenance {
    Provenance {
        source: broker.origin.clone(),
        revision: broker.revision.clone(),
        // The deps tag is internal: the label names the public base.
        base_name: Some(match &inputs.base_digest {
            Some(b) => b.pinned(&inputs.base),
            None => inputs.base.clone(),
        }),
        base_digest: inputs
            .base_digest
            .filter(|b| !b.local)
            .map(|b| b.digest.to_string()),
    }
}

/// The spec's runtime settings and labels, plus the provenance labels of
/// every further tree the image bakes in (see [`TREE_LABEL_PREFIX`]).
pub(crate) fn runtime_config(
    spec: &ImageSpec,
    trees: &BTreeMap<String, SourceTree>,
) -> RuntimeConfig {
    let c = &spec.config;
    let mut labels = c.labels.clone();
    for layer in &spec.layers {
        let Some(tree) = trees.get(&layer.tree).filter(|t| t.name != BROKER_TREE) else {
            continue;
        };
        if let Some(origin) = &tree.origin {
            labels.insert(tree_label(&tree.name, "source"), origin.clone());
        }
        if let Some(revision) = &tree.revision {
            labels.insert(tree_label(&tree.name, "revision"), revision.clone());
        }
    }
    if !spec.description.is_empty() {
        labels
            .entry("org.opencontainers.image.description".to_owned())
            .or_insert_with(|| spec.description.clone());
    }
    labels
        .entry("org.opencontainers.image.title".to_owned())
        .or_insert_with(|| spec.name.clone());
    RuntimeConfig {
        user: c.user.clone(),
        working_dir: c.workdir.clone(),
        env: c.env.clone(),
        entrypoint: c.entrypoint.clone(),
        cmd: c.cmd.clone(),
        exposed_ports: c.ports.iter().map(|p| format!("{p}/tcp")).collect(),
        labels,
    }
}
