//! What a base image already holds: the owner and mode of its directories,
//! so that a source layer's parent directories can keep them (see
//! [`crate::layer`]).

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufRead, BufReader, Read, Seek};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use crate::digest::Digest;
use crate::layer::ParentDir;
use crate::store::{Store, StoreError, StoredImage, descriptor_digest};

/// Why a base image's layers could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InspectBaseError {
    /// A layer blob is unreadable or not a (gzip'd) tar.
    #[error("cannot read base layer {digest} (`{path}`; re-import the base image)")]
    Layer {
        /// The layer's digest.
        digest: Digest,
        /// The blob file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A store operation failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What one layer does to the directory tree, in tar order: all that
/// [`dir_metadata`] needs, small enough to cache per layer digest so a base
/// shared by several images (or builds) is decompressed once.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum Event {
    /// A directory entry with its owner and permission bits.
    Dir {
        path: String,
        uid: u32,
        gid: u32,
        mode: u32,
    },
    /// Anything else at `path` (it hides a directory of a lower layer).
    Other { path: String },
    /// `.wh..wh..opq` in `dir`: lower layers' contents of `dir` are gone.
    Opaque { dir: String },
    /// `.wh.<name>`: `path` and everything below it are gone.
    Whiteout { path: String },
}

/// The owner and mode of each of `paths` (absolute, e.g. `/home/broker`)
/// that is a directory in `image`, as the last layer touching it left it.
/// Paths the image does not have (or has as something else) are left out.
///
/// # Errors
/// A layer is missing, unreadable, or not a tar (plain or gzip).
pub fn dir_metadata(
    store: &Store,
    image: &StoredImage,
    paths: &[&str],
) -> Result<Vec<ParentDir>, InspectBaseError> {
    // The answer for this image and these paths is tiny: cache it too, so a
    // rebuild does not even parse the layers' event lists.
    let image_digest = image.digest()?;
    let key = Digest::of(format!("{image_digest}\n{}", paths.join("\n")).as_bytes());
    let answer = store
        .cache_dir()
        .join("dir-metadata")
        .join(format!("{}.json", key.hex()));
    if let Some(found) = std::fs::read(&answer)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
    {
        return Ok(found);
    }
    let wanted: BTreeMap<String, &str> = paths
        .iter()
        .map(|p| (normalise(p.as_bytes()), *p))
        .collect();
    let mut found: BTreeMap<String, ParentDir> = BTreeMap::new();
    for layer in image.manifest.layers() {
        let digest = descriptor_digest(layer, "base layer descriptor")?;
        for event in layer_events(store, &digest)? {
            match event {
                Event::Opaque { dir } => found.retain(|p, _| !is_below(p, &dir)),
                Event::Whiteout { path } => found.retain(|p, _| p != &path && !is_below(p, &path)),
                Event::Other { path } => {
                    found.remove(&path);
                }
                Event::Dir {
                    path,
                    uid,
                    gid,
                    mode,
                } => {
                    if let Some(original) = wanted.get(&path) {
                        let original = (*original).to_owned();
                        found.insert(
                            path,
                            ParentDir {
                                path: original,
                                uid,
                                gid,
                                mode,
                            },
                        );
                    }
                }
            }
        }
    }
    let found: Vec<ParentDir> = found.into_values().collect();
    if let Ok(bytes) = serde_json::to_vec(&found) {
        // A cache that cannot be written only costs time next run.
        let _ = store.write_file_atomically(&answer, &bytes);
    }
    Ok(found)
}

/// Where the events of layer `digest` are cached.
fn events_path(store: &Store, digest: &Digest) -> PathBuf {
    store
        .cache_dir()
        .join("layer-dirs")
        .join(format!("{}.json", digest.hex()))
}

/// Caches the events of layer `digest` from its uncompressed tar, which
/// `open` gives (seekable: only the headers are read), unless they are
/// cached already. An importer calls this while it has the tar at hand,
/// so [`dir_metadata`] never decompresses the layer.
///
/// # Errors
/// The tar cannot be opened or read.
pub(crate) fn note_layer_events<R: Read + Seek>(
    store: &Store,
    digest: &Digest,
    open: impl FnOnce() -> io::Result<R>,
) -> io::Result<()> {
    let cache = events_path(store, digest);
    if cache.is_file() {
        return Ok(());
    }
    let mut archive = tar::Archive::new(open()?);
    let events = tar_events(archive.entries_with_seek()?)?;
    if let Ok(bytes) = serde_json::to_vec(&events) {
        // A cache that cannot be written only costs time next run.
        let _ = store.write_file_atomically(&cache, &bytes);
    }
    Ok(())
}

