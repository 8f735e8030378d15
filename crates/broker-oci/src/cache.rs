//! The layer cache: rebuilding an unchanged tree neither tars nor gzips it.
//!
//! `<store>/cache/layers/<key>.json` maps a key to the layer built from it.
//! The key is a sha256 over exactly what decides the layer's bytes: the
//! format version, the gzip parameters, the epoch and, for every entry in
//! order, its path in the image, kind, mode, owner, size, link target and the
//! sha256 of its contents. The source path is not in it, so two checkouts of
//! one tree share their layers; mtimes are not in it, so `touch` changes
//! nothing. A hit also needs the blob to be in the store.
//!
//! Hashing contents costs a read of every file; `<store>/cache/files/` keeps,
//! per source tree, each file's hash keyed on (device, inode) and checked
//! against size, mtime and ctime in nanoseconds. A `touch` changes the ctime
//! and so forces a re-hash, which then gives the same key. Files changed in
//! the last seconds before hashing are not remembered, because a second
//! change within the filesystem's timestamp granularity would be invisible.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::digest::{Digest, DigestWriter};
use crate::gzip;
use crate::source_layer::{BuildLayerError, FileStat, Kind, Plan, SourceLayer};
use crate::store::{Store, StoreError};

/// Bumped whenever the layer format changes in a way the key cannot see.
const FORMAT: &str = "broker-oci source layer v1";

/// How recent a change must be for a file's hash not to be remembered.
const RACY_WINDOW: Duration = Duration::from_secs(3);

/// A layer the cache knows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CachedLayer {
    pub digest: Digest,
    pub diff_id: Digest,
    pub size: u64,
    pub uncompressed_size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CachedFile {
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    sha256: Digest,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct FileHashesJson {
    files: HashMap<String, CachedFile>,
}

/// Remembered content hashes of one source tree's files.
#[derive(Debug)]
pub(crate) struct FileHashes {
    path: PathBuf,
    old: HashMap<String, CachedFile>,
    new: HashMap<String, CachedFile>,
}

fn stat_key(st: &FileStat) -> String {
    format!("{}:{}", st.dev, st.ino)
}

impl FileHashes {
    /// The remembered hashes for the tree at `source` (none if unreadable).
    pub(crate) fn load(store: &Store, source: &Path) -> Self {
        let canonical = source
            .canonicalize()
            .unwrap_or_else(|_| source.to_path_buf());
        let name = Digest::of(canonical.as_os_str().as_encoded_bytes()).hex();
        let path = store.cache_dir().join("files").join(format!("{name}.json"));
        let old = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<FileHashesJson>(&b).ok())
            .map(|j| j.files)
            .unwrap_or_default();
        Self {
            path,
            old,
            new: HashMap::new(),
        }
    }

    /// The content hash of every entry of `plan` that is a regular file
    /// (`None` for the others), reading only files whose stat changed.
    pub(crate) fn hash_all(
        &mut self,
        plan: &Plan,
        threads: usize,
    ) -> Result<Vec<Option<Digest>>, BuildLayerError> {
        let mut out: Vec<Option<Digest>> = vec![None; plan.entries.len()];
        let mut todo: Vec<(usize, &Path, &FileStat)> = Vec::new();
        for (i, e) in plan.entries.iter().enumerate() {
            let (Kind::File, Some((path, st))) = (&e.kind, &e.source) else {
                continue;
            };
            let key = stat_key(st);
            match self.old.get(&key) {
                Some(c)
                    if c.size == st.size
                        && c.mtime_ns == st.mtime_ns
                        && c.ctime_ns == st.ctime_ns =>
                {
                    out[i] = Some(c.sha256);
                    self.new.insert(key, c.clone());
                }
                _ => todo.push((i, path, st)),
            }
        }

        let racy_after = SystemTime::now()
            .checked_sub(RACY_WINDOW)
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0, |d| i128::try_from(d.as_nanos()).unwrap_or(i128::MAX));
        let next = AtomicUsize::new(0);
        let results: Mutex<Vec<(usize, Result<Digest, BuildLayerError>)>> = Mutex::new(Vec::new());
        // An unchanged tree has nothing to hash: no thread is started for it.
        std::thread::scope(|scope| {
            for _ in 0..threads.max(1).min(todo.len()) {
                scope.spawn(|| {
                    let mut buf = vec![0u8; 256 * 1024];
                    let mut mine = Vec::new();
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&(i, path, st)) = todo.get(n) else {
                            break;
                        };
                        mine.push((i, hash_file(path, st, &mut buf)));
                    }
                    if let Ok(mut r) = results.lock() {
                        r.extend(mine);
                    }
                });
            }
        });
        let mut results = results.into_inner().unwrap_or_default();
        // Report the first failing path in layer order, whatever the threads did.
        results.sort_by_key(|r| r.0);
        for (i, r) in results {
            let digest = r?;
            out[i] = Some(digest);
            if let Some((_, st)) = &plan.entries[i].source
                && st.mtime_ns < racy_after
                && st.ctime_ns < racy_after
            {
                self.new.insert(
                    stat_key(st),
                    CachedFile {
                        size: st.size,
                        mtime_ns: st.mtime_ns,
                        ctime_ns: st.ctime_ns,
                        sha256: digest,
                    },
                );
            }
        }
        Ok(out)
    }

    /// Remember this build's hashes (only the files seen this time).
    pub(crate) fn save(self, store: &Store) -> Result<(), StoreError> {
        if self.new == self.old {
            return Ok(());
        }
        let json = FileHashesJson { files: self.new };
        let bytes = serde_json::to_vec(&json).map_err(|source| StoreError::Json {
            path: self.path.clone(),
            source,
        })?;
        store.write_file_atomically(&self.path, &bytes)
    }
}

