//! What a base image already holds: the owner and mode of its directories,
//! so that a source layer's parent directories can keep them (see
//! [`crate::layer`]).

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read};
use std::path::PathBuf;

use crate::digest::Digest;
use crate::layer::ParentDir;
use crate::store::{Store, StoreError, StoredImage, descriptor_digest};

/// Why a base image's layers could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InspectBaseError {
    /// A layer blob is unreadable or not a (gzip'd) tar.
    #[error("cannot read base layer {digest} (`{path}`): {source}; re-import the base image")]
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
    let wanted: BTreeMap<String, &str> = paths
        .iter()
        .map(|p| (normalise(p.as_bytes()), *p))
        .collect();
    let mut found: BTreeMap<String, ParentDir> = BTreeMap::new();
    for layer in image.manifest.layers() {
        let digest = descriptor_digest(layer, "base layer descriptor")?;
        let path = store.blob_path(&digest);
        let fail = |source| InspectBaseError::Layer {
            digest,
            path: path.clone(),
            source,
        };
        let file = store.open_blob(&digest)?;
        let mut reader = BufReader::new(file);
        let gzip = reader.fill_buf().map_err(fail)?.starts_with(&[0x1f, 0x8b]);
        let reader: Box<dyn Read> = if gzip {
            Box::new(flate2::read::GzDecoder::new(reader))
        } else {
            Box::new(reader)
        };
        let mut archive = tar::Archive::new(reader);
        for entry in archive.entries().map_err(fail)? {
            let entry = entry.map_err(fail)?;
            let rel = normalise(&entry.path_bytes());
            let (dir, name) = rel.rsplit_once('/').unwrap_or(("", rel.as_str()));
            if name == ".wh..wh..opq" {
                // Opaque directory: what lower layers had inside it is gone.
                found.retain(|p, _| !is_below(p, dir));
                continue;
            }
            if let Some(removed) = name.strip_prefix(".wh.") {
                let removed = join(dir, removed);
                found.retain(|p, _| p != &removed && !is_below(p, &removed));
                continue;
            }
            let Some(original) = wanted.get(&rel) else {
                continue;
            };
            let h = entry.header();
            if h.entry_type().is_dir() {
                found.insert(
                    rel,
                    ParentDir {
                        path: (*original).to_owned(),
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
                    },
                );
            } else {
                found.remove(&rel);
            }
        }
    }
    Ok(found.into_values().collect())
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