/// The events of layer `digest`, from the store's cache or by reading the
/// layer once. Concurrent callers in this process wait for one reading.
fn layer_events(store: &Store, digest: &Digest) -> Result<Vec<Event>, InspectBaseError> {
    static READING: Mutex<BTreeMap<Digest, Arc<Mutex<()>>>> = Mutex::new(BTreeMap::new());
    let cache = events_path(store, digest);
    let read_cache = || {
        std::fs::read(&cache)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
    };
    if let Some(events) = read_cache() {
        return Ok(events);
    }
    let one = {
        let mut reading = READING.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(reading.entry(*digest).or_default())
    };
    let _guard = one.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(events) = read_cache() {
        return Ok(events);
    }
    let events = read_layer_events(store, digest)?;
    if let Ok(bytes) = serde_json::to_vec(&events) {
        // A cache that cannot be written only costs time next run.
        let _ = store.write_file_atomically(&cache, &bytes);
    }
    Ok(events)
}

fn read_layer_events(store: &Store, digest: &Digest) -> Result<Vec<Event>, InspectBaseError> {
    let path = store.blob_path(digest);
    let fail = |source| InspectBaseError::Layer {
        digest: *digest,
        path: path.clone(),
        source,
    };
    let file = store.open_blob(digest)?;
    let mut reader = BufReader::new(file);
    let gzip = reader.fill_buf().map_err(fail)?.starts_with(&[0x1f, 0x8b]);
    let reader: Box<dyn Read> = if gzip {
        Box::new(flate2::read::GzDecoder::new(reader))
    } else {
        Box::new(reader)
    };
    let mut archive = tar::Archive::new(reader);
    tar_events(archive.entries().map_err(fail)?).map_err(fail)
}

/// What the entries of one layer tar do to the directory tree.
fn tar_events<R: Read>(entries: tar::Entries<'_, R>) -> io::Result<Vec<Event>> {
    let mut events = Vec::new();
    for entry in entries {
        let entry = entry?;
        let rel = normalise(&entry.path_bytes());
        let (dir, name) = rel.rsplit_once('/').unwrap_or(("", rel.as_str()));
        if name == ".wh..wh..opq" {
            events.push(Event::Opaque {
                dir: dir.to_owned(),
            });
        } else if let Some(removed) = name.strip_prefix(".wh.") {
            events.push(Event::Whiteout {
                path: join(dir, removed),
            });
        } else if entry.header().entry_type().is_dir() {
            let h = entry.header();
            events.push(Event::Dir {
                uid: h
                    .uid()
                    .ok()
                    .and_then(|u| u32::try_from(u).ok())
                    .unwrap_or(0),
                gid: h
                    .gid()
                    .ok()
                    .and_then(|g| u32::try_from(g).ok())
                    .unwrap_or(0),
                mode: h.mode().map_or(0o755, |m| m & 0o7777),
                path: rel,
            });
        } else {
            events.push(Event::Other { path: rel });
        }
    }
    Ok(events)
}

/// What one path of an image's merged file tree is, as the topmost layer
/// holding it left it.
enum Node {
    Dir,
    /// A file (or anything else with content) in the layer with this index.
    File(usize),
    Symlink(String),
    /// A hard link to this path (tar links name the first occurrence).
    Hardlink(String),
}

/// How many symbolic links one lookup follows before giving up (the
/// kernel's limit).
const MAX_SYMLINKS: usize = 40;

/// What one layer holds, as [`file_head`] reads it: each entry in tar
/// order, a regular file with its first bytes.
enum Listed {
    /// `.wh..wh..opq` in this directory.
    Opaque(String),
    /// `.wh.<name>`: this path is gone.
    Whiteout(String),
    Dir(String),
    Symlink(String, String),
    Hardlink(String, String),
    File(String, Vec<u8>),
}

/// The layer listings [`file_head`] reads, kept for a run: images sharing
/// a base (all three of the broker's) decompress its layers once, not once
/// per image. Concurrent callers wait for the one reading a layer; a
/// failed reading is not kept.
#[derive(Default)]
pub struct LayerListings {
    layers: Mutex<HashMap<(Digest, usize), OneListing>>,
}

/// One layer's listing, once read; its lock held while it is read.
type OneListing = Arc<Mutex<Option<Arc<Vec<Listed>>>>>;

impl std::fmt::Debug for LayerListings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let layers = self.layers.lock().map_or(0, |l| l.len());
        write!(f, "LayerListings({layers} layers)")
    }
}

impl LayerListings {
    /// The listing of layer `digest` with files' first `len` bytes.
    fn get(
        &self,
        store: &Store,
        digest: &Digest,
        len: usize,
    ) -> Result<Arc<Vec<Listed>>, InspectBaseError> {
        let one = {
            let mut layers = self.layers.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(layers.entry((*digest, len)).or_default())
        };
        let mut listing = one.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(listed) = listing.as_ref() {
            return Ok(Arc::clone(listed));
        }
        let listed = Arc::new(list_layer(store, digest, len)?);
        *listing = Some(Arc::clone(&listed));
        Ok(listed)
    }
}

