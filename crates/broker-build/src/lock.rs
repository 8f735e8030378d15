//! `images.lock`: what build hands to render. For every broker image the
//! pushed reference pinned by digest, the deps key and the source
//! revisions it was built from; for every mirrored third-party image the
//! mirror's pinned reference. Written atomically; stable key order, so an
//! unchanged build rewrites identical bytes.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use broker_oci::Digest;
use serde::{Deserialize, Serialize};

/// The lock file format version this tool writes and reads.
pub const LOCK_VERSION: u32 = 1;

/// The whole lock file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    /// Format version, [`LOCK_VERSION`].
    pub version: u32,
    /// Broker images by name (`python-base`, …).
    #[serde(default)]
    pub images: BTreeMap<String, LockedImage>,
    /// Third-party images by the reference users write (`postgres:14.2`).
    #[serde(default)]
    pub mirrors: BTreeMap<String, MirroredImage>,
}

/// One built (and possibly pushed) broker image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedImage {
    /// `registry/repository@sha256:…` when pushed; the store name otherwise.
    pub reference: String,
    /// The tag pushed alongside the digest, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// The image manifest digest.
    pub digest: Digest,
    /// The key of the dependency stage it was built on.
    pub deps_key: String,
    /// The base image reference the deps stage started from.
    pub base: String,
    /// The digest of the deps image (the layers below the source layers).
    pub deps_digest: Digest,
    /// Source trees baked in, by layer name.
    #[serde(default)]
    pub sources: BTreeMap<String, SourceRecord>,
}

/// Where a source layer came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceRecord {
    /// The path in the image.
    pub target: String,
    /// The git commit of the tree, when it is a git checkout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The layer's digest (compressed).
    pub layer: Digest,
}

/// A third-party image copied into our registry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirroredImage {
    /// The original, pinned: `docker.io/library/postgres@sha256:…`.
    pub source: String,
    /// The copy, pinned by the same digest.
    pub reference: String,
    /// The digest (manifest or index), identical on both sides.
    pub digest: Digest,
}

/// Reading or writing the lock file failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// The file could not be read or written.
    #[error("{what} {path}: {source}")]
    Io {
        /// The operation.
        what: &'static str,
        /// The lock file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a lock file this version understands.
    #[error("{path}:{line}:{column}: not a valid lock file ({why}); delete it and build again")]
    Parse {
        /// The lock file.
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// What is wrong.
        why: String,
    },
}

impl Lock {
    /// An empty lock of the current version.
    pub fn new() -> Self {
        Self {
            version: LOCK_VERSION,
            ..Self::default()
        }
    }

    /// Reads `path`; `Ok(None)` when it does not exist.
    pub fn read(path: &Path) -> Result<Option<Self>, LockError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(LockError::Io {
                    what: "cannot read",
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let lock: Lock = serde_json::from_str(&text).map_err(|e| LockError::Parse {
            path: path.to_path_buf(),
            line: e.line(),
            column: e.column(),
            why: e.to_string(),
        })?;
        if lock.version != LOCK_VERSION {
            return Err(LockError::Parse {
                path: path.to_path_buf(),
                line: 1,
                column: 1,
                why: format!("version {} is not {LOCK_VERSION}", lock.version),
            });
        }
        Ok(Some(lock))
    }

    /// Reads `path`, or an empty lock when it does not exist.
    pub fn read_or_new(path: &Path) -> Result<Self, LockError> {
        Ok(Self::read(path)?.unwrap_or_else(Self::new))
    }

    /// The exact bytes [`Lock::write`] puts on disk.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising plain maps of strings cannot fail.
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text.into_bytes()
    }

    /// Writes the lock to `path` atomically: readers see the old file or
    /// the new one, never a half-written one.
    pub fn write(&self, path: &Path) -> Result<(), LockError> {
        let bytes = self.to_bytes();
        // An unchanged lock keeps its file (and its mtime, for make-style
        // tools watching it).
        if std::fs::read(path).is_ok_and(|old| old == bytes) {
            return Ok(());
        }
        write_atomic(path, &bytes).map_err(|source| LockError::Io {
            what: "cannot write",
            path: path.to_path_buf(),
            source,
        })
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory
/// and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let mut temp = tempfile::NamedTempFile::new_in(dir)?;
    temp.write_all(bytes)?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_is_stable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("images.lock");
        assert_eq!(Lock::read(&path).unwrap(), None);
        let mut lock = Lock::new();
        let d = Digest::of(b"x");
        lock.mirrors.insert(
            "postgres:14.2".into(),
            MirroredImage {
                source: format!("docker.io/library/postgres@{d}"),
                reference: format!("r/library/postgres@{d}"),
                digest: d,
            },
        );
        lock.write(&path).unwrap();
        let first = std::fs::read(&path).unwrap();
        let back = Lock::read(&path).unwrap().unwrap();
        assert_eq!(back, lock);
        back.write(&path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), first);
    }

    #[test]
    fn malformed_lock_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("images.lock");
        std::fs::write(&path, "{\n  \"version\": 1,\n  \"images\": [}\n").unwrap();
        let err = Lock::read(&path).unwrap_err().to_string();
        assert!(err.contains("images.lock:3:"), "{err}");
    }
}
