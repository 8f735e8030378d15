//! What a source layer is made of, shared by the walk that plans it, the
//! cache that remembers it and the writer that produces it: the mapping and
//! options a caller gives, the layer that results, the planned entries, and
//! the errors of all three. A module of its own so that those three depend
//! on it and not on each other.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use oci_spec::image::{Descriptor, MediaType};

use crate::digest::Digest;
use crate::epoch::SourceDateEpoch;
use crate::exclude::PatternError;
use crate::store::StoreError;

/// A directory above (or at) the target whose metadata the layer must carry,
/// typically because the base image has it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ParentDir {
    /// Absolute path in the image, e.g. `/home/broker`.
    pub path: String,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Permission bits, e.g. `0o755`.
    pub mode: u32,
}

/// How a source directory maps into the image.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LayerMapping {
    /// The source directory on this machine (its path never reaches the
    /// layer or the cache key).
    pub source: PathBuf,
    /// Absolute directory in the image that receives the tree's contents.
    pub target: String,
    /// Owner of everything from the tree and of the target directory.
    pub uid: u32,
    /// Group of everything from the tree and of the target directory.
    pub gid: u32,
    /// `.dockerignore` patterns, applied after
    /// [`DEFAULT_EXCLUDES`](crate::exclude::DEFAULT_EXCLUDES).
    pub excludes: Vec<String>,
    /// When not empty, only paths matching one of these patterns (or inside
    /// a matching directory) are taken. A pattern without wildcards naming a
    /// secret-looking file is what allows that file in.
    pub includes: Vec<String>,
    /// Directories at or above the target with the metadata to give them
    /// (those the base image has). Others above the target are root 0755.
    pub parents: Vec<ParentDir>,
    /// The mtime of every entry.
    pub epoch: SourceDateEpoch,
}

impl LayerMapping {
    /// Map `source` to `target`, owned by root, default excludes only.
    #[must_use]
    pub fn new(source: impl Into<PathBuf>, target: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            target: target.into(),
            uid: 0,
            gid: 0,
            excludes: Vec::new(),
            includes: Vec::new(),
            parents: Vec::new(),
            epoch: SourceDateEpoch::DEFAULT,
        }
    }
}

/// How to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerOptions {
    /// Compression (and hashing) threads; the bytes do not depend on it.
    pub threads: usize,
    /// Reuse a layer built earlier from identical inputs.
    pub use_cache: bool,
}

impl Default for LayerOptions {
    fn default() -> Self {
        Self {
            threads: std::thread::available_parallelism().map_or(1, usize::from),
            use_cache: true,
        }
    }
}

/// A source layer in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceLayer {
    /// sha256 of the gzip blob.
    pub digest: Digest,
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    /// Size of the gzip blob.
    pub size: u64,
    /// Size of the uncompressed tar.
    pub uncompressed_size: u64,
    /// Where in the image the tree went.
    pub target: String,
    /// Number of tar entries.
    pub entries: usize,
    /// Whether the layer came from the cache (no tar, no gzip this time).
    pub from_cache: bool,
}

impl SourceLayer {
    /// The layer's descriptor (OCI gzip layer media type).
    #[must_use]
    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(
            MediaType::ImageLayerGzip,
            self.size,
            crate::oci_digest::to_oci(&self.digest),
        )
    }
}