fn list_layer(store: &Store, digest: &Digest, len: usize) -> Result<Vec<Listed>, InspectBaseError> {
    let fail = layer_error(store, digest);
    let mut archive = tar::Archive::new(open_layer(store, digest)?);
    let mut listed = Vec::new();
    for entry in archive.entries().map_err(&fail)? {
        let mut entry = entry.map_err(&fail)?;
        let rel = normalise(&entry.path_bytes());
        let (dir, name) = rel.rsplit_once('/').unwrap_or(("", rel.as_str()));
        if name == ".wh..wh..opq" {
            listed.push(Listed::Opaque(dir.to_owned()));
            continue;
        }
        if let Some(removed) = name.strip_prefix(".wh.") {
            listed.push(Listed::Whiteout(join(dir, removed)));
            continue;
        }
        let kind = entry.header().entry_type();
        let link = || {
            entry
                .link_name_bytes()
                .map(|l| String::from_utf8_lossy(&l).into_owned())
                .unwrap_or_default()
        };
        listed.push(if kind.is_dir() {
            Listed::Dir(rel)
        } else if kind.is_symlink() {
            let target = link();
            Listed::Symlink(rel, target)
        } else if kind.is_hard_link() {
            let target = normalise(link().as_bytes());
            Listed::Hardlink(rel, target)
        } else {
            let mut head = Vec::with_capacity(len.min(4096));
            (&mut entry)
                .take(len as u64)
                .read_to_end(&mut head)
                .map_err(&fail)?;
            Listed::File(rel, head)
        });
    }
    Ok(listed)
}

/// The first `len` bytes (fewer if the file is shorter) of the file at
/// `path` (absolute, e.g. `/bin/sh`) in `image`, following symbolic links
/// (`/bin` → `usr/bin`, `sh` → `dash`) and hard links through the merged
/// layers; `None` when the image has no such file. Each layer is read once
/// per `listings`, keeping the first `len` bytes of each file on the way
/// (which file the path names is known only once every layer is merged).
/// Meant for a check after a deps build, not for every build.
///
/// # Errors
/// A layer is missing, unreadable, or not a tar (plain or gzip).
pub fn file_head(
    store: &Store,
    image: &StoredImage,
    path: &str,
    len: usize,
    listings: &LayerListings,
) -> Result<Option<Vec<u8>>, InspectBaseError> {
    let mut layers = Vec::new();
    for layer in image.manifest.layers() {
        let digest = descriptor_digest(layer, "layer descriptor")?;
        layers.push(listings.get(store, &digest, len)?);
    }
    let mut tree: BTreeMap<String, Node> = BTreeMap::new();
    // The heads of the files `tree` names, by layer and path.
    let mut heads: HashMap<(usize, &str), &[u8]> = HashMap::new();
    for (index, listed) in layers.iter().enumerate() {
        for entry in listed.iter() {
            let (rel, node) = match entry {
                Listed::Opaque(dir) => {
                    tree.retain(|p, _| !is_below(p, dir));
                    continue;
                }
                Listed::Whiteout(gone) => {
                    tree.retain(|p, _| p != gone && !is_below(p, gone));
                    continue;
                }
                Listed::Dir(rel) => (rel, Node::Dir),
                Listed::Symlink(rel, target) => (rel, Node::Symlink(target.clone())),
                Listed::Hardlink(rel, target) => (rel, Node::Hardlink(target.clone())),
                Listed::File(rel, head) => {
                    heads.insert((index, rel.as_str()), head.as_slice());
                    (rel, Node::File(index))
                }
            };
            tree.insert(rel.clone(), node);
        }
    }
    let Some((found, layer)) = resolve_file(&tree, path) else {
        return Ok(None);
    };
    Ok(heads
        .get(&(layer, found.as_str()))
        .map(|head| head.to_vec()))
}

/// The path of the file `path` names in `tree` after every link, and the
/// layer holding it.
fn resolve_file(tree: &BTreeMap<String, Node>, path: &str) -> Option<(String, usize)> {
    let mut wanted = clean("", path);
    for _ in 0..MAX_SYMLINKS {
        let parts: Vec<&str> = wanted.split('/').filter(|p| !p.is_empty()).collect();
        let mut current = String::new();
        let mut redirected = None;
        for (k, part) in parts.iter().enumerate() {
            let next = join(&current, part);
            match tree.get(&next)? {
                Node::Symlink(target) => {
                    let from = if target.starts_with('/') {
                        ""
                    } else {
                        current.as_str()
                    };
                    let rest = parts[k + 1..].join("/");
                    redirected = Some(clean(from, &format!("{target}/{rest}")));
                    break;
                }
                Node::Hardlink(target) if k + 1 == parts.len() => {
                    redirected = Some(target.clone());
                    break;
                }
                Node::File(layer) if k + 1 == parts.len() => return Some((next, *layer)),
                // A file in the middle of a path: nothing below it.
                Node::File(_) | Node::Hardlink(_) => return None,
                Node::Dir => current = next,
            }
        }
        wanted = redirected?;
    }
    None
}

