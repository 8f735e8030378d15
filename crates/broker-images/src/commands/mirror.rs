//! `broker-images mirror`: third-party images into our registry by digest.

use std::sync::Arc;

use anyhow::Context;
use broker_build::{Lock, MirroredImage};
use broker_registry::{
    ClientOptions, CredentialSource, Reference, RegistryClient, Reporter, mirror,
};

use crate::cli::MirrorArgs;
use crate::reporter::Progress;

pub(crate) async fn run(
    args: MirrorArgs,
    json: bool,
    progress: Arc<Progress>,
) -> anyhow::Result<()> {
    let target_options = super::client_options(&args.access)?;
    // Explicit credentials are for the target; sources use the Docker config.
    let source_options = ClientOptions {
        credentials: CredentialSource::default(),
        ..target_options.clone()
    };
    let reporter: Arc<dyn Reporter> = progress.clone();
    let mut lock = Lock::read_or_new(&args.lock)?;
    let mut results = Vec::new();
    for image in &args.images {
        let source: Reference = image.parse()?;
        let mut target = format!(
            "{}/{}",
            args.registry.trim_end_matches('/'),
            source.repository()
        );
        if let Some(tag) = source.tag() {
            target = format!("{target}:{tag}");
        }
        let target: Reference = target.parse().with_context(|| {
            format!(
                "--registry {} with image {image} does not make a valid reference",
                args.registry
            )
        })?;
        let from = RegistryClient::for_reference(&source, &source_options)?;
        let to = RegistryClient::for_reference(&target, &target_options)?;
        let copied = mirror(&from, &source, &to, &target, &reporter)
            .await
            .with_context(|| format!("cannot mirror {image} to {target}"))?;
        progress.line(&format!(
            "   mirrored {image}: {} uploaded, {} already there",
            copied.stats.uploaded, copied.stats.existed
        ));
        lock.mirrors.insert(
            image.clone(),
            MirroredImage {
                source: copied.source_pinned.clone(),
                reference: copied.target_pinned.clone(),
                digest: copied.digest,
            },
        );
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
