//! Deterministic source layers: a source tree becomes a gzip'd tar whose bytes
//! depend only on the files' contents, names and the mapping — never on the
//! machine, the checkout path, mtimes, umask or the order the tree was walked.
//!
//! The conventions (see the design notes) are: entries sorted bytewise by
//! full path, parents before children; every mtime is the
//! [`SourceDateEpoch`]; owner from the mapping, empty user and group names;
//! modes normalised to 0755 for directories and executables, 0644 for other
//! files, 0777 for symlinks; PAX headers for long or non-ASCII names; hard
//! links point at the first occurrence; symlinks only when they stay inside
//! the tree; no devices, sockets or fifos.
//!
//! # Directories above the target
//!
//! The layer emits the target directory and every directory above it. A
//! directory above the target that the base image already has must keep the
//! base's owner and mode, so the caller lists those in
//! [`LayerMapping::parents`] (see `base::dir_metadata` to read them
//! from the base's layers) and the layer emits them with exactly that
//! metadata. Leaving them out of the tar is not enough: Docker's overlay2
//! driver unpacks each layer into its own directory and creates a missing
//! parent as root 0755 there, and the upper directory's owner is what the
//! container sees — the very "parent directories reset to root" bug Jib had.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, MediaType};

use crate::archive::{self, EntryType, Header};
use crate::cache;
use crate::digest::Digest;
use crate::epoch::SourceDateEpoch;
use crate::exclude::{PatternError, PatternList, is_secret_name};
use crate::gzip::{self, Compressed};
use crate::store::{Store, StoreError};

/// A directory above (or at) the target whose metadata the layer must carry,
/// typically because the base image has it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq)]
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
    #[error("source `{path}` is not a directory: point the mapping at the tree to bake in")]
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
    #[error("cannot read `{path}` (fix its permissions or exclude it)")]
    Unreadable {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A name that is not UTF-8.
    #[error("`{}` has a name or link target that is not valid UTF-8: rename it or exclude it", path.display())]
    NonUtf8Name {
        /// The path (shown lossily).
        path: PathBuf,
    },
    /// A symlink whose target leaves the tree.
    #[error(
        "symlink `{path}` points to `{target}`, outside the source tree: make it relative and inside the tree, or exclude it"
    )]
    SymlinkEscapes {
        /// The link.
        path: PathBuf,
        /// Its target as stored.
        target: String,
    },
    /// A device, socket or fifo.
    #[error("`{path}` is a {kind}, which a layer cannot hold: exclude it")]
    SpecialFile {
        /// The path.
        path: PathBuf,
        /// "fifo", "socket", "block device" or "character device".
        kind: &'static str,
    },
    /// A file that looks like it holds a secret.
    #[error(
        "`{path}` looks like a secret and is refused: exclude it, or list `{rel}` in the mapping's includes to bake it in"
    )]
    SecretRefused {
        /// The path.
        path: PathBuf,
        /// Its path relative to the source, as an include would name it.
        rel: String,
    },
    /// A file changed while the layer was written.
    #[error(
        "`{path}` changed while the layer was being built: build again once nothing writes to the tree"
    )]
    ChangedWhileBuilding {
        /// The path.
        path: PathBuf,
    },
    /// Writing the layer blob failed.
    #[error("cannot write the layer blob `{path}` (check free space in the store)")]
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

/// Build the layer for `mapping` into the store, or take it from the cache
/// when an identical tree was built before.
///
/// # Errors
/// See [`BuildLayerError`]; on error no blob is added to the store.
pub fn build_layer(
    store: &Store,
    mapping: &LayerMapping,
    options: &LayerOptions,
) -> Result<SourceLayer, BuildLayerError> {
    let plan = scan(mapping)?;
    if !options.use_cache {
        return write_to_store(store, mapping, &plan, options.threads);
    }
    let mut hashes = cache::FileHashes::load(store, &mapping.source);
    let contents = hashes.hash_all(&plan, options.threads)?;
    let key = cache::layer_key(&plan, &contents);
    if let Some(hit) = cache::lookup(store, &key) {
        hashes.save(store)?;
        return Ok(SourceLayer {
            digest: hit.digest,
            diff_id: hit.diff_id,
            size: hit.size,
            uncompressed_size: hit.uncompressed_size,
            target: mapping.target.clone(),
            entries: plan.entries.len(),
            from_cache: true,
        });
    }
    let layer = write_to_store(store, mapping, &plan, options.threads)?;
    cache::record(store, &key, &layer)?;
    hashes.save(store)?;
    Ok(layer)
}

