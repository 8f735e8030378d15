//! `broker-images build`: for every image spec, the deps image (from the
//! store, else a [`DepsSource`] such as the registry, else the Docker
//! engine), the source layers on top, the final image in the store, and
//! the lock entries. Publishing is not done here: the caller hands the
//! built images to a publisher.
//!
//! This module runs the build; the files below it are the stages of one
//! image, in the order they take part:
//! 1. `run`: the options, hooks and traits a caller gives (deps and base
//!    lookups, the reporter) and the state one run shares;
//! 2. `base`: the base image resolved to a digest and its layers;
//! 3. `deps_image`: the deps image from the store, a [`DepsSource`] or the
//!    engine (everything the engine built leaves it in one export);
//! 4. `layers`: the source layers on top;
//! 5. `labels`: the runtime config and provenance labels;
//! 6. `lock`: the lock entry of what was built;
//! 7. `error`: what can go wrong, one variant per cause.
//!
//! What the caller gives and gets is re-exported here.

mod base;
mod deps_image;
mod error;
mod labels;
mod layers;
mod lock;
mod run;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use broker_oci::image::ImageBuilder;
use broker_oci::{SourceLayer, Store, StoredImage};
use tokio::sync::OnceCell;

use crate::build::base::resolve_base;
use crate::build::deps_image::{Deps, InEngine, deps_image, export_engine_images};
use crate::build::labels::{provenance, runtime_config};
use crate::build::layers::build_layers;
use crate::build::lock::BuildRecord;
use crate::build::run::{Memo, Run};
use crate::deps::{self, DepsInputs, DepsKey};
use crate::sources::{self, BROKER_TREE, FORMATTERS_TREE, SourceTree};
use crate::spec::{self, ImageSpec};
use broker_pins::{Lock, LockedImage, Platform, UNKNOWN_REVISION};

pub use crate::build::deps_image::DepsOrigin;
pub use crate::build::error::{BuildError, DepsSourceError};
pub use crate::build::labels::{TREE_LABEL_PREFIX, tree_label};
pub use crate::build::lock::{BuiltImage, BuiltPlatform};
pub use crate::build::run::{
    BaseFetch, BaseLookup, BaseResolver, BaseWanted, BuildHooks, BuildOptions, BuildReporter,
    DepsFetch, DepsSource, DepsWanted, ManifestLookup,
};

/// The names of the images a build with `only` covers.
pub fn select(
    specs: Vec<ImageSpec>,
    only: &[String],
    images_dir: &Path,
) -> Result<Vec<ImageSpec>, BuildError> {
    let known: BTreeSet<String> = specs.iter().map(|s| s.name.clone()).collect();
    for name in only {
        if !known.contains(name) {
            return Err(BuildError::UnknownImage {
                name: name.clone(),
                dir: images_dir.to_path_buf(),
                known: known.iter().cloned().collect::<Vec<_>>().join(", "),
            });
        }
    }
    Ok(specs
        .into_iter()
        .filter(|s| only.is_empty() || only.contains(&s.name))
        .collect())
}

