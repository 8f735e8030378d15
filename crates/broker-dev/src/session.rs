//! One dev session: the first build, push and start, then one round per
//! change — rebuild the changed images from the cache, push what the
//! registry lacks, record the digests in the dev lock (never the release
//! lock), render in memory and apply only the objects that differ, then
//! wait for the rolled workloads.
//!
//! A round that fails at any stage applies nothing and keeps its change
//! pending: the next round (the next good save) does it over with
//! whatever changed since.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use broker_build::build::{
    BuildError, BuildHooks, BuildOptions, BuiltImage, DepsFetch, DepsOrigin, DepsSource, DepsWanted,
};
use broker_build::deps::BaseDigest;
use broker_build::sources::SourceTree;
use broker_build::spec::{self, SpecError};
use broker_cluster::{Cluster, ClusterError, RenderedSet, Reporter, StartOutcome, StartRun};
use broker_oci::{Store, StoreError};
use broker_pins::{Lock, LockError};
use broker_registry::{Publisher, RegistryError};
use broker_render::RenderError;

use crate::changes::{ChangeSet, WatchPlan, WatchPlanError};
use crate::report::{ChangeReport, Timings, millis};

/// What a session is given besides the build's own options.
#[derive(Clone, Debug)]
pub struct DevOptions {
    /// The build's options (`build --push` takes the same).
    pub build: BuildOptions,
    /// The tag pushed beside each digest: not the release's, so a dev
    /// session never moves `latest`.
    pub tag: String,
    /// The release lock: read (mirrors, bases), never written.
    pub release_lock: PathBuf,
    /// The dev record, written after every pushed round.
    pub dev_lock: PathBuf,
    /// The environment file render reads.
    pub environment: PathBuf,
    /// The credentials render reads.
    pub env_file: Option<PathBuf>,
    /// The catalogue.
    pub catalogue: PathBuf,
    /// Refuse unpinned third-party images.
    pub require_pinned: bool,
    /// `--namespace`, when given.
    pub namespace: Option<String>,
    /// How long a rollout may take.
    pub timeout: Duration,
    /// Take over fields other managers own.
    pub force_conflicts: bool,
}

/// The dev lock beside a release lock: `images.lock` → `images.dev.lock`.
pub fn dev_lock_path(release: &Path) -> PathBuf {
    let stem = release
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("images");
    release.with_file_name(format!("{stem}.dev.lock"))
}

