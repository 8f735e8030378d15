//! `broker-images push`: store images to a registry.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use broker_oci::Store;
use broker_registry::{Reference, RegistryClient, Reporter, push_from_store};

use crate::cli::PushArgs;
use crate::reporter::Progress;

pub(crate) async fn run(
    store_dir: &Path,
    args: PushArgs,
    json: bool,
    progress: Arc<Progress>,
) -> anyhow::Result<()> {
    let options = super::client_options(&args.access)?;
    // Opening would create an empty store: say what is wrong instead.
    if !store_dir.join("index.json").is_file() {
        anyhow::bail!(
            "no image store at {}: run `broker-images build` first, or pass --store",
            store_dir.display()
        );
    }
    let store = Store::open(store_dir)
        .with_context(|| format!("cannot open the image store {}", store_dir.display()))?;
    let reporter: Arc<dyn Reporter> = progress.clone();
    let mut client: Option<RegistryClient> = None;
    let blob_record = store.dir().join(broker_build::build::BLOB_LOCATIONS);
    let mut pushed = Vec::new();
    for name in &args.images {
        let target: Reference = format!(
            "{}/{name}:{}",
            args.registry.trim_end_matches('/'),
            args.tag
        )
        .parse()
        .with_context(|| {
            format!(
                "--registry {} with image {name} does not make a valid reference",
                args.registry
            )
        })?;
        // One client for the whole run: it remembers which repositories hold
        // which blobs, so shared layers are mounted instead of uploaded.
        let client = match &mut client {
            Some(c) => c,
            None => {
                let c = RegistryClient::for_reference(&target, &options)?;
                c.load_known_blobs(&blob_record);
                client.insert(c)
            }
        };
        let result = push_from_store(client, &store, name, &target, &reporter).await;
        // Recorded even after a failure: what got pushed can be mounted later.
        let _ = client.save_known_blobs(&blob_record);
        let result = result.with_context(|| format!("cannot push {name} to {target}"))?;
        progress.line(&format!(
            "   pushed {name}: {} uploaded ({}), {} mounted, {} already there",
            result.stats.uploaded,
            indicatif::HumanBytes(result.stats.bytes_uploaded),
            result.stats.mounted,
            result.stats.existed
        ));
        pushed.push(result);
    }
    let lines: Vec<String> = pushed.iter().map(|p| p.pinned.clone()).collect();
    super::print_result(json, &serde_json::json!({ "pushed": pushed }), &lines);
    Ok(())
}