/// Write the layer for `mapping` as gzip into `sink` (no store, no cache).
///
/// # Errors
/// See [`BuildLayerError`].
pub fn write_layer<W: Write + Send>(
    mapping: &LayerMapping,
    sink: W,
    threads: usize,
) -> Result<(W, Compressed), BuildLayerError> {
    let plan = scan(mapping)?;
    write_plan(&plan, sink, threads, Path::new("<output>"))
}

fn write_to_store(
    store: &Store,
    mapping: &LayerMapping,
    plan: &Plan,
    threads: usize,
) -> Result<SourceLayer, BuildLayerError> {
    let blob = store.blob_writer()?;
    let temp = blob.temp_path().to_path_buf();
    let (blob, c) = write_plan(plan, blob, threads, &temp)?;
    let (digest, size) = blob.finish()?;
    debug_assert_eq!(digest, c.digest);
    Ok(SourceLayer {
        digest,
        diff_id: c.diff_id,
        size,
        uncompressed_size: c.uncompressed_size,
        target: mapping.target.clone(),
        entries: plan.entries.len(),
        from_cache: false,
    })
}

/// Errors inside the compression pipeline: the layer's own, or the sink's.
enum Produce {
    Layer(BuildLayerError),
    Io(io::Error),
}

impl From<io::Error> for Produce {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

fn write_plan<W: Write + Send>(
    plan: &Plan,
    sink: W,
    threads: usize,
    sink_path: &Path,
) -> Result<(W, Compressed), BuildLayerError> {
    gzip::compress(sink, threads, |w| write_tar(plan, w)).map_err(|e| match e {
        Produce::Layer(e) => e,
        Produce::Io(source) => BuildLayerError::Write {
            path: sink_path.to_path_buf(),
            source,
        },
    })
}

fn write_tar(plan: &Plan, w: &mut dyn Write) -> Result<(), Produce> {
    let mut buf = vec![0u8; 256 * 1024];
    let mtime = plan.epoch.seconds();
    for e in &plan.entries {
        let (kind, link) = match &e.kind {
            Kind::Dir => (EntryType::Directory, ""),
            Kind::File => (EntryType::File, ""),
            Kind::Symlink(t) => (EntryType::Symlink, t.as_str()),
            Kind::HardLink(t) => (EntryType::HardLink, t.as_str()),
        };
        let size = e.size();
        archive::write_header(
            w,
            &Header {
                path: &e.tar_path,
                kind,
                mode: e.mode,
                uid: e.uid,
                gid: e.gid,
                size,
                mtime,
                link,
            },
        )?;
        if let (Kind::File, Some((path, stat))) = (&e.kind, &e.source) {
            copy_file(path, stat, w, &mut buf)?;
            archive::write_padding(w, size)?;
        }
    }
    archive::write_end(w)?;
    Ok(())
}

/// Copy exactly `stat.size` bytes of `path` into `w`, failing if the file is
/// not what the walk saw.
fn copy_file(
    path: &Path,
    stat: &FileStat,
    w: &mut dyn Write,
    buf: &mut [u8],
) -> Result<(), Produce> {
    let unreadable = |source| {
        Produce::Layer(BuildLayerError::Unreadable {
            path: path.to_path_buf(),
            source,
        })
    };
    let changed = || {
        Produce::Layer(BuildLayerError::ChangedWhileBuilding {
            path: path.to_path_buf(),
        })
    };
    let mut f = File::open(path).map_err(unreadable)?;
    let mut left = stat.size;
    while left > 0 {
        let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
        let n = match f.read(&mut buf[..want]) {
            Ok(0) => return Err(changed()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(unreadable(e)),
        };
        w.write_all(&buf[..n])?;
        left -= n as u64;
    }
    let after = f.metadata().map_err(unreadable)?;
    let now = FileStat::of(&after);
    if now.size != stat.size || now.mtime_ns != stat.mtime_ns || now.ctime_ns != stat.ctime_ns {
        return Err(changed());
    }
    Ok(())
}

/// Split an absolute image path into its components, refusing `.`, `..`
/// and empty components (a single trailing `/` is allowed).
fn image_components(path: &str) -> Result<Vec<&str>, BuildLayerError> {
    let bad = || BuildLayerError::InvalidImagePath {
        path: path.to_owned(),
    };
    let rest = path.strip_prefix('/').ok_or_else(bad)?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    let parts: Vec<&str> = rest.split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == ".." || p.contains('\0'))
    {
        return Err(bad());
    }
    Ok(parts)
}

/// Walk and validate the tree: the sorted entries of the layer.
pub(crate) fn scan(mapping: &LayerMapping) -> Result<Plan, BuildLayerError> {
    let target = image_components(&mapping.target)?;
    let target_rel = target.join("/");
    let mut parents: HashMap<String, &ParentDir> = HashMap::new();
    for p in &mapping.parents {
        let rel = image_components(&p.path)?.join("/");
        let above = rel == target_rel
            || (!rel.is_empty()
                && target_rel.starts_with(&rel)
                && target_rel.as_bytes()[rel.len()] == b'/');
        if !above {
            return Err(BuildLayerError::NotAParent {
                path: p.path.clone(),
                target: mapping.target.clone(),
            });
        }
        parents.insert(rel, p);
    }

    let root_meta =
        fs::metadata(&mapping.source).map_err(|_| BuildLayerError::SourceNotADirectory {
            path: mapping.source.clone(),
        })?;
    if !root_meta.is_dir() {
        return Err(BuildLayerError::SourceNotADirectory {
            path: mapping.source.clone(),
        });
    }

    let walker = Walker {
        excludes: PatternList::with_defaults(&mapping.excludes)?,
        includes: PatternList::new(&mapping.includes)?,
        uid: mapping.uid,
        gid: mapping.gid,
    };
    let mut found = Vec::new();
    walker.walk(&mapping.source, "", false, &mut found)?;

    let mut entries = Vec::with_capacity(found.len() + target.len());
    // The target and the directories above it.
    for depth in 1..=target.len() {
        let rel = target[..depth].join("/");
        let (uid, gid, mode) = match parents.get(&rel) {
            Some(p) => (p.uid, p.gid, p.mode & 0o7777),
            None if depth == target.len() => (mapping.uid, mapping.gid, 0o755),
            None => (0, 0, 0o755),
        };
        entries.push(PlannedEntry {
            tar_path: rel,
            kind: Kind::Dir,
            mode,
            uid,
            gid,
            source: None,
        });
    }
    for mut e in found {
        if !target_rel.is_empty() {
            e.tar_path = format!("{target_rel}/{}", e.tar_path);
        }
        entries.push(e);
    }
    entries.sort_by(|a, b| a.tar_path.as_bytes().cmp(b.tar_path.as_bytes()));

    // Hard links: every later path of the same inode links to the first.
    let mut first: HashMap<(u64, u64), String> = HashMap::new();
    for e in &mut entries {
        if let (Kind::File, Some((_, st))) = (&e.kind, &e.source)
            && st.nlink > 1
        {
            match first.get(&(st.dev, st.ino)) {
                Some(target) => {
                    e.kind = Kind::HardLink(target.clone());
                    e.source = None;
                }
                None => {
                    first.insert((st.dev, st.ino), e.tar_path.clone());
                }
            }
        }
    }
    Ok(Plan {
        entries,
        epoch: mapping.epoch,
    })
}

struct Walker {
    excludes: PatternList,
    includes: PatternList,
    uid: u32,
    gid: u32,
}

impl Walker {
    /// Walk `dir` (relative path `rel`, "" for the root) and push the
    /// entries to take, with paths relative to the source root. Returns
    /// whether anything below `dir` was taken.
    fn walk(
        &self,
        dir: &Path,
        rel: &str,
        dir_excluded: bool,
        out: &mut Vec<PlannedEntry>,
    ) -> Result<bool, BuildLayerError> {
        let unreadable = |path: &Path| {
            let path = path.to_path_buf();
            move |source| BuildLayerError::Unreadable { path, source }
        };
        let mut children = Vec::new();
        for entry in fs::read_dir(dir).map_err(unreadable(dir))? {
            let entry = entry.map_err(unreadable(dir))?;
            children.push(entry.file_name());
        }
        // Sorted for deterministic error reporting; the layer is sorted later.
        children.sort();
        let mut took_any = false;
        for name in children {
            let path = dir.join(&name);
            let Some(name) = name.to_str() else {
                return Err(BuildLayerError::NonUtf8Name { path });
            };
            let child_rel = if rel.is_empty() {
                name.to_owned()
            } else {
                format!("{rel}/{name}")
            };
            let meta = fs::symlink_metadata(&path).map_err(unreadable(&path))?;
            let excluded = self.excludes.matches_below(&child_rel, dir_excluded);
            let included = self.includes.is_empty() || self.includes.matches(&child_rel);
            let selected = !excluded && included;
            let ft = meta.file_type();

            if ft.is_dir() {
                if excluded && !self.excludes.has_negations() {
                    continue;
                }
                let below = self.walk(&path, &child_rel, excluded, out)?;
                if selected || below {
                    out.push(self.entry(child_rel, Kind::Dir, 0o755, None));
                    took_any = true;
                }
                continue;
            }
            if !selected {
                continue;
            }
            if is_secret_name(name) && !self.includes.names(&child_rel) {
                return Err(BuildLayerError::SecretRefused {
                    path,
                    rel: child_rel,
                });
            }
            let special = if ft.is_fifo() {
                Some("fifo")
            } else if ft.is_socket() {
                Some("socket")
            } else if ft.is_block_device() {
                Some("block device")
            } else if ft.is_char_device() {
                Some("character device")
            } else {
                None
            };
            if let Some(kind) = special {
                return Err(BuildLayerError::SpecialFile { path, kind });
            }
            if ft.is_symlink() {
                let target = fs::read_link(&path).map_err(unreadable(&path))?;
                let Some(target) = target.to_str() else {
                    return Err(BuildLayerError::NonUtf8Name { path });
                };
                if !stays_inside(rel, target) {
                    return Err(BuildLayerError::SymlinkEscapes {
                        path,
                        target: target.to_owned(),
                    });
                }
                out.push(self.entry(child_rel, Kind::Symlink(target.to_owned()), 0o777, None));
            } else {
                let mode = if meta.mode() & 0o111 != 0 {
                    0o755
                } else {
                    0o644
                };
                let stat = FileStat::of(&meta);
                out.push(self.entry(child_rel, Kind::File, mode, Some((path, stat))));
            }
            took_any = true;
        }
        Ok(took_any)
    }

