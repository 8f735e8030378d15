//! Putting an image graph into a repository: blobs first (HEAD, then a
//! cross-repository mount, then an upload), manifests by digest once every
//! blob they need is confirmed, the tag last. Whatever fails when, a tag
//! never points at a manifest whose blobs are missing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use broker_oci::Digest;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE};
use reqwest::{Body, Response, StatusCode};

use crate::client::{Idempotent, RegistryClient, Scope};
use crate::error::RegistryError;
use crate::manifest::Descriptor;
use crate::progress::{BlobOutcome, Reporter};
use crate::repository::{MountResult, Repository};
use broker_pins::Reference;

/// Where the bytes of a blob come from.
#[derive(Clone)]
pub(crate) enum BlobSource<'a> {
    /// A file, e.g. in the local store.
    File(PathBuf),
    /// Another registry (mirroring).
    Remote {
        /// The client of the source registry.
        client: &'a RegistryClient,
        /// The repository there.
        repository: &'a str,
    },
}

/// A manifest to store: its exact bytes, digest and media type.
#[derive(Clone, Debug)]
pub(crate) struct ManifestBlob {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Vec<u8>,
}

/// The manifests (children first, root last) and blobs of an image graph.
#[derive(Debug, Default)]
pub(crate) struct Graph {
    pub manifests: Vec<ManifestBlob>,
    pub blobs: Vec<Descriptor>,
}

/// Totals of one transfer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TransferStats {
    /// Blobs whose bytes were uploaded.
    pub uploaded: usize,
    /// Blobs linked from another repository of the same registry.
    pub mounted: usize,
    /// Blobs the repository already held.
    pub existed: usize,
    /// Sizes of the uploaded blobs, added up.
    pub bytes_uploaded: u64,
    /// Request body bytes actually sent for them, resends after failures
    /// included.
    pub bytes_sent: u64,
    /// Bytes of them the registry already held from an interrupted earlier
    /// run, whose upload sessions this run continued: not sent again.
    pub bytes_resumed: u64,
}

/// What became of one blob, and what it cost.
#[derive(Clone, Copy, Debug)]
struct BlobResult {
    outcome: BlobOutcome,
    size: u64,
    sent: u64,
    resumed: u64,
}

impl TransferStats {
    fn count(&mut self, blob: BlobResult) {
        self.bytes_sent += blob.sent;
        match blob.outcome {
            BlobOutcome::Existed => self.existed += 1,
            BlobOutcome::Mounted => self.mounted += 1,
            BlobOutcome::Uploaded => {
                self.uploaded += 1;
                self.bytes_uploaded += blob.size;
                self.bytes_resumed += blob.resumed;
            }
        }
    }
}

/// Stores the graph's manifests (children before parents; the last one is
/// the root) and the blobs they reference into `target`'s repository, then
/// points `target`'s tag at the root.
pub(crate) async fn put_graph<'s>(
    client: &RegistryClient,
    target: &Reference,
    graph: &Graph,
    source: &(dyn Fn(&Descriptor) -> BlobSource<'s> + Sync),
    reporter: &Arc<dyn Reporter>,
) -> Result<TransferStats, RegistryError> {
    let repository = target.repository();
    let image = target.to_string();
    let image = image.as_str();
    let tag = target.tag();
    let (manifests, blobs) = (&graph.manifests, &graph.blobs);
    let mut stats = TransferStats::default();
    let Some(root) = manifests.last() else {
        return Err(RegistryError::BadManifest {
            what: image.to_owned(),
            why: "no manifest to push".to_owned(),
        });
    };
    // A tag already on the root, or a manifest the registry already holds
    // by digest, had all its blobs checked when it was stored: nothing to
    // send (but the tag, in the second case). The tag is asked first, so a
    // no-op re-push costs one request.
    let repo = Repository::new(client, repository, reporter.as_ref());
    let tag_current = match tag {
        // Asked ahead, while the image was built: that answer, awaited if
        // it is still on its way, stands for this check.
        Some(tag) => {
            let digest = match client.take_tag_ahead(repository, tag) {
                Some(answer) => *answer.get_or_try_init(|| repo.manifest_digest(tag)).await?,
                None => repo.manifest_digest(tag).await?,
            };
            digest == Some(root.digest)
        }
        None => false,
    };
    let stored =
        tag_current || repo.manifest_digest(&root.digest.to_string()).await? == Some(root.digest);
    if stored {
        for blob in blobs {
            stats.count(BlobResult {
                outcome: BlobOutcome::Existed,
                size: blob.size,
                sent: 0,
                resumed: 0,
            });
            client.remember_blob(blob.digest, repository);
            // An interrupted run's session for it is abandoned now.
            cancel_kept_session(&repo, &blob.digest).await;
        }
    } else {
        stats = put_blobs(client, repository, image, blobs, source, reporter).await?;
        // An index's platform manifests need only their blobs: they go up
        // together, one round trip whatever their number; the root after
        // them, as it needs them all.
        let children = &manifests[..manifests.len() - 1];
        futures::future::try_join_all(children.iter().map(|manifest| {
            let repo = &repo;
            async move { put_manifest(repo, &manifest.digest.to_string(), manifest).await }
        }))
        .await?;
        put_manifest(&repo, &root.digest.to_string(), root).await?;
    }
    if let Some(tag) = tag
        && !tag_current
    {
        put_manifest(&repo, tag, root).await?;
    }
    Ok(stats)
}

