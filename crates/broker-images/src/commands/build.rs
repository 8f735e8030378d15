//! `broker-images build` and `broker-images verify`: build into the store,
//! then (with `--push`) publish, then write the lock — the three stages
//! wired here and nowhere else.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, bail};
use broker_build::build::{
    BaseFetch, BaseLookup, BaseResolver, BaseWanted, BuildError, BuildHooks, BuildOptions,
    BuildReporter, BuiltImage, DepsFetch, DepsOrigin, DepsSource, DepsWanted, ManifestLookup,
    build,
};
use broker_build::deps::{BaseDigest, DepsError};
use broker_oci::Store;
use broker_oci::docker_archive::{LayerStream, LayerStreams};
use broker_pins::{ImageDifference, Lock, RegistryPrefix};
use broker_registry::{
    ClientOptions, CredentialSource, Publisher, PushedImage, Reference, RegistryClient,
    RegistryError, RetryPolicy, Silent, StreamedPiece,
};

use crate::cli::{BuildArgs, SourceArgs, VerifyArgs};
use crate::reporter::Progress;

/// Build args per image name.
type ArgOverrides = BTreeMap<String, BTreeMap<String, String>>;

/// Turns `--base NAME=REF` and `--build-arg NAME:KEY=VALUE` into maps.
fn overrides(args: &SourceArgs) -> anyhow::Result<(BTreeMap<String, String>, ArgOverrides)> {
    let mut bases = BTreeMap::new();
    for item in &args.bases {
        let Some((name, reference)) = item.split_once('=') else {
            bail!("--base {item}: expected NAME=REF, e.g. python-base=local/python:3.11");
        };
        bases.insert(name.to_owned(), reference.to_owned());
    }
    let mut build_args: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for item in &args.build_args {
        let parsed = item
            .split_once(':')
            .and_then(|(name, kv)| kv.split_once('=').map(|(k, v)| (name, k, v)));
        let Some((name, key, value)) = parsed.filter(|(n, k, _)| !n.is_empty() && !k.is_empty())
        else {
            bail!("--build-arg {item}: expected NAME:KEY=VALUE, e.g. ttn_decoder:NPM_PACKAGES=");
        };
        build_args
            .entry(name.to_owned())
            .or_default()
            .insert(key.to_owned(), value.to_owned());
    }
    Ok((bases, build_args))
}

pub(crate) fn options(
    store: &std::path::Path,
    args: &SourceArgs,
    verify: bool,
) -> anyhow::Result<BuildOptions> {
    let (base_overrides, arg_overrides) = overrides(args)?;
    Ok(BuildOptions {
        images_dir: args.images.clone(),
        broker_tree: args.source.clone(),
        formatters: args.formatters.clone(),
        formatters_rev: args.formatters_rev.clone(),
        source_revision: args.source_revision.clone(),
        only: args.only.clone(),
        platforms: args.platforms.clone(),
        base_overrides,
        arg_overrides,
        recorded: BTreeMap::new(),
        recorded_bases: BTreeMap::new(),
        offline: false,
        deps_ca_files: args.deps_ca_files.clone(),
        deps_network: args.deps_network.clone(),
        store_dir: store.to_path_buf(),
        cache_dir: args.cache.clone(),
        layer_threads: args
            .layer_threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from)),
        verify,
    })
}

/// Shows a failed Dockerfile step's output before the error line.
fn explain(err: BuildError, progress: &Progress) -> anyhow::Error {
    if let BuildError::Deps(deps) = &err
        && let DepsError::BuildFailed { output, .. } = deps.as_ref()
    {
        for line in output {
            progress.line(&format!("  | {line}"));
        }
    }
    err.into()
}

/// The registry as the build's deps source: `NAME:deps-<key>` under the
/// publisher's prefix.
struct RegistryDeps(Arc<Publisher>);

impl DepsSource for RegistryDeps {
    fn fetch<'a>(&'a self, store: &'a Store, wanted: DepsWanted<'a>) -> DepsFetch<'a> {
        Box::pin(async move {
            let DepsWanted {
                name,
                tag,
                store_tag,
            } = wanted;
            let found = self.0.fetch(store, name, tag, store_tag).await?;
            Ok(found.map(|reference| reference.to_string()))
        })
    }
}

