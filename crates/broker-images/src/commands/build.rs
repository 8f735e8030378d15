//! `broker-images build` and `broker-images verify`.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, bail};
use broker_build::build::{BuildOptions, BuildReporter, PushTarget, build};
use broker_build::deps::DepsError;
use broker_build::{Lock, build::BuildError};

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

fn options(
    store: &std::path::Path,
    args: &SourceArgs,
    push: Option<PushTarget>,
    verify: bool,
) -> anyhow::Result<BuildOptions> {
    let (base_overrides, arg_overrides) = overrides(args)?;
    Ok(BuildOptions {
        images_dir: args.images.clone(),
        broker_tree: args.source.clone(),
        formatters: args.formatters.clone(),
        formatters_rev: args.formatters_rev.clone(),
        only: args.only.clone(),
        base_overrides,
        arg_overrides,
        store_dir: store.to_path_buf(),
        cache_dir: args.cache.clone(),
        push,
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

pub(crate) async fn run(
    store: &std::path::Path,
    args: BuildArgs,
    json: bool,
    progress: Arc<Progress>,
) -> anyhow::Result<()> {
    let push = match (&args.registry, args.push) {
        (Some(registry), true) => Some(PushTarget {
            registry: registry.clone(),
            tag: args.tag.clone(),
            client: super::client_options(&args.access)?,
        }),
        _ => None,
    };
    let options = options(store, &args.sources, push, false)?;
    // Read the old lock first: a malformed one fails before any work.
    let old = Lock::read_or_new(&args.lock)?;
    let reporter: Arc<dyn BuildReporter> = progress.clone();
    let (built, fresh) = build(options, reporter)
        .await
        .map_err(|e| explain(e, &progress))?;
    let mut lock = old;
    lock.version = fresh.version;
    lock.images.extend(fresh.images);
    lock.write(&args.lock)
        .with_context(|| format!("cannot write {}", args.lock.display()))?;
    let lines: Vec<String> = built
        .iter()
        .map(|b| match &b.pushed {
            Some(p) => p.pinned.clone(),
            None => format!("{}@{}", b.name, b.digest),
        })
        .collect();
    super::print_result(
        json,
        &serde_json::json!({ "images": built, "lock": args.lock }),
        &lines,
    );
    Ok(())
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
    // Deps images missing locally are fetched from where the build pushed.
    let registry = lock.images.values().find_map(|image| {
        let (name, _) = image.reference.split_once('@')?;
        name.rsplit_once('/').map(|(prefix, _)| prefix.to_owned())
    });
    let push = match registry {
        Some(registry) => Some(PushTarget {
            registry,
            tag: "verify".to_owned(),
            client: super::client_options(&args.access)?,
        }),
        None => None,
    };
    let options = options(store, &args.sources, push, true)?;
    let reporter: Arc<dyn BuildReporter> = progress.clone();
    let (built, _) = build(options, reporter)
        .await
        .map_err(|e| explain(e, &progress))?;
    let mut differences = Vec::new();
    let mut report = Vec::new();
    for image in &built {
        let Some(locked) = lock.images.get(&image.name) else {
            differences.push(format!("{}: not in {}", image.name, args.lock.display()));
            continue;
        };
        if locked.digest == image.digest {
            report.push(
                serde_json::json!({"image": image.name, "digest": image.digest, "matches": true}),
            );
            continue;
        }
        let mut why = Vec::new();
        if locked.deps_key != image.deps_key {
            why.push(format!(
                "deps inputs changed (key {} in the lock, {} now)",
                &locked.deps_key[..12],
                &image.deps_key[..12]
            ));
        }
        for (layer, (digest, _)) in &image.layers {
            match locked.sources.get(layer) {
                Some(source) if source.layer == *digest => {}
                Some(source) => why.push(format!(
                    "layer `{layer}` differs ({} in the lock, {digest} now)",
                    source.layer
                )),
                None => why.push(format!("layer `{layer}` is new")),
            }
        }
        if why.is_empty() {
            why.push(
                "config or manifest differs (runtime config, labels or SOURCE_DATE_EPOCH)"
                    .to_owned(),
            );
        }
        differences.push(format!(
            "{}: {} in the lock, {} rebuilt: {}",
            image.name,
            locked.digest,
            image.digest,
            why.join("; ")
        ));
        report.push(serde_json::json!({"image": image.name, "digest": image.digest, "locked": locked.digest, "matches": false, "why": why}));
    }
    let lines: Vec<String> = built
        .iter()
        .filter(|b| {
            lock.images
                .get(&b.name)
                .is_some_and(|l| l.digest == b.digest)
        })
        .map(|b| format!("{} {} reproduced", b.name, b.digest))
        .collect();
    super::print_result(json, &serde_json::json!({ "verified": report }), &lines);
    if !differences.is_empty() {
        bail!(
            "{} image(s) do not match {}: {}",
            differences.len(),
            args.lock.display(),
            differences.join(" | ")
        );
    }
    Ok(())
}
