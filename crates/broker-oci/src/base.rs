//! What a base image already holds: the owner and mode of its directories,
//! so that a source layer's parent directories can keep them (see
//! [`crate::layer`]).

use std::collections::BTreeMap;
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
    fn paths_are_normalised() {
        assert_eq!(normalise(b"./home/broker/"), "home/broker");
        assert_eq!(normalise(b"/home//broker"), "home/broker");
        assert!(is_below("home/broker", "home"));
        assert!(!is_below("homer", "home"));
        assert!(!is_below("home", "home"));
    }
}
