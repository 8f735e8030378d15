//! The one publish entry point, shaped like ko's publisher: a [`Publisher`]
//! owns the registry client for a [`RegistryPrefix`] and the blob-location
//! record, and every command that puts images into a registry goes through
//! it — `build --push`, `push` and `mirror` — so uploads, mounts and the
//! record behave the same whichever command runs.

use std::path::PathBuf;
use std::sync::Arc;

use broker_oci::Store;
use broker_pins::{Reference, RegistryPrefix};

use crate::blob_locations;
use crate::client::{ClientOptions, RegistryClient};
use crate::error::RegistryError;
use crate::manifest::{Descriptor, Manifest};
use crate::progress::Reporter;
use crate::pull::pull_into_store;
use crate::push::{MirroredImage, PushedImage, mirror, push_from_store};
use crate::repository::Repository;
use crate::streamed::{StreamedPiece, upload_streamed};
use crate::transfer::{BlobSource, TransferStats, put_blobs};

/// Puts images under one registry prefix.
pub struct Publisher {
    prefix: RegistryPrefix,
    client: RegistryClient,
    /// Where blob locations are recorded between runs, if anywhere.
    record: Option<PathBuf>,
    reporter: Arc<dyn Reporter>,
}

/// Names the prefix only: the client holds credentials.
impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Publisher({})", self.prefix)
    }
}

impl Publisher {
    /// A publisher to `prefix`, reaching its registry with `options` and
    /// reporting transfers to `reporter`.
    pub fn new(
        prefix: RegistryPrefix,
        options: &ClientOptions,
        reporter: Arc<dyn Reporter>,
    ) -> Result<Self, RegistryError> {
        // The client depends only on the registry host; any image below the
        // prefix names it.
        let any_image = Reference::new(prefix.registry(), &prefix.repository("_"), None, None);
        let client = RegistryClient::for_reference(&any_image, options)?;
        Ok(Self {
            prefix,
            client,
            record: None,
            reporter,
        })
    }

    /// Keeps the blob-location record of `store`: loads what earlier runs
    /// pushed where (so this run mounts instead of uploading) and adds to
    /// it after every publish. Also keeps large uploads' sessions there, so
    /// an interrupted run's next run continues them.
    pub fn recording_for(mut self, store: &Store) -> Self {
        let path = blob_locations::record_path(store);
        for (digest, repositories) in blob_locations::load(&path, self.client.registry()) {
            for repository in &repositories {
                self.client.remember_blob(digest, repository);
            }
        }
        self.record = Some(path);
        self.client
            .keep_upload_sessions(store.dir().join(crate::UPLOAD_SESSIONS));
        self
    }

    /// Records which repositories hold which blobs, after anything was
    /// sent, even after a failure: what did land can be mounted by later
    /// runs. Failing to record costs only uploads, never correctness.
    fn save_record(&self) {
        if let Some(record) = &self.record {
            let _ = blob_locations::save(record, self.client.registry(), self.client.known_blobs());
        }
    }

    /// Where this publisher puts images.
    pub fn prefix(&self) -> &RegistryPrefix {
        &self.prefix
    }

    /// The registry client (one per run: it remembers which repositories
    /// hold which blobs).
    pub fn client(&self) -> &RegistryClient {
        &self.client
    }

    /// Asks the registry, ahead of the pushes, which manifest each
    /// `PREFIX/name:tag` of `names` points at, so a push that finds its
    /// tag already on its image costs no request of its own: a build
    /// calls this while it builds. Each tag is asked once either way; an
    /// answer that failed is asked again by the push, which reports it.
    pub async fn look_ahead(&self, names: &[String], tag: &str) {
        let asks = names.iter().filter_map(|name| {
            let target = self.prefix.image(name, tag).ok()?;
            Some(async move {
                let repository = target.repository();
                let Some(answer) = self.client.ask_tag_ahead(repository, tag) else {
                    return;
                };
                let repo = Repository::new(&self.client, repository, self.reporter.as_ref());
                let _ = answer.get_or_try_init(|| repo.manifest_digest(tag)).await;
            })
        });
        futures::future::join_all(asks).await;
    }

    /// Pushes the store image `source` (a store tag or digest) as
    /// `PREFIX/name:tag`, uploading only what the registry lacks.
    pub async fn publish(
        &self,
        store: &Store,
        source: &str,
        name: &str,
        tag: &str,
    ) -> Result<PushedImage, RegistryError> {
        let target = self.prefix.image(name, tag)?;
        let pushed = push_from_store(&self.client, store, source, &target, &self.reporter).await;
        self.save_record();
        pushed
    }

