//! Finding the deps image of one build by its key: the store, else the
//! caller's deps source, else the Docker engine.

use broker_oci::StoredImage;
use broker_oci::docker_archive::KnownLayers;
use broker_pins::Platform;

use crate::build::base::{base_layers, platform_base};
use crate::build::error::BuildError;
use crate::build::run::{DepsWanted, Run};
use crate::deps::{self, BuildOutput, DepsInputs, DepsKey, EngineImage};
use crate::spec::ImageSpec;

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

/// Where the deps image of one build stands after the deps stage.
pub(crate) enum Deps {
    /// In the store: found there or copied from the deps source.
    Stored(Box<StoredImage>, DepsOrigin),
    /// Built by the engine, waiting for the run's one export
    /// ([`export_engine_images`]).
    InEngine(InEngine),
}

/// A deps image the engine built and the store does not hold yet.
pub(crate) struct InEngine {
    /// The image it is the deps image of, as progress and errors name it
    /// (with its platform when the image has several).
    pub(crate) name: String,
    /// The platform it was built for, checked after the export.
    pub(crate) platform: Platform,
    /// Its name in the engine.
    pub(crate) engine_tag: String,
    /// The tag it gets in the store.
    pub(crate) store_tag: String,
    /// Its base's compressed layers, when the base came from a registry.
    pub(crate) known: KnownLayers,
}

/// The deps image: from the store, else the deps source, else built by the
/// engine (and its registry base's layers fetched meanwhile).
/// `label` names the image in progress and errors (with its platform when
/// it has several); tags use the spec's name. With `own_base`, the engine
/// builds on the base's manifest for the inputs' platform: looked up only
/// here, when the engine has work, since the key does not need it.
pub(crate) async fn deps_image(
    run: &Run,
    spec: &ImageSpec,
    label: &str,
    inputs: &mut DepsInputs,
    key: &DepsKey,
    own_base: bool,
) -> Result<Deps, BuildError> {
    let name = spec.name.as_str();
    let store_tag = format!("{name}:{}", key.tag());
    let store_err = |source| BuildError::Store {
        image: label.to_owned(),
        source,
    };
    if run.store.resolve(&store_tag).is_ok() {
        run.reporter
            .stage(label, &format!("deps {} from the store", key.tag()));
        let image = run.store.image(&store_tag).map_err(store_err)?;
        return Ok(Deps::Stored(Box::new(image), DepsOrigin::Store));
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
                    image: label.to_owned(),
                    source,
                })?;
        if let Some(origin) = found {
            run.reporter
                .stage(label, &format!("deps {} from {origin}", key.tag()));
            let image = run.store.image(&store_tag).map_err(store_err)?;
            return Ok(Deps::Stored(Box::new(image), DepsOrigin::Registry));
        }
    }
    if run.options.verify {
        return Err(BuildError::NoDeps {
            image: label.to_owned(),
            tag: key.tag(),
        });
    }
    if own_base && let Some(digest) = inputs.base_digest {
        inputs.platform_base =
            platform_base(run, label, &inputs.base, digest, &inputs.platform).await?;
    }
    deps::check_emulation(label, &inputs.platform)?;
    let emulated = if inputs.platform == Platform::host() {
        String::new()
    } else {
        format!(", {} under emulation: slow the first time", inputs.platform)
    };
    run.reporter.stage(
        label,
        &format!(
            "deps {}: building with the Docker engine (base {}{emulated})",
            key.tag(),
            inputs.base
        ),
    );
    let docker = run.engine.get_or_try_init(|| deps::connect(label)).await?;
    let engine_tag = format!("broker-images/{name}:{}", key.tag());
    let output: &dyn BuildOutput = &*run.reporter;
    let build = deps::build_with_engine(
        docker,
        inputs,
        &engine_tag,
        &run.store,
        &store_tag,
        &run.engine_options,
        output,
    );
    // The base's layers are fetched while the engine builds.
    // (A foreign platform's: that platform's manifest of the index.)
    let base_layers = async {
        match inputs.base_digest {
            Some(mut digest) => {
                if let Some(manifest) = inputs.platform_base {
                    digest.digest = manifest;
                }
                base_layers(run, label, &inputs.base, digest).await
            }
            None => KnownLayers::new(),
        }
    };
    let (built, known) = tokio::join!(build, base_layers);
    built?;
    Ok(Deps::InEngine(InEngine {
        name: label.to_owned(),
        platform: inputs.platform.clone(),
        engine_tag,
        store_tag,
        known,
    }))
}