/// Base images resolved on their registries: one manifest HEAD each, with
/// the Docker configuration's credentials (--username is for the target
/// registry) and a single attempt — an unreachable base registry falls back
/// to what the engine or the lock knows rather than holding the build up.
/// A base fetched into the store for its layers is, with `--push`, also
/// uploaded to the target at once, while the engine is still busy.
pub(crate) struct RegistryBases {
    options: ClientOptions,
    ahead: Option<Arc<Publisher>>,
    uploads: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl RegistryBases {
    pub(crate) fn new(access: &crate::cli::RegistryArgs, ahead: Option<Arc<Publisher>>) -> Self {
        let options = ClientOptions {
            insecure_registries: access.insecure_registries.clone(),
            ca_files: access.ca_files.clone(),
            skip_tls_verify: access.skip_tls_verify,
            credentials: CredentialSource::default(),
            retry: RetryPolicy {
                max_attempts: 1,
                ..RetryPolicy::default()
            },
            read_timeout: std::time::Duration::from_secs(access.stall_timeout.max(1)),
            give_up_after: std::time::Duration::from_secs(access.give_up_after.max(1)),
            ..ClientOptions::default()
        };
        Self {
            options,
            ahead,
            uploads: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Waits for the uploads started ahead.
    async fn uploaded(&self) {
        wait_for(&self.uploads).await;
    }
}

impl BaseResolver for RegistryBases {
    fn resolve<'a>(&'a self, reference: &'a str) -> BaseLookup<'a> {
        Box::pin(async move {
            let reference: Reference = reference.parse()?;
            let client = RegistryClient::for_reference(&reference, &self.options)?;
            match broker_registry::resolve(&client, &reference, &Silent).await {
                Ok(digest) => Ok(Some(digest)),
                Err(RegistryError::NotFound { .. }) => Ok(None),
                Err(e) => Err(e.into()),
            }
        })
    }

    fn manifest<'a>(
        &'a self,
        reference: &'a str,
        digest: broker_oci::Digest,
    ) -> ManifestLookup<'a> {
        Box::pin(async move {
            let reference: Reference = reference.parse()?;
            let client = RegistryClient::for_reference(&reference, &self.options)?;
            let fetched = broker_registry::fetch_manifest(
                &client,
                reference.repository(),
                &digest.to_string(),
                &Silent,
            )
            .await?;
            Ok(fetched.bytes)
        })
    }

    fn fetch<'a>(&'a self, store: &'a Store, wanted: BaseWanted<'a>) -> BaseFetch<'a> {
        Box::pin(async move {
            let BaseWanted {
                image,
                reference,
                digest,
                store_tag,
            } = wanted;
            let reference: Reference = reference.parse()?;
            let pinned = reference.with_digest(digest);
            let client = RegistryClient::for_reference(&pinned, &self.options)?;
            let silent: Arc<dyn broker_registry::Reporter> = Arc::new(Silent);
            match broker_registry::pull_into_store(&client, &pinned, store, store_tag, &silent)
                .await
            {
                Ok(_) => {}
                Err(RegistryError::NotFound { .. }) => return Ok(false),
                Err(e) => return Err(e.into()),
            }
            if let Some(publisher) = &self.ahead {
                if publisher.client().registry() == client.registry()
                    && let Ok(stored) = store.image(store_tag)
                {
                    // The target is the base's registry (Docker Hub and
                    // `library/python`): its layers are mounted from the
                    // base's repository, never uploaded.
                    for layer in stored.manifest.layers() {
                        if let Ok(digest) = broker_oci::oci_digest::from_oci(layer.digest()) {
                            publisher
                                .client()
                                .remember_blob(digest, pinned.repository());
                        }
                    }
                }
                let (publisher, store) = (Arc::clone(publisher), store.clone());
                let (image, store_tag) = (image.to_owned(), store_tag.to_owned());
                let upload = tokio::spawn(async move {
                    let _ = publisher
                        .upload_layers_ahead(&store, &store_tag, &image)
                        .await;
                });
                lock_or_poisoned(&self.uploads).push(upload);
            }
            Ok(true)
        })
    }
}

/// Uncompressed layers smaller than this are not streamed: the publish
/// sends them in one request, where streaming takes three.
const STREAM_FROM_BYTES: u64 = 32 << 20;

/// The pieces a streamed layer goes up in; at most one waits to be sent
/// besides the one going up, so a slow registry holds back the compressor
/// rather than filling memory.
const STREAM_PIECE_BYTES: usize = 8 << 20;

