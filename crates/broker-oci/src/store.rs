//! The local content store: an OCI image layout directory.
//!
//! ```text
//! <store>/oci-layout          {"imageLayoutVersion":"1.0.0"}
//! <store>/index.json          tagged manifests (`org.opencontainers.image.ref.name`)
//! <store>/blobs/sha256/<hex>  content, named by its digest
//! <store>/tmp/                partial writes, renamed into blobs/ when complete
//! <store>/cache/              layer and file-hash caches (not part of the layout)
//! <store>/index.json.lock     taken while index.json is rewritten
//! ```
//!
//! Every file appears by `rename`, so a reader sees a whole file or none.
//! Blobs are content-addressed, so two processes writing the same blob just
//! both rename identical bytes into place; `index.json` is read, changed and
//! replaced under an exclusive lock, so concurrent tags are never lost.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use oci_spec::image::{
    Descriptor, ImageConfiguration, ImageIndex, ImageIndexBuilder, ImageManifest, MediaType,
};
use tempfile::NamedTempFile;

use crate::digest::{Digest, DigestWriter, ParseDigestError};
use crate::json::canonical_json;

/// The annotation that names a manifest in `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

const LAYOUT_FILE: &str = "oci-layout";
const LAYOUT_JSON: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
const INDEX_FILE: &str = "index.json";
const LOCK_FILE: &str = "index.json.lock";

/// What went wrong in the store. Every message names the file involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file operation failed.
    #[error("cannot {action} `{path}` (check the store's permissions and free space)")]
    Io {
        /// What was being done ("write", "read", "rename into place", ...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The directory holds an OCI layout of a version this tool does not know.
    #[error("`{path}` is not an OCI image layout 1.0.0; use an empty directory for the store")]
    NotALayout {
        /// The `oci-layout` file.
        path: PathBuf,
    },
    /// A blob the store should have is missing.
    #[error("blob {digest} is missing from the store (`{path}`); rebuild or re-import the image")]
    MissingBlob {
        /// The digest asked for.
        digest: Digest,
        /// Where it should be.
        path: PathBuf,
    },
    /// A blob's bytes do not hash to its name.
    #[error("blob `{path}` is corrupt: its content hashes to {actual}; delete it and rebuild")]
    CorruptBlob {
        /// The blob file.
        path: PathBuf,
        /// What the bytes hash to.
        actual: Digest,
    },
    /// A JSON document could not be read or written.
    #[error("invalid JSON in `{path}` (delete the file and rebuild)")]
    Json {
        /// The file (or blob) holding it.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// No manifest carries this tag.
    #[error("no image tagged `{name}` in `{store}`; build or import it first")]
    UnknownTag {
        /// The tag asked for.
        name: String,
        /// The store directory.
        store: PathBuf,
    },
    /// A tag that cannot be stored as a `ref.name`.
    #[error("`{name}` cannot be used as a tag: use letters, digits and `._-:/@+` only")]
    InvalidTag {
        /// The tag as given.
        name: String,
    },
    /// The descriptor names something other than an image manifest.
    #[error(
        "`{name}` in `{store}` is a {media_type}, not an image manifest; pick one platform's manifest"
    )]
    NotAManifest {
        /// The tag or digest.
        name: String,
        /// The store directory.
        store: PathBuf,
        /// The media type found.
        media_type: String,
    },
    /// An image's config and manifest disagree on how many layers it has.
    #[error(
        "image `{image}` has {layers} layers but {diff_ids} diff_ids in its config; pull or build it again"
    )]
    LayerCount {
        /// The image's manifest digest.
        image: Digest,
        /// Layers in the manifest.
        layers: usize,
        /// diff_ids in the config.
        diff_ids: usize,
    },
    /// A digest in a descriptor or document is not a sha256 digest.
    #[error("{context}")]
    BadDigest {
        /// Where the digest was found.
        context: String,
        /// The cause.
        #[source]
        source: ParseDigestError,
    },
}

impl StoreError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }
}

