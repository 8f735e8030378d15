//! The source layers of one image: every layer of its spec built from its
//! tree onto the deps image (or taken from the layer cache), off the async
//! runtime.

use std::path::Path;

use broker_oci::{LayerMapping, LayerOptions, SourceLayer, Store, StoredImage};

use crate::build::error::BuildError;
use crate::build::run::Run;
use crate::spec::{self, ImageSpec};

/// Builds (or takes from the cache) every source layer of `spec`.
/// `label` names the image (and platform) in progress and errors. A layer
/// another platform of the image already made in this run (the same tree
/// onto the same directories of its deps image) is taken from the run as
/// it is (shared): the same bytes, neither walked nor hashed again.
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
    let task_err = |source| BuildError::Task {
        image: label.to_owned(),
        source,
    };
    // Reading a base's layers is CPU work too (once per layer, then
    // cached): keep it off the async runtime.
    let (store, base) = (run.store.clone(), base.clone());
    let mappings = tokio::task::spawn_blocking(move || {
        for (_, mapping) in &mut mappings {
            mapping.parents = base_parents(&store, &base, &mapping.target).map_err(|source| {
                BuildError::Base {
                    image: name.clone(),
                    source,
                }
            })?;
        }
        Ok::<_, BuildError>(mappings)
    })
    .await
    .map_err(task_err)??;
    let options = LayerOptions {
        threads: run.options.layer_threads.max(1),
        use_cache: !run.options.verify,
    };
    let mut layers = Vec::new();
    for (layer_name, mapping) in mappings {
        let mut made_here = false;
        let layer = run
            .source_layers
            .get_or_try_init(&mapping, || {
                made_here = true;
                let (store, mapping) = (run.store.clone(), mapping.clone());
                let (image, layer_name) = (label.to_owned(), layer_name.clone());
                async move {
                    tokio::task::spawn_blocking(move || {
                        broker_oci::build_layer(&store, &mapping, &options).map_err(|source| {
                            BuildError::Layer {
                                image,
                                layer: layer_name,
                                source: Box::new(source),
                            }
                        })
                    })
                    .await
                    .map_err(task_err)?
                }
            })
            .await?;
        let how = match (made_here, layer.from_cache) {
            (false, _) => "shared (made once in this run)",
            (true, true) => "unchanged (cache)",
            (true, false) => "built",
        };
        run.reporter.stage(
            label,
            &format!(
                "layer {layer_name} → {}: {how}, {} entries",
                mapping.target, layer.entries
            ),
        );
        layers.push(layer);
    }
    Ok(layers)
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