/// With `--push`, a layer compressed here goes up to the target while it
/// is compressed: the upload runs beside the compression instead of after
/// it. A stream that fails only means the publish sends the layer.
struct StreamedLayers {
    publisher: Arc<Publisher>,
    runtime: tokio::runtime::Handle,
    uploads: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl StreamedLayers {
    fn new(publisher: Arc<Publisher>) -> Self {
        Self {
            publisher,
            runtime: tokio::runtime::Handle::current(),
            uploads: std::sync::Mutex::new(Vec::new()),
        }
    }
}

impl LayerStreams for StreamedLayers {
    fn open(&self, store_tag: &str, uncompressed_size: u64) -> Option<Box<dyn LayerStream>> {
        if uncompressed_size < STREAM_FROM_BYTES {
            return None;
        }
        // `NAME:deps-<key>`: the layer goes to the image's repository.
        let name = store_tag.split(':').next().unwrap_or(store_tag).to_owned();
        let (sender, mut pieces) = tokio::sync::mpsc::channel(1);
        let publisher = Arc::clone(&self.publisher);
        let upload = self.runtime.spawn(async move {
            // A failure closes the channel: the compressor stops sending
            // and the publish uploads the layer instead.
            let _ = publisher.upload_streamed(&name, &mut pieces).await;
        });
        lock_or_poisoned(&self.uploads).push(upload);
        Some(Box::new(ChannelStream {
            sender,
            pending: Vec::with_capacity(STREAM_PIECE_BYTES),
        }))
    }
}

/// The compressor's side of one streamed layer.
struct ChannelStream {
    sender: tokio::sync::mpsc::Sender<StreamedPiece>,
    pending: Vec<u8>,
}

impl ChannelStream {
    /// Hands the pending bytes to the upload, waiting while a piece is
    /// still unsent (the compressor runs on its own threads).
    fn send_pending(&mut self) -> std::io::Result<()> {
        let piece = std::mem::replace(&mut self.pending, Vec::with_capacity(STREAM_PIECE_BYTES));
        self.sender
            .blocking_send(StreamedPiece::Bytes(piece.into()))
            .map_err(|_| std::io::Error::other("the streamed upload stopped"))
    }
}

impl LayerStream for ChannelStream {
    fn bytes(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.pending.extend_from_slice(bytes);
        if self.pending.len() >= STREAM_PIECE_BYTES {
            self.send_pending()?;
        }
        Ok(())
    }

    fn finished(mut self: Box<Self>, digest: broker_oci::Digest, size: u64) {
        if self.send_pending().is_ok() {
            let _ = self
                .sender
                .blocking_send(StreamedPiece::Done { digest, size });
        }
    }
}

/// The vector behind `mutex`, poisoned or not (a panicked upload task
/// leaves it intact).
fn lock_or_poisoned<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Waits for uploads started during the build. Their errors are not
/// reported here: the publish that follows sends what did not arrive, and
/// reports what fails then.
async fn wait_for(uploads: &std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>) {
    let uploads = std::mem::take(&mut *lock_or_poisoned(uploads));
    for upload in uploads {
        let _ = upload.await;
    }
}

/// The base digests `lock` records, by base reference.
fn recorded_bases(lock: &Lock) -> BTreeMap<String, BaseDigest> {
    lock.images
        .values()
        .filter_map(|image| {
            let digest = image.base_digest?;
            let base = BaseDigest {
                digest,
                local: image.base_local,
            };
            Some((image.base.clone(), base))
        })
        .collect()
}

/// A built image and, when pushed, where to: the `build --json` result.
#[derive(serde::Serialize)]
struct Published<'a> {
    #[serde(flatten)]
    built: &'a BuiltImage,
    pushed: Option<PushedImage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signature: Option<super::sign::SignedImage>,
}