/// An image read back from the store.
#[derive(Debug, Clone)]
pub struct StoredImage {
    /// The manifest's descriptor (media type, digest, size; tag annotation
    /// when it was resolved by tag).
    pub manifest_descriptor: Descriptor,
    /// The parsed manifest.
    pub manifest: ImageManifest,
    /// The parsed config.
    pub config: ImageConfiguration,
    /// The manifest bytes exactly as stored (what its digest covers).
    pub raw_manifest: Vec<u8>,
}

impl StoredImage {
    /// The manifest digest.
    ///
    /// # Errors
    /// The descriptor holds a digest that is not sha256.
    pub fn digest(&self) -> Result<Digest, StoreError> {
        descriptor_digest(&self.manifest_descriptor, "image manifest descriptor")
    }
}

/// The local OCI image layout store.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Open the layout at `dir`, creating the directory, `oci-layout` and an
    /// empty `index.json` when absent.
    ///
    /// # Errors
    /// The directory cannot be created or holds another layout version.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let store = Self {
            dir: dir.to_path_buf(),
        };
        for sub in [store.blobs_dir(), store.tmp_dir()] {
            fs::create_dir_all(&sub).map_err(StoreError::io("create directory", &sub))?;
        }
        let layout = dir.join(LAYOUT_FILE);
        match fs::read(&layout) {
            Ok(bytes) => {
                let v: serde_json::Value =
                    serde_json::from_slice(&bytes).map_err(|_| StoreError::NotALayout {
                        path: layout.clone(),
                    })?;
                if v.get("imageLayoutVersion").and_then(|x| x.as_str()) != Some("1.0.0") {
                    return Err(StoreError::NotALayout { path: layout });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                store.write_file_atomically(&layout, LAYOUT_JSON)?;
            }
            Err(e) => return Err(StoreError::io("read", &layout)(e)),
        }
        let index = dir.join(INDEX_FILE);
        if !index.exists() {
            let _lock = store.lock_index()?;
            if !index.exists() {
                store.write_index(&empty_index())?;
            }
        }
        Ok(store)
    }

    /// The store directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the blob `d` lives (whether or not it exists).
    #[must_use]
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.blobs_dir().join(d.hex())
    }

    /// Whether the store holds the blob `d`.
    #[must_use]
    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// Store `bytes` as a blob and return its digest.
    ///
    /// # Errors
    /// The blob cannot be written.
    pub fn write_blob(&self, bytes: &[u8]) -> Result<Digest, StoreError> {
        // A rebuild writes the same configs and manifests again: hashing in
        // memory first spares it a temporary file (an inode made and freed)
        // per blob the store already holds.
        let digest = Digest::of(bytes);
        if self.has_blob(&digest) {
            return Ok(digest);
        }
        let mut w = self.blob_writer()?;
        w.write_all(bytes)
            .map_err(StoreError::io("write", w.temp_path()))?;
        Ok(w.finish()?.0)
    }

    /// Start a streamed blob: write into it, then [`BlobWriter::finish`].
    ///
    /// # Errors
    /// The temporary file cannot be created.
    pub fn blob_writer(&self) -> Result<BlobWriter, StoreError> {
        let tmp = self.tmp_dir();
        let file = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(&tmp)
            .map_err(StoreError::io("create a temporary file in", &tmp))?;
        Ok(BlobWriter {
            blobs: self.blobs_dir(),
            out: BufWriter::with_capacity(256 * 1024, file),
            hash: DigestWriter::new(),
        })
    }

    /// Open the blob `d` for streaming reads (not verified).
    ///
    /// # Errors
    /// The blob is missing or unreadable.
    pub fn open_blob(&self, d: &Digest) -> Result<File, StoreError> {
        let path = self.blob_path(d);
        File::open(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                StoreError::MissingBlob { digest: *d, path }
            } else {
                StoreError::io("open", path)(e)
            }
        })
    }

    /// Read a (small) blob whole and check that it hashes to `d`.
    ///
    /// # Errors
    /// Missing, unreadable or corrupt blob.
    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>, StoreError> {
        let path = self.blob_path(d);
        let mut bytes = Vec::new();
        self.open_blob(d)?
            .read_to_end(&mut bytes)
            .map_err(StoreError::io("read", &path))?;
        let actual = Digest::of(&bytes);
        if actual != *d {
            return Err(StoreError::CorruptBlob { path, actual });
        }
        Ok(bytes)
    }

    /// Store `value` as canonical JSON; returns its digest and size.
    ///
    /// # Errors
    /// Serialisation or write failure.
    pub fn put_json<T: serde::Serialize + ?Sized>(
        &self,
        value: &T,
    ) -> Result<(Digest, u64), StoreError> {
        let bytes = canonical_json(value).map_err(|source| StoreError::Json {
            path: self.blobs_dir(),
            source,
        })?;
        let digest = self.write_blob(&bytes)?;
        Ok((digest, bytes.len() as u64))
    }

    /// Store an image config; returns its descriptor.
    ///
    /// # Errors
    /// Serialisation or write failure.
    pub fn put_config(&self, config: &ImageConfiguration) -> Result<Descriptor, StoreError> {
        let (digest, size) = self.put_json(config)?;
        Ok(Descriptor::new(
            MediaType::ImageConfig,
            size,
            crate::oci_digest::to_oci(&digest),
        ))
    }

    /// Store a manifest as canonical JSON; returns its descriptor (OCI
    /// manifest media type, digest, size). Does not tag it.
    ///
    /// # Errors
    /// Serialisation or write failure.
    pub fn put_manifest(&self, m: &ImageManifest) -> Result<Descriptor, StoreError> {
        let (digest, size) = self.put_json(m)?;
        Ok(Descriptor::new(
            MediaType::ImageManifest,
            size,
            crate::oci_digest::to_oci(&digest),
        ))
    }

    /// Point the tag `name` at `manifest` (replacing any previous target).
    ///
    /// # Errors
    /// Invalid tag, or `index.json` cannot be read or replaced.
    pub fn tag(&self, name: &str, manifest: &Descriptor) -> Result<(), StoreError> {
        validate_tag(name)?;
        let mut desc = manifest.clone();
        let mut annotations = desc.annotations().clone().unwrap_or_default();
        annotations.insert(REF_NAME.to_owned(), name.to_owned());
        desc.set_annotations(Some(annotations));

        let _lock = self.lock_index()?;
        let mut index = self.read_index()?;
        if index.manifests().contains(&desc) {
            // Already so: no rewrite, no fsync.
            return Ok(());
        }
        let mut manifests: Vec<Descriptor> = index
            .manifests()
            .iter()
            .filter(|d| ref_name(d) != Some(name))
            .cloned()
            .collect();
        manifests.push(desc);
        manifests.sort_by(|a, b| {
            (ref_name(a), a.digest().to_string()).cmp(&(ref_name(b), b.digest().to_string()))
        });
        index.set_manifests(manifests);
        self.write_index(&index)
    }

    /// Remove the tag `name`, if the store has it (the blobs stay).
    ///
    /// # Errors
    /// `index.json` cannot be read or replaced.
    pub fn untag(&self, name: &str) -> Result<(), StoreError> {
        let _lock = self.lock_index()?;
        let mut index = self.read_index()?;
        let before = index.manifests().len();
        let manifests: Vec<Descriptor> = index
            .manifests()
            .iter()
            .filter(|d| ref_name(d) != Some(name))
            .cloned()
            .collect();
        if manifests.len() == before {
            return Ok(());
        }
        index.set_manifests(manifests);
        self.write_index(&index)
    }

    /// Store an OCI image index as canonical JSON; returns its descriptor.
    /// Does not tag it.
    ///
    /// # Errors
    /// Serialisation or write failure.
    pub fn put_index(&self, index: &ImageIndex) -> Result<Descriptor, StoreError> {
        let (digest, size) = self.put_json(index)?;
        Ok(Descriptor::new(
            MediaType::ImageIndex,
            size,
            crate::oci_digest::to_oci(&digest),
        ))
    }

    /// The descriptor tagged `name`.
    ///
    /// # Errors
    /// Unknown tag, or unreadable `index.json`.
    pub fn resolve(&self, name: &str) -> Result<Descriptor, StoreError> {
        self.read_index()?
            .manifests()
            .iter()
            .find(|d| ref_name(d) == Some(name))
            .cloned()
            .ok_or_else(|| StoreError::UnknownTag {
                name: name.to_owned(),
                store: self.dir.clone(),
            })
    }

    /// Every tag and its descriptor, sorted by tag.
    ///
    /// # Errors
    /// Unreadable `index.json`.
    pub fn tags(&self) -> Result<Vec<(String, Descriptor)>, StoreError> {
        let mut out: Vec<(String, Descriptor)> = self
            .read_index()?
            .manifests()
            .iter()
            .filter_map(|d| ref_name(d).map(|n| (n.to_owned(), d.clone())))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Read an image by tag or by manifest digest (`sha256:…`).
    ///
    /// # Errors
    /// Unknown tag or digest, missing or corrupt blobs, or a descriptor
    /// that is not an image manifest.
    pub fn image(&self, name_or_digest: &str) -> Result<StoredImage, StoreError> {
        let (descriptor, raw_manifest) = if let Ok(d) = name_or_digest.parse::<Digest>() {
            let raw = self.read_blob(&d)?;
            let media_type = serde_json::from_slice::<serde_json::Value>(&raw)
                .ok()
                .and_then(|v| {
                    v.get("mediaType")
                        .and_then(|m| m.as_str())
                        .map(MediaType::from)
                })
                .unwrap_or(MediaType::ImageManifest);
            (
                Descriptor::new(media_type, raw.len() as u64, crate::oci_digest::to_oci(&d)),
                raw,
            )
        } else {
            let desc = self.resolve(name_or_digest)?;
            let d = descriptor_digest(&desc, &format!("tag `{name_or_digest}`"))?;
            (desc, self.read_blob(&d)?)
        };
        match descriptor.media_type() {
            MediaType::ImageManifest => {}
            MediaType::Other(t) if t == crate::media_type::DOCKER_MANIFEST => {}
            other => {
                return Err(StoreError::NotAManifest {
                    name: name_or_digest.to_owned(),
                    store: self.dir.clone(),
                    media_type: other.to_string(),
                });
            }
        }
        let digest = descriptor_digest(&descriptor, "image manifest descriptor")?;
        let manifest: ImageManifest =
            serde_json::from_slice(&raw_manifest).map_err(|source| StoreError::Json {
                path: self.blob_path(&digest),
                source,
            })?;
        let config_digest = descriptor_digest(manifest.config(), "config descriptor")?;
        let config_bytes = self.read_blob(&config_digest)?;
        let config: ImageConfiguration =
            serde_json::from_slice(&config_bytes).map_err(|source| StoreError::Json {
                path: self.blob_path(&config_digest),
                source,
            })?;
        Ok(StoredImage {
            manifest_descriptor: descriptor,
            manifest,
            config,
            raw_manifest,
        })
    }

    pub(crate) fn blobs_dir(&self) -> PathBuf {
        self.dir.join("blobs").join("sha256")
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    pub(crate) fn cache_dir(&self) -> PathBuf {
        self.dir.join("cache")
    }

    /// Write `bytes` to `path` via a temporary file in the store and a rename.
    pub(crate) fn write_file_atomically(
        &self,
        path: &Path,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        let tmp_dir = self.tmp_dir();
        let mut tmp = NamedTempFile::new_in(&tmp_dir)
            .map_err(StoreError::io("create a temporary file in", &tmp_dir))?;
        tmp.write_all(bytes)
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(StoreError::io("write", tmp.path()))?;
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(StoreError::io("create directory", parent))?;
        }
        tmp.persist(path)
            .map_err(|e| StoreError::io("rename into place", path)(e.error))?;
        Ok(())
    }

    fn lock_index(&self) -> Result<File, StoreError> {
        let path = self.dir.join(LOCK_FILE);
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(StoreError::io("open", &path))?;
        file.lock().map_err(StoreError::io("lock", &path))?;
        // Unlocked when the file is closed.
        Ok(file)
    }

    fn read_index(&self) -> Result<ImageIndex, StoreError> {
        let path = self.dir.join(INDEX_FILE);
        let bytes = fs::read(&path).map_err(StoreError::io("read", &path))?;
        serde_json::from_slice(&bytes).map_err(|source| StoreError::Json { path, source })
    }

    fn write_index(&self, index: &ImageIndex) -> Result<(), StoreError> {
        let path = self.dir.join(INDEX_FILE);
        let bytes = canonical_json(index).map_err(|source| StoreError::Json {
            path: path.clone(),
            source,
        })?;
        self.write_file_atomically(&path, &bytes)
    }
}

