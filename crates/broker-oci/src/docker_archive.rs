//! Importing `docker save` output into the store as an OCI image.
//!
//! A docker-archive holds `manifest.json` (config file name and layer file
//! names), the config JSON and each layer as an uncompressed tar. The config
//! is stored byte for byte (so its digest stays the Docker image ID); each
//! layer is compressed with the deterministic gzip of [`crate::gzip`], so
//! importing the same image twice, anywhere, gives the same manifest digest.
//! Layers already compressed once (keyed on their `diff_id`) are not read
//! again.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageConfiguration, ImageManifestBuilder, MediaType};
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::gzip;
use crate::store::{Store, StoreError, StoredImage, descriptor_digest};

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
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// A layer compressed before: its diff_id maps to this blob.
#[derive(Debug, Serialize, Deserialize)]
struct CompressedLayer {
    digest: Digest,
    size: u64,
}

/// One image to take out of a docker-archive.
#[derive(Clone, Copy, Debug)]
pub struct ArchiveImage<'a> {
    /// The name it has in the archive (one of its `RepoTags`, as given to
    /// `docker save`); ignored when the archive holds a single image.
    pub repo_tag: &'a str,
    /// The tag it gets in the store.
    pub store_tag: &'a str,
}

/// Compressed blobs the caller vouches for, by the `diff_id` they
/// decompress to: typically a base image's layers as its registry serves
/// them. A layer listed here is not compressed again, so an image built on
/// a registry base shares that base's blobs (mountable, already on the
/// nodes) and gets the same digest on every machine.
pub type KnownLayers = BTreeMap<Digest, Descriptor>;

/// Receives a layer's compressed bytes while they are written, e.g. to
/// upload them at once instead of after the whole layer is compressed.
pub trait LayerStream: Send {
    /// The next compressed bytes, in order. An error detaches this stream:
    /// the layer is still compressed and stored, the stream gets nothing
    /// more (not even [`finished`](Self::finished)).
    ///
    /// # Errors
    /// Whatever makes the receiver give up (e.g. its upload failed).
    fn bytes(&mut self, bytes: &[u8]) -> io::Result<()>;

    /// Every byte was given: the layer's digest and size.
    fn finished(self: Box<Self>, digest: Digest, size: u64);
}

/// Opens a [`LayerStream`] for a layer about to be compressed, or declines
/// (a small layer gains nothing from streaming).
pub trait LayerStreams: Send + Sync {
    /// A stream for a layer of the image stored as `store_tag`, of
    /// `uncompressed_size` bytes before compression.
    fn open(&self, store_tag: &str, uncompressed_size: u64) -> Option<Box<dyn LayerStream>>;
}

/// How [`Store::import_docker_archive_images`] treats layers.
#[derive(Clone, Copy)]
pub struct ImportOptions<'a> {
    /// Layers the caller vouches for: kept, not compressed.
    pub known: &'a KnownLayers,
    /// Compression threads per layer (the bytes do not depend on it).
    pub threads: usize,
    /// Where compressed layers stream to while they are written.
    pub streams: Option<&'a dyn LayerStreams>,
}