/// Makes sure `repository` holds each of `blobs` (every digest once, a
/// few at a time), for the image `image` (as reports name it).
pub(crate) async fn put_blobs<'s>(
    client: &RegistryClient,
    repository: &str,
    image: &str,
    blobs: &[Descriptor],
    source: &(dyn Fn(&Descriptor) -> BlobSource<'s> + Sync),
    reporter: &Arc<dyn Reporter>,
) -> Result<TransferStats, RegistryError> {
    let mut unique: Vec<&Descriptor> = Vec::new();
    for blob in blobs {
        if !unique.iter().any(|b| b.digest == blob.digest) {
            unique.push(blob);
        }
    }
    // Collected first: a closure in the stream would tie the futures to a
    // higher-ranked lifetime, and a spawned caller could not be Send.
    let transfers: Vec<_> = unique
        .into_iter()
        .map(|blob| async move {
            let transfer = BlobTransfer {
                client,
                repository,
                image,
                blob,
                source: source(blob),
                reporter,
                sent: Arc::new(AtomicU64::new(0)),
                resumed: AtomicU64::new(0),
            };
            let outcome = ensure_blob(&transfer).await?;
            Ok::<_, RegistryError>(BlobResult {
                outcome,
                size: blob.size,
                sent: transfer.sent.load(Ordering::Relaxed),
                resumed: transfer.resumed.load(Ordering::Relaxed),
            })
        })
        .collect();
    let results: Vec<BlobResult> = futures::stream::iter(transfers)
        .buffer_unordered(client.options().concurrency.max(1))
        .try_collect()
        .await?;
    let mut stats = TransferStats::default();
    for blob in results {
        stats.count(blob);
    }
    Ok(stats)
}

/// Stores `manifest` under `selector` (its digest, or a tag) and reports it.
async fn put_manifest(
    repo: &Repository<'_>,
    selector: &str,
    manifest: &ManifestBlob,
) -> Result<(), RegistryError> {
    repo.put_manifest(
        selector,
        &manifest.media_type,
        &manifest.bytes,
        &manifest.digest,
    )
    .await?;
    let separator = if selector.starts_with("sha256:") {
        '@'
    } else {
        ':'
    };
    repo.reporter()
        .manifest_pushed(&format!("{}{separator}{selector}", repo.name()));
    Ok(())
}

/// One blob to put into one repository, and what its transfer needs.
struct BlobTransfer<'a, 's> {
    client: &'a RegistryClient,
    repository: &'a str,
    /// The image it belongs to, for progress.
    image: &'a str,
    blob: &'a Descriptor,
    source: BlobSource<'s>,
    reporter: &'a Arc<dyn Reporter>,
    /// Request body bytes sent for it so far, resends included.
    sent: Arc<AtomicU64>,
    /// Bytes an earlier run's session held when this run continued it.
    resumed: AtomicU64,
}

