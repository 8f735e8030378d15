//! `broker-images push`: store images to a registry, through the publisher.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use broker_oci::Store;
use broker_pins::Lock;

use crate::cli::PushArgs;
use crate::reporter::Progress;

pub(crate) async fn run(
    store_dir: &Path,
    args: PushArgs,
    json: bool,
    progress: Arc<Progress>,
) -> anyhow::Result<()> {
    // Opening would create an empty store: say what is wrong instead.
    if !store_dir.join("index.json").is_file() {
        anyhow::bail!(
            "no image store at {}: run `broker-images build` first, or pass --store",
            store_dir.display()
        );
    }
    let store = Store::open(store_dir)
        .with_context(|| format!("cannot open the image store {}", store_dir.display()))?;
    // Everything that can be refused is refused before anything is sent:
    // a platform not built, an image the lock does not record (or records
    // as another build).
    let lock = match &args.lock {
        Some(path) => Some(read_lock(path, &store, &args.images)?),
        None => None,
    };
    let mut sources = Vec::with_capacity(args.images.len());
    for name in &args.images {
        if args.platforms.is_empty() {
            sources.push((name.clone(), None));
            continue;
        }
        // An image missing from the store is said by its push, as before.
        match broker_oci::platforms::select_platforms(&store, name, &args.platforms) {
            Ok(selection) => {
                progress.line(&format!(
                    "   {name}: {} ({})",
                    selection
                        .platforms
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                    if selection.index {
                        "an index over them"
                    } else {
                        "its own manifest"
                    }
                ));
                sources.push((selection.digest.to_string(), Some(selection)));
            }
            Err(broker_oci::platforms::SelectPlatformsError::Store(_)) => {
                sources.push((name.clone(), None));
            }
            Err(err) => return Err(err.into()),
        }
    }
    // One publisher for the whole run: its client remembers which
    // repositories hold which blobs, so shared layers are mounted instead
    // of uploaded.
    let publisher =
        super::publisher(args.registry.clone(), &args.access, &progress)?.recording_for(&store);
    // One image failing does not stop the others: each is pushed, and the
    // error at the end names every one that failed.
    let mut pushed = Vec::new();
    let mut failed = Vec::new();
    let mut locked = Vec::new();
    for (name, (source, selection)) in args.images.iter().zip(&sources) {
        let result = match publisher.publish(&store, source, name, &args.tag).await {
            Ok(result) => result,
            // Said once, in the error at the end: no progress line first.
            Err(err) => {
                failed.push((name.clone(), anyhow::Error::new(err)));
                continue;
            }
        };
        progress.line(&format!(
            "   pushed {name}: {}",
            super::transfer_summary(&result.stats)
        ));
        // Checked to be there, as the store holds it, before the pushes.
        if let Some(recorded) = lock.as_ref().and_then(|l| l.images.get(name)) {
            // A selection of every platform is the built index itself: its
            // entry stands, signature and all.
            let entry = match selection {
                Some(selection)
                    if !recorded.platforms.is_empty() && selection.digest != recorded.digest =>
                {
                    recorded.narrowed(&selection.platforms, selection.digest)
                }
                _ => Some(recorded.clone()),
            };
            if let Some(mut entry) = entry {
                entry.published(&result.pinned_ref, &args.tag);
                locked.push((name.clone(), entry));
            }
        }
        pushed.push(result);
    }
    if let (Some(mut lock), Some(path)) = (lock, &args.lock)
        && !locked.is_empty()
    {
        lock.images.extend(locked);
        lock.write(path)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    // Stdout holds what was pushed; when nothing was, the error says it all.
    if !pushed.is_empty() || failed.is_empty() {
        let lines: Vec<String> = pushed.iter().map(|p| p.pinned.clone()).collect();
        super::print_result(json, &serde_json::json!({ "pushed": pushed }), &lines);
    }
    if !failed.is_empty() {
        let to = format!("pushed to {}", args.registry);
        return Err(super::failed_images(failed, args.images.len(), &to));
    }
    Ok(())
}

/// The lock at `path`, which must record every image of `images` as the
/// store holds it: the lock is what `render` pins, so it must describe
/// what is pushed.
fn read_lock(path: &Path, store: &Store, images: &[String]) -> anyhow::Result<Lock> {
    let Some(lock) = Lock::read(path)? else {
        anyhow::bail!(
            "{} does not exist: pass the lock `broker-images build --lock` wrote",
            path.display()
        );
    };
    for name in images {
        let Some(recorded) = lock.images.get(name) else {
            anyhow::bail!(
                "{name} is not in {}: build it with --lock {0} first",
                path.display()
            );
        };
        // An image missing from the store is said by its push.
        let Ok(stored) = store.resolve(name) else {
            continue;
        };
        let stored = broker_oci::store::descriptor_digest(&stored, name)?;
        if stored != recorded.digest {
            anyhow::bail!(
                "{} records {} for {name}, the store holds {stored}: build again with --lock {0}",
                path.display(),
                recorded.digest
            );
        }
    }
    Ok(lock)
}