/// A blob being written; see [`Store::blob_writer`]. Dropping it without
/// [`finish`](Self::finish) deletes the partial file.
#[derive(Debug)]
pub struct BlobWriter {
    blobs: PathBuf,
    out: BufWriter<NamedTempFile>,
    hash: DigestWriter,
}

impl BlobWriter {
    /// The temporary file being written.
    #[must_use]
    pub fn temp_path(&self) -> &Path {
        self.out.get_ref().path()
    }

    /// Flush, sync and rename the blob into place under its digest. Returns
    /// the digest and size. If the store already has the blob, the new copy
    /// is discarded.
    ///
    /// # Errors
    /// The file cannot be flushed, synced or renamed.
    pub fn finish(self) -> Result<(Digest, u64), StoreError> {
        let (digest, size) = self.hash.finish();
        let tmp_path = self.out.get_ref().path().to_path_buf();
        let file = self
            .out
            .into_inner()
            .map_err(|e| StoreError::io("write", &tmp_path)(e.into_error()))?;
        let target = self.blobs.join(digest.hex());
        if target.is_file() {
            return Ok((digest, size));
        }
        file.as_file()
            .sync_all()
            .map_err(StoreError::io("sync", &tmp_path))?;
        file.persist(&target)
            .map_err(|e| StoreError::io("rename into place", &target)(e.error))?;
        Ok((digest, size))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// The sha256 digest a descriptor points to.
///
/// # Errors
/// Another algorithm or a malformed digest.
pub fn descriptor_digest(d: &Descriptor, context: &str) -> Result<Digest, StoreError> {
    crate::oci_digest::from_oci(d.digest()).map_err(|source| StoreError::BadDigest {
        context: context.to_owned(),
        source,
    })
}

fn ref_name(d: &Descriptor) -> Option<&str> {
    d.annotations()
        .as_ref()
        .and_then(|a| a.get(REF_NAME))
        .map(String::as_str)
}

fn validate_tag(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-:/@+".contains(c));
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidTag {
            name: name.chars().take(100).collect(),
        })
    }
}