/// Makes sure `repository` holds `blob`: mount (when a repository is known
/// to hold it), else HEAD, else upload. A session that breaks is never
/// resumed blindly, because a registry may have kept part of a broken body:
/// large blobs continue only from the offset the registry reports
/// ([`upload_resumable`]); others restart in a fresh session.
async fn ensure_blob(transfer: &BlobTransfer<'_, '_>) -> Result<BlobOutcome, RegistryError> {
    let (client, repository, blob) = (transfer.client, transfer.repository, transfer.blob);
    let (image, reporter) = (transfer.image, transfer.reporter);
    // Images pushed at once often share blobs (a base layer): the first
    // push of a digest goes alone, the others then find it and mount it.
    let _one_at_a_time = client.blob_lock(&blob.digest).lock_owned().await;
    let mut delays = client.options().retry.delays();
    let mut attempt = 0;
    loop {
        attempt += 1;
        match try_ensure_blob(transfer).await {
            Ok(outcome) => {
                client.remember_blob(blob.digest, repository);
                reporter.blob_finished(image, &blob.digest, blob.size, outcome);
                return Ok(outcome);
            }
            Err(err) if is_session_failure(&err) => match delays.next() {
                Some(delay) => {
                    reporter.retrying(
                        &format!("upload of {} to {repository}", blob.digest),
                        attempt,
                        delay,
                        &err.to_string(),
                    );
                    tokio::time::sleep(delay).await;
                }
                None => {
                    return Err(RegistryError::GaveUp {
                        registry: client.registry().to_owned(),
                        what: format!("upload of {} to {repository}", blob.digest),
                        attempts: attempt,
                        last: Box::new(err),
                    });
                }
            },
            Err(err) => return Err(err),
        }
    }
}

/// Errors after which a fresh upload session may succeed.
pub(crate) fn is_session_failure(err: &RegistryError) -> bool {
    match err {
        RegistryError::Unreachable { .. } | RegistryError::DigestMismatch { .. } => true,
        RegistryError::Status { status, .. } => {
            *status >= 500 || *status == 408 || *status == 429 || *status == 400 || *status == 416
        }
        // BLOB_UPLOAD_UNKNOWN: the registry dropped the session.
        RegistryError::NotFound { what, .. } => what.contains("upload"),
        _ => false,
    }
}

async fn try_ensure_blob(transfer: &BlobTransfer<'_, '_>) -> Result<BlobOutcome, RegistryError> {
    let BlobTransfer {
        client,
        repository,
        image,
        blob,
        reporter,
        ..
    } = *transfer;
    let repo = Repository::new(client, repository, reporter.as_ref());
    // With a repository known to hold the blob, the mount comes first: it
    // answers 201 whether or not the target already has the blob, so a
    // blob the registry holds costs one request and no bytes (issue 12,
    // item 9). The HEAD follows only when no mount took.
    let candidates = client.mount_candidates(&blob.digest, repository);
    let mut session = None;
    for from in &candidates {
        match repo.mount(from, &blob.digest).await? {
            MountResult::Mounted => return Ok(BlobOutcome::Mounted),
            // 202: mount declined, but the registry opened an upload session.
            MountResult::Declined(location) => {
                session = location;
                break;
            }
            MountResult::Refused => {}
        }
    }
    if repo.has_blob(&blob.digest).await? {
        // Left open, a session holds registry storage until it expires;
        // failing to cancel one costs nothing else.
        if let Some(location) = session {
            let _ = repo.cancel_upload(&location).await;
        }
        cancel_kept_session(&repo, &blob.digest).await;
        return Ok(BlobOutcome::Existed);
    }
    if let BlobSource::File(path) = &transfer.source
        && blob.size >= client.options().resumable_from
    {
        upload_resumable(transfer, path, client.upload_sessions(), session).await?;
        return Ok(BlobOutcome::Uploaded);
    }
    let location = match session {
        Some(location) => location,
        None => repo.start_upload().await?,
    };
    // A body that failed in transit is sent once more into the same session
    // before the session is abandoned. Safe: the registry checks the digest
    // when it commits, so a session that kept part of the broken body
    // answers 400 and the caller starts afresh. Needed: a new session costs
    // a HEAD and a POST before the PUT, and a fault that recurs every third
    // request (a rate-limiting proxy) then hits the PUT every time.
    let mut resent = false;
    let response = loop {
        reporter.blob_started(image, &blob.digest, blob.size);
        let sent = upload_monolithic(transfer, &location).await;
        match sent {
            Err(err) if !resent && is_session_failure(&err) => {
                let delay = client.options().retry.min_delay;
                // Not an attempt of the upload (those `ensure_blob`
                // counts): the same attempt, its body once more.
                let what = format!(
                    "upload of {} to {repository}, into the same session",
                    blob.digest
                );
                reporter.retrying(&what, 1, delay, &err.to_string());
                tokio::time::sleep(delay).await;
                resent = true;
            }
            sent => break sent?,
        }
    };
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
        // The registry (or a proxy before it) caps request bodies.
        upload_chunked(transfer).await?;
    } else {
        confirm_upload(client, repository, blob, response).await?;
    }
    Ok(BlobOutcome::Uploaded)
}