/// Why a session or one of its rounds failed. Each variant's message
/// says which stage; the cause is its source, as in `build`, `render`
/// and `start`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevError {
    /// The image specs cannot be read.
    #[error("cannot read the image specs")]
    Specs(#[source] SpecError),
    /// The build failed for every image (bad trees, the store) or for one.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// What to watch cannot be worked out.
    #[error(transparent)]
    Plan(#[from] WatchPlanError),
    /// An image could not be pushed.
    #[error("{image}: cannot publish")]
    Publish {
        /// The image.
        image: String,
        /// Why.
        #[source]
        source: RegistryError,
    },
    /// A lock cannot be read or written.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The store cannot be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Render failed.
    #[error("render failed")]
    Render(#[source] RenderError),
    /// The rendered objects are not a valid set.
    #[error("cannot apply what was rendered from {}", environment.display())]
    Objects {
        /// The environment file.
        environment: PathBuf,
        /// Why.
        #[source]
        source: Box<ClusterError>,
    },
    /// The first start failed.
    #[error("start failed")]
    Start(#[source] Box<ClusterError>),
    /// Applying a change failed.
    #[error("apply failed")]
    Apply(#[source] Box<ClusterError>),
    /// The applied workloads did not become ready.
    #[error("rollout failed")]
    Rollout(#[source] Box<ClusterError>),
}

/// The registry as a deps source: `NAME:deps-<key>` under the publisher's
/// prefix, as `build --registry` looks it up.
pub struct RegistryDeps(pub Arc<Publisher>);

impl DepsSource for RegistryDeps {
    fn fetch<'a>(&'a self, store: &'a Store, wanted: DepsWanted<'a>) -> DepsFetch<'a> {
        Box::pin(async move {
            let found = self
                .0
                .fetch(store, wanted.name, wanted.tag, wanted.store_tag)
                .await?;
            Ok(found.map(|reference| reference.to_string()))
        })
    }
}

/// What one round built and pushed.
struct Pushed {
    images: BTreeMap<String, broker_pins::Digest>,
    layers_built: Vec<String>,
}

/// A running dev session.
pub struct DevSession {
    options: DevOptions,
    hooks: BuildHooks,
    publisher: Arc<Publisher>,
    store: Store,
    trees: BTreeMap<String, SourceTree>,
    plan: WatchPlan,
    /// The dev record: the release lock with every image dev pushed.
    lock: Lock,
    cluster: Option<Cluster>,
    /// The namespace's Lease, held from the first start to [`DevSession::finish`].
    lease: Option<broker_cluster::LeaseGuard>,
    /// A change a failed round left, done again by the next one.
    pending: ChangeSet,
}

impl DevSession {
    /// Reads the specs, trees and catalogue and works out what to watch.
    /// Nothing is built yet.
    pub fn prepare(
        mut options: DevOptions,
        hooks: BuildHooks,
        publisher: Arc<Publisher>,
    ) -> Result<Self, DevError> {
        // The watcher reports absolute paths: every path it is compared
        // with must be absolute too.
        absolute_paths(&mut options);
        let specs = broker_build::build::select(
            spec::load_all(&options.build.images_dir).map_err(DevError::Specs)?,
            &options.build.only,
            &options.build.images_dir,
        )?;
        let trees = broker_build::build::resolve_trees(&specs, &options.build)?;
        let catalogue = broker_render::catalogue::Catalogue::read(&options.catalogue)
            .map_err(DevError::Render)?;
        let generator_files: Vec<String> = catalogue
            .file
            .config_maps
            .iter()
            .flat_map(|c| c.files.iter().cloned())
            .collect();
        let mut render_files = vec![options.environment.clone()];
        render_files.extend(options.env_file.clone());
        let plan = WatchPlan::new(&specs, &trees, &generator_files, &render_files)?;
        let lock = Lock::read_or_new(&options.release_lock)?;
        let store = Store::open(&options.build.store_dir)?;
        Ok(Self {
            options,
            hooks,
            publisher,
            store,
            trees,
            plan,
            lock,
            cluster: None,
            lease: None,
            pending: ChangeSet::default(),
        })
    }

    /// What the session watches.
    pub fn plan(&self) -> &WatchPlan {
        &self.plan
    }

    /// The trees the layers are read from.
    pub fn trees(&self) -> &BTreeMap<String, SourceTree> {
        &self.trees
    }

    /// The options.
    pub fn options(&self) -> &DevOptions {
        &self.options
    }

    /// The change a failed round left to the next.
    pub fn pending(&self) -> &ChangeSet {
        &self.pending
    }

    /// The first build and push of every selected image, recorded in the
    /// dev lock; returns the images.
    pub async fn build_all(&mut self) -> Result<Vec<String>, DevError> {
        let images: BTreeSet<String> = BTreeSet::new();
        let pushed = self.build_and_push(&images, self.hooks.clone()).await?;
        Ok(pushed.images.into_keys().collect())
    }

    /// Renders in memory from the dev lock.
    pub fn render(&self) -> Result<RenderedSet, DevError> {
        let rendered = broker_render::render(&broker_render::Inputs {
            lock: &self.options.dev_lock,
            source: &self.options.build.broker_tree,
            environment: &self.options.environment,
            env_file: self.options.env_file.as_deref(),
            manifests: &self.options.catalogue,
            require_pinned: self.options.require_pinned,
        })
        .map_err(DevError::Render)?;
        let values = rendered.objects.into_iter().map(|o| o.value).collect();
        RenderedSet::from_values_into(self.options.namespace.as_deref(), "broker", values).map_err(
            |source| DevError::Objects {
                environment: self.options.environment.clone(),
                source: Box::new(source),
            },
        )
    }

    /// The first start: the whole rendered set, as `start` applies it
    /// (waits, prunes, collects old config); then the session holds the
    /// namespace's Lease until [`DevSession::finish`].
    pub async fn start(
        &mut self,
        cluster: Cluster,
        rendered: &RenderedSet,
        reporter: &dyn Reporter,
    ) -> Result<StartOutcome, DevError> {
        let run = StartRun {
            dry_run: false,
            force_conflicts: self.options.force_conflicts,
            delete_data: false,
            no_prune: false,
            credentials_changed_in_place: false,
            rotate_credentials: false,
            timeout: self.options.timeout,
        };
        let outcome = cluster
            .start(rendered, run, reporter)
            .await
            .map_err(|e| DevError::Start(Box::new(e)))?;
        let lease = cluster
            .hold_session_lease(reporter)
            .await
            .map_err(|e| DevError::Start(Box::new(e)))?;
        self.lease = Some(lease);
        self.cluster = Some(cluster);
        Ok(outcome)
    }

    /// Ends the session: gives the namespace's Lease back, so a `start`
    /// need not wait for it to lapse. The cluster keeps what it runs.
    pub async fn finish(mut self) {
        if let Some(lease) = self.lease.take() {
            lease.release().await;
        }
    }

    /// One round for `changes`, whose files were last written at
    /// `written` and handed on by the watcher at `seen`. On failure
    /// nothing of the round was applied and it stays pending.
    pub async fn change(
        &mut self,
        changes: ChangeSet,
        written: SystemTime,
        seen: (SystemTime, Instant),
        reporter: &dyn Reporter,
    ) -> Result<ChangeReport, DevError> {
        self.pending.merge(changes);
        let work = self.pending.clone();
        let started = seen.1;
        let seen_ms = millis(seen.0.duration_since(written).unwrap_or_default());
        let images = work.images();
        let mut report = ChangeReport {
            files: self.shown(&work.files),
            deps_rebuilt: work.deps.iter().cloned().collect(),
            ..ChangeReport::default()
        };
        for image in &work.deps {
            reporter.line(&format!(
                "{image}: its deps inputs changed: rebuilding its deps stage as build does"
            ));
        }
        let (build_ms, push_ms) = if images.is_empty() {
            (0.0, 0.0)
        } else {
            let mut hooks = self.hooks.clone();
            // Bases were resolved by the first build: a round keys the
            // deps stage on the digests the dev lock records.
            hooks.base_resolver = None;
            hooks.layer_streams = None;
            let (pushed, build_ms, push_ms) = self.build_and_push_timed(&images, hooks).await?;
            report.images = pushed.images;
            report.layers_built = pushed.layers_built;
            (build_ms, push_ms)
        };
        let applying = Instant::now();
        let rendered = self.render()?;
        let (Some(cluster), Some(lease)) = (&self.cluster, &self.lease) else {
            return Ok(report);
        };
        let changed = cluster
            .apply_changed(&rendered, self.options.force_conflicts, lease, reporter)
            .await
            .map_err(|e| DevError::Apply(Box::new(e)))?;
        let applied = Instant::now();
        let workloads = changed.workloads();
        cluster
            .wait_ready(&workloads, applied + self.options.timeout, reporter)
            .await
            .map_err(|e| DevError::Rollout(Box::new(e)))?;
        let ready = Instant::now();
        self.pending = ChangeSet::default();
        report.applied = changed.applied.iter().map(ToString::to_string).collect();
        report.workloads = workloads.iter().map(|k| k.name.clone()).collect();
        let since_seen = |at: Instant| millis(at.duration_since(started));
        report.timings = Timings {
            seen_ms,
            build_ms,
            push_ms,
            apply_ms: millis(applied.duration_since(applying)),
            rollout_ms: millis(ready.duration_since(applied)),
            write_to_applied_ms: seen_ms + since_seen(applied),
            write_to_ready_ms: seen_ms + since_seen(ready),
        };
        Ok(report)
    }

    /// `files` relative to the tree that holds them.
    fn shown(&self, files: &BTreeSet<PathBuf>) -> Vec<String> {
        files
            .iter()
            .map(|file| {
                self.trees
                    .values()
                    .find_map(|tree| file.strip_prefix(&tree.root).ok())
                    .unwrap_or(file)
                    .display()
                    .to_string()
            })
            .collect()
    }

    async fn build_and_push_timed(
        &mut self,
        images: &BTreeSet<String>,
        hooks: BuildHooks,
    ) -> Result<(Pushed, f64, f64), DevError> {
        let started = Instant::now();
        let built = self.build(images, hooks).await?;
        let build_ms = millis(started.elapsed());
        let pushing = Instant::now();
        let pushed = self.push(built).await?;
        Ok((pushed, build_ms, millis(pushing.elapsed())))
    }

    async fn build_and_push(
        &mut self,
        images: &BTreeSet<String>,
        hooks: BuildHooks,
    ) -> Result<Pushed, DevError> {
        let built = self.build(images, hooks).await?;
        self.push(built).await
    }

    /// Builds `images` (all selected when empty). Any image failing fails
    /// the round: nothing of it is applied.
    async fn build(
        &self,
        images: &BTreeSet<String>,
        hooks: BuildHooks,
    ) -> Result<(Vec<BuiltImage>, Lock), DevError> {
        let mut options = self.options.build.clone();
        if !images.is_empty() {
            options.only = images.iter().cloned().collect();
            // The build refuses overrides for images it does not build.
            options
                .base_overrides
                .retain(|name, _| images.contains(name));
            options
                .arg_overrides
                .retain(|name, _| images.contains(name));
        }
        let bases = recorded_bases(&self.lock);
        // Offline only when every base is recorded: the first build
        // resolved them, a spec added since has not been.
        options.offline = hooks.base_resolver.is_none()
            && !self.lock.images.is_empty()
            && options.only.iter().all(|name| {
                self.lock
                    .images
                    .get(name)
                    .is_some_and(|i| i.base_digest.is_some())
            });
        options.recorded_bases = bases;
        let outcome = broker_build::build::build(options, hooks).await?;
        if let Some((_, err)) = outcome.failed.into_iter().next() {
            return Err(DevError::Build(err));
        }
        Ok((outcome.built, outcome.lock))
    }

    /// Pushes what was built and records it in the dev lock.
    async fn push(
        &mut self,
        (built, mut fresh): (Vec<BuiltImage>, Lock),
    ) -> Result<Pushed, DevError> {
        let publisher = &self.publisher;
        let store = &self.store;
        let tag = &self.options.tag;
        let pushes = built.iter().map(|image| async move {
            let name = image.name.as_str();
            if image.deps_origin == DepsOrigin::Engine {
                publisher
                    .publish(store, &image.deps_store_tag(), name, &image.deps_tag)
                    .await?;
            }
            publisher.publish(store, name, name, tag).await
        });
        let results = futures::future::join_all(pushes).await;
        let mut pushed = Pushed {
            images: BTreeMap::new(),
            layers_built: Vec::new(),
        };
        for (image, result) in built.iter().zip(results) {
            let done = result.map_err(|source| DevError::Publish {
                image: image.name.clone(),
                source,
            })?;
            if let Some(locked) = fresh.images.get_mut(&image.name) {
                locked.published(&done.pinned_ref, tag);
            }
            pushed.images.insert(image.name.clone(), image.digest);
            for (layer, (_, from_cache)) in &image.layers {
                if !from_cache {
                    pushed.layers_built.push(format!("{}/{layer}", image.name));
                }
            }
        }
        self.lock.merge(fresh);
        self.lock.write(&self.options.dev_lock)?;
        Ok(pushed)
    }
}

/// Makes the paths a session watches or compares with absolute (without
/// resolving symlinks: the watcher reports paths under the ones given).
fn absolute_paths(options: &mut DevOptions) {
    let absolute = |path: &mut PathBuf| {
        if let Ok(full) = std::path::absolute(&*path) {
            *path = full;
        }
    };
    absolute(&mut options.build.broker_tree);
    absolute(&mut options.build.images_dir);
    absolute(&mut options.environment);
    absolute(&mut options.catalogue);
    if let Some(env_file) = &mut options.env_file {
        absolute(env_file);
    }
    if let Some(formatters) = &mut options.build.formatters
        && Path::new(formatters.as_str()).is_dir()
        && let Ok(full) = std::path::absolute(formatters.as_str())
    {
        *formatters = full.display().to_string();
    }
}

/// The base digests `lock` records, by base reference.
fn recorded_bases(lock: &Lock) -> BTreeMap<String, BaseDigest> {
    lock.images
        .values()
        .filter_map(|image| {
            Some((
                image.base.clone(),
                BaseDigest {
                    digest: image.base_digest?,
                    local: image.base_local,
                },
            ))
        })
        .collect()
}
