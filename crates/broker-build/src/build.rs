//! `broker-images build`: for every image spec, the deps image (from the
//! store, else a [`DepsSource`] such as the registry, else the Docker
//! engine), the source layers on top, the final image in the store, and
//! the lock entries. Publishing is not done here: the caller hands the
//! built images to a publisher.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use broker_oci::image::{ImageBuilder, Provenance, RuntimeConfig};
use broker_oci::{
    Digest, LayerMapping, LayerOptions, SourceDateEpoch, SourceLayer, Store, StoredImage,
};
use futures::future::BoxFuture;
use tokio::sync::OnceCell;

use crate::deps::{self, BaseDigest, BuildOutput, DepsInputs, DepsKey};
use crate::sources::{self, BROKER_TREE, FORMATTERS_TREE, SourceTree};
use crate::spec::{self, ImageSpec};
use broker_pins::{Lock, LockedImage, Reference, SourceRecord, UNKNOWN_REVISION};

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

/// An error of a [`DepsSource`], whatever its kind (the registry's errors
/// belong to the crate implementing the source).
pub type DepsSourceError = Box<dyn std::error::Error + Send + Sync>;

/// A deps image to look for by its key.
#[derive(Clone, Copy, Debug)]
pub struct DepsWanted<'a> {
    /// The image name (`python-base`).
    pub name: &'a str,
    /// The tag it is published under: `deps-<key>`.
    pub tag: &'a str,
    /// The tag to give it in the store (`NAME:deps-<key>`).
    pub store_tag: &'a str,
}

/// What [`DepsSource::fetch`] returns: where the image came from, or
/// `None` when the source does not have it.
pub type DepsFetch<'a> = BoxFuture<'a, Result<Option<String>, DepsSourceError>>;

/// Somewhere a deps image missing from the store may be found by its key,
/// e.g. the registry the images are pushed to: image `NAME` with tag
/// `deps-<key>`. The deps stage asks it before it starts the Docker engine.
///
/// A trait rather than a registry client so that this crate builds and
/// nothing more: the binary implements it with its publisher.
pub trait DepsSource: Send + Sync {
    /// Copies the deps image `wanted` into `store`.
    fn fetch<'a>(&'a self, store: &'a Store, wanted: DepsWanted<'a>) -> DepsFetch<'a>;
}

/// What [`BaseResolver::resolve`] returns: the manifest digest the base's
/// registry serves for it, or `None` when it does not have it.
pub type BaseLookup<'a> = BoxFuture<'a, Result<Option<Digest>, DepsSourceError>>;

/// Resolves a base image reference to the digest its registry serves (one
/// manifest HEAD), so that a re-tagged base gives a new deps key. A trait
/// for the same reason as [`DepsSource`]: the binary implements it with its
/// registry client.
pub trait BaseResolver: Send + Sync {
    /// The manifest digest `reference` names on its registry.
    fn resolve<'a>(&'a self, reference: &'a str) -> BaseLookup<'a>;
}

/// Everything a build needs, resolved from the command line.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// The folder holding `<name>/image.yaml` + Dockerfile per image.
    pub images_dir: PathBuf,
    /// The broker tree.
    pub broker_tree: PathBuf,
    /// ttn-formatters: a directory, or a git URL (`URL#COMMIT` allowed).
    pub formatters: Option<String>,
    /// The ttn-formatters commit to check out.
    pub formatters_rev: Option<String>,
    /// The broker tree's revision, for a tree that is not a git checkout
    /// (a CI tarball, a release archive); it also wins over the checkout's.
    pub source_revision: Option<String>,
    /// Build only these images (all when empty).
    pub only: Vec<String>,
    /// Base image per image name, replacing the spec's (offline or test use).
    pub base_overrides: BTreeMap<String, String>,
    /// Extra build args per image name.
    pub arg_overrides: BTreeMap<String, BTreeMap<String, String>>,
    /// What an earlier build recorded, by image name (`verify` passes the
    /// lock's images): an image without a base override is built on the
    /// base recorded here, with the build args recorded here under the
    /// overrides, and a broker tree without a revision takes the one
    /// recorded here — so the deps key and the labels are the build's.
    pub recorded: BTreeMap<String, LockedImage>,
    /// Base digests an earlier build recorded, by base reference (from the
    /// lock): used when the base cannot be resolved now, always with
    /// `offline` and in verification runs (which rebuild on what the build
    /// used, not on what the tag names today).
    pub recorded_bases: BTreeMap<String, BaseDigest>,
    /// Resolve no base: take the digests of `recorded_bases`.
    pub offline: bool,
    /// PEM CA files the deps stage's RUN steps trust (`--deps-ca-file`);
    /// they reach no image and do not change the deps key.
    pub deps_ca_files: Vec<PathBuf>,
    /// The network the deps stage's RUN steps use (`--deps-network`).
    pub deps_network: Option<String>,
    /// The local image store.
    pub store_dir: PathBuf,
    /// Where git checkouts are cached.
    pub cache_dir: PathBuf,
    /// Compression threads per layer.
    pub layer_threads: usize,
    /// Verification run: every layer is rebuilt (no layer cache), nothing
    /// is tagged, and the deps image must already exist (store or deps
    /// source) — a deps rebuild would not be reproducible anyway.
    pub verify: bool,
}