/// Cancels the session an interrupted run kept for `digest` in `repo`, if
/// any, and forgets it: the registry holds the blob, the session is
/// abandoned, and left open it would hold registry storage until it
/// expires. Failing to cancel costs nothing else.
async fn cancel_kept_session(repo: &Repository<'_>, digest: &Digest) {
    let client = repo.client();
    if let Some(sessions) = client.upload_sessions()
        && let Some(kept) = sessions.get(client.registry(), repo.short_name(), digest)
    {
        let _ = repo.cancel_upload(&kept.location).await;
        sessions.remove(client.registry(), repo.short_name(), digest);
    }
}

fn with_query(location: &str, key: &str, value: &str) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}{key}={value}")
}

/// When a request body last moved: what tells a slow upload (fine, however
/// long it takes) from a stalled one (retried after `read_timeout`).
struct Progress {
    start: std::time::Instant,
    /// Milliseconds from `start` to the last chunk handed to the connection.
    last: AtomicU64,
}

impl Progress {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            start: std::time::Instant::now(),
            last: AtomicU64::new(0),
        })
    }

    fn moved(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        self.start
            .elapsed()
            .saturating_sub(Duration::from_millis(self.last.load(Ordering::Relaxed)))
    }

    /// Completes once the body has not moved for `limit` (after the last
    /// byte: the answer has not come for `limit`).
    async fn stalled(&self, limit: Duration) {
        loop {
            let idle = self.idle();
            if idle >= limit {
                return;
            }
            tokio::time::sleep(limit - idle).await;
        }
    }
}

/// Sends an upload request built on the client's upload HTTP client (no
/// overall deadline), failing it as unreachable once its body stops moving
/// for `read_timeout`.
async fn send_watched(
    client: &RegistryClient,
    what: &str,
    repository: &str,
    reporter: &Arc<dyn Reporter>,
    progress: &Progress,
    make: &(dyn Fn(&reqwest::Client) -> reqwest::RequestBuilder + Sync),
) -> Result<Response, RegistryError> {
    let limit = client.options().read_timeout;
    let upload_http = client.upload_http().await?;
    let scopes = [Scope::PullPush(repository.to_owned())];
    let on_upload_client = |_: &reqwest::Client| make(upload_http);
    let send = client.send(
        what,
        &scopes,
        Idempotent::No,
        reporter.as_ref(),
        &on_upload_client,
    );
    tokio::select! {
        response = send => response,
        () = progress.stalled(limit) => Err(RegistryError::Unreachable {
            registry: client.registry().to_owned(),
            what: what.to_owned(),
            attempts: 1,
            why: format!("no progress for {}s", limit.as_secs_f64()),
        }),
    }
}