    fn entry(
        &self,
        rel: String,
        kind: Kind,
        mode: u32,
        source: Option<(PathBuf, FileStat)>,
    ) -> PlannedEntry {
        PlannedEntry {
            tar_path: rel,
            kind,
            mode,
            uid: self.uid,
            gid: self.gid,
            source,
        }
    }
}

/// Whether a symlink in directory `dir_rel` (relative to the source root)
/// pointing at `target` resolves, lexically, to a path inside the root.
/// Absolute targets never do: on this machine they point outside the
/// checkout, and in the image they would mean something else.
fn stays_inside(dir_rel: &str, target: &str) -> bool {
    if target.starts_with('/') || target.is_empty() {
        return false;
    }
    let mut depth: usize = dir_rel.split('/').filter(|p| !p.is_empty()).count();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return false,
            },
            _ => depth += 1,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlink_containment_is_lexical() {
        assert!(stays_inside("", "a/b"));
        assert!(stays_inside("a", "../b"));
        assert!(stays_inside("a/b", "../../c"));
        assert!(stays_inside("a", "x/../../b"));
        assert!(!stays_inside("", "../x"));
        assert!(!stays_inside("a", "../../x"));
        assert!(!stays_inside("a", "/etc/passwd"));
        assert!(!stays_inside("a", ""));
    }

    #[test]
    fn image_paths_must_be_clean_and_absolute() {
        assert_eq!(image_components("/").unwrap(), Vec::<&str>::new());
        assert_eq!(image_components("/opt/app/").unwrap(), ["opt", "app"]);
        for bad in ["opt", "/opt/../x", "/opt//x", "/./x"] {
            assert!(image_components(bad).is_err(), "{bad}");
        }
    }
}
