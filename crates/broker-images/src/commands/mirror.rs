//! `broker-images mirror`: third-party images into our registry by digest,
//! through the publisher.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use broker_oci::Store;
use broker_pins::Lock;
use broker_registry::{ClientOptions, CredentialSource, Reference};

use crate::cli::MirrorArgs;
use crate::reporter::Progress;

pub(crate) async fn run(
    store_dir: &Path,
    args: MirrorArgs,
    json: bool,
    progress: Arc<Progress>,
) -> anyhow::Result<()> {
    // The store's blob-location record says which repositories of the
    // target registry already hold a blob: those are mounted, not copied.
    let store = Store::open(store_dir)
        .with_context(|| format!("cannot open the image store {}", store_dir.display()))?;
    let publisher =
        super::publisher(args.registry.clone(), &args.access, &progress)?.recording_for(&store);
    // Explicit credentials are for the target; sources use the Docker config.
    let source_options = ClientOptions {
        credentials: CredentialSource::default(),
        ..publisher.client().options().clone()
    };
    let mut lock = Lock::read_or_new(&args.lock)?;
    let mut results = Vec::new();
    for image in &args.images {
        let source: Reference = image.parse()?;
        let copied = publisher
            .mirror(&source, &source_options)
            .await
            .with_context(|| format!("cannot mirror {image} to {}", args.registry))?;
        progress.line(&format!(
            "   mirrored {image}: {}",
            super::transfer_summary(&copied.stats)
        ));
        lock.record_mirror(image, &copied.source_ref, &copied.target_ref);
        results.push(copied);
    }
    // The lock is written only when every image made it, so render never
    // sees a mirror that is not there.
    lock.write(&args.lock)?;
    let lines: Vec<String> = results
        .iter()
        .map(|m| format!("{} {}", m.source, m.target_pinned))
        .collect();
    super::print_result(json, &serde_json::json!({ "mirrored": results }), &lines);
    Ok(())
}