/// A streaming body for the whole blob, reporting progress as it goes.
async fn blob_body(
    blob: &Descriptor,
    source: BlobSource<'_>,
    reporter: &Arc<dyn Reporter>,
    progress: &Arc<Progress>,
    sent: &Arc<AtomicU64>,
) -> Result<Body, RegistryError> {
    let digest = blob.digest;
    let stream: futures::stream::BoxStream<'static, Result<Bytes, std::io::Error>> = match source {
        BlobSource::File(path) => {
            let file = tokio::fs::File::open(&path)
                .await
                .map_err(|source| RegistryError::Io {
                    what: "cannot read blob",
                    path,
                    source,
                })?;
            tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024).boxed()
        }
        BlobSource::Remote { client, repository } => {
            let response = Repository::new(client, repository, reporter.as_ref())
                .get_blob(&blob.digest)
                .await?;
            response
                .bytes_stream()
                .map_err(std::io::Error::other)
                .boxed()
        }
    };
    // The body must be 'static, hence the shared reporter.
    let reporter = Arc::clone(reporter);
    let progress = Arc::clone(progress);
    let sent = Arc::clone(sent);
    let counted = stream.inspect_ok(move |chunk| {
        progress.moved();
        sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        reporter.blob_progress(&digest, chunk.len() as u64);
    });
    Ok(Body::wrap_stream(counted))
}

async fn upload_monolithic(
    transfer: &BlobTransfer<'_, '_>,
    location: &str,
) -> Result<Response, RegistryError> {
    let (client, repository) = (transfer.client, transfer.repository);
    let (blob, reporter) = (transfer.blob, transfer.reporter);
    let source = transfer.source.clone();
    let url = with_query(location, "digest", &blob.digest.to_string());
    let what = format!("upload of {} to {repository}", blob.digest);
    let progress = Progress::new();
    let body = blob_body(blob, source, reporter, &progress, &transfer.sent).await?;
    let body = tokio::sync::Mutex::new(Some(body));
    let size = blob.size;
    // The body is a one-shot stream and the request is not idempotent:
    // `send` makes exactly one attempt (plus the auth handshake, which
    // happened earlier when the session was opened).
    send_watched(client, &what, repository, reporter, &progress, &|http| {
        let body = body
            .try_lock()
            .ok()
            .and_then(|mut b| b.take())
            .unwrap_or_else(|| Body::from(Vec::new()));
        http.put(&url)
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, size)
            .body(body)
    })
    .await
}

async fn confirm_upload(
    client: &RegistryClient,
    repository: &str,
    blob: &Descriptor,
    response: Response,
) -> Result<(), RegistryError> {
    let what = format!("upload of {} to {repository}", blob.digest);
    let response = match client.expect(&what, &[StatusCode::CREATED], response).await {
        Ok(response) => response,
        // BLOB_UPLOAD_UNKNOWN: said so, for `is_session_failure`.
        Err(RegistryError::NotFound { registry, what }) => {
            return Err(RegistryError::NotFound {
                registry,
                what: format!("{what} (upload session)"),
            });
        }
        Err(err) => return Err(err),
    };
    client.check_reported_digest(
        || format!("blob uploaded to {repository}"),
        &blob.digest,
        response.headers(),
    )
}

/// Where an upload session lives: the registry, the repository, who
/// hears of its progress, and what counts the bytes sent.
#[derive(Clone, Copy)]
pub(crate) struct SessionPlace<'a> {
    pub(crate) client: &'a RegistryClient,
    pub(crate) repository: &'a str,
    pub(crate) reporter: &'a Arc<dyn Reporter>,
    /// Request body bytes sent, resends included.
    pub(crate) sent: &'a Arc<AtomicU64>,
}

impl<'a> From<&'a BlobTransfer<'a, '_>> for SessionPlace<'a> {
    fn from(transfer: &'a BlobTransfer<'a, '_>) -> Self {
        Self {
            client: transfer.client,
            repository: transfer.repository,
            reporter: transfer.reporter,
            sent: &transfer.sent,
        }
    }
}

impl SessionPlace<'_> {
    fn repo(&self) -> Repository<'_> {
        Repository::new(self.client, self.repository, self.reporter.as_ref())
    }
}

