//! Uploading a blob while it is still being written — a layer as it leaves
//! the compressor. Its digest is known only at the end, so the bytes go up
//! as PATCH chunks of an open session and the closing PUT names the digest;
//! the registry checks it then, so a wrong or cut stream is never stored.

use std::sync::Arc;

use broker_oci::Digest;
use bytes::Bytes;
use tokio::sync::mpsc::Receiver;

use crate::client::RegistryClient;
use crate::error::RegistryError;
use crate::manifest::Descriptor;
use crate::progress::{BlobOutcome, Reporter};
use crate::repository::Repository;
use crate::transfer::{SessionPlace, close_upload, patch_chunk};

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
pub(crate) async fn upload_streamed(
    client: &RegistryClient,
    repository: &str,
    image: &str,
    pieces: &mut Receiver<StreamedPiece>,
    reporter: &Arc<dyn Reporter>,
) -> Result<Option<Digest>, RegistryError> {
    let repo = Repository::new(client, repository, reporter.as_ref());
    let mut location = repo.start_upload().await?;
    let place = SessionPlace {
        client,
        repository,
        reporter,
    };
    let what = format!("streamed upload to {repository}");
    let mut offset = 0u64;
    let sent = async {
        while let Some(piece) = pieces.recv().await {
            match piece {
                StreamedPiece::Bytes(chunk) if chunk.is_empty() => {}
                StreamedPiece::Bytes(chunk) => {
                    let len = chunk.len() as u64;
                    location = patch_chunk(place, &what, &location, offset, chunk).await?;
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
                    close_upload(place, &blob, &what, &location).await?;
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
