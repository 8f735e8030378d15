//! Importing `docker save` output into the store as an OCI image.
//!
//! A docker-archive holds `manifest.json` (config file name and layer file
//! names), the config JSON and each layer as an uncompressed tar. The config
//! is stored byte for byte (so its digest stays the Docker image ID); each
//! layer is compressed with the deterministic gzip of [`crate::gzip`], so
//! importing the same image twice, anywhere, gives the same manifest digest.
//! Layers already compressed once (keyed on their `diff_id`) are not read
//! again.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageConfiguration, ImageManifestBuilder, MediaType};
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::gzip;
use crate::store::{Store, StoreError, StoredImage};

/// Why a docker-archive could not be imported.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportDockerArchiveError {
    /// The archive cannot be read.
    #[error("cannot read docker archive `{path}` (check the file, made by `docker save`)")]
    Read {
        /// The archive.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The archive is not what `docker save` writes.
    #[error(
        "`{path}` is not a docker-archive: {reason}; create it with `docker save IMAGE -o FILE`"
    )]
    Format {
        /// The archive.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A layer's content does not match the config's `diff_id`.
    #[error(
        "layer `{layer}` in `{path}` hashes to {actual}, but the config says {expected}; save the image again"
    )]
    DiffIdMismatch {
        /// The archive.
        path: PathBuf,
        /// The layer file inside it.
        layer: String,
        /// From the config.
        expected: String,
        /// Computed.
        actual: Digest,
    },
    /// Writing to the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ArchiveManifest {
    config: String,
    layers: Vec<String>,
}

/// A layer compressed before: its diff_id maps to this blob.
#[derive(Debug, Serialize, Deserialize)]
struct CompressedLayer {
    digest: Digest,
    size: u64,
}

impl Store {
    /// Import the single image in the docker-archive at `path` and tag it.
    ///
    /// # Errors
    /// Unreadable or malformed archive, a layer not matching its diff_id,
    /// or a store failure. Nothing is tagged on error.
    pub fn import_docker_archive(
        &self,
        path: &Path,
        tag: &str,
    ) -> Result<StoredImage, ImportDockerArchiveError> {
        let read = |source| ImportDockerArchiveError::Read {
            path: path.to_path_buf(),
            source,
        };
        let format = |reason: String| ImportDockerArchiveError::Format {
            path: path.to_path_buf(),
            reason,
        };

        // Pass 1: where each file is. manifest.json may come last.
        let mut files: HashMap<String, (u64, u64)> = HashMap::new();
        let mut archive = tar::Archive::new(File::open(path).map_err(read)?);
        for entry in archive.entries_with_seek().map_err(read)? {
            let entry = entry.map_err(read)?;
            if entry.header().entry_type().is_file() {
                let name = String::from_utf8_lossy(&entry.path_bytes())
                    .trim_start_matches("./")
                    .to_owned();
                files.insert(name, (entry.raw_file_position(), entry.size()));
            }
        }
        let mut file = File::open(path).map_err(read)?;
        let mut read_small = |name: &str| -> Result<Vec<u8>, ImportDockerArchiveError> {
            let &(offset, size) = files
                .get(name)
                .ok_or_else(|| format(format!("`{name}` is missing")))?;
            if size > 64 << 20 {
                return Err(format(format!("`{name}` is too large ({size} bytes)")));
            }
            let mut buf = Vec::new();
            file.seek(SeekFrom::Start(offset)).map_err(read)?;
            (&mut file).take(size).read_to_end(&mut buf).map_err(read)?;
            Ok(buf)
        };
        let manifests: Vec<ArchiveManifest> = serde_json::from_slice(&read_small("manifest.json")?)
            .map_err(|e| format(format!("manifest.json: {e}")))?;
        let [manifest] = <[ArchiveManifest; 1]>::try_from(manifests)
            .map_err(|m| format(format!("it holds {} images, expected one", m.len())))?;
        let config_bytes = read_small(&manifest.config)?;
        let config: ImageConfiguration = serde_json::from_slice(&config_bytes)
            .map_err(|e| format(format!("config `{}`: {e}", manifest.config)))?;
        let diff_ids = config.rootfs().diff_ids();
        if diff_ids.len() != manifest.layers.len() {
            return Err(format(format!(
                "{} layers but {} diff_ids in the config",
                manifest.layers.len(),
                diff_ids.len()
            )));
        }

        // Pass 2: each layer, compressed deterministically.
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        let mut layers = Vec::with_capacity(manifest.layers.len());
        for (name, expected) in manifest.layers.iter().zip(diff_ids) {
            if let Some(done) = self.compressed_layer(expected) {
                layers.push(Descriptor::new(
                    MediaType::ImageLayerGzip,
                    done.size,
                    crate::oci_digest::to_oci(&done.digest),
                ));
                continue;
            }
            let &(offset, size) = files
                .get(name.as_str())
                .ok_or_else(|| format(format!("layer `{name}` is missing")))?;
            let mut src = File::open(path).map_err(read)?;
            src.seek(SeekFrom::Start(offset)).map_err(read)?;
            let blob = self.blob_writer()?;
            let (blob, c) = gzip::compress(blob, threads, |w| {
                io::copy(&mut (&mut src).take(size), w).map(|_| ())
            })
            .map_err(read)?;
            if c.diff_id.to_string() != *expected {
                return Err(ImportDockerArchiveError::DiffIdMismatch {
                    path: path.to_path_buf(),
                    layer: name.clone(),
                    expected: expected.clone(),
                    actual: c.diff_id,
                });
            }
            let (digest, size) = blob.finish()?;
            self.remember_compressed_layer(expected, &CompressedLayer { digest, size })?;
            layers.push(Descriptor::new(
                MediaType::ImageLayerGzip,
                size,
                crate::oci_digest::to_oci(&digest),
            ));
        }

        let config_digest = self.write_blob(&config_bytes)?;
        let config_descriptor = Descriptor::new(
            MediaType::ImageConfig,
            config_bytes.len() as u64,
            crate::oci_digest::to_oci(&config_digest),
        );
        let oci_manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(config_descriptor)
            .layers(layers)
            .build()
            .map_err(|e| format(e.to_string()))?;
        let descriptor = self.put_manifest(&oci_manifest)?;
        self.tag(tag, &descriptor)?;
        Ok(self.image(tag)?)
    }

