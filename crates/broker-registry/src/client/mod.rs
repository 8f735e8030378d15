//! One client per registry host. Split by concern:
//!
//! - [`transport`]: HTTPS or plain HTTP (insecure and loopback hosts), TLS
//!   roots, the reqwest clients;
//! - [`auth`]: the handshake (anonymous, basic, bearer tokens per scope);
//! - [`retry`]: the retry policy, the defaults of the command line, and the
//!   send loop;
//! - [`request`]: the one request helper of the pull and push paths;
//! - [`silence`]: when to give up on a registry that answers nothing.
//!
//! This module holds the client itself and what it remembers across
//! requests: which repositories hold which blobs (mount candidates).

mod auth;
mod request;
mod retry;
mod silence;
mod transport;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use broker_pins::{Digest, Reference};

use crate::credentials::{CredentialSource, ResolvedCredentials};
use crate::error::RegistryError;

pub(crate) use request::{Call, FOUND_OR_NOT, reported_digest};
pub(crate) use retry::Idempotent;
pub use retry::{
    DEFAULT_GIVE_UP_SECS, DEFAULT_JOBS, DEFAULT_RETRIES, DEFAULT_STALL_TIMEOUT_SECS, RetryPolicy,
};
pub use transport::is_loopback;

/// Options shared by every registry client of one run.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Registry hosts (`host` or `host:port`) spoken to over plain HTTP.
    /// Loopback hosts (127.0.0.0/8, `localhost`, `::1`) always are.
    pub insecure_registries: Vec<String>,
    /// Extra PEM certificate authorities trusted besides the system roots.
    pub ca_files: Vec<PathBuf>,
    /// Accept any TLS certificate. Dangerous; only for throwaway registries.
    pub skip_tls_verify: bool,
    /// Where credentials come from.
    pub credentials: CredentialSource,
    /// Retry behaviour for transient failures.
    pub retry: RetryPolicy,
    /// Give up on a connection attempt after this long.
    pub connect_timeout: Duration,
    /// Abandon a request whose answer, or whose body, has not moved for
    /// this long, and send it again (the stall timeout): what turns one
    /// hung request into a retry. Keep it well below `give_up_after`, or a
    /// single stalled request outlasts the budget and ends the run.
    pub read_timeout: Duration,
    /// Give up on the registry once it has answered nothing, on any
    /// request, for this long while requests waited on it, however many
    /// retries are left: what bounds a run against a dead or stalling
    /// registry. Any answer (to a retry, or to another request) starts the
    /// silence afresh; uploads whose body moves do not count as waiting.
    pub give_up_after: Duration,
    /// Blobs transferred at once per image.
    pub concurrency: usize,
    /// Chunk size for registries that refuse a monolithic upload (HTTP 413),
    /// and for resumable uploads.
    pub chunk_size: u64,
    /// Blobs of at least this many bytes are uploaded in `chunk_size`
    /// PATCHes whose session is kept in the store (with a publisher that
    /// records), so an interrupted upload continues where the registry
    /// stands. Smaller blobs go in one request: resending them is cheaper
    /// than the extra round trips.
    pub resumable_from: u64,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            insecure_registries: Vec::new(),
            ca_files: Vec::new(),
            skip_tls_verify: false,
            credentials: CredentialSource::default(),
            retry: RetryPolicy::default(),
            connect_timeout: Duration::from_secs(15),
            read_timeout: Duration::from_secs(DEFAULT_STALL_TIMEOUT_SECS),
            give_up_after: Duration::from_secs(DEFAULT_GIVE_UP_SECS),
            concurrency: DEFAULT_JOBS,
            chunk_size: 16 * 1024 * 1024,
            resumable_from: 64 * 1024 * 1024,
        }
    }
}

/// Access a request needs; registries with token auth issue tokens per scope.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Scope {
    /// Read a repository.
    Pull(String),
    /// Read and write a repository.
    PullPush(String),
}

