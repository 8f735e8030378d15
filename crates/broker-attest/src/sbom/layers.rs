//! The files an image's filesystem ends up with, read from its layers
//! bottom first the way a container runtime stacks them: a later layer's
//! file replaces an earlier one, a whiteout (`.wh.NAME`) deletes `NAME`
//! and everything below it, an opaque marker (`.wh..wh..opq`) hides what
//! lower layers had in its directory. Only the files [`kind_of`] names are
//! kept, so memory follows the package metadata, not the image.

use std::collections::BTreeMap;
use std::io::Read;

use super::packages::{FileKind, kind_of};

/// The largest metadata file read: a Debian status database of a few
/// thousand packages is a few MB; anything far larger is not one.
const FILE_LIMIT: u64 = 64 << 20;

/// Why a layer could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LayerError {
    /// The layer is neither a tar nor a gzip-compressed tar.
    #[error("layer {layer} is not a tar archive (gzip-compressed or plain)")]
    NotTar {
        /// The layer's position, bottom first, from 1.
        layer: usize,
    },
    /// Reading it failed part-way.
    #[error("cannot read layer {layer}: {source}")]
    Read {
        /// The layer's position, bottom first, from 1.
        layer: usize,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A metadata file too large to be one.
    #[error("layer {layer}: /{path} is larger than {FILE_LIMIT} bytes")]
    TooLarge {
        /// The layer's position, bottom first, from 1.
        layer: usize,
        /// The file.
        path: String,
    },
}

/// The metadata files of a filesystem, by path (relative, no leading `/`).
#[derive(Debug, Default, Clone)]
pub struct Filesystem {
    files: BTreeMap<String, (FileKind, Vec<u8>)>,
    layers: usize,
}

/// Paths made relative and clean: tar writers emit `./a`, `/a` and `a/`.
fn clean(path: &str) -> String {
    path.trim_start_matches("./")
        .trim_start_matches('/')
        .trim_end_matches('/')
        .to_owned()
}

impl Filesystem {
    /// An empty filesystem.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The kept files, by path.
    pub fn files(&self) -> impl Iterator<Item = (&str, FileKind, &[u8])> {
        self.files
            .iter()
            .map(|(path, (kind, bytes))| (path.as_str(), *kind, bytes.as_slice()))
    }

    /// Stacks the next layer (`bytes` is its blob: gzip or plain tar).
    ///
    /// # Errors
    /// A layer that is not a tar, is truncated, or holds an oversized
    /// metadata file.
    pub fn apply(&mut self, blob: impl Read) -> Result<(), LayerError> {
        self.layers += 1;
        let layer = self.layers;
        let mut blob = std::io::BufReader::new(blob);
        let head = std::io::BufRead::fill_buf(&mut blob)
            .map_err(|source| LayerError::Read { layer, source })?;
        let reader: Box<dyn Read + '_> = if head.starts_with(&[0x1f, 0x8b]) {
            Box::new(flate2::bufread::GzDecoder::new(blob))
        } else if head.len() >= 262 && &head[257..262] == b"ustar" || head.is_empty() {
            Box::new(blob)
        } else {
            return Err(LayerError::NotTar { layer });
        };
        let read = |source| LayerError::Read { layer, source };
        let mut archive = tar::Archive::new(reader);
        let mut added: BTreeMap<String, (FileKind, Vec<u8>)> = BTreeMap::new();
        let (mut deleted, mut opaque) = (Vec::new(), Vec::new());
        for entry in archive.entries().map_err(read)? {
            let mut entry = entry.map_err(read)?;
            let path = clean(&String::from_utf8_lossy(&entry.path_bytes()));
            let (dir, name) = match path.rsplit_once('/') {
                Some((dir, name)) => (dir.to_owned(), name.to_owned()),
                None => (String::new(), path.clone()),
            };
            if name == ".wh..wh..opq" {
                opaque.push(dir);
                continue;
            }
            if let Some(hidden) = name.strip_prefix(".wh.") {
                if hidden.is_empty() {
                    continue;
                }
                deleted.push(if dir.is_empty() {
                    hidden.to_owned()
                } else {
                    format!("{dir}/{hidden}")
                });
                continue;
            }
            let Some(kind) = kind_of(&path) else {
                continue;
            };
            let kind_type = entry.header().entry_type();
            if kind_type.is_hard_link() {
                // The link's target is earlier in this layer or below it.
                let target = entry
                    .link_name_bytes()
                    .map(|t| clean(&String::from_utf8_lossy(&t)));
                let bytes = target.and_then(|t| {
                    added
                        .get(&t)
                        .or_else(|| self.files.get(&t))
                        .map(|(_, b)| b.clone())
                });
                if let Some(bytes) = bytes {
                    added.insert(path, (kind, bytes));
                }
                continue;
            }
            if !kind_type.is_file() {
                continue;
            }
            if entry.size() > FILE_LIMIT {
                return Err(LayerError::TooLarge { layer, path });
            }
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).map_err(read)?;
            added.insert(path, (kind, bytes));
        }
        // Whiteouts hide what lower layers have; this layer's own files
        // stay, wherever the marker sat in the archive.
        let under = |path: &str, dir: &str| {
            dir.is_empty()
                || path == dir
                || path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
        };
        self.files.retain(|path, _| {
            !deleted.iter().any(|d| under(path, d))
                && !opaque.iter().any(|o| path != o && under(path, o))
        });
        self.files.extend(added);
        Ok(())
    }
}
