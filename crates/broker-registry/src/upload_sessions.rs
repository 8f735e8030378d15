//! Upload sessions kept beside the store, so an upload interrupted by a
//! crash or a `kill -9` continues where the registry stands on the next run
//! instead of from byte 0 (issue 12, item 4).
//!
//! A session is recorded after every chunk the registry acknowledged, with
//! the location that chunk's answer named: CNCF Distribution accepts an
//! upload location only while the offset signed into it matches what it
//! holds, so only the latest acknowledged location can be resumed. Like
//! the blob-location record this is a cache: a missing or unreadable file
//! means starting afresh, and a failure to write costs only bytes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use broker_pins::Digest;

use crate::blob_locations::write;

/// Where, relative to the store, the sessions are kept.
pub const UPLOAD_SESSIONS: &str = "cache/upload-sessions.json";

/// One upload in progress: where it continues and how much the registry
/// acknowledged.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Session {
    /// The upload URL the registry named last.
    pub location: String,
    /// Bytes the registry acknowledged.
    pub offset: u64,
}

/// The sessions file of one store, read and written under a lock (blobs
/// upload concurrently).
#[derive(Debug)]
pub(crate) struct UploadSessions {
    path: PathBuf,
    lock: Mutex<()>,
}

/// `registry/repository@digest`: one upload per blob and repository.
fn key(registry: &str, repository: &str, digest: &Digest) -> String {
    format!("{registry}/{repository}@{digest}")
}

impl UploadSessions {
    /// The sessions kept in `path`.
    pub(crate) fn new(path: PathBuf) -> Self {
        Self {
            path,
            lock: Mutex::new(()),
        }
    }

    fn read(&self) -> BTreeMap<String, Session> {
        std::fs::read(&self.path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    fn update(&self, change: impl FnOnce(&mut BTreeMap<String, Session>)) {
        let _one_writer = self
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut sessions = self.read();
        change(&mut sessions);
        // A cache: failing to write it costs only a longer upload later.
        let _ = write(
            &self.path,
            &serde_json::to_vec(&sessions).unwrap_or_default(),
        );
    }

    /// The session kept for `digest` into `repository`, if any.
    pub(crate) fn get(&self, registry: &str, repository: &str, digest: &Digest) -> Option<Session> {
        self.read().remove(&key(registry, repository, digest))
    }

    /// Keeps `session` for `digest` into `repository`.
    pub(crate) fn put(&self, registry: &str, repository: &str, digest: &Digest, session: Session) {
        self.update(|s| {
            s.insert(key(registry, repository, digest), session);
        });
    }

    /// Forgets the session for `digest` into `repository`.
    pub(crate) fn remove(&self, registry: &str, repository: &str, digest: &Digest) {
        self.update(|s| {
            s.remove(&key(registry, repository, digest));
        });
    }
}
