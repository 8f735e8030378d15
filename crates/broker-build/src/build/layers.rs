//! The source layers of one image: every layer of its spec built from its
//! tree onto the deps image (or taken from the layer cache), off the async
//! runtime.

use std::path::Path;
use std::sync::Arc;

use broker_oci::{LayerMapping, LayerOptions, SourceLayer, Store, StoredImage};

use crate::build::error::BuildError;
use crate::build::run::Run;
use crate::spec::{self, ImageSpec};

/// Builds (or takes from the cache) every source layer of `spec`.
/// `label` names the image (and platform) in progress and errors.
pub(crate) async fn build_layers(
    run: &Run,
    spec: &ImageSpec,
    label: &str,
    base: &StoredImage,
) -> Result<Vec<SourceLayer>, BuildError> {
    let name = label.to_owned();
    let mut mappings = Vec::new();
    for layer in &spec.layers {
        let tree = &run.trees[&layer.tree];
        let (uid, gid) = spec::parse_owner(&layer.owner).unwrap_or((0, 0));
        let mut mapping = LayerMapping::new(tree.root.join(&layer.from), layer.to.clone());
        mapping.uid = uid;
        mapping.gid = gid;
        mapping.excludes = layer.exclude.clone();
        mapping.includes = layer.include.clone();
        mapping.epoch = run.epoch;
        mappings.push((layer.name.clone(), mapping));
    }
    let store = run.store.clone();
    let base = base.clone();
    let options = LayerOptions {
        threads: run.options.layer_threads.max(1),
        use_cache: !run.options.verify,
    };
    let reporter = Arc::clone(&run.reporter);
    tokio::task::spawn_blocking(move || {
        let mut layers = Vec::new();
        for (layer_name, mut mapping) in mappings {
            // Reading a base's layers is CPU work too (once per layer, then
            // cached): keep it off the async runtime.
            mapping.parents = base_parents(&store, &base, &mapping.target).map_err(|source| {
                BuildError::Base {
                    image: name.clone(),
                    source,
                }
            })?;
            let layer = broker_oci::build_layer(&store, &mapping, &options).map_err(|source| {
                BuildError::Layer {
                    image: name.clone(),
                    layer: layer_name.clone(),
                    source: Box::new(source),
                }
            })?;
            let how = if layer.from_cache {
                "unchanged (cache)"
            } else {
                "built"
            };
            reporter.stage(
                &name,
                &format!(
                    "layer {layer_name} → {}: {how}, {} entries",
                    mapping.target, layer.entries
                ),
            );
            layers.push(layer);
        }
        Ok(layers)
    })
    .await
    .map_err(|source| BuildError::Task {
        image: label.to_owned(),
        source,
    })?
}

/// The metadata of every directory at or above `target` that the base image
/// has (broker-oci caches what each base layer holds).
fn base_parents(
    store: &Store,
    base: &StoredImage,
    target: &str,
) -> Result<Vec<broker_oci::ParentDir>, broker_oci::base::InspectBaseError> {
    let paths: Vec<&str> = Path::new(target)
        .ancestors()
        .filter_map(Path::to_str)
        .filter(|p| *p != "/")
        .collect();
    broker_oci::base::dir_metadata(store, base, &paths)
}
