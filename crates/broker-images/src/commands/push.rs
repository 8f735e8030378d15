//! `broker-images push`: store images to a registry, through the publisher.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use broker_oci::Store;

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
    // One publisher for the whole run: its client remembers which
    // repositories hold which blobs, so shared layers are mounted instead
    // of uploaded.
    let publisher =
        super::publisher(args.registry.clone(), &args.access, &progress)?.recording_for(&store);
    // One image failing does not stop the others: each is pushed, and the
    // error at the end names every one that failed.
    let mut pushed = Vec::new();
    let mut failed = Vec::new();
    for name in &args.images {
        let result = match publisher.publish(&store, name, name, &args.tag).await {
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
        pushed.push(result);
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