fn hash_file(path: &Path, st: &FileStat, buf: &mut [u8]) -> Result<Digest, BuildLayerError> {
    let unreadable = |source| BuildLayerError::Unreadable {
        path: path.to_path_buf(),
        source,
    };
    let mut f = File::open(path).map_err(unreadable)?;
    let mut h = DigestWriter::new();
    loop {
        match f.read(buf) {
            Ok(0) => break,
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(unreadable(e)),
        }
    }
    let now = f.metadata().map_err(unreadable)?;
    let (digest, len) = h.finish();
    if len != st.size || FileStat::of(&now).mtime_ns != st.mtime_ns {
        return Err(BuildLayerError::ChangedWhileBuilding {
            path: path.to_path_buf(),
        });
    }
    Ok(digest)
}

/// The cache key of a layer: what decides its bytes (see the module docs).
pub(crate) fn layer_key(plan: &Plan, contents: &[Option<Digest>]) -> Digest {
    let mut h = DigestWriter::new();
    let mut field = |bytes: &[u8]| {
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    field(FORMAT.as_bytes());
    field(&gzip::LEVEL.to_le_bytes());
    field(&(gzip::CHUNK_SIZE as u64).to_le_bytes());
    field(&plan.epoch.seconds().to_le_bytes());
    for (e, content) in plan.entries.iter().zip(contents) {
        field(e.tar_path.as_bytes());
        let (tag, link) = match &e.kind {
            Kind::Dir => ("d", ""),
            Kind::File => ("f", ""),
            Kind::Symlink(t) => ("s", t.as_str()),
            Kind::HardLink(t) => ("h", t.as_str()),
        };
        field(tag.as_bytes());
        field(link.as_bytes());
        field(&e.mode.to_le_bytes());
        field(&e.uid.to_le_bytes());
        field(&e.gid.to_le_bytes());
        field(&e.size().to_le_bytes());
        field(content.as_ref().map_or(&[][..], |d| d.as_bytes()));
    }
    h.finish().0
}

fn layer_path(store: &Store, key: &Digest) -> PathBuf {
    store
        .cache_dir()
        .join("layers")
        .join(format!("{}.json", key.hex()))
}

/// The layer built earlier for `key`, if its blob is still in the store.
pub(crate) fn lookup(store: &Store, key: &Digest) -> Option<CachedLayer> {
    let bytes = std::fs::read(layer_path(store, key)).ok()?;
    let hit: CachedLayer = serde_json::from_slice(&bytes).ok()?;
    let size_ok =
        std::fs::metadata(store.blob_path(&hit.digest)).is_ok_and(|m| m.len() == hit.size);
    size_ok.then_some(hit)
}

/// Remember that `key` built `layer`.
pub(crate) fn record(store: &Store, key: &Digest, layer: &SourceLayer) -> Result<(), StoreError> {
    let path = layer_path(store, key);
    let entry = CachedLayer {
        digest: layer.digest,
        diff_id: layer.diff_id,
        size: layer.size,
        uncompressed_size: layer.uncompressed_size,
    };
    let bytes = serde_json::to_vec(&entry).map_err(|source| StoreError::Json {
        path: path.clone(),
        source,
    })?;
    store.write_file_atomically(&path, &bytes)
}