/// How the deps image of one build was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DepsOrigin {
    /// Already in the local store.
    Store,
    /// Pulled from the registry.
    Registry,
    /// Built by the Docker engine.
    Engine,
}

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
}

impl BuiltImage {
    /// The store tag of its deps image: `NAME:deps-<key>`.
    pub fn deps_store_tag(&self) -> String {
        format!("{}:{}", self.name, self.deps_tag)
    }
}

/// A build failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// An image spec is unusable.
    #[error(transparent)]
    Spec(#[from] spec::SpecError),
    /// A source tree is missing or could not be checked out.
    #[error(transparent)]
    Source(#[from] sources::SourceError),
    /// `--only` or an override names no image.
    #[error("no image named `{name}` in {dir} (images: {known})")]
    UnknownImage {
        /// The name given.
        name: String,
        /// The images folder.
        dir: PathBuf,
        /// The names that exist.
        known: String,
    },
    /// An image needs a tree that was not given.
    #[error("image {image} bakes in the {tree} tree: pass --formatters PATH|GIT_URL")]
    MissingTree {
        /// The image.
        image: String,
        /// The tree.
        tree: String,
    },
    /// The deps stage failed.
    #[error(transparent)]
    Deps(Box<deps::DepsError>),
    /// A layer could not be built.
    #[error("{image}: layer `{layer}`")]
    Layer {
        /// The image.
        image: String,
        /// The layer.
        layer: String,
        /// The cause.
        #[source]
        source: Box<broker_oci::BuildLayerError>,
    },
    /// The image could not be assembled.
    #[error("{image}")]
    Image {
        /// The image.
        image: String,
        /// The cause.
        #[source]
        source: broker_oci::image::BuildImageError,
    },
    /// The base image's directories could not be read.
    #[error("{image}")]
    Base {
        /// The image.
        image: String,
        /// The cause.
        #[source]
        source: broker_oci::base::InspectBaseError,
    },
    /// The store failed.
    #[error("{image}")]
    Store {
        /// The image.
        image: String,
        /// The cause.
        #[source]
        source: broker_oci::StoreError,
    },
    /// The deps source failed (not: did not have the image).
    #[error("{image}: cannot look the deps image up")]
    DepsSource {
        /// The image.
        image: String,
        /// The cause.
        #[source]
        source: DepsSourceError,
    },
    /// Verification needs the deps image the build used.
    #[error(
        "{image}: deps image {tag} is neither in the store nor in the registry; verify needs the deps image the build used (pass --registry where the build pushed)"
    )]
    NoDeps {
        /// The image.
        image: String,
        /// The deps tag.
        tag: String,
    },
    /// SOURCE_DATE_EPOCH is set but not a timestamp.
    #[error(transparent)]
    Epoch(#[from] broker_oci::ParseEpochError),
    /// A base could not be resolved to a digest, and none is recorded.
    #[error(
        "{image}: base {base} has no recorded digest, and --offline resolves none; build once without --offline"
    )]
    OfflineBase {
        /// The image.
        image: String,
        /// The base reference.
        base: String,
    },
    /// A background task panicked or was cancelled.
    #[error("internal error: a layer task of {image} failed")]
    Task {
        /// The image.
        image: String,
        /// The cause.
        #[source]
        source: tokio::task::JoinError,
    },
}

impl From<deps::DepsError> for BuildError {
    fn from(err: deps::DepsError) -> Self {
        Self::Deps(Box::new(err))
    }
}

/// Everything that reports build progress: the engine's build output and
/// stage messages.
pub trait BuildReporter: BuildOutput {
    /// A stage of `image` happened, e.g. "deps from store (key …)".
    fn stage(&self, image: &str, message: &str);