/// The source trees a set of specs needs, resolved.
pub fn resolve_trees(
    specs: &[ImageSpec],
    options: &BuildOptions,
) -> Result<BTreeMap<String, SourceTree>, BuildError> {
    // The broker tree's git queries run beside the other trees'.
    std::thread::scope(|scope| {
        let broker =
            scope.spawn(|| sources::local_tree(BROKER_TREE, &options.broker_tree, "--source"));
        let others = other_trees(specs, options);
        let mut broker = match broker.join() {
            Ok(result) => result?,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        if let Some(revision) = &options.source_revision {
            broker.revision = Some(revision.clone());
        }
        let mut trees = others?;
        trees.insert(BROKER_TREE.to_owned(), broker);
        Ok(trees)
    })
}

/// The trees besides the broker tree that `specs` take layers from.
fn other_trees(
    specs: &[ImageSpec],
    options: &BuildOptions,
) -> Result<BTreeMap<String, SourceTree>, BuildError> {
    let mut trees = BTreeMap::new();
    for spec in specs {
        for layer in &spec.layers {
            if layer.tree == BROKER_TREE || trees.contains_key(&layer.tree) {
                continue;
            }
            let tree = match (layer.tree.as_str(), &options.formatters) {
                (FORMATTERS_TREE, Some(f)) => sources::formatters_tree(
                    f,
                    options.formatters_rev.as_deref(),
                    &options.cache_dir,
                )?,
                _ => {
                    return Err(BuildError::MissingTree {
                        image: spec.name.clone(),
                        tree: layer.tree.clone(),
                    });
                }
            };
            trees.insert(layer.tree.clone(), tree);
        }
    }
    Ok(trees)
}

/// What one build run made. One image failing (its deps step, a source
/// layer) does not stop the others: a release with one broken
/// requirements file still refreshes the images that did build.
#[derive(Debug)]
pub struct BuildOutcome {
    /// The images that built, in spec order.
    pub built: Vec<BuiltImage>,
    /// Their lock entries (references are store names until the caller
    /// publishes).
    pub lock: Lock,
    /// The images that failed, in spec order, with why.
    pub failed: Vec<(String, BuildError)>,
}

/// Builds the selected images concurrently into the store, looking deps
/// images missing from the store up in `hooks.deps_source` first. An error here
/// is one that stops every image (bad specs, unreadable trees, the store);
/// a failure of one image is in [`BuildOutcome::failed`].
pub async fn build(options: BuildOptions, hooks: BuildHooks) -> Result<BuildOutcome, BuildError> {
    let BuildHooks {
        deps_source,
        base_resolver,
        layer_streams,
        reporter,
    } = hooks;
    let specs = select(
        spec::load_all(&options.images_dir)?,
        &options.only,
        &options.images_dir,
    )?;
    for name in options
        .base_overrides
        .keys()
        .chain(options.arg_overrides.keys())
    {
        if !specs.iter().any(|s| &s.name == name) {
            return Err(BuildError::UnknownImage {
                name: name.clone(),
                dir: options.images_dir.clone(),
                known: specs
                    .iter()
                    .map(|s| s.name.clone())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    let mut trees = resolve_trees(&specs, &options)?;
    if let Some(broker) = trees.get_mut(BROKER_TREE)
        && broker.revision.is_none()
    {
        broker.revision = recorded_broker_revision(&specs, &options.recorded);
    }
    if trees[BROKER_TREE].revision.is_none() {
        reporter.notice(&format!(
            "{} is not a git checkout and no --source-revision was given: the images carry no revision label, the lock records \"{UNKNOWN_REVISION}\"",
            options.broker_tree.display()
        ));
    }
    let epoch = sources::source_date_epoch(&trees[BROKER_TREE])?;
    // Read before any work: a wrong path fails the build at once.
    let engine_options = deps::EngineOptions {
        ca_bundle: deps::read_ca_bundle(&options.deps_ca_files)?,
        network: options.deps_network.clone(),
    };
    let store = Store::open(&options.store_dir).map_err(|source| BuildError::Store {
        image: "(all)".to_owned(),
        source,
    })?;
    let run = Arc::new(Run {
        options,
        store,
        trees,
        epoch,
        deps_source,
        base_resolver,
        engine: OnceCell::new(),
        resolved_bases: Memo::new(),
        base_layers: Memo::new(),
        base_indexes: Memo::new(),
        source_layers: Memo::new(),
        layer_listings: Arc::default(),
        engine_options,
        layer_streams,
        reporter,
    });
    // One unit per image and platform. Three stages, every unit through
    // each concurrently: the deps image (found, fetched, or built by the
    // engine), one export of everything the engine built, then the source
    // layers and the image.
    let units: Vec<Unit<'_>> = specs
        .iter()
        .flat_map(|spec| Unit::of(spec, &run.options))
        .collect();
    let prepared = futures::future::join_all(units.iter().map(|unit| prepare(&run, unit))).await;
    // An image fails as a whole, with the first error of any platform: an
    // index missing a platform is never made.
    let mut failed: BTreeMap<String, BuildError> = BTreeMap::new();
    let mut fail = |name: &str, err: BuildError| {
        failed.entry(name.to_owned()).or_insert(err);
    };
    let mut ready = Vec::new();
    let mut waiting = Vec::new();
    for (unit, result) in units.iter().zip(prepared) {
        match result {
            Ok((keyed, Deps::Stored(image, origin))) => ready.push(keyed.ready(*image, origin)),
            Ok((keyed, Deps::InEngine(engine))) => waiting.push((keyed, engine)),
            Err(err) => fail(&unit.spec.name, err),
        }
    }
    let engine_built: Vec<&InEngine> = waiting.iter().map(|(_, engine)| engine).collect();
    let exported = export_engine_images(&run, &engine_built).await;
    for ((keyed, _), result) in waiting.into_iter().zip(exported) {
        match result {
            Ok(image) => ready.push(keyed.ready(image, DepsOrigin::Engine)),
            Err(err) => fail(&keyed.unit.spec.name, err),
        }
    }
    // The platforms of one image together, in the spec's order: the first
    // makes the source layers, the others share them.
    let mut by_image: BTreeMap<String, Vec<Ready<'_>>> = BTreeMap::new();
    for r in ready {
        by_image
            .entry(r.keyed.unit.spec.name.clone())
            .or_default()
            .push(r);
    }
    let images: Vec<(String, Vec<Ready<'_>>)> = by_image
        .into_iter()
        .filter(|(name, _)| !failed.contains_key(name))
        .map(|(name, mut platforms)| {
            platforms.sort_by_key(|r| r.keyed.unit.order);
            (name, platforms)
        })
        .collect();
    let finished = futures::future::join_all(images.into_iter().map(|(name, platforms)| {
        let run = &run;
        async move {
            let result = finish(run, &name, platforms).await;
            (name, result)
        }
    }))
    .await;
    let mut outcome = BuildOutcome {
        built: Vec::new(),
        lock: Lock::new(),
        failed: Vec::new(),
    };
    for (name, result) in finished {
        match result {
            Ok((image, locked)) => {
                outcome.lock.images.insert(name, locked);
                outcome.built.push(image);
            }
            Err(err) => {
                failed.insert(name, err);
            }
        }
    }
    outcome.failed = failed.into_iter().collect();
    // Spec order, whichever stage an image finished or failed in.
    let order = |name: &str| specs.iter().position(|s| s.name == name);
    outcome.built.sort_by_key(|b| order(&b.name));
    outcome.failed.sort_by_key(|(name, _)| order(name));
    Ok(outcome)
}

/// The broker revision an earlier build recorded for a layer of the broker
/// tree, unless it was unknown.
fn recorded_broker_revision(
    specs: &[ImageSpec],
    recorded: &BTreeMap<String, LockedImage>,
) -> Option<String> {
    specs.iter().find_map(|spec| {
        let locked = recorded.get(&spec.name)?;
        spec.layers
            .iter()
            .filter(|l| l.tree == BROKER_TREE)
            .filter_map(|l| locked.sources.get(&l.name)?.revision.clone())
            .find(|r| r != UNKNOWN_REVISION)
    })
}

/// One image on one platform: what the stages build.
#[derive(Clone, Debug)]
struct Unit<'s> {
    spec: &'s ImageSpec,
    platform: Platform,
    /// The image has several platforms: it becomes an index.
    indexed: bool,
    /// Its position among the image's platforms.
    order: usize,
    /// How progress and errors name it: the image, with its platform when
    /// it has several.
    label: String,
}

impl<'s> Unit<'s> {
    /// The units of `spec`: `--platform`, else the platforms a verified
    /// lock records, else the spec's, else this machine's.
    fn of(spec: &'s ImageSpec, options: &BuildOptions) -> Vec<Self> {
        let recorded: Vec<Platform> = options
            .recorded
            .get(&spec.name)
            .map(|r| match &r.platform {
                Some(one) if r.platforms.is_empty() => vec![one.clone()],
                _ => r.platforms.keys().cloned().collect(),
            })
            .unwrap_or_default();
        let platforms = if !options.platforms.is_empty() {
            options.platforms.clone()
        } else if options.verify && !recorded.is_empty() {
            recorded
        } else if !spec.platforms.is_empty() {
            spec.platforms.clone()
        } else {
            vec![Platform::host()]
        };
        let indexed = platforms.len() > 1;
        platforms
            .into_iter()
            .enumerate()
            .map(|(order, platform)| Self {
                spec,
                label: if indexed {
                    format!("{} ({platform})", spec.name)
                } else {
                    spec.name.clone()
                },
                platform,
                indexed,
                order,
            })
            .collect()
    }
}

/// One unit whose deps key is known.
struct Keyed<'s> {
    unit: &'s Unit<'s>,
    inputs: DepsInputs,
    key: DepsKey,
}

impl<'s> Keyed<'s> {
    /// This unit with its deps image in the store.
    fn ready(self, deps_image: StoredImage, deps_origin: DepsOrigin) -> Ready<'s> {
        Ready {
            keyed: self,
            deps_image,
            deps_origin,
        }
    }
}

/// One unit whose deps image is in the store.
struct Ready<'s> {
    keyed: Keyed<'s>,
    deps_image: StoredImage,
    deps_origin: DepsOrigin,
}

/// The deps stage of one unit: its inputs, base digest and key, and the
/// deps image found, fetched or built.
async fn prepare<'s>(run: &Run, unit: &'s Unit<'s>) -> Result<(Keyed<'s>, Deps), BuildError> {
    let spec = unit.spec;
    let name = spec.name.as_str();
    let label = unit.label.as_str();
    let recorded = run.options.recorded.get(name);
    let mut args = recorded.map(|r| r.build_args.clone()).unwrap_or_default();
    if let Some(overrides) = run.options.arg_overrides.get(name) {
        args.extend(overrides.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    let base = run
        .options
        .base_overrides
        .get(name)
        .or(recorded.map(|r| &r.base))
        .map(String::as_str);
    let mut inputs = DepsInputs::read(spec, &run.options.broker_tree, base, &args)?;
    inputs.image = label.to_owned();
    inputs.platform = unit.platform.clone();
    inputs.base_digest = resolve_base(run, label, &inputs.base).await?;
    let key = inputs.key();
    // A host-only build lets the engine pick the host's manifest of the
    // base, as it always did; every other build names its platform's.
    let own_base = unit.indexed || unit.platform != Platform::host();
    let deps = deps_image(run, spec, label, &mut inputs, &key, own_base).await?;
    Ok((Keyed { unit, inputs, key }, deps))
}

/// The source layers and the image of every platform of one image (in
/// order), the index over them when there are several, and the lock entry.
async fn finish(
    run: &Run,
    name: &str,
    platforms: Vec<Ready<'_>>,
) -> Result<(BuiltImage, LockedImage), BuildError> {
    // The layers in the platforms' order, so the first makes each shared
    // layer and the others take it from the run; then every platform's
    // config and manifest at once (their writes wait on the disk).
    let mut layered = Vec::with_capacity(platforms.len());
    for ready in platforms {
        let layers = build_layers(
            run,
            ready.keyed.unit.spec,
            &ready.keyed.unit.label,
            &ready.deps_image,
        )
        .await?;
        layered.push((ready, layers));
    }
    let written = futures::future::join_all(
        layered
            .into_iter()
            .map(|(ready, layers)| finish_platform(run, ready, layers)),
    )
    .await;
    let mut built = written.into_iter().collect::<Result<Vec<_>, _>>()?;
    let store_err = |source| BuildError::Store {
        image: name.to_owned(),
        source,
    };
    if !built.first().is_some_and(|p| p.indexed) {
        let Some(one) = built.pop() else {
            unreachable!("one platform was built")
        };
        if !run.options.verify {
            run.store
                .tag(name, &one.image.manifest_descriptor)
                .map_err(store_err)?;
        }
        run.reporter
            .stage(name, &format!("built {name}@{}", one.digest));
        return Ok(one.entries);
    }
    let entries: Vec<_> = built
        .iter()
        .map(|p| (p.image.manifest_descriptor.clone(), p.platform.clone()))
        .collect();
    let index = broker_oci::image::image_index(&entries).map_err(|source| BuildError::Image {
        image: name.to_owned(),
        source,
    })?;
    let descriptor = run.store.put_index(&index).map_err(store_err)?;
    let digest =
        broker_oci::store::descriptor_digest(&descriptor, "new index").map_err(store_err)?;
    if !run.options.verify {
        run.store.tag(name, &descriptor).map_err(store_err)?;
    }
    let listed: Vec<String> = built.iter().map(|p| p.platform.to_string()).collect();
    run.reporter.stage(
        name,
        &format!("built {name}@{digest} (index of {})", listed.join(", ")),
    );
    Ok(lock::indexed(
        digest,
        built.into_iter().map(|p| (p.platform, p.entries)).collect(),
    ))
}

/// One platform's image, built into the store (untagged).
struct PlatformImage {
    platform: Platform,
    /// One of several platforms of its image.
    indexed: bool,
    /// Its stored manifest and config.
    image: StoredImage,
    digest: broker_oci::Digest,
    entries: (BuiltImage, LockedImage),
}

/// The image of one platform on its source layers, written into the
/// store off the async runtime.
async fn finish_platform(
    run: &Run,
    ready: Ready<'_>,
    layers: Vec<SourceLayer>,
) -> Result<PlatformImage, BuildError> {
    let Ready {
        keyed: Keyed { unit, inputs, key },
        deps_image,
        deps_origin,
    } = ready;
    let spec = unit.spec;
    let name = spec.name.as_str();
    let label = unit.label.as_str();
    let deps_digest = deps_image.digest().map_err(|source| BuildError::Store {
        image: label.to_owned(),
        source,
    })?;

    // Registry-independent on purpose: the same sources give the same
    // digest whether pushed to Docker Hub, an internal registry or nowhere.
    let deps_name = format!("{name}:{}", key.tag());
    let mut builder =
        ImageBuilder::new(&deps_image, &deps_name).map_err(|source| BuildError::Image {
            image: label.to_owned(),
            source,
        })?;
    for (layer_spec, layer) in spec.layers.iter().zip(&layers) {
        let tree = &run.trees[&layer_spec.tree];
        builder.append_layer(
            layer,
            &format!("{} ({} {})", layer_spec.name, tree.name, layer_spec.from),
        );
    }
    builder.runtime(runtime_config(spec, &run.trees));
    builder.provenance(provenance(&run.trees[BROKER_TREE], &inputs));
    builder.epoch(run.epoch);
    builder.platform(&unit.platform);
    let store = run.store.clone();
    let image = tokio::task::spawn_blocking(move || builder.write(&store))
        .await
        .map_err(|source| BuildError::Task {
            image: label.to_owned(),
            source,
        })?
        .map_err(|source| BuildError::Image {
            image: label.to_owned(),
            source,
        })?;
    let digest = image.digest().map_err(|source| BuildError::Store {
        image: label.to_owned(),
        source,
    })?;
    if unit.indexed {
        run.reporter.stage(label, &format!("built {digest}"));
    }
    let record = BuildRecord {
        spec,
        trees: &run.trees,
        layers: &layers,
        inputs: &inputs,
        key: &key,
        digest,
        deps_digest,
        deps_origin,
    };
    Ok(PlatformImage {
        platform: unit.platform.clone(),
        indexed: unit.indexed,
        image,
        digest,
        entries: record.entries(),
    })
}