    /// Import a docker-archive streamed from `reader` (spooled to a
    /// temporary file in the store first: the archive order needs seeking).
    ///
    /// # Errors
    /// As [`import_docker_archive`](Self::import_docker_archive).
    pub fn import_docker_archive_from(
        &self,
        mut reader: impl Read,
        tag: &str,
    ) -> Result<StoredImage, ImportDockerArchiveError> {
        let tmp_dir = self.tmp_dir();
        let mut spool = tempfile::NamedTempFile::new_in(&tmp_dir)
            .map_err(StoreError::io("create a temporary file in", &tmp_dir))?;
        io::copy(&mut reader, spool.as_file_mut())
            .map_err(StoreError::io("write", spool.path()))?;
        self.import_docker_archive(spool.path(), tag)
    }

    fn compressed_layer_path(&self, diff_id: &str) -> PathBuf {
        let name = diff_id.trim_start_matches("sha256:");
        self.cache_dir()
            .join("imports")
            .join(format!("{name}.json"))
    }

    fn compressed_layer(&self, diff_id: &str) -> Option<CompressedLayer> {
        diff_id.parse::<Digest>().ok()?;
        let bytes = std::fs::read(self.compressed_layer_path(diff_id)).ok()?;
        let hit: CompressedLayer = serde_json::from_slice(&bytes).ok()?;
        let ok = std::fs::metadata(self.blob_path(&hit.digest)).is_ok_and(|m| m.len() == hit.size);
        ok.then_some(hit)
    }

    fn remember_compressed_layer(
        &self,
        diff_id: &str,
        c: &CompressedLayer,
    ) -> Result<(), StoreError> {
        if diff_id.parse::<Digest>().is_err() {
            return Ok(());
        }
        let path = self.compressed_layer_path(diff_id);
        let bytes = serde_json::to_vec(c).map_err(|source| StoreError::Json {
            path: path.clone(),
            source,
        })?;
        self.write_file_atomically(&path, &bytes)
    }
}