    /// Something about the whole build users should know, in one line
    /// (e.g. that the broker tree has no revision).
    fn notice(&self, message: &str);
}

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
    let mut trees = BTreeMap::new();
    let mut broker = sources::local_tree(BROKER_TREE, &options.broker_tree, "--source")?;
    if let Some(revision) = &options.source_revision {
        broker.revision = Some(revision.clone());
    }
    trees.insert(BROKER_TREE.to_owned(), broker);
    for spec in specs {
        for layer in &spec.layers {
            if trees.contains_key(&layer.tree) {
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

/// Shared state of one build run.
struct Run {
    options: BuildOptions,
    store: Store,
    trees: BTreeMap<String, SourceTree>,
    epoch: SourceDateEpoch,
    deps_source: Option<Arc<dyn DepsSource>>,
    base_resolver: Option<Arc<dyn BaseResolver>>,
    engine: OnceCell<bollard::Docker>,
    engine_options: deps::EngineOptions,
    reporter: Arc<dyn BuildReporter>,
}

/// Builds the selected images concurrently into the store, looking deps
/// images missing from the store up in `deps_source` first; returns what
/// was built and its lock entries (references are store names until the
/// caller publishes; the caller writes the lock, only when everything
/// succeeded).
pub async fn build(
    options: BuildOptions,
    deps_source: Option<Arc<dyn DepsSource>>,
    base_resolver: Option<Arc<dyn BaseResolver>>,
    reporter: Arc<dyn BuildReporter>,
) -> Result<(Vec<BuiltImage>, Lock), BuildError> {
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
        engine_options,
        reporter,
    });
    let builds = specs.into_iter().map(|spec| {
        let run = Arc::clone(&run);
        async move {
            build_one(&run, &spec)
                .await
                .map(|(built, locked)| (spec.name.clone(), built, locked))
        }
    });
    let results = futures::future::try_join_all(builds).await?;
    let mut built = Vec::new();
    let mut lock = Lock::new();
    for (name, image, locked) in results {
        lock.images.insert(name, locked);
        built.push(image);
    }
    Ok((built, lock))
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

async fn build_one(run: &Run, spec: &ImageSpec) -> Result<(BuiltImage, LockedImage), BuildError> {
    let name = spec.name.as_str();
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
    inputs.base_digest = resolve_base(run, name, &inputs.base).await?;
    let key = inputs.key();
    let (deps_image, deps_origin) = deps_image(run, spec, &inputs, &key).await?;
    let deps_digest = deps_image.digest().map_err(|source| BuildError::Store {
        image: name.to_owned(),
        source,
    })?;

    let layers = build_layers(run, spec, &deps_image).await?;

    // Registry-independent on purpose: the same sources give the same
    // digest whether pushed to Docker Hub, an internal registry or nowhere.
    let deps_name = format!("{name}:{}", key.tag());
    let mut builder =
        ImageBuilder::new(&deps_image, &deps_name).map_err(|source| BuildError::Image {
            image: name.to_owned(),
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
    let broker = &run.trees[BROKER_TREE];
    builder.provenance(Provenance {
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
    });
    builder.epoch(run.epoch);
    let image = builder
        .write(&run.store)
        .map_err(|source| BuildError::Image {
            image: name.to_owned(),
            source,
        })?;
    if !run.options.verify {
        run.store
            .tag(name, &image.manifest_descriptor)
            .map_err(|source| BuildError::Store {
                image: name.to_owned(),
                source,
            })?;
    }
    let digest = image.digest().map_err(|source| BuildError::Store {
        image: name.to_owned(),
        source,
    })?;
    run.reporter.stage(name, &format!("built {name}@{digest}"));

    let mut sources_record = BTreeMap::new();
    let mut layer_summary = BTreeMap::new();
    for (layer_spec, layer) in spec.layers.iter().zip(&layers) {
        let tree = &run.trees[&layer_spec.tree];
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
    };
    let built = BuiltImage {
        name: name.to_owned(),
        digest,
        deps_key: key.to_string(),
        deps_origin,
        layers: layer_summary,
        deps_tag: key.tag(),
    };
    Ok((built, locked))
}

/// What `base` resolves to: the recorded digest offline and when
/// verifying; else the engine's image ID for a base only the engine has
/// (no RepoDigests), else the digest its registry serves, else the engine's
/// RepoDigest, else the recorded digest (said in one line); `None` when
/// nothing knows it (the key then covers the reference only, as before).
async fn resolve_base(
    run: &Run,
    image: &str,
    base: &str,
) -> Result<Option<BaseDigest>, BuildError> {
    let recorded = run.options.recorded_bases.get(base).copied();
    if run.options.offline || run.options.verify {
        return match recorded {
            Some(b) => Ok(Some(b)),
            None if run.options.offline => Err(BuildError::OfflineBase {
                image: image.to_owned(),
                base: base.to_owned(),
            }),
            None => Ok(None),
        };
    }
    // The engine is asked only when one answers: most builds need none.
    let mut repo_digest = None;
    if let Ok(docker) = run.engine.get_or_try_init(|| deps::connect(image)).await
        && let Ok(found) = docker.inspect_image(base).await
    {
        // Only digests of the base's own repository count: the same image
        // pushed elsewhere under another name is still local to this one.
        let repository = base.parse::<Reference>().ok();
        let digests: Vec<Digest> = found
            .repo_digests
            .unwrap_or_default()
            .iter()
            .filter_map(|d| {
                let (name, digest) = d.split_once('@')?;
                let name: Reference = name.parse().ok()?;
                let wanted = repository.as_ref()?;
                (name.registry() == wanted.registry() && name.repository() == wanted.repository())
                    .then(|| digest.parse().ok())?
            })
            .collect();
        if digests.is_empty() {
            if let Some(id) = found.id.as_deref().and_then(|id| id.parse().ok()) {
                return Ok(Some(BaseDigest {
                    digest: id,
                    local: true,
                }));
            }
        } else {
            repo_digest = digests.first().copied();
        }
    }
    let mut why = String::from("no registry to ask");
    if let Some(resolver) = &run.base_resolver {
        match resolver.resolve(base).await {
            Ok(Some(digest)) => {
                return Ok(Some(BaseDigest {
                    digest,
                    local: false,
                }));
            }
            Ok(None) => why = "its registry does not have it".to_owned(),
            Err(e) => why = error_chain(e.as_ref()),
        }
    }
    if let Some(digest) = repo_digest {
        run.reporter.stage(
            image,
            &format!("base {base}: not resolved on its registry ({why}); using the engine's copy {digest}"),
        );
        return Ok(Some(BaseDigest {
            digest,
            local: false,
        }));
    }
    if let Some(b) = recorded {
        run.reporter.stage(
            image,
            &format!(
                "base {base}: not resolved ({why}); keeping the digest the lock records, {}",
                b.digest
            ),
        );
        return Ok(Some(b));
    }
    run.reporter.stage(
        image,
        &format!("base {base}: not resolved ({why}); the deps key covers its reference only"),
    );
    Ok(None)
}

/// `err` and its causes on one line.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(cause) = source {
        parts.push(cause.to_string());
        source = cause.source();
    }
    parts.join(": ")
}

/// The deps image: from the store, else the deps source, else the engine.
async fn deps_image(
    run: &Run,
    spec: &ImageSpec,
    inputs: &DepsInputs,
    key: &DepsKey,
) -> Result<(StoredImage, DepsOrigin), BuildError> {
    let name = spec.name.as_str();
    let store_tag = format!("{name}:{}", key.tag());
    let store_err = |source| BuildError::Store {
        image: name.to_owned(),
        source,
    };
    if run.store.resolve(&store_tag).is_ok() {
        run.reporter
            .stage(name, &format!("deps {} from the store", key.tag()));
        let image = run.store.image(&store_tag).map_err(store_err)?;
        return Ok((image, DepsOrigin::Store));
    }
    if let Some(source) = &run.deps_source {
        let tag = key.tag();
        let wanted = DepsWanted {
            name,
            tag: &tag,
            store_tag: &store_tag,
        };
        let found =
            source
                .fetch(&run.store, wanted)
                .await
                .map_err(|source| BuildError::DepsSource {
                    image: name.to_owned(),
                    source,
                })?;
        if let Some(origin) = found {
            run.reporter
                .stage(name, &format!("deps {} from {origin}", key.tag()));
            let image = run.store.image(&store_tag).map_err(store_err)?;
            return Ok((image, DepsOrigin::Registry));
        }
    }
    if run.options.verify {
        return Err(BuildError::NoDeps {
            image: name.to_owned(),
            tag: key.tag(),
        });
    }
    run.reporter.stage(
        name,
        &format!(
            "deps {}: building with the Docker engine (base {})",
            key.tag(),
            inputs.base
        ),
    );
    let docker = run.engine.get_or_try_init(|| deps::connect(name)).await?;
    let engine_tag = format!("broker-images/{name}:{}", key.tag());
    let output: &dyn BuildOutput = &*run.reporter;
    let image = deps::build_with_engine(
        docker,
        inputs,
        &engine_tag,
        &run.store,
        &store_tag,
        &run.engine_options,
        output,
    )
    .await?;
    Ok((image, DepsOrigin::Engine))
}

/// Builds (or takes from the cache) every source layer of `spec`.
async fn build_layers(
    run: &Run,
    spec: &ImageSpec,
    base: &StoredImage,
) -> Result<Vec<SourceLayer>, BuildError> {
    let name = spec.name.clone();
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
        image: spec.name.clone(),
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

/// The spec's runtime settings and labels, plus the provenance labels of
/// every further tree the image bakes in (see [`TREE_LABEL_PREFIX`]).
fn runtime_config(spec: &ImageSpec, trees: &BTreeMap<String, SourceTree>) -> RuntimeConfig {
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