/// Where a file lies inside the archive.
#[derive(Clone, Copy, Debug)]
struct Region {
    offset: u64,
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
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        let wanted = [ArchiveImage {
            repo_tag: "",
            store_tag: tag,
        }];
        let options = ImportOptions {
            known: &KnownLayers::new(),
            threads,
            streams: None,
        };
        let mut images = self.import_docker_archive_images(path, &wanted, options)?;
        Ok(images.remove(0))
    }

    /// Import the images `wanted` from the docker-archive at `path` (as one
    /// `docker save` of several images writes it, each shared layer once)
    /// and tag each; returns them in the order asked. Layers in
    /// `options.known` keep the caller's blob; a layer compressed by an
    /// earlier import is not read again; every other layer is compressed
    /// once, however many images share it, on `options.threads` threads
    /// (the bytes do not depend on the count), and streamed as it is
    /// written to what `options.streams` opens. What each layer does to
    /// the directory tree is noted on the way (headers only), so no base
    /// layer is ever decompressed to learn it.
    ///
    /// # Errors
    /// Unreadable or malformed archive, an image missing from it, a layer
    /// not matching its diff_id, or a store failure. Nothing is tagged on
    /// error.
    pub fn import_docker_archive_images(
        &self,
        path: &Path,
        wanted: &[ArchiveImage<'_>],
        options: ImportOptions<'_>,
    ) -> Result<Vec<StoredImage>, ImportDockerArchiveError> {
        let read = |source| ImportDockerArchiveError::Read {
            path: path.to_path_buf(),
            source,
        };
        let format = |reason: String| ImportDockerArchiveError::Format {
            path: path.to_path_buf(),
            reason,
        };

        // Pass 1: where each file is (headers only). manifest.json comes last.
        let mut files: HashMap<String, Region> = HashMap::new();
        // A layer several images share is written once; the other images'
        // `layer.tar` is a symlink to it (`../<id>/layer.tar`).
        let mut links: Vec<(String, String)> = Vec::new();
        let mut archive = tar::Archive::new(File::open(path).map_err(read)?);
        for entry in archive.entries_with_seek().map_err(read)? {
            let entry = entry.map_err(read)?;
            let name = String::from_utf8_lossy(&entry.path_bytes())
                .trim_start_matches("./")
                .to_owned();
            let kind = entry.header().entry_type();
            if kind.is_file() {
                let region = Region {
                    offset: entry.raw_file_position(),
                    size: entry.size(),
                };
                files.insert(name, region);
            } else if kind.is_symlink()
                && let Some(target) = entry.link_name_bytes()
            {
                let target = resolve_link(&name, &String::from_utf8_lossy(&target));
                links.push((name, target));
            }
        }
        for (name, target) in links {
            if let Some(region) = files.get(&target).copied() {
                files.insert(name, region);
            }
        }
        let mut file = File::open(path).map_err(read)?;
        let mut read_small = |name: &str| -> Result<Vec<u8>, ImportDockerArchiveError> {
            let region = *files
                .get(name)
                .ok_or_else(|| format(format!("`{name}` is missing")))?;
            if region.size > 64 << 20 {
                return Err(format(format!(
                    "`{name}` is too large ({} bytes)",
                    region.size
                )));
            }
            let mut buf = Vec::new();
            file.seek(SeekFrom::Start(region.offset)).map_err(read)?;
            (&mut file)
                .take(region.size)
                .read_to_end(&mut buf)
                .map_err(read)?;
            Ok(buf)
        };
        let manifests: Vec<ArchiveManifest> = serde_json::from_slice(&read_small("manifest.json")?)
            .map_err(|e| format(format!("manifest.json: {e}")))?;
        let single = manifests.len() == 1 && wanted.len() == 1;

        // Each wanted image's config and layer files, checked before any
        // layer is compressed.
        let mut images = Vec::with_capacity(wanted.len());
        for want in wanted {
            let manifest = if single {
                &manifests[0]
            } else {
                manifests
                    .iter()
                    .find(|m| {
                        m.repo_tags
                            .as_ref()
                            .is_some_and(|tags| tags.iter().any(|t| t == want.repo_tag))
                    })
                    .ok_or_else(|| {
                        format(format!(
                            "it holds no image named `{}` ({} images)",
                            want.repo_tag,
                            manifests.len()
                        ))
                    })?
            };
            let config_bytes = read_small(&manifest.config)?;
            let config: ImageConfiguration = serde_json::from_slice(&config_bytes)
                .map_err(|e| format(format!("config `{}`: {e}", manifest.config)))?;
            let diff_ids = config.rootfs().diff_ids();
            if diff_ids.len() != manifest.layers.len() {
                return Err(format(format!(
                    "{} layers but {} diff_ids in the config of `{}`",
                    manifest.layers.len(),
                    diff_ids.len(),
                    want.repo_tag
                )));
            }
            let mut layers = Vec::with_capacity(manifest.layers.len());
            for (name, diff_id) in manifest.layers.iter().zip(diff_ids) {
                let region = *files
                    .get(name.as_str())
                    .ok_or_else(|| format(format!("layer `{name}` is missing")))?;
                let diff_id: Digest = diff_id
                    .parse()
                    .map_err(|e| format(format!("diff_id `{diff_id}`: {e}")))?;
                layers.push((name.clone(), diff_id, region));
            }
            images.push((config_bytes, layers));
        }

        // Pass 2: each distinct layer once.
        let mut done: HashMap<Digest, Descriptor> = HashMap::new();
        let mut stored = Vec::with_capacity(images.len());
        for (want, (config_bytes, layers)) in wanted.iter().zip(images) {
            let mut descriptors = Vec::with_capacity(layers.len());
            for (name, diff_id, region) in layers {
                if let Some(descriptor) = done.get(&diff_id) {
                    descriptors.push(descriptor.clone());
                    continue;
                }
                let descriptor = match options.known.get(&diff_id) {
                    Some(descriptor) => descriptor.clone(),
                    None => match self.compressed_layer(&diff_id) {
                        Some(hit) => gzip_layer(&hit.digest, hit.size),
                        None => {
                            let stream = options
                                .streams
                                .and_then(|s| s.open(want.store_tag, region.size));
                            let layer = LayerFile {
                                path,
                                name: &name,
                                diff_id: &diff_id,
                                region,
                            };
                            let (digest, size) =
                                self.compress_layer(layer, options.threads, stream)?;
                            gzip_layer(&digest, size)
                        }
                    },
                };
                let digest = crate::oci_digest::from_oci(descriptor.digest())
                    .map_err(|e| format(format!("layer `{name}`: {e}")))?;
                crate::base::note_layer_events(self, &digest, || FileRegion::open(path, region))
                    .map_err(read)?;
                done.insert(diff_id, descriptor.clone());
                descriptors.push(descriptor);
            }
            stored.push(self.put_imported(path, want.store_tag, &config_bytes, descriptors)?);
        }
        Ok(stored)
    }

    /// Compresses one layer of the archive into a blob (and into `stream`
    /// as it goes), checking it against its diff_id, and remembers it.
    fn compress_layer(
        &self,
        layer: LayerFile<'_>,
        threads: usize,
        stream: Option<Box<dyn LayerStream>>,
    ) -> Result<(Digest, u64), ImportDockerArchiveError> {
        let path = layer.path;
        let read = |source| ImportDockerArchiveError::Read {
            path: path.to_path_buf(),
            source,
        };
        let mut src = FileRegion::open(path, layer.region).map_err(read)?;
        let sink = Tee {
            blob: self.blob_writer()?,
            stream,
        };
        let (sink, c) =
            gzip::compress(sink, threads, |w| io::copy(&mut src, w).map(|_| ())).map_err(read)?;
        if c.diff_id != *layer.diff_id {
            return Err(ImportDockerArchiveError::DiffIdMismatch {
                path: path.to_path_buf(),
                layer: layer.name.to_owned(),
                expected: layer.diff_id.to_string(),
                actual: c.diff_id,
            });
        }
        let Tee { blob, stream } = sink;
        let (digest, size) = blob.finish()?;
        self.remember_compressed_layer(layer.diff_id, &CompressedLayer { digest, size })?;
        if let Some(stream) = stream {
            stream.finished(digest, size);
        }
        Ok((digest, size))
    }

    /// Writes an imported image's config (byte for byte: its digest stays
    /// the Docker image ID) and manifest, and tags it.
    fn put_imported(
        &self,
        path: &Path,
        tag: &str,
        config_bytes: &[u8],
        layers: Vec<Descriptor>,
    ) -> Result<StoredImage, ImportDockerArchiveError> {
        let config_digest = self.write_blob(config_bytes)?;
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
            .map_err(|e| ImportDockerArchiveError::Format {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        let descriptor = self.put_manifest(&oci_manifest)?;
        self.tag(tag, &descriptor)?;
        Ok(self.image(tag)?)
    }

    /// The compressed layers of `image` by the diff_id each decompresses
    /// to, for [`import_docker_archive_images`](Self::import_docker_archive_images):
    /// its gzip layers only (another compression is compressed again, as
    /// gzip).
    ///
    /// # Errors
    /// The config's diff_ids do not pair up with the manifest's layers.
    pub fn known_layers(&self, image: &StoredImage) -> Result<KnownLayers, StoreError> {
        let diff_ids = image.config.rootfs().diff_ids();
        let layers = image.manifest.layers();
        if diff_ids.len() != layers.len() {
            return Err(StoreError::LayerCount {
                image: image.digest()?,
                layers: layers.len(),
                diff_ids: diff_ids.len(),
            });
        }
        let mut known = KnownLayers::new();
        for (diff_id, layer) in diff_ids.iter().zip(layers) {
            let gzip = match layer.media_type() {
                MediaType::ImageLayerGzip => true,
                MediaType::Other(t) => t == crate::media_type::DOCKER_LAYER_GZIP,
                _ => false,
            };
            let (Ok(diff_id), true) = (diff_id.parse::<Digest>(), gzip) else {
                continue;
            };
            let digest = descriptor_digest(layer, "base layer descriptor")?;
            if self.has_blob(&digest) {
                known.insert(diff_id, gzip_layer(&digest, layer.size()));
            }
        }
        Ok(known)
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

    fn compressed_layer_path(&self, diff_id: &Digest) -> PathBuf {
        self.cache_dir()
            .join("imports")
            .join(format!("{}.json", diff_id.hex()))
    }

    fn compressed_layer(&self, diff_id: &Digest) -> Option<CompressedLayer> {
        let bytes = std::fs::read(self.compressed_layer_path(diff_id)).ok()?;
        let hit: CompressedLayer = serde_json::from_slice(&bytes).ok()?;
        let ok = std::fs::metadata(self.blob_path(&hit.digest)).is_ok_and(|m| m.len() == hit.size);
        ok.then_some(hit)
    }

    fn remember_compressed_layer(
        &self,
        diff_id: &Digest,
        c: &CompressedLayer,
    ) -> Result<(), StoreError> {
        let path = self.compressed_layer_path(diff_id);
        let bytes = serde_json::to_vec(c).map_err(|source| StoreError::Json {
            path: path.clone(),
            source,
        })?;
        self.write_file_atomically(&path, &bytes)
    }
}

/// A gzip layer descriptor for the blob `digest` of `size` bytes.
fn gzip_layer(digest: &Digest, size: u64) -> Descriptor {
    Descriptor::new(
        MediaType::ImageLayerGzip,
        size,
        crate::oci_digest::to_oci(digest),
    )
}

/// One file inside the archive, read (and seeked) as a file of its own.
struct FileRegion {
    file: File,
    region: Region,
    position: u64,
}

impl FileRegion {
    fn open(path: &Path, region: Region) -> io::Result<Self> {
        let mut file = File::open(path)?;
        file.seek(SeekFrom::Start(region.offset))?;
        Ok(Self {
            file,
            region,
            position: 0,
        })
    }
}

impl Read for FileRegion {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.region.size.saturating_sub(self.position);
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.file.read(&mut buf[..want])?;
        self.position += n as u64;
        Ok(n)
    }
}

impl Seek for FileRegion {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::Current(d) => self.position.checked_add_signed(d),
            SeekFrom::End(d) => self.region.size.checked_add_signed(d),
        };
        let target = target.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of a layer",
            )
        })?;
        self.file
            .seek(SeekFrom::Start(self.region.offset + target))?;
        self.position = target;
        Ok(target)
    }
}