/// Sends `chunk` (starting at `offset`) into the session at `location`;
/// the location the registry names for the next chunk.
pub(crate) async fn patch_chunk(
    place: SessionPlace<'_>,
    what: &str,
    location: &str,
    offset: u64,
    chunk: Bytes,
) -> Result<String, RegistryError> {
    let SessionPlace {
        client,
        repository,
        reporter,
        sent,
    } = place;
    let len = chunk.len() as u64;
    let range = format!("{offset}-{}", offset + len - 1);
    let progress = Progress::new();
    let response = send_watched(client, what, repository, reporter, &progress, &|http| {
        // In 256 KiB pieces, so the stall watch sees the chunk move.
        let pieces: Vec<Result<Bytes, std::io::Error>> = (0..chunk.len())
            .step_by(256 * 1024)
            .map(|at| Ok(chunk.slice(at..chunk.len().min(at + 256 * 1024))))
            .collect();
        let progress = Arc::clone(&progress);
        let sent = Arc::clone(sent);
        let body = futures::stream::iter(pieces).inspect_ok(move |piece| {
            progress.moved();
            sent.fetch_add(piece.len() as u64, Ordering::Relaxed);
        });
        http.patch(location)
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_RANGE, &range)
            .header(CONTENT_LENGTH, len)
            .body(Body::wrap_stream(body))
    })
    .await?;
    let response = client
        .expect(what, &[StatusCode::ACCEPTED], response)
        .await?;
    Ok(place
        .repo()
        .location(&response)
        .unwrap_or_else(|| location.to_owned()))
}

/// Where an upload session stands after one of its requests failed.
pub(crate) enum Standing {
    /// The registry holds this many bytes of it; the session continues at
    /// this location.
    At(String, u64),
    /// The registry no longer knows the session (expired, committed, or
    /// cancelled because it got a request it could not continue).
    Gone,
}

/// Asks the registry where the session at `location` of a blob of `size`
/// bytes stands. Failing requests are the caller's to retry; a status that
/// holds more than the blob counts as gone.
pub(crate) async fn session_standing(
    place: SessionPlace<'_>,
    location: &str,
    size: Option<u64>,
) -> Result<Standing, RegistryError> {
    Ok(match place.repo().upload_status(location).await? {
        Some((next, held)) if size.is_none_or(|size| held <= size) => Standing::At(next, held),
        _ => Standing::Gone,
    })
}

/// The attempts of one step of an upload (a chunk, or the commit): counted
/// from the step's first try, with the retry policy's backoff, started
/// afresh once the upload moves past the step.
pub(crate) struct Step<'a> {
    client: &'a RegistryClient,
    reporter: &'a dyn Reporter,
    what: String,
    attempts: u32,
    delays: Box<dyn Iterator<Item = Duration> + Send>,
}

impl<'a> Step<'a> {
    pub(crate) fn new(client: &'a RegistryClient, reporter: &'a dyn Reporter) -> Self {
        Self {
            client,
            reporter,
            what: String::new(),
            attempts: 0,
            delays: Box::new(client.options().retry.delays()),
        }
    }

    /// The step being counted.
    pub(crate) fn what(&self) -> &str {
        &self.what
    }

    /// Starts counting for `what`, unless it is the step already counted.
    pub(crate) fn on(&mut self, what: String) {
        if what != self.what {
            self.what = what;
            self.attempts = 0;
            self.delays = Box::new(self.client.options().retry.delays());
        }
    }

    /// The step failed with `err`: waits the next backoff delay (after
    /// reporting the retry), or gives up when no attempt is left.
    pub(crate) async fn failed(&mut self, err: RegistryError) -> Result<(), RegistryError> {
        self.attempts += 1;
        match self.delays.next() {
            Some(delay) => {
                self.reporter
                    .retrying(&self.what, self.attempts, delay, &err.to_string());
                tokio::time::sleep(delay).await;
                Ok(())
            }
            None => Err(RegistryError::GaveUp {
                registry: self.client.registry().to_owned(),
                what: std::mem::take(&mut self.what),
                attempts: self.attempts,
                last: Box::new(err),
            }),
        }
    }
}