impl Scope {
    fn as_param(&self) -> String {
        match self {
            Scope::Pull(repo) => format!("repository:{repo}:pull"),
            Scope::PullPush(repo) => format!("repository:{repo}:pull,push"),
        }
    }
}

/// A client for one registry host.
pub struct RegistryClient {
    registry: String,
    api_host: String,
    transport: transport::Transport,
    /// `scheme://host`, decided on first use (see [`transport::Transport`]).
    base_url: tokio::sync::OnceCell<String>,
    /// Made once the scheme is known (see [`RegistryClient::http`]).
    http: tokio::sync::OnceCell<reqwest::Client>,
    /// For request bodies that stream a blob: no reqwest read timeout,
    /// which would be a deadline for the whole upload; the caller watches
    /// the body's progress instead (see `transfer::Progress`). Made on
    /// first upload: loading the system roots again costs a no-op push
    /// more than its requests do.
    upload_http: tokio::sync::OnceCell<reqwest::Client>,
    /// The CA certificates of `options.ca_files`, read once.
    extra_roots: Vec<reqwest::Certificate>,
    credentials: ResolvedCredentials,
    auth: Mutex<auth::AuthState>,
    /// How long the registry has been silent, and whether we gave up.
    silence: silence::Silence,
    options: ClientOptions,
    /// Repositories of this registry known to hold a blob: candidates for a
    /// cross-repository mount instead of an upload.
    known_blobs: Mutex<HashMap<Digest, BTreeSet<String>>>,
    /// Where interrupted uploads are kept, when a publisher records.
    upload_sessions: Option<crate::upload_sessions::UploadSessions>,
    /// One lock per blob digest being transferred by this client.
    blob_locks: Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<()>>>>,
    /// Tag checks asked ahead of a push (see [`crate::Publisher::look_ahead`]),
    /// by `repository:tag`; `None` once the push took the answer or asked
    /// itself, so each tag is asked once.
    tags_ahead: Mutex<HashMap<String, Option<TagAnswer>>>,
}

/// A tag's manifest digest (`None`: no such tag), asked once and awaited by
/// whoever needs it first.
pub(crate) type TagAnswer = Arc<tokio::sync::OnceCell<Option<Digest>>>;

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("registry", &self.registry)
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

impl RegistryClient {
    /// Creates a client for the registry that serves `reference`.
    pub fn for_reference(
        reference: &Reference,
        options: &ClientOptions,
    ) -> Result<Self, RegistryError> {
        let transport =
            transport::Transport::choose(reference.registry(), reference.api_host(), options);
        let extra_roots = transport::extra_roots(&options.ca_files)?;
        let credentials = options.credentials.resolve(reference.credential_key())?;
        Ok(Self {
            registry: reference.registry().to_owned(),
            api_host: reference.api_host().to_owned(),
            transport,
            base_url: tokio::sync::OnceCell::new(),
            http: tokio::sync::OnceCell::new(),
            upload_http: tokio::sync::OnceCell::new(),
            extra_roots,
            credentials,
            auth: Mutex::new(auth::AuthState::default()),
            silence: silence::Silence::new(options.give_up_after),
            options: options.clone(),
            known_blobs: Mutex::new(HashMap::new()),
            upload_sessions: None,
            blob_locks: Mutex::new(HashMap::new()),
            tags_ahead: Mutex::new(HashMap::new()),
        })
    }

    /// The registry host as written in references.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The options this client was made with.
    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// The error for a registry that answered nothing for the whole
    /// give-up budget.
    pub(crate) fn unresponsive(&self) -> RegistryError {
        RegistryError::Unresponsive {
            registry: self.registry.clone(),
            secs: self.silence.budget().as_secs(),
        }
    }