pub(crate) async fn run(
    store: &std::path::Path,
    args: BuildArgs,
    json: bool,
    progress: Arc<Progress>,
) -> anyhow::Result<()> {
    let mut options = options(store, &args.sources, false)?;
    // Read the old lock and the key first: a malformed lock, a wrong key
    // or passphrase fails before any work.
    let mut lock = Lock::read_or_new(&args.lock)?;
    let sign_key = match &args.sign_key {
        Some(path) => Some(super::sign::signing_key(
            path,
            args.passphrase.passphrase_stdin,
        )?),
        None => None,
    };
    options.recorded_bases = recorded_bases(&lock);
    options.offline = args.offline;
    // --registry without --push still names where deps images are found.
    let publisher = match &args.registry {
        Some(registry) => {
            let store = Store::open(store)?;
            let publisher = super::publisher(registry.clone(), &args.access, &progress)?;
            Some((Arc::new(publisher.recording_for(&store)), store))
        }
        None => None,
    };
    let ahead = publisher
        .as_ref()
        .filter(|_| args.push)
        .map(|(p, _)| Arc::clone(p));
    // While the build runs: the registry's scheme probe, its HTTP client,
    // and what each image's tag points at, so a no-change push has nothing
    // left to ask.
    if let Some(publisher) = &ahead {
        let publisher = Arc::clone(publisher);
        let names: Vec<String> = broker_build::spec::image_names(&options.images_dir)
            .into_iter()
            .filter(|name| options.only.is_empty() || options.only.contains(name))
            .collect();
        let tag = args.tag.clone();
        tokio::spawn(async move {
            publisher.client().warm_up().await;
            publisher.look_ahead(&names, &tag).await;
        });
    }
    let streams = ahead
        .as_ref()
        .map(|p| Arc::new(StreamedLayers::new(Arc::clone(p))));
    let bases = (!args.offline).then(|| Arc::new(RegistryBases::new(&args.access, ahead)));
    let base_resolver = bases
        .as_ref()
        .map(|b| Arc::clone(b) as Arc<dyn BaseResolver>);
    let deps_source = publisher
        .as_ref()
        .map(|(p, _)| Arc::new(RegistryDeps(Arc::clone(p))) as Arc<dyn DepsSource>);
    let reporter: Arc<dyn BuildReporter> = progress.clone();
    let hooks = BuildHooks {
        deps_source,
        base_resolver,
        layer_streams: streams
            .as_ref()
            .map(|s| Arc::clone(s) as Arc<dyn LayerStreams>),
        reporter,
    };
    let outcome = build(options, hooks).await;
    if let Some(bases) = &bases {
        bases.uploaded().await;
    }
    if let Some(streams) = &streams {
        wait_for(&streams.uploads).await;
    }
    let outcome = outcome.map_err(|e| explain(e, &progress))?;
    let (built, mut fresh) = (outcome.built, outcome.lock);
    let total = built.len() + outcome.failed.len();
    let not_built: Vec<(String, anyhow::Error)> = outcome
        .failed
        .into_iter()
        .map(|(name, err)| (name, explain(err, &progress)))
        .collect();
    // Concurrently, as ko publishes: the client uploads a blob shared by
    // several images once and mounts it into the others. One image failing
    // does not stop the others; the lock records those that made it.
    // --registry without --push only looked deps images up.
    let mut failed = Vec::new();
    let mut pushed: BTreeMap<String, PushedImage> = BTreeMap::new();
    if let (Some((publisher, store)), true) = (&publisher, args.push) {
        let pushes = built
            .iter()
            .map(|image| publish(publisher, store, image, &args.tag));
        for (image, result) in built.iter().zip(futures::future::join_all(pushes).await) {
            match result {
                Ok(done) => {
                    // As `push` says it: what moved, on stderr beside the
                    // progress; stdout keeps only the references.
                    progress.line(&format!(
                        "   pushed {}: {}",
                        image.name,
                        super::transfer_summary(&done.stats)
                    ));
                    pushed.insert(image.name.clone(), done);
                }
                Err(err) => failed.push((image.name.clone(), err)),
            }
        }
    }
    // An image that was not pushed has no published reference to lock.
    for (name, _) in &failed {
        fresh.images.remove(name);
    }
    // Signatures last, once every image is up: a signature tag never
    // points at an image the registry does not hold. An image pushed but
    // not signed stays in the lock, unsigned, and the run fails.
    let mut signatures = BTreeMap::new();
    let mut unsigned = Vec::new();
    let mut attestations = BTreeMap::new();
    if let (Some(key), Some((publisher, store))) = (&sign_key, &publisher) {
        for (name, done) in &pushed {
            let Some(locked) = fresh.images.get(name) else {
                continue;
            };
            let mut locked = locked.clone();
            locked.published(&done.pinned_ref, &args.tag);
            // The provenance and SBOM first, the signature tag last.
            let attached =
                super::attest::attach(publisher, store, name, &done.pinned_ref, &locked, key).await;
            let signed = match attached {
                Ok(attested) => {
                    attestations.insert(name.clone(), attested);
                    super::sign::sign_pushed(publisher, store, name, &done.pinned_ref, key).await
                }
                Err(err) => Err(err),
            };
            match signed {
                Ok(signed) => {
                    progress.line(&format!("   {}", super::sign::summary(name, &signed)));
                    signatures.insert(name.clone(), signed);
                }
                Err(err) => unsigned.push((name.clone(), err)),
            }
        }
    }
    let mut results = Vec::new();
    for image in &built {
        let pushed = pushed.remove(&image.name);
        let signature = signatures.remove(&image.name);
        if let (Some(pushed), Some(locked)) = (&pushed, fresh.images.get_mut(&image.name)) {
            locked.published(&pushed.pinned_ref, &args.tag);
            locked.signature = signature.as_ref().map(|s| s.digest);
            if let Some(attested) = attestations.get(&image.name) {
                attested.record(locked);
            }
        }
        results.push(Published {
            built: image,
            pushed,
            signature,
        });
    }
    // Nothing built or pushed leaves the lock as it was, byte for byte.
    if !fresh.images.is_empty() {
        lock.merge(fresh);
        lock.write(&args.lock)
            .with_context(|| format!("cannot write {}", args.lock.display()))?;
    }
    let lines: Vec<String> = results
        .iter()
        .map(|r| match &r.pushed {
            Some(p) => p.pinned.clone(),
            None => format!("{}@{}", r.built.name, r.built.digest),
        })
        .collect();
    super::print_result(
        json,
        &serde_json::json!({ "images": results, "lock": args.lock }),
        &lines,
    );
    let registry = args.registry.as_ref().map(ToString::to_string);
    let pushed_to = format!("pushed to {}", registry.unwrap_or_default());
    let mut what = Vec::new();
    if !not_built.is_empty() {
        what.push("built".to_owned());
    }
    if !failed.is_empty() {
        what.push(pushed_to);
    }
    if !unsigned.is_empty() {
        what.push("signed".to_owned());
    }
    if what.is_empty() {
        return Ok(());
    }
    let what = what.join(" or ");
    let mut all_failed = not_built;
    all_failed.extend(failed);
    all_failed.extend(unsigned);
    Err(super::failed_images(all_failed, total, &what))
}