/// Why a source layer could not be built. Each message names the path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildLayerError {
    /// The source is missing or not a directory.
    #[error(
        "source `{}` is not a directory: point the mapping at the tree to bake in",
        escaped(path)
    )]
    SourceNotADirectory {
        /// The source path.
        path: PathBuf,
    },
    /// The target or a parent path is not a clean absolute path.
    #[error(
        "image path `{path}` must be absolute without `.`, `..` or empty components: fix the mapping"
    )]
    InvalidImagePath {
        /// The path as given.
        path: String,
    },
    /// A parent directory that is not above the target.
    #[error(
        "parent `{path}` is not a directory above the target `{target}`: remove it from the mapping"
    )]
    NotAParent {
        /// The parent path.
        path: String,
        /// The target.
        target: String,
    },
    /// A bad exclude or include pattern.
    #[error(transparent)]
    Pattern(#[from] PatternError),
    /// A file or directory cannot be read.
    #[error("cannot read `{}` (fix its permissions or exclude it)", escaped(path))]
    Unreadable {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A name that is not UTF-8.
    #[error(
        "`{}` has a name or link target that is not valid UTF-8: rename it or exclude it",
        escaped(path)
    )]
    NonUtf8Name {
        /// The path (shown with its bytes that are not UTF-8 escaped).
        path: PathBuf,
    },
    /// A symlink whose target leaves the tree.
    #[error(
        "symlink `{}` points to `{target}`, outside the source tree: make it relative and inside the tree, or exclude it",
        escaped(path)
    )]
    SymlinkEscapes {
        /// The link.
        path: PathBuf,
        /// Its target as stored.
        target: String,
    },
    /// A device, socket or fifo.
    #[error(
        "`{}` is a {kind}, which a layer cannot hold: exclude it",
        escaped(path)
    )]
    SpecialFile {
        /// The path.
        path: PathBuf,
        /// "fifo", "socket", "block device" or "character device".
        kind: &'static str,
    },
    /// A file that looks like it holds a secret.
    #[error(
        "`{}` looks like a secret and is refused: exclude it, or list `{rel}` in the mapping's includes to bake it in",
        escaped(path)
    )]
    SecretRefused {
        /// The path.
        path: PathBuf,
        /// Its path relative to the source, as an include would name it.
        rel: String,
    },
    /// A file changed while the layer was written.
    #[error(
        "`{}` changed while the layer was being built: build again once nothing writes to the tree",
        escaped(path)
    )]
    ChangedWhileBuilding {
        /// The path.
        path: PathBuf,
    },
    /// Writing the layer blob failed.
    #[error(
        "cannot write the layer blob `{}` (check free space in the store)",
        escaped(path)
    )]
    Write {
        /// The blob's temporary file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A store operation failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// `path` as a message shows it: bytes that are not UTF-8 escaped as
/// `\xNN` (`bad\xff\xfename.py`), so the file can be found and named in an
/// exclude, where `Path::display` would show U+FFFD.
pub(crate) fn escaped(path: &std::path::Path) -> String {
    use std::fmt::Write;
    use std::os::unix::ffi::OsStrExt;
    let mut shown = String::new();
    for chunk in path.as_os_str().as_bytes().utf8_chunks() {
        shown.push_str(chunk.valid());
        for byte in chunk.invalid() {
            let _ = write!(shown, "\\x{byte:02x}");
        }
    }
    shown
}

/// What an entry is, with what its header needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    Dir,
    File,
    Symlink(String),
    HardLink(String),
}

/// Identity and state of a source file when the tree was walked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileStat {
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
}

impl FileStat {
    pub(crate) fn of(m: &fs::Metadata) -> Self {
        Self {
            dev: m.dev(),
            ino: m.ino(),
            nlink: m.nlink(),
            size: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
        }
    }
}

/// One tar entry to write.
#[derive(Debug, Clone)]
pub(crate) struct PlannedEntry {
    /// Path in the image, relative, no trailing `/`.
    pub tar_path: String,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Regular files: where to read them and their stat at walk time.
    pub source: Option<(PathBuf, FileStat)>,
}

impl PlannedEntry {
    pub(crate) fn size(&self) -> u64 {
        match (&self.kind, &self.source) {
            (Kind::File, Some((_, st))) => st.size,
            _ => 0,
        }
    }
}

/// The sorted, validated list of entries of one layer.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub entries: Vec<PlannedEntry>,
    pub epoch: SourceDateEpoch,
}