    fn lock_known_blobs(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, BTreeSet<String>>> {
        // A panic while holding this lock leaves at worst a missing entry:
        // a blob is uploaded instead of mounted.
        self.known_blobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records that `repository` holds `digest`, so later pushes of the same
    /// blob to other repositories mount it instead of uploading it.
    pub fn remember_blob(&self, digest: Digest, repository: &str) {
        self.lock_known_blobs()
            .entry(digest)
            .or_default()
            .insert(repository.to_owned());
    }

    /// Every blob this client knows a repository of, with those
    /// repositories (what [`crate::Publisher`] records for later runs).
    pub fn known_blobs(&self) -> BTreeMap<Digest, BTreeSet<String>> {
        self.lock_known_blobs()
            .iter()
            .map(|(digest, repositories)| (*digest, repositories.clone()))
            .collect()
    }

    fn lock_tags_ahead(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<TagAnswer>>> {
        // A poisoned map costs at most a tag asked twice.
        self.tags_ahead
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The answer cell for a look-ahead of `repository:tag`; `None` when
    /// that tag was asked for already (ahead, or by its push).
    pub(crate) fn ask_tag_ahead(&self, repository: &str, tag: &str) -> Option<TagAnswer> {
        match self.lock_tags_ahead().entry(format!("{repository}:{tag}")) {
            std::collections::hash_map::Entry::Occupied(_) => None,
            std::collections::hash_map::Entry::Vacant(slot) => {
                let answer = TagAnswer::default();
                slot.insert(Some(Arc::clone(&answer)));
                Some(answer)
            }
        }
    }

    /// The look-ahead of `repository:tag`, for its push to await, if one
    /// was started; afterwards the tag counts as asked.
    pub(crate) fn take_tag_ahead(&self, repository: &str, tag: &str) -> Option<TagAnswer> {
        self.lock_tags_ahead()
            .insert(format!("{repository}:{tag}"), None)
            .flatten()
    }

    /// Repositories other than `except` known to hold `digest`.
    pub(crate) fn mount_candidates(&self, digest: &Digest, except: &str) -> Vec<String> {
        self.lock_known_blobs()
            .get(digest)
            .map(|repos| repos.iter().filter(|r| *r != except).cloned().collect())
            .unwrap_or_default()
    }

    /// Keeps upload sessions in `path`, so uploads interrupted in this run
    /// continue in the next.
    pub(crate) fn keep_upload_sessions(&mut self, path: PathBuf) {
        self.upload_sessions = Some(crate::upload_sessions::UploadSessions::new(path));
    }

    /// The kept upload sessions, if this client keeps them.
    pub(crate) fn upload_sessions(&self) -> Option<&crate::upload_sessions::UploadSessions> {
        self.upload_sessions.as_ref()
    }

    /// The lock serialising transfers of `digest` within this client.
    pub(crate) fn blob_lock(&self, digest: &Digest) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .blob_locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(locks.entry(*digest).or_default())
    }
}

/// The error and all its causes on one line, each said once: for errors of
/// other crates (reqwest, hyper) that end up as the `why` text of ours. A
/// failure to connect is said in words that say what to check, without
/// reqwest's and hyper's wording (`error sending request for url (…):
/// client error (Connect): dns error: …`); the message around it already
/// names the registry and the operation.
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    if let Some(why) = connect_failure(err) {
        return why.to_owned();
    }
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

/// What a request that never reached the registry ran into, when that is
/// what `err` is.
fn connect_failure(err: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    // A timeout or a failed lookup mid-transfer is the transfer's to say.
    let connecting = err
        .downcast_ref::<reqwest::Error>()
        .is_some_and(reqwest::Error::is_connect);
    let causes = broker_pins::transport::TransportCauses::of(err);
    if causes.refused() {
        Some(
            "connection refused: nothing listens at that address; check the registry's host and port and that it is running",
        )
    } else if connecting && causes.unresolved() {
        Some(
            "its host name does not resolve: check the registry's name, and this machine's DNS and network",
        )
    } else if connecting && causes.timed_out() {
        Some(
            "no connection in time: check the registry's address and any firewall, proxy or VPN in between",
        )
    } else if causes.unroutable() {
        Some("no route to it: check the registry's address and this machine's network")
    } else {
        None
    }
}