/// Publishes one built image as `PREFIX/NAME:tag`. A deps image the engine
/// had to build is published first, under its key (`NAME:deps-<key>`), so
/// other machines skip the engine.
async fn publish(
    publisher: &Publisher,
    store: &Store,
    image: &BuiltImage,
    tag: &str,
) -> anyhow::Result<PushedImage> {
    let name = image.name.as_str();
    if image.platforms.is_empty() && image.deps_origin == DepsOrigin::Engine {
        publisher
            .publish(store, &image.deps_store_tag(), name, &image.deps_tag)
            .await
            .with_context(|| format!("{name}: cannot publish its deps image"))?;
    }
    for platform in image
        .platforms
        .iter()
        .filter(|p| p.deps_origin == DepsOrigin::Engine)
    {
        publisher
            .publish(
                store,
                &format!("{name}:{}", platform.deps_tag),
                name,
                &platform.deps_tag,
            )
            .await
            .with_context(|| {
                format!(
                    "{name}: cannot publish its {} deps image",
                    platform.platform
                )
            })?;
    }
    // An index goes up after every platform's manifest (the publisher
    // pushes children first) and its tag last.
    publisher
        .publish(store, name, name, tag)
        .await
        .with_context(|| format!("{name}: cannot publish"))
}

pub(crate) async fn verify(
    store: &std::path::Path,
    args: VerifyArgs,
    json: bool,
    progress: Arc<Progress>,
) -> anyhow::Result<()> {
    let Some(lock) = Lock::read(&args.lock)? else {
        bail!(
            "{} does not exist: run `broker-images build` first",
            args.lock.display()
        );
    };
    // Signatures (with --key) are checked in the registry, before and
    // apart from the rebuild.
    let mut signature_report = Vec::new();
    let mut signature_lines = Vec::new();
    let mut unsigned = Vec::new();
    if let Some(key) = &args.key {
        let public = super::sign::public_key(key)?;
        let options = super::client_options(&args.access)?;
        let (passed, failed) = super::sign::check_lock(&lock, &public, &options).await;
        for name in passed {
            signature_lines.push(format!("{name} signed by {}", key.display()));
            signature_report.push(serde_json::json!({"image": name, "signed": true}));
        }
        for (name, err) in &failed {
            signature_report.push(
                serde_json::json!({"image": name, "signed": false, "why": format!("{err:#}")}),
            );
        }
        unsigned = failed;
    }
    let signature_failure = |unsigned: Vec<(String, anyhow::Error)>| {
        let what = format!(
            "signed by {}",
            args.key
                .as_ref()
                .map(|k| k.display().to_string())
                .unwrap_or_default()
        );
        super::failed_images(unsigned, lock.images.len(), &what)
    };
    if args.no_rebuild {
        super::print_result(
            json,
            &serde_json::json!({ "signatures": signature_report }),
            &signature_lines,
        );
        if unsigned.is_empty() {
            return Ok(());
        }
        return Err(signature_failure(unsigned));
    }
    // Deps images missing locally are fetched from --registry, else from
    // where the build pushed.
    let registry = args.registry.clone().or_else(|| {
        lock.images.iter().find_map(|(name, image)| {
            // Only published images name a registry: an unpushed image's
            // reference is a store name, which would read as Docker Hub.
            image.tag.as_ref()?;
            let pinned = image.pinned().ok()?;
            RegistryPrefix::of_image(&pinned.to_reference(), name)
        })
    });
    let deps_source = match registry {
        Some(registry) => {
            let publisher = super::publisher(registry, &args.access, &progress)?;
            Some(Arc::new(RegistryDeps(Arc::new(publisher))) as Arc<dyn DepsSource>)
        }
        None => None,
    };
    let mut options = options(store, &args.sources, true)?;
    // The bases, build args and revision the build used, so the deps key
    // and the labels are the build's.
    options.recorded = lock.images.clone();
    options.recorded_bases = recorded_bases(&lock);
    let reporter: Arc<dyn BuildReporter> = progress.clone();
    let hooks = BuildHooks {
        deps_source,
        base_resolver: None,
        layer_streams: None,
        reporter,
    };
    let outcome = build(options, hooks)
        .await
        .map_err(|e| explain(e, &progress))?;
    if !outcome.failed.is_empty() {
        let total = outcome.built.len() + outcome.failed.len();
        let failed = outcome
            .failed
            .into_iter()
            .map(|(name, err)| (name, explain(err, &progress)))
            .collect();
        return Err(super::failed_images(failed, total, "rebuilt"));
    }
    let (built, rebuilt) = (outcome.built, outcome.lock);
    let mut differences = Vec::new();
    let mut report = Vec::new();
    for image in &built {
        let Some(now) = rebuilt.images.get(&image.name) else {
            continue;
        };
        let why = lock.diff_image(&image.name, now);
        if why.is_empty() {
            report.push(
                serde_json::json!({"image": image.name, "digest": image.digest, "matches": true}),
            );
            continue;
        }
        if why.contains(&ImageDifference::NotLocked) {
            differences.push(format!("{}: not in {}", image.name, args.lock.display()));
            continue;
        }
        let why: Vec<String> = why.iter().map(ToString::to_string).collect();
        let locked = lock.images.get(&image.name).map(|l| l.digest);
        let locked = locked.map(|d| d.to_string()).unwrap_or_default();
        differences.push(format!(
            "{}: {} in the lock, {} rebuilt: {}",
            image.name,
            locked,
            image.digest,
            why.join("; ")
        ));
        report.push(serde_json::json!({"image": image.name, "digest": image.digest, "locked": locked, "matches": false, "why": why}));
    }
    let mut lines: Vec<String> = built
        .iter()
        .filter(|b| {
            lock.images
                .get(&b.name)
                .is_some_and(|l| l.digest == b.digest)
        })
        .map(|b| format!("{} {} reproduced", b.name, b.digest))
        .collect();
    lines.extend(signature_lines);
    let mut result = serde_json::json!({ "verified": report });
    if args.key.is_some() {
        result["signatures"] = serde_json::Value::Array(signature_report);
    }
    super::print_result(json, &result, &lines);
    if !differences.is_empty() {
        let unsigned = if unsigned.is_empty() {
            String::new()
        } else {
            format!("; {:#}", signature_failure(unsigned))
        };
        bail!(
            "{} image(s) do not match {}: {}{unsigned}",
            differences.len(),
            args.lock.display(),
            differences.join(" | ")
        );
    }
    if !unsigned.is_empty() {
        return Err(signature_failure(unsigned));
    }
    Ok(())
}
