//! What a build run is given and shares: the options from the command
//! line, the caller's hooks (where deps images and base digests are looked
//! up, where progress goes), and the state every image's build reads.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::path::PathBuf;
use std::sync::Arc;

use broker_oci::{Digest, LayerMapping, SourceDateEpoch, SourceLayer, Store};
use futures::future::BoxFuture;
use tokio::sync::OnceCell;

use crate::build::error::DepsSourceError;
use crate::deps::{self, BaseDigest, BuildOutput};
use crate::sources::SourceTree;
use broker_oci::docker_archive::{KnownLayers, LayerStreams};
use broker_pins::{LockedImage, Platform};

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

/// What [`BaseResolver::fetch`] returns: whether the base's registry had
/// it (it is then in the store under the tag asked for).
pub type BaseFetch<'a> = BoxFuture<'a, Result<bool, DepsSourceError>>;

/// Resolves a base image reference to the digest its registry serves (one
/// manifest HEAD), so that a re-tagged base gives a new deps key, and
/// copies a base into the store so that the deps images built on it keep
/// its registry's compressed layers instead of compressing them again. A
/// trait for the same reason as [`DepsSource`]: the binary implements it
/// with its registry client.
pub trait BaseResolver: Send + Sync {
    /// The manifest digest `reference` names on its registry.
    fn resolve<'a>(&'a self, reference: &'a str) -> BaseLookup<'a>;

    /// Copies the base `wanted` into `store` (this machine's platform,
    /// when its digest names an index).
    fn fetch<'a>(&'a self, store: &'a Store, wanted: BaseWanted<'a>) -> BaseFetch<'a>;

    /// The bytes of the manifest or index `digest` that `reference`
    /// resolved to, so each platform's deps stage builds on its own
    /// manifest of a base index. Asked once per base and run whatever the
    /// number of platforms, and not at all once the store keeps it.
    fn manifest<'a>(&'a self, reference: &'a str, digest: Digest) -> ManifestLookup<'a>;
}

/// What [`BaseResolver::manifest`] returns: the manifest's bytes as its
/// registry serves them (the build checks their digest).
pub type ManifestLookup<'a> = BoxFuture<'a, Result<Vec<u8>, DepsSourceError>>;

/// A base image to copy into the store.
#[derive(Clone, Copy, Debug)]
pub struct BaseWanted<'a> {
    /// The image whose deps stage needs it first in this run.
    pub image: &'a str,
    /// The base as the spec names it (`python:3.10`).
    pub reference: &'a str,
    /// The digest it resolved to in this run.
    pub digest: Digest,
    /// The tag to give it in the store.
    pub store_tag: &'a str,
}

/// What the caller plugs into a build.
#[derive(Clone)]
pub struct BuildHooks {
    /// Where deps images missing from the store are looked for (the
    /// registry), before the engine builds them.
    pub deps_source: Option<Arc<dyn DepsSource>>,
    /// Where bases are resolved to digests and fetched from.
    pub base_resolver: Option<Arc<dyn BaseResolver>>,
    /// Where layers compressed here stream to while they are written
    /// (with `--push`: straight up to the registry).
    pub layer_streams: Option<Arc<dyn LayerStreams>>,
    /// Where progress goes.
    pub reporter: Arc<dyn BuildReporter>,
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
    /// Build every image for these platforms, replacing the specs' lists
    /// (`--platform`); empty keeps each spec's (and a spec without one is
    /// built for this machine's platform). Two or more make each image an
    /// OCI image index.
    pub platforms: Vec<Platform>,
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

/// Everything that reports build progress: the engine's build output and
/// stage messages.
pub trait BuildReporter: BuildOutput {
    /// A stage of `image` happened, e.g. "deps from store (key …)".
    fn stage(&self, image: &str, message: &str);

    /// Something about the whole build users should know, in one line
    /// (e.g. that the broker tree has no revision).
    fn notice(&self, message: &str);
}

/// Shared state of one build run.
pub(crate) struct Run {
    pub(crate) options: BuildOptions,
    pub(crate) store: Store,
    pub(crate) trees: BTreeMap<String, SourceTree>,
    pub(crate) epoch: SourceDateEpoch,
    pub(crate) deps_source: Option<Arc<dyn DepsSource>>,
    pub(crate) base_resolver: Option<Arc<dyn BaseResolver>>,
    pub(crate) engine: OnceCell<bollard::Docker>,
    /// Each base reference resolved once per run, however many images
    /// share it.
    pub(crate) resolved_bases: Memo<Option<BaseDigest>>,
    /// Each registry base's compressed layers, fetched once per run.
    pub(crate) base_layers: Memo<KnownLayers>,
    /// Each registry base's index entries, read once per run.
    pub(crate) base_indexes: Memo<Option<Vec<(Platform, Digest)>>>,
    /// Each source layer made once per run: the platforms of an image
    /// map the same trees onto the same directories, so the second finds
    /// the first's layer here instead of walking, hashing and looking the
    /// tree up in the layer cache again.
    pub(crate) source_layers: Memo<SourceLayer, LayerMapping>,
    /// The layers the deps platform checks read, each read once per run:
    /// the images' shared base is most of every deps image.
    pub(crate) layer_listings: Arc<broker_oci::base::LayerListings>,
    pub(crate) engine_options: deps::EngineOptions,
    pub(crate) layer_streams: Option<Arc<dyn LayerStreams>>,
    pub(crate) reporter: Arc<dyn BuildReporter>,
}

/// Values computed once per key and run, by whichever build asks first;
/// the others wait for it. A failure is not kept: the next build asks
/// again (and reports its own error).
pub(crate) struct Memo<T, K = String> {
    cells: std::sync::Mutex<HashMap<K, Arc<OnceCell<T>>>>,
}

impl<T: Clone, K: Hash + Eq> Memo<T, K> {
    pub(crate) fn new() -> Self {
        Self {
            cells: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The value for `key`, computing it with `compute` if nobody has.
    pub(crate) async fn get_or_try_init<Q, E, F, Fut>(&self, key: &Q, compute: F) -> Result<T, E>
    where
        K: Borrow<Q>,
        Q: ToOwned<Owned = K> + Hash + Eq + ?Sized,
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        let cell = {
            let mut cells = self
                .cells
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let cell = match cells.get(key) {
                Some(cell) => cell,
                None => cells.entry(key.to_owned()).or_default(),
            };
            Arc::clone(cell)
        };
        cell.get_or_try_init(compute).await.cloned()
    }
}
