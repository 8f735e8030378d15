//! Progress events. The library only reports; the binary decides whether
//! they become progress bars, plain lines or JSON.

use std::time::Duration;

use broker_oci::Digest;

/// What happened to one blob during a push or mirror.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobOutcome {
    /// The registry already had it in the target repository: nothing sent.
    Existed,
    /// The registry linked it from another repository it holds: nothing sent.
    Mounted,
    /// Its bytes were uploaded.
    Uploaded,
}

/// Receives progress events. Every method has an empty default, so a
/// reporter implements only what it shows.
pub trait Reporter: Send + Sync {
    /// A blob transfer begins.
    fn blob_started(&self, _image: &str, _digest: &Digest, _size: u64) {}
    /// `bytes` more bytes of a blob were sent.
    fn blob_progress(&self, _digest: &Digest, _bytes: u64) {}
    /// An upload continues at `offset`: the registry already holds the
    /// bytes before it (an earlier run's session, or this run's after a
    /// failed request), and only the rest is sent.
    fn blob_resumed(&self, _image: &str, _digest: &Digest, _offset: u64) {}
    /// The registry dropped the session of an upload (`why`), so the blob
    /// is sent again from byte 0.
    fn blob_restarted(&self, _image: &str, _digest: &Digest, _why: &str) {}
    /// A blob is confirmed present in the target repository.
    fn blob_finished(&self, _image: &str, _digest: &Digest, _size: u64, _outcome: BlobOutcome) {}
    /// A request failed transiently and will be retried after `delay`.
    fn retrying(&self, _what: &str, _attempt: u32, _delay: Duration, _why: &str) {}
    /// A manifest was stored under `reference` (by digest, or a tag).
    fn manifest_pushed(&self, _reference: &str) {}
}

/// A reporter that shows nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Silent;

impl Reporter for Silent {}