/// `path` (relative to `dir`, or absolute) with `.` and `..` resolved
/// lexically, as `a/b/c`.
fn clean(dir: &str, path: &str) -> String {
    let mut parts: Vec<&str> = if path.starts_with('/') {
        Vec::new()
    } else {
        dir.split('/').filter(|p| !p.is_empty()).collect()
    };
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    parts.join("/")
}

/// Layer `digest` of the store as a tar stream, gunzipped when it is gzip.
fn open_layer(store: &Store, digest: &Digest) -> Result<Box<dyn Read>, InspectBaseError> {
    let file = store.open_blob(digest)?;
    let mut reader = BufReader::new(file);
    let gzip = reader
        .fill_buf()
        .map_err(layer_error(store, digest))?
        .starts_with(&[0x1f, 0x8b]);
    Ok(if gzip {
        Box::new(flate2::read::GzDecoder::new(reader))
    } else {
        Box::new(reader)
    })
}

fn layer_error(store: &Store, digest: &Digest) -> impl Fn(io::Error) -> InspectBaseError {
    let path = store.blob_path(digest);
    let digest = *digest;
    move |source| InspectBaseError::Layer {
        digest,
        path: path.clone(),
        source,
    }
}

/// The `e_machine` of an ELF header (its first 20 bytes suffice), `None`
/// when `head` is not ELF (a script, say).
#[must_use]
pub fn elf_machine(head: &[u8]) -> Option<u16> {
    if head.len() < 20 || &head[..4] != b"\x7fELF" {
        return None;
    }
    let bytes = [head[18], head[19]];
    Some(match head[5] {
        2 => u16::from_be_bytes(bytes),
        _ => u16::from_le_bytes(bytes),
    })
}

/// A tar or image path as `a/b/c`: no leading `./` or `/`, no trailing `/`.
fn normalise(p: &[u8]) -> String {
    let s = String::from_utf8_lossy(p);
    s.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

fn is_below(path: &str, dir: &str) -> bool {
    dir.is_empty()
        || (path.len() > dir.len() && path.starts_with(dir) && path.as_bytes()[dir.len()] == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_followed_through_the_merged_tree() {
        let tree: BTreeMap<String, Node> = [
            ("bin", Node::Symlink("usr/bin".into())),
            ("usr", Node::Dir),
            ("usr/bin", Node::Dir),
            ("usr/bin/sh", Node::Symlink("dash".into())),
            ("usr/bin/dash", Node::File(1)),
            (
                "usr/bin/python3",
                Node::Symlink("../../opt/py/bin/python3.11".into()),
            ),
            ("opt", Node::Dir),
            ("opt/py", Node::Dir),
            ("opt/py/bin", Node::Dir),
            (
                "opt/py/bin/python3.11",
                Node::Hardlink("usr/bin/dash".into()),
            ),
            ("loop", Node::Symlink("/loop".into())),
        ]
        .into_iter()
        .map(|(p, n)| (p.to_owned(), n))
        .collect();
        assert_eq!(
            resolve_file(&tree, "/bin/sh"),
            Some(("usr/bin/dash".into(), 1))
        );
        assert_eq!(
            resolve_file(&tree, "/bin/python3"),
            Some(("usr/bin/dash".into(), 1))
        );
        assert_eq!(resolve_file(&tree, "/bin/nothing"), None);
        assert_eq!(resolve_file(&tree, "/loop"), None);
        assert_eq!(resolve_file(&tree, "/usr/bin/dash/x"), None);
        let mut elf = b"\x7fELF\x02\x01\x01".to_vec();
        elf.resize(18, 0);
        elf.extend(0xb7u16.to_le_bytes());
        assert_eq!(elf_machine(&elf), Some(0xb7));
        assert_eq!(elf_machine(b"#!/bin/sh\necho hi\n"), None);
    }

    #[test]
    fn paths_are_normalised() {
        assert_eq!(normalise(b"./home/broker/"), "home/broker");
        assert_eq!(normalise(b"/home//broker"), "home/broker");
        assert!(is_below("home/broker", "home"));
        assert!(!is_below("homer", "home"));
        assert!(!is_below("home", "home"));
    }
}