/// Brings the deps images the engine built in this run into the store with
/// one export, so a base they share leaves the engine and is compressed
/// once (or not at all: a registry base's layers are kept). Should the
/// joint export fail, each image is exported on its own, so that each gets
/// its own error. Results in the order of `waiting`.
pub(crate) async fn export_engine_images(
    run: &Run,
    waiting: &[&InEngine],
) -> Vec<Result<StoredImage, BuildError>> {
    let mut known = KnownLayers::new();
    for w in waiting {
        known.extend(w.known.iter().map(|(k, v)| (*k, v.clone())));
    }
    let known = &known;
    if waiting.is_empty() {
        return Vec::new();
    }
    let Some(docker) = run.engine.get() else {
        // Only a build that reached the engine waits for an export.
        return waiting
            .iter()
            .map(|w| {
                Err(BuildError::Deps(Box::new(deps::DepsError::Engine {
                    image: w.name.clone(),
                    why: "no engine connection to export from".to_owned(),
                })))
            })
            .collect();
    };
    let threads = run.options.layer_threads;
    let images: Vec<EngineImage<'_>> = waiting
        .iter()
        .map(|w| EngineImage {
            image: &w.name,
            engine_tag: &w.engine_tag,
            store_tag: &w.store_tag,
        })
        .collect();
    let streams = run.layer_streams.clone();
    let exported =
        match deps::export_into_store(docker, &images, &run.store, known, threads, streams.clone())
            .await
        {
            Ok(stored) => stored.into_iter().map(Ok).collect(),
            Err(err) if images.len() == 1 => vec![Err(err)],
            Err(err) => {
                run.reporter.notice(&format!(
                    "one export of {} deps images failed ({}); exporting each on its own",
                    images.len(),
                    crate::build::base::error_chain(&err)
                ));
                let mut each = Vec::with_capacity(images.len());
                for image in &images {
                    let one = deps::export_into_store(
                        docker,
                        std::slice::from_ref(image),
                        &run.store,
                        known,
                        threads,
                        streams.clone(),
                    )
                    .await;
                    // One image asked, one image returned (or an error).
                    each.push(one.and_then(|stored| {
                        stored
                            .into_iter()
                            .next()
                            .ok_or_else(|| deps::DepsError::Engine {
                                image: image.image.to_owned(),
                                why: format!("the export of {} held no image", image.engine_tag),
                            })
                    }));
                }
                each
            }
        };
    let mut stored = Vec::with_capacity(waiting.len());
    for (w, result) in waiting.iter().zip(exported) {
        stored.push(match result {
            Ok(_) if run.engine_options.ca_bundle.is_some() => {
                deps::drop_ca_after_export(docker, &w.name, &w.engine_tag, &run.store, &w.store_tag)
                    .await
            }
            other => other,
        });
    }
    // The platform checks at once: one after the other they were most of a
    // first publish on a base from a registry. The base layer they share,
    // most of each image, is read by the first and waited for by the others.
    let checks = waiting.iter().zip(stored).map(|(w, result)| async move {
        let result = match result {
            Ok(stored) => checked(run, w, stored).await,
            Err(e) => Err(e),
        };
        if result.is_ok() {
            run.reporter.stage(&w.name, "deps image stored");
        }
        result.map_err(|e| BuildError::Deps(Box::new(e)))
    });
    futures::future::join_all(checks).await
}

/// The stored deps image `stored` if it holds executables of its platform;
/// else its store tag is removed (so the next build does not take it from
/// the store) and the error says what it holds instead.
async fn checked(
    run: &Run,
    w: &InEngine,
    stored: StoredImage,
) -> Result<StoredImage, deps::DepsError> {
    let store = run.store.clone();
    let (name, platform) = (w.name.clone(), w.platform.clone());
    let image = stored.clone();
    let listings = std::sync::Arc::clone(&run.layer_listings);
    // Reading the layers is CPU work: off the async runtime.
    let check = tokio::task::spawn_blocking(move || {
        deps::check_deps_platform(&store, &name, &image, &platform, &listings)
    })
    .await
    .map_err(|e| deps::DepsError::Engine {
        image: w.name.clone(),
        why: format!("the platform check stopped: {e}"),
    })?;
    match check {
        Ok(deps::PlatformCheck::Matches(binary)) => {
            run.reporter.stage(
                &w.name,
                &format!(
                    "deps image is {} (its {binary} is {} code)",
                    w.platform,
                    w.platform.uname_machine()
                ),
            );
            Ok(stored)
        }
        Ok(deps::PlatformCheck::Unchecked) => {
            run.reporter.stage(
                &w.name,
                &format!(
                    "deps image platform not checked: it has none of {}",
                    deps::CHECKED_BINARIES.join(", ")
                ),
            );
            Ok(stored)
        }
        Err(err) => {
            // A wrong image must not be found by its key next time.
            let _ = run.store.untag(&w.store_tag);
            Err(err)
        }
    }
}