/// One layer file of an archive.
#[derive(Clone, Copy)]
struct LayerFile<'a> {
    /// The archive.
    path: &'a Path,
    /// The layer's file name inside it.
    name: &'a str,
    /// What its bytes must hash to.
    diff_id: &'a Digest,
    /// Where its bytes are.
    region: Region,
}

/// The compressor's output: the store blob, and a stream while it keeps up.
struct Tee {
    blob: crate::store::BlobWriter,
    stream: Option<Box<dyn LayerStream>>,
}

impl io::Write for Tee {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.blob.write(buf)?;
        if let Some(stream) = &mut self.stream
            && stream.bytes(&buf[..n]).is_err()
        {
            // The receiver gave up; the blob is still written.
            self.stream = None;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.blob.flush()
    }
}

/// The archive path a symlink at `name` pointing to `target` names
/// (`a/layer.tar` → `../b/layer.tar` gives `b/layer.tar`).
fn resolve_link(name: &str, target: &str) -> String {
    let mut parts: Vec<&str> = if target.starts_with('/') {
        Vec::new()
    } else {
        name.split('/').collect()
    };
    parts.pop();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::resolve_link;

    #[test]
    fn shared_layer_links_resolve_inside_the_archive() {
        assert_eq!(resolve_link("a/layer.tar", "../b/layer.tar"), "b/layer.tar");
        assert_eq!(resolve_link("a/layer.tar", "/b/layer.tar"), "b/layer.tar");
        assert_eq!(resolve_link("a/layer.tar", "./c"), "a/c");
        assert_eq!(resolve_link("a/layer.tar", "../../b"), "b");
    }
}
