//! Pushing images from the local store, and mirroring images between
//! registries, both by digest.

use std::sync::Arc;

use broker_oci::{Digest, Store};

use crate::client::RegistryClient;
use crate::error::RegistryError;
use crate::manifest::{Descriptor, Manifest};
use crate::progress::Reporter;
use crate::pull::fetch_manifest;
use crate::transfer::{BlobSource, Graph, ManifestBlob, TransferStats, put_graph};
use broker_pins::{PinnedRef, Reference};

/// An image now held by a registry.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PushedImage {
    /// Where it went, with tag (if any) and digest.
    pub reference: String,
    /// `registry/repository@sha256:…`, the form manifests pin.
    pub pinned: String,
    /// The manifest (or index) digest.
    pub digest: Digest,
    /// What was sent.
    pub stats: TransferStats,
    /// Where it went, typed: what the lock records.
    #[serde(skip)]
    pub pinned_ref: PinnedRef,
}

fn store_graph(store: &Store, root: Digest, what: &str) -> Result<Graph, RegistryError> {
    let mut graph = Graph {
        manifests: Vec::new(),
        blobs: Vec::new(),
    };
    add_from_store(store, root, what, &mut graph)?;
    Ok(graph)
}

fn add_from_store(
    store: &Store,
    digest: Digest,
    what: &str,
    graph: &mut Graph,
) -> Result<(), RegistryError> {
    let bytes = store.read_blob(&digest)?;
    let manifest = Manifest::parse(&bytes, what)?;
    if let Manifest::Index { manifests } = &manifest {
        for child in manifests {
            add_from_store(store, child.digest, what, graph)?;
        }
    }
    for blob in manifest.blobs() {
        if !store.has_blob(&blob.digest) {
            return Err(RegistryError::BadManifest {
                what: what.to_owned(),
                why: format!(
                    "blob {} is missing from the store {}",
                    blob.digest,
                    store.dir().display()
                ),
            });
        }
        graph.blobs.push(blob.clone());
    }
    let media_type =
        Manifest::media_type_of(&bytes).unwrap_or_else(|| crate::manifest::OCI_MANIFEST.to_owned());
    graph.manifests.push(ManifestBlob {
        digest,
        media_type,
        bytes,
    });
    Ok(())
}

/// Pushes the store image `source` (a tag in the store or a digest) to
/// `target` (repository and optional tag), uploading only what the
/// registry lacks.
pub async fn push_from_store(
    client: &RegistryClient,
    store: &Store,
    source: &str,
    target: &Reference,
    reporter: &Arc<dyn Reporter>,
) -> Result<PushedImage, RegistryError> {
    let root = match source.parse::<Digest>() {
        Ok(digest) => digest,
        Err(_) => {
            let descriptor = store.resolve(source)?;
            broker_oci::oci_digest::from_oci(descriptor.digest()).map_err(|e| {
                RegistryError::BadManifest {
                    what: source.to_owned(),
                    why: e.to_string(),
                }
            })?
        }
    };
    let graph = store_graph(store, root, source)?;
    let stats = put_graph(
        client,
        target,
        &graph,
        &|blob: &Descriptor| BlobSource::File(store.blob_path(&blob.digest)),
        reporter,
    )
    .await?;
    let pinned = target.with_digest(root);
    Ok(PushedImage {
        reference: pinned.to_string(),
        pinned: pinned.pinned().unwrap_or_default(),
        digest: root,
        stats,
        pinned_ref: PinnedRef::try_from(pinned)?,
    })
}

/// An image copied between registries.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MirroredImage {
    /// The source as given.
    pub source: String,
    /// The source pinned by digest.
    pub source_pinned: String,
    /// The copy, pinned by the same digest.
    pub target_pinned: String,
    /// The manifest (or index) digest, identical on both sides.
    pub digest: Digest,
    /// What was sent.
    pub stats: TransferStats,
    /// The source pinned, typed.
    #[serde(skip)]
    pub source_ref: PinnedRef,
    /// The copy pinned, typed: what the lock records.
    #[serde(skip)]
    pub target_ref: PinnedRef,
}

/// Copies `source` (every platform of an index) into `target` byte for byte,
/// so the digest stays the same.
pub async fn mirror(
    from: &RegistryClient,
    source: &Reference,
    to: &RegistryClient,
    target: &Reference,
    reporter: &Arc<dyn Reporter>,
) -> Result<MirroredImage, RegistryError> {
    let src_repo = source.repository();
    let root = fetch_manifest(
        from,
        src_repo,
        &source.manifest_selector(),
        reporter.as_ref(),
    )
    .await?;
    let mut graph = Graph {
        manifests: Vec::new(),
        blobs: Vec::new(),
    };
    if let Manifest::Index { manifests } = &root.manifest {
        for child in manifests {
            let fetched =
                fetch_manifest(from, src_repo, &child.digest.to_string(), reporter.as_ref())
                    .await?;
            if let Manifest::Index { .. } = fetched.manifest {
                return Err(RegistryError::BadManifest {
                    what: source.to_string(),
                    why: "nested indexes are not supported".to_owned(),
                });
            }
            graph
                .blobs
                .extend(fetched.manifest.blobs().into_iter().cloned());
            graph.manifests.push(ManifestBlob {
                digest: fetched.digest,
                media_type: fetched.media_type,
                bytes: fetched.bytes,
            });
        }
    }
    graph
        .blobs
        .extend(root.manifest.blobs().into_iter().cloned());
    graph.manifests.push(ManifestBlob {
        digest: root.digest,
        media_type: root.media_type.clone(),
        bytes: root.bytes.clone(),
    });
    // On one registry every blob is mounted from the source repository:
    // the registry links what it holds, no byte passes through us.
    if from.registry() == to.registry() {
        for blob in &graph.blobs {
            to.remember_blob(blob.digest, src_repo);
        }
    }
    let stats = put_graph(
        to,
        target,
        &graph,
        &|_| BlobSource::Remote {
            client: from,
            repository: src_repo,
        },
        reporter,
    )
    .await?;
    let source_ref = PinnedRef::try_from(source.with_digest(root.digest))?;
    let target_ref = PinnedRef::try_from(target.with_digest(root.digest))?;
    Ok(MirroredImage {
        source: source.to_string(),
        source_pinned: source_ref.to_string(),
        target_pinned: target_ref.to_string(),
        digest: root.digest,
        stats,
        source_ref,
        target_ref,
    })
}
