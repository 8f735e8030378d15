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
    let requests = args
        .images
        .iter()
        .map(|item| MirrorRequest::parse(item))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for request in &requests {
        let copied = publisher
            .mirror(&request.source, &source_options)
            .await
            .with_context(|| format!("cannot mirror {} to {}", request.written, args.registry))?;
        progress.line(&format!(
            "   mirrored {}: {}",
            request.describe(),
            super::transfer_summary(&copied.stats)
        ));
        lock.record_mirror(&request.name, &copied.source_ref, &copied.target_ref);
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

/// One image to mirror: what to copy, and the name render looks it up by.
struct MirrorRequest {
    /// The reference as the manifests write it (`postgres:14.2`).
    name: String,
    /// Where the bytes come from: the same image, or with `NAME=SOURCE`
    /// another one standing in for it.
    source: Reference,
    /// SOURCE as the user wrote it, for messages.
    written: String,
}

impl MirrorRequest {
    /// `IMAGE`, or `NAME=SOURCE` (no reference holds `=`, so the first one
    /// splits). Every name is checked before anything is copied.
    fn parse(item: &str) -> anyhow::Result<Self> {
        let (name, source_text) = match item.split_once('=') {
            Some((name, source)) => (name, source),
            None => (item, item),
        };
        if name.is_empty() || source_text.is_empty() {
            anyhow::bail!(
                "mirror {item}: expected IMAGE or NAME=SOURCE, e.g. postgres:14.2=registry.internal/hardened/postgres:14.2"
            );
        }
        // The reference error names the text; the context says which part.
        let source = if name == item {
            source_text.parse::<Reference>()?
        } else {
            name.parse::<Reference>()
                .context("mirror: the name before '='")?;
            source_text
                .parse::<Reference>()
                .with_context(|| format!("mirror: the source of {name}"))?
        };
        Ok(Self {
            name: name.to_owned(),
            source,
            written: source_text.to_owned(),
        })
    }

    /// `postgres:14.2`, or `postgres:14.2 (from SOURCE)` for a stand-in.
    fn describe(&self) -> String {
        if self.written == self.name {
            self.name.clone()
        } else {
            format!("{} (from {})", self.name, self.written)
        }
    }
}