    /// Pushes the store manifest `digest` (an artifact about an image) into
    /// `PREFIX/name` by digest only, no tag: it is found through its
    /// `subject` (referrers), not by name.
    pub async fn publish_untagged(
        &self,
        store: &Store,
        digest: &broker_oci::Digest,
        name: &str,
    ) -> Result<PushedImage, RegistryError> {
        let target = Reference::new(
            self.prefix.registry(),
            &self.prefix.repository(name),
            None,
            None,
        );
        let pushed = push_from_store(
            &self.client,
            store,
            &digest.to_string(),
            &target,
            &self.reporter,
        )
        .await;
        self.save_record();
        pushed
    }

    /// Puts manifest `bytes` of `media_type` as `PREFIX/name:tag`, when
    /// everything it references is in that repository already (a
    /// referrers index listing artifacts pushed before it, some by other
    /// tools, whose content is not in the store).
    pub async fn put_manifest(
        &self,
        name: &str,
        tag: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<(), RegistryError> {
        let target = self.prefix.image(name, tag)?;
        crate::repository::Repository::new(
            &self.client,
            target.repository(),
            self.reporter.as_ref(),
        )
        .put_manifest(tag, media_type, bytes, &broker_oci::Digest::of(bytes))
        .await
    }

    /// Uploads the layers of the store image `source` into `PREFIX/name`
    /// ahead of the image that will need them — a base's layers while the
    /// engine still builds and exports what goes on top — so the publish
    /// that follows finds them there. Only what the registry lacks is sent.
    pub async fn upload_layers_ahead(
        &self,
        store: &Store,
        source: &str,
        name: &str,
    ) -> Result<TransferStats, RegistryError> {
        let stored = store.image(source)?;
        let layers = match Manifest::parse(&stored.raw_manifest, source)? {
            Manifest::Image { layers, .. } => layers,
            Manifest::Index { .. } => Vec::new(),
        };
        let target = self.prefix.image(name, "latest")?;
        let image = format!("{} (ahead of the image)", target.name());
        let stats = put_blobs(
            &self.client,
            target.repository(),
            &image,
            &layers,
            &|blob: &Descriptor| BlobSource::File(store.blob_path(&blob.digest)),
            &self.reporter,
        )
        .await;
        self.save_record();
        stats
    }

    /// Uploads into `PREFIX/name` a blob that is still being written (a
    /// layer as it leaves the compressor), so the upload runs beside the
    /// compression instead of after it; `Ok(None)` when the writer gave up.
    pub async fn upload_streamed(
        &self,
        name: &str,
        pieces: &mut tokio::sync::mpsc::Receiver<StreamedPiece>,
    ) -> Result<Option<broker_oci::Digest>, RegistryError> {
        let target = self.prefix.image(name, "latest")?;
        let image = format!("{} (while compressing)", target.name());
        let uploaded = upload_streamed(
            &self.client,
            target.repository(),
            &image,
            pieces,
            &self.reporter,
        )
        .await;
        self.save_record();
        uploaded
    }

    /// Pulls `PREFIX/name:tag` into `store` as `store_tag`; `Ok(None)` when
    /// the registry does not have it.
    pub async fn fetch(
        &self,
        store: &Store,
        name: &str,
        tag: &str,
        store_tag: &str,
    ) -> Result<Option<Reference>, RegistryError> {
        let reference = self.prefix.image(name, tag)?;
        match pull_into_store(&self.client, &reference, store, store_tag, &self.reporter).await {
            Ok(_) => Ok(Some(reference)),
            Err(RegistryError::NotFound { .. }) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Copies `source` (every platform, byte for byte) to
    /// `PREFIX/<its repository>[:its tag]`, reading it with
    /// `source_options`. A blob the target registry holds is mounted, not
    /// copied: from the source repository when source and target share a
    /// registry, else from any repository this client or the record knows
    /// holds it; only the rest is streamed through.
    pub async fn mirror(
        &self,
        source: &Reference,
        source_options: &ClientOptions,
    ) -> Result<MirroredImage, RegistryError> {
        let target = Reference::new(
            self.prefix.registry(),
            &self.prefix.repository(source.repository()),
            source.tag(),
            None,
        );
        // Validated like any reference: the prefix and the source's path
        // together may be too long or otherwise invalid.
        let target: Reference = target.to_string().parse()?;
        let from = RegistryClient::for_reference(source, source_options)?;
        let mirrored = mirror(&from, source, &self.client, &target, &self.reporter).await;
        self.save_record();
        mirrored
    }
}
