//! Uploading a blob while it is still being written — a layer as it leaves
//! the compressor. Its digest is known only at the end, so the bytes go up
//! as PATCH chunks of an open session and the closing PUT names the digest;
//! the registry checks it then, so a wrong or cut stream is never stored.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use broker_oci::Digest;
use bytes::Bytes;
use tokio::sync::mpsc::Receiver;

use crate::client::RegistryClient;
use crate::error::RegistryError;
use crate::manifest::Descriptor;
use crate::progress::{BlobOutcome, Reporter};
use crate::repository::Repository;
use crate::transfer::{SessionPlace, Standing, Step, close_upload, patch_chunk, session_standing};

/// One piece of a blob being written, in order.
#[derive(Debug)]
pub enum StreamedPiece {
    /// The next bytes.
    Bytes(Bytes),
    /// The blob is complete.
    Done {
        /// Its digest.
        digest: Digest,
        /// Its size in bytes.
        size: u64,
    },
}

/// Uploads the blob `pieces` carries into `repository`; `Ok(None)` when
/// the writer gave up (the channel closed before [`StreamedPiece::Done`]),
/// in which case the session is cancelled.
///
/// A piece or the closing PUT that fails is continued like a resumable
/// upload's ([`crate::transfer`]): the registry is asked where the session
/// stands and only what it lacks is sent again. Pieces already sent are
/// not kept, so a session that lost more than the piece in hand fails the
/// stream, and the publish that follows uploads the blob from the store.
pub(crate) async fn upload_streamed(
    client: &RegistryClient,
    repository: &str,
    image: &str,
    pieces: &mut Receiver<StreamedPiece>,
    reporter: &Arc<dyn Reporter>,
) -> Result<Option<Digest>, RegistryError> {
    let repo = Repository::new(client, repository, reporter.as_ref());
    let mut location = repo.start_upload().await?;
    let sent_bytes = Arc::new(AtomicU64::new(0));
    let place = SessionPlace {
        client,
        repository,
        reporter,
        sent: &sent_bytes,
    };
    let mut offset = 0u64;
    let mut step = Step::new(client, reporter.as_ref());
    let sent = async {
        while let Some(piece) = pieces.recv().await {
            match piece {
                StreamedPiece::Bytes(chunk) if chunk.is_empty() => {}
                StreamedPiece::Bytes(chunk) => {
                    let len = chunk.len() as u64;
                    step.on(format!("streamed upload to {repository} at byte {offset}"));
                    loop {
                        let what = step.what().to_owned();
                        match patch_chunk(place, &what, &location, offset, chunk.clone()).await {
                            Ok(next) => {
                                location = next;
                                break;
                            }
                            Err(err) if retryable(&err) => {
                                step.failed(err).await?;
                                match session_standing(place, &location, None).await? {
                                    // Nothing of the piece arrived: again.
                                    Standing::At(next, held) if held == offset => location = next,
                                    // All of it arrived, the answer was lost.
                                    Standing::At(next, held) if held == offset + len => {
                                        location = next;
                                        break;
                                    }
                                    _ => return Err(lost(client, repository, offset)),
                                }
                            }
                            Err(err) => return Err(err),
                        }
                    }
                    offset += len;
                }
                StreamedPiece::Done { digest, size } => {
                    // The upload needs no media type: the manifest that
                    // refers to the blob names it.
                    let blob = Descriptor {
                        media_type: String::new(),
                        digest,
                        size,
                        platform: None,
                    };
                    if size != offset {
                        return Err(RegistryError::DigestMismatch {
                            registry: client.registry().to_owned(),
                            what: format!("size of blob {digest} streamed to {repository}"),
                            expected: format!("{size} bytes"),
                            actual: format!("{offset} bytes"),
                        });
                    }
                    step.on(format!("commit of {digest} to {repository}"));
                    loop {
                        let what = step.what().to_owned();
                        match close_upload(place, &blob, &what, &location).await {
                            Ok(()) => break,
                            Err(err) if retryable(&err) => {
                                step.failed(err).await?;
                                match session_standing(place, &location, Some(size)).await? {
                                    Standing::At(next, held) if held == size => location = next,
                                    // Gone: the commit may have landed.
                                    Standing::Gone if repo.has_blob(&digest).await? => break,
                                    _ => return Err(lost(client, repository, offset)),
                                }
                            }
                            Err(err) => return Err(err),
                        }
                    }
                    client.remember_blob(digest, repository);
                    reporter.blob_finished(image, &digest, size, BlobOutcome::Uploaded);
                    return Ok(Some(digest));
                }
            }
        }
        Ok(None)
    }
    .await;
    if !matches!(sent, Ok(Some(_))) {
        // Left open, a session holds registry storage until it expires;
        // failing to cancel one costs nothing else.
        let _ = repo.cancel_upload(&location).await;
    }
    sent
}

/// Failures after which asking where the session stands may help.
fn retryable(err: &RegistryError) -> bool {
    crate::transfer::is_session_failure(err)
}

/// The error for a streamed session that lost bytes no longer at hand.
fn lost(client: &RegistryClient, repository: &str, offset: u64) -> RegistryError {
    RegistryError::NotFound {
        registry: client.registry().to_owned(),
        what: format!(
            "upload session streamed to {repository} (it no longer holds the {offset} bytes sent)"
        ),
    }
}