fn empty_index() -> ImageIndex {
    match ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(Vec::<Descriptor>::new())
        .build()
    {
        Ok(i) => i,
        // Every required field is set above.
        Err(e) => unreachable!("empty image index: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        (dir, store)
    }

    fn blob_count(store: &Store) -> usize {
        fs::read_dir(store.blobs_dir()).unwrap().count()
    }

    #[test]
    fn open_creates_a_layout_and_reopens_it() {
        let (_t, s) = store();
        assert_eq!(fs::read(s.dir().join("oci-layout")).unwrap(), LAYOUT_JSON);
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(s.dir().join("index.json")).unwrap()).unwrap();
        assert_eq!(index["schemaVersion"], 2);
        assert_eq!(index["manifests"], serde_json::json!([]));
        Store::open(s.dir()).unwrap();
    }

    #[test]
    fn refuses_another_layout_version() {
        let (_t, s) = store();
        fs::write(
            s.dir().join("oci-layout"),
            br#"{"imageLayoutVersion":"2.0.0"}"#,
        )
        .unwrap();
        let e = Store::open(s.dir()).unwrap_err();
        assert!(e.to_string().contains("oci-layout"), "{e}");
    }

    #[test]
    fn blobs_are_content_addressed_and_verified() {
        let (_t, s) = store();
        let d = s.write_blob(b"hello").unwrap();
        assert_eq!(d, Digest::of(b"hello"));
        assert!(s.has_blob(&d));
        assert_eq!(s.write_blob(b"hello").unwrap(), d);
        assert_eq!(s.read_blob(&d).unwrap(), b"hello");
        fs::write(s.blob_path(&d), b"tampered").unwrap();
        let e = s.read_blob(&d).unwrap_err();
        assert!(matches!(e, StoreError::CorruptBlob { .. }), "{e}");
        let missing = Digest::of(b"nope");
        assert!(matches!(
            s.read_blob(&missing).unwrap_err(),
            StoreError::MissingBlob { .. }
        ));
    }

    #[test]
    fn dropped_blob_writer_leaves_nothing() {
        let (_t, s) = store();
        let mut w = s.blob_writer().unwrap();
        w.write_all(&[7u8; 100_000]).unwrap();
        drop(w);
        assert_eq!(blob_count(&s), 0);
        assert_eq!(fs::read_dir(s.tmp_dir()).unwrap().count(), 0);
        let mut w = s.blob_writer().unwrap();
        w.write_all(b"streamed").unwrap();
        let (d, size) = w.finish().unwrap();
        assert_eq!((d, size), (Digest::of(b"streamed"), 8));
        assert_eq!(fs::read_dir(s.tmp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn tags_replace_and_resolve() {
        let (_t, s) = store();
        let a = Descriptor::new(
            MediaType::ImageManifest,
            1,
            crate::oci_digest::to_oci(&Digest::of(b"a")),
        );
        let b = Descriptor::new(
            MediaType::ImageManifest,
            1,
            crate::oci_digest::to_oci(&Digest::of(b"b")),
        );
        s.tag("app:1", &a).unwrap();
        s.tag("app:2", &a).unwrap();
        s.tag("app:1", &b).unwrap();
        assert_eq!(s.resolve("app:1").unwrap().digest(), b.digest());
        assert_eq!(s.resolve("app:2").unwrap().digest(), a.digest());
        let tags: Vec<String> = s.tags().unwrap().into_iter().map(|t| t.0).collect();
        assert_eq!(tags, ["app:1", "app:2"]);
        assert!(matches!(
            s.resolve("nope").unwrap_err(),
            StoreError::UnknownTag { .. }
        ));
        assert!(matches!(
            s.tag("bad tag", &a).unwrap_err(),
            StoreError::InvalidTag { .. }
        ));
    }

    #[test]
    fn concurrent_writers_lose_no_tag_and_corrupt_nothing() {
        let (_t, s) = store();
        std::thread::scope(|scope| {
            for worker in 0..4 {
                let dir = s.dir().to_path_buf();
                scope.spawn(move || {
                    // A separate Store per thread, as a separate process would.
                    let s = Store::open(&dir).unwrap();
                    for i in 0..25 {
                        let d = s
                            .write_blob(format!("shared blob {}", i % 3).as_bytes())
                            .unwrap();
                        let desc = Descriptor::new(
                            MediaType::ImageManifest,
                            1,
                            crate::oci_digest::to_oci(&d),
                        );
                        s.tag(&format!("w{worker}:{i}"), &desc).unwrap();
                    }
                });
            }
        });
        assert_eq!(s.tags().unwrap().len(), 100);
        assert_eq!(blob_count(&s), 3);
        for i in 0..3 {
            let bytes = format!("shared blob {i}");
            assert_eq!(
                s.read_blob(&Digest::of(bytes.as_bytes())).unwrap(),
                bytes.as_bytes()
            );
        }
        assert_eq!(fs::read_dir(s.tmp_dir()).unwrap().count(), 0);
    }
}
