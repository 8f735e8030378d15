//! Base-digest resolution: which digest a deps stage's base reference
//! stands for in this run, so that a re-tagged base gives a new deps key.

use broker_oci::Digest;
use broker_oci::docker_archive::KnownLayers;
use broker_pins::{Platform, Reference};

use crate::build::error::BuildError;
use crate::build::run::{BaseWanted, Run};
use crate::deps::{self, BaseDigest};

/// What `base` resolves to: the recorded digest offline and when
/// verifying; else the engine's image ID for a base only the engine has
/// (no RepoDigests), else the digest its registry serves, else the engine's
/// RepoDigest, else the recorded digest (said in one line); `None` when
/// nothing knows it (the key then covers the reference only, as before).
pub(crate) async fn resolve_base(
    run: &Run,
    image: &str,
    base: &str,
) -> Result<Option<BaseDigest>, BuildError> {
    run.resolved_bases
        .get_or_try_init(base, || resolve_base_once(run, image, base))
        .await
}

/// The compressed layers of the registry base `base` at `digest`, copied
/// into the store once per run, by diff_id: the deps images built on it
/// then reuse them instead of compressing the base again. Empty when the
/// base is local to the engine or its registry cannot give it (said in one
/// line: the layers are then compressed here, which only costs time).
pub(crate) async fn base_layers(
    run: &Run,
    image: &str,
    base: &str,
    digest: BaseDigest,
) -> KnownLayers {
    let Some(resolver) = run.base_resolver.as_ref().filter(|_| !digest.local) else {
        return KnownLayers::new();
    };
    let store_tag = format!("base@{}", digest.digest);
    let fetch = || async {
        let why = match resolver
            .fetch(
                &run.store,
                BaseWanted {
                    image,
                    reference: base,
                    digest: digest.digest,
                    store_tag: &store_tag,
                },
            )
            .await
        {
            Ok(true) => match run
                .store
                .image(&store_tag)
                .and_then(|stored| run.store.known_layers(&stored))
            {
                Ok(known) => {
                    run.reporter.stage(
                        image,
                        &format!(
                            "base {base}: {} layers kept as its registry compressed them",
                            known.len()
                        ),
                    );
                    return Ok::<_, std::convert::Infallible>(known);
                }
                Err(e) => error_chain(&e),
            },
            Ok(false) => "its registry does not have it".to_owned(),
            Err(e) => error_chain(e.as_ref()),
        };
        run.reporter.stage(
            image,
            &format!("base {base}: its registry's layers are not available ({why}); compressing them here"),
        );
        Ok(KnownLayers::new())
    };
    match run.base_layers.get_or_try_init(&store_tag, fetch).await {
        Ok(known) => known,
        Err(never) => match never {},
    }
}

/// The manifest of `platform` in the index `digest` of a registry base
/// names, for the engine to build `FROM`; `None` for a base only the
/// engine has, a base that is a single manifest, or an index its registry
/// cannot give now (said in one line: the check of the deps image then
/// says whether the engine's pick fits). The index is read from the store,
/// which keeps every base index a build read by its digest; else from
/// the base's registry, and kept. Offline, an index the store lacks is an
/// error: the engine would build every platform on the host's manifest.
pub(crate) async fn platform_base(
    run: &Run,
    image: &str,
    base: &str,
    digest: BaseDigest,
    platform: &Platform,
) -> Result<Option<Digest>, BuildError> {
    if digest.local {
        return Ok(None);
    }
    let key = format!("{base}@{}", digest.digest);
    let read = || async {
        if let Ok(bytes) = run.store.read_blob(&digest.digest) {
            return Ok(broker_oci::platforms::index_platforms(&bytes));
        }
        let Some(resolver) = run.base_resolver.as_ref() else {
            return Err(None);
        };
        let bytes = resolver
            .manifest(base, digest.digest)
            .await
            .map_err(|e| Some(error_chain(e.as_ref())))?;
        // By its digest, so offline builds find it; bytes that are not
        // the digest's are refused here.
        match run.store.write_blob(&bytes) {
            Ok(stored) if stored == digest.digest => {}
            Ok(stored) => {
                return Err(Some(format!(
                    "its registry served {stored} for {}",
                    digest.digest
                )));
            }
            Err(e) => return Err(Some(error_chain(&e))),
        }
        Ok(broker_oci::platforms::index_platforms(&bytes))
    };
    let entries = match run.base_indexes.get_or_try_init(&key, read).await {
        Ok(Some(entries)) => entries,
        Ok(None) => return Ok(None),
        Err(None) => {
            return Err(BuildError::OfflineBaseIndex {
                image: image.to_owned(),
                base: base.to_owned(),
                index: digest.digest,
                platform: platform.to_string(),
            });
        }
        Err(Some(why)) => {
            run.reporter.stage(
                image,
                &format!(
                    "base {base}: its index cannot be read now ({why}); the engine picks the manifest"
                ),
            );
            return Ok(None);
        }
    };
    if let Some((_, manifest)) = entries.iter().find(|(p, _)| p == platform) {
        run.reporter.stage(
            image,
            &format!("base {base}: {platform} manifest {manifest}"),
        );
        return Ok(Some(*manifest));
    }
    let available: Vec<String> = entries.iter().map(|(p, _)| p.to_string()).collect();
    Err(BuildError::BaseWithoutPlatform {
        image: image.to_owned(),
        base: base.to_owned(),
        platform: platform.to_string(),
        available: if available.is_empty() {
            "no platforms".to_owned()
        } else {
            available.join(", ")
        },
    })
}

async fn resolve_base_once(
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
    if let Some(found) = deps::inspect_image(base, &run.engine, image).await {
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
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(cause) = source {
        parts.push(cause.to_string());
        source = cause.source();
    }
    parts.join(": ")
}