/// Uploads a large blob from `path` in chunks. A request that fails (a
/// chunk, or the closing PUT) is followed by asking the registry where
/// the session stands, and only what it lacks is sent again; the blob
/// starts over at byte 0 only when the registry says the session is gone
/// and it does not hold the blob (a lost answer to a commit that landed).
/// With `sessions` (a publisher that records) the session is kept after
/// every acknowledged chunk, so a kept session (from a run that was
/// interrupted) continues at the offset the registry reports (issue 12,
/// item 4). `opened` is a session the registry already opened (a declined
/// mount).
async fn upload_resumable(
    transfer: &BlobTransfer<'_, '_>,
    path: &Path,
    sessions: Option<&crate::upload_sessions::UploadSessions>,
    opened: Option<String>,
) -> Result<(), RegistryError> {
    use crate::upload_sessions::Session;
    let (client, repository, blob) = (transfer.client, transfer.repository, transfer.blob);
    let (image, reporter) = (transfer.image, transfer.reporter);
    let place = SessionPlace::from(transfer);
    let registry = client.registry();
    let repo = place.repo();
    let forget = || {
        if let Some(sessions) = sessions {
            sessions.remove(registry, repository, &blob.digest);
        }
    };
    let mut resumed = None;
    if let Some(kept) = sessions.and_then(|s| s.get(registry, repository, &blob.digest)) {
        match session_standing(place, &kept.location, Some(blob.size)).await? {
            Standing::At(location, held) => resumed = Some((location, held)),
            Standing::Gone => {
                // Abandoned: cancelled, so the registry frees its storage.
                let _ = repo.cancel_upload(&kept.location).await;
                forget();
            }
        }
    }
    let (mut location, mut offset) = match resumed {
        Some(status) => {
            if let Some(unused) = opened {
                let _ = repo.cancel_upload(&unused).await;
            }
            status
        }
        None => match opened {
            Some(location) => (location, 0),
            None => (repo.start_upload().await?, 0),
        },
    };
    let keep = |location: &str, offset: u64| {
        if let Some(sessions) = sessions {
            let session = Session {
                location: location.to_owned(),
                offset,
            };
            sessions.put(registry, repository, &blob.digest, session);
        }
    };
    keep(&location, offset);
    reporter.blob_started(image, &blob.digest, blob.size);
    if offset > 0 {
        transfer.resumed.store(offset, Ordering::Relaxed);
        reporter.blob_resumed(image, &blob.digest, offset);
    }
    let chunk_size = client.options().chunk_size.max(1);
    let mut step = Step::new(client, reporter.as_ref());
    // Restarts from byte 0, bounded like the attempts of a step: a
    // registry that drops every session would otherwise be sent the blob
    // forever.
    let mut restarts = Step::new(client, reporter.as_ref());
    restarts.on(format!("upload of {} to {repository}", blob.digest));
    // After a failed request: where the session stands is asked before
    // anything is sent (Distribution cancels a session that gets a request
    // at an offset other than the one it holds).
    let mut uncertain = false;
    loop {
        if uncertain {
            match session_standing(place, &location, Some(blob.size)).await {
                Ok(Standing::At(next, held)) => {
                    if held != offset {
                        reporter.blob_resumed(image, &blob.digest, held);
                    }
                    (location, offset) = (next, held);
                    keep(&location, offset);
                }
                Ok(Standing::Gone) => {
                    // The commit may have landed, its answer lost.
                    if repo.has_blob(&blob.digest).await? {
                        forget();
                        return Ok(());
                    }
                    let why = "the registry dropped the upload session";
                    restarts
                        .failed(RegistryError::NotFound {
                            registry: registry.to_owned(),
                            what: format!("upload session of {} in {repository}", blob.digest),
                        })
                        .await?;
                    reporter.blob_restarted(image, &blob.digest, why);
                    location = repo.start_upload().await?;
                    offset = 0;
                    keep(&location, offset);
                }
                Err(err) if is_session_failure(&err) => {
                    step.failed(err).await?;
                    continue;
                }
                Err(err) => return Err(err),
            }
            uncertain = false;
        }
        if offset < blob.size {
            let len = chunk_size.min(blob.size - offset);
            step.on(format!(
                "upload of {} to {repository} at byte {offset}",
                blob.digest
            ));
            let chunk = read_range(path, offset, len).await?;
            let what = step.what().to_owned();
            match patch_chunk(place, &what, &location, offset, chunk).await {
                Ok(next) => {
                    location = next;
                    offset += len;
                    keep(&location, offset);
                    reporter.blob_progress(&blob.digest, len);
                }
                Err(err) if is_session_failure(&err) => {
                    step.failed(err).await?;
                    uncertain = true;
                }
                Err(err) => return Err(err),
            }
        } else {
            // Not under the silence watch (Idempotent::No): committing a
            // large blob may keep a registry with remote storage quiet for
            // long.
            step.on(format!("commit of {} to {repository}", blob.digest));
            let what = step.what().to_owned();
            match close_upload(place, blob, &what, &location).await {
                Ok(()) => {
                    forget();
                    return Ok(());
                }
                Err(err) if is_session_failure(&err) => {
                    step.failed(err).await?;
                    uncertain = true;
                }
                Err(err) => {
                    // Refused for good: the session is over.
                    forget();
                    return Err(err);
                }
            }
        }
    }
}

