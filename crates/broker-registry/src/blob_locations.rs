//! The blob-location record: which repositories of which registry hold
//! which blobs, kept beside the store so a later run mounts what earlier
//! runs pushed instead of uploading it again, as Docker does.
//!
//! The record is a cache: a missing or unreadable file is an empty record,
//! and a failure to write one costs only uploads, never correctness. It is
//! persistence only: the [`crate::Publisher`] hands it what the client
//! learnt and teaches the client what it holds.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use broker_oci::Store;
use broker_pins::Digest;

use crate::error::RegistryError;

/// Where, relative to the store, the record is kept.
pub const BLOB_LOCATIONS: &str = "cache/registry-blobs.json";

/// Registry host → blob → repositories holding it.
type Record = BTreeMap<String, BTreeMap<Digest, BTreeSet<String>>>;

/// The record of the store `store`.
pub fn record_path(store: &Store) -> PathBuf {
    store.dir().join(BLOB_LOCATIONS)
}

/// The locations recorded in `path` for `registry`: blob → repositories.
pub(crate) fn load(path: &Path, registry: &str) -> BTreeMap<Digest, BTreeSet<String>> {
    read(path)
        .and_then(|mut record| record.remove(registry))
        .unwrap_or_default()
}

/// Adds `known` (blob → repositories of `registry`) to the record in
/// `path`, keeping what is there for other registries, written atomically
/// — and not at all when nothing is new, as in a no-change rebuild, which
/// then writes no file.
pub(crate) fn save(
    path: &Path,
    registry: &str,
    known: BTreeMap<Digest, BTreeSet<String>>,
) -> Result<(), RegistryError> {
    let old = std::fs::read(path).ok();
    let mut record: Record = old
        .as_deref()
        .and_then(|bytes| serde_json::from_slice(bytes).ok())
        .unwrap_or_default();
    let entry = record.entry(registry.to_owned()).or_default();
    for (digest, repositories) in known {
        entry.entry(digest).or_default().extend(repositories);
    }
    // Plain maps of strings always serialise.
    let bytes = serde_json::to_vec(&record).unwrap_or_default();
    if old.as_deref() == Some(bytes.as_slice()) {
        return Ok(());
    }
    write(path, &bytes).map_err(|source| RegistryError::Io {
        what: "cannot write",
        path: path.to_path_buf(),
        source,
    })
}

fn read(path: &Path) -> Option<Record> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Through a temporary file and a rename, so a kill mid-write leaves the
/// previous record; no fsync: losing a record in a crash costs only
/// uploads. Shared by the store's small records (blob locations, upload
/// sessions).
pub(crate) fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut temp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut temp, bytes)?;
    temp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