/// Uploads in `chunk_size` PATCH requests, then closes the session, each
/// request continued like a resumable upload's when it fails.
async fn upload_chunked(transfer: &BlobTransfer<'_, '_>) -> Result<(), RegistryError> {
    let (blob, reporter) = (transfer.blob, transfer.reporter);
    let source = transfer.source.clone();
    // Chunks are read from a file; a remote source is spooled first.
    let spooled;
    let path: PathBuf = match source {
        BlobSource::File(path) => path,
        BlobSource::Remote {
            client: from,
            repository: from_repo,
        } => {
            spooled = spool(from, from_repo, blob, reporter).await?;
            spooled.path().to_path_buf()
        }
    };
    upload_resumable(transfer, &path, None, None).await
}

/// Closes an upload session whose bytes are all sent: an empty PUT naming
/// the digest, then the registry's answer checked.
pub(crate) async fn close_upload(
    place: SessionPlace<'_>,
    blob: &Descriptor,
    what: &str,
    location: &str,
) -> Result<(), RegistryError> {
    let SessionPlace {
        client,
        repository,
        reporter,
        ..
    } = place;
    let url = with_query(location, "digest", &blob.digest.to_string());
    let response = client
        .send(
            what,
            &[Scope::PullPush(repository.to_owned())],
            Idempotent::No,
            reporter.as_ref(),
            &|http| http.put(&url).header(CONTENT_LENGTH, "0"),
        )
        .await?;
    confirm_upload(client, repository, blob, response).await
}

async fn read_range(path: &Path, offset: u64, len: u64) -> Result<Bytes, RegistryError> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let io = |source| RegistryError::Io {
        what: "cannot read blob",
        path: path.to_path_buf(),
        source,
    };
    let mut file = tokio::fs::File::open(path).await.map_err(io)?;
    file.seek(std::io::SeekFrom::Start(offset))
        .await
        .map_err(io)?;
    let mut buf = vec![0; usize::try_from(len).unwrap_or(usize::MAX)];
    file.read_exact(&mut buf).await.map_err(io)?;
    Ok(Bytes::from(buf))
}

/// Downloads a remote blob into a temporary file, verifying it.
async fn spool(
    client: &RegistryClient,
    repository: &str,
    blob: &Descriptor,
    reporter: &Arc<dyn Reporter>,
) -> Result<tempfile::NamedTempFile, RegistryError> {
    let mut temp = tempfile::NamedTempFile::new().map_err(|source| RegistryError::Io {
        what: "cannot create a temporary file in",
        path: std::env::temp_dir(),
        source,
    })?;
    let path = temp.path().to_path_buf();
    crate::pull::download(
        client,
        repository,
        blob,
        reporter.as_ref(),
        &mut temp,
        &path,
    )
    .await?;
    Ok(temp)
}
