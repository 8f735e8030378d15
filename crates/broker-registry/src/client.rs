//! One client per registry host: transport choice (HTTPS, or plain HTTP for
//! registries the user marked insecure and for loopback), the auth handshake
//! (anonymous, basic, bearer tokens), and retries with backoff.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use broker_oci::Digest;
use reqwest::header::{AUTHORIZATION, HeaderMap, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{RequestBuilder, Response, StatusCode};

use crate::credentials::{CredentialSource, Credentials, ResolvedCredentials};
use crate::error::RegistryError;
use crate::progress::Reporter;
use broker_pins::Reference;

/// How hard to retry a request that failed for a reason that may pass:
/// connection errors, timeouts, 408, 429 and 5xx.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    /// The first backoff delay; later ones grow exponentially, with jitter.
    pub min_delay: Duration,
    /// The longest backoff delay.
    pub max_delay: Duration,
    /// The longest `Retry-After` we honour; longer values are capped so a
    /// registry cannot park a release build for an hour.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The backoff delays between attempts, with jitter.
    pub(crate) fn delays(&self) -> impl Iterator<Item = Duration> + use<> {
        ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.max_attempts.saturating_sub(1) as usize)
            .with_jitter()
            .build()
    }
}

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
    /// Give up on a response, or on a body that stops moving, after this long:
    /// what turns a stalled connection into a retry.
    pub read_timeout: Duration,
    /// Blobs transferred at once per image.
    pub concurrency: usize,
    /// Chunk size for registries that refuse a monolithic upload (HTTP 413).
    pub chunk_size: u64,
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
            read_timeout: Duration::from_secs(60),
            concurrency: 4,
            chunk_size: 16 * 1024 * 1024,
        }
    }
}

/// True when `host` (optionally with `:port`) is a loopback address, which
/// Docker also treats as an insecure (plain HTTP) registry.
pub fn is_loopback(host: &str) -> bool {
    let bare = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    let bare = bare.trim_start_matches('[').trim_end_matches(']');
    bare == "localhost" || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// How a client reaches its registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    /// Always HTTPS, certificates checked.
    Https,
    /// Plain HTTP: the user named the host with `--insecure-registry`.
    Http,
    /// Loopback hosts: HTTPS if the server speaks it, else plain HTTP —
    /// as Docker does for 127.0.0.0/8, but never skipping certificate checks.
    HttpsOrHttp,
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

#[derive(Debug, Default)]
enum AuthScheme {
    /// No challenge seen yet: try anonymously.
    #[default]
    Unknown,
    /// The registry wants HTTP basic auth on every request.
    Basic,
    /// The registry issues bearer tokens from `realm`.
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

#[derive(Debug, Default)]
struct AuthState {
    scheme: AuthScheme,
    /// Bearer tokens by the scopes they were issued for.
    tokens: HashMap<Vec<Scope>, String>,
}

/// Whether a failed request may be sent again as it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Idempotent {
    /// Safe to resend (GET, HEAD, PUT of a manifest).
    Yes,
    /// Resending could corrupt server state (a PUT into an upload session):
    /// the caller restarts at a higher level instead.
    No,
}

/// A client for one registry host.
pub struct RegistryClient {
    registry: String,
    api_host: String,
    transport: Transport,
    /// `scheme://host`, decided on first use (see [`Transport`]).
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
    auth: Mutex<AuthState>,
    options: ClientOptions,
    /// Repositories of this registry known to hold a blob: candidates for a
    /// cross-repository mount instead of an upload.
    known_blobs: Mutex<HashMap<Digest, BTreeSet<String>>>,
    /// One lock per blob digest being transferred by this client.
    blob_locks: Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<()>>>>,
}

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
        let transport = if options
            .insecure_registries
            .iter()
            .any(|h| h == reference.registry() || h == reference.api_host())
        {
            Transport::Http
        } else if is_loopback(reference.registry()) {
            Transport::HttpsOrHttp
        } else {
            Transport::Https
        };
        let mut certs = Vec::new();
        for path in &options.ca_files {
            let pem = std::fs::read(path).map_err(|source| RegistryError::Io {
                what: "cannot read CA file",
                path: path.clone(),
                source,
            })?;
            let found = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                RegistryError::Config(format!(
                    "CA file {} holds no PEM certificate: {e}",
                    path.display()
                ))
            })?;
            if found.is_empty() {
                return Err(RegistryError::Config(format!(
                    "CA file {} holds no PEM certificate",
                    path.display()
                )));
            }
            certs.extend(found);
        }
        // reqwest's read timeout runs from sending a request to its answer,
        // then per read of the answer's body: right for everything but
        // uploads, where it would cut off any upload taking longer.
        let credentials = options.credentials.resolve(reference.credential_key())?;
        Ok(Self {
            registry: reference.registry().to_owned(),
            api_host: reference.api_host().to_owned(),
            transport,
            base_url: tokio::sync::OnceCell::new(),
            http: tokio::sync::OnceCell::new(),
            upload_http: tokio::sync::OnceCell::new(),
            extra_roots: certs,
            credentials,
            auth: Mutex::new(AuthState::default()),
            options: options.clone(),
            known_blobs: Mutex::new(HashMap::new()),
            blob_locks: Mutex::new(HashMap::new()),
        })
    }

    /// The registry host as written in references.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The HTTP client for requests whose body streams a blob.
    pub(crate) async fn upload_http(&self) -> Result<&reqwest::Client, RegistryError> {
        let system_roots = self.needs_system_roots().await?;
        self.upload_http
            .get_or_try_init(|| async {
                http_client(&self.options, &self.extra_roots, None, system_roots)
            })
            .await
    }

    /// The HTTP client for every other request.
    pub(crate) async fn http(&self) -> Result<&reqwest::Client, RegistryError> {
        let system_roots = self.needs_system_roots().await?;
        self.http
            .get_or_try_init(|| async {
                http_client(
                    &self.options,
                    &self.extra_roots,
                    Some(self.options.read_timeout),
                    system_roots,
                )
            })
            .await
    }

    /// Whether TLS connections may need the system's roots: always, except
    /// for a loopback registry that speaks plain HTTP — a local registry
    /// does not redirect to public HTTPS storage, and loading the roots
    /// (one file per CA) costs a no-op push more than all its requests.
    async fn needs_system_roots(&self) -> Result<bool, RegistryError> {
        let base = self.base_url().await?;
        Ok(!(self.transport == Transport::HttpsOrHttp && base.starts_with("http://")))
    }

    /// The options this client was made with.
    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// Records that `repository` holds `digest`, so later pushes of the same
    /// blob to other repositories mount it instead of uploading it.
    pub fn remember_blob(&self, digest: Digest, repository: &str) {
        let mut known = self
            .known_blobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        known
            .entry(digest)
            .or_default()
            .insert(repository.to_owned());
    }

    /// The lock serialising transfers of `digest` within this client.
    pub(crate) fn blob_lock(&self, digest: &Digest) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .blob_locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(locks.entry(*digest).or_default())
    }

    /// Adds the blob locations recorded in `path` by an earlier run (see
    /// [`RegistryClient::save_known_blobs`]), so this run mounts what earlier
    /// runs pushed, as Docker does. A missing or unreadable file is an
    /// empty record: it only costs uploads.
    pub fn load_known_blobs(&self, path: &Path) {
        let Ok(bytes) = std::fs::read(path) else {
            return;
        };
        let Ok(record) =
            serde_json::from_slice::<BTreeMap<String, BTreeMap<Digest, BTreeSet<String>>>>(&bytes)
        else {
            return;
        };
        if let Some(blobs) = record.get(&self.registry) {
            for (digest, repositories) in blobs {
                for repository in repositories {
                    self.remember_blob(*digest, repository);
                }
            }
        }
    }

    /// Records which repositories of this registry hold which blobs in
    /// `path` (merged with what is there for other registries), written
    /// atomically.
    pub fn save_known_blobs(&self, path: &Path) -> Result<(), RegistryError> {
        let io = |source| RegistryError::Io {
            what: "cannot write",
            path: path.to_path_buf(),
            source,
        };
        let mut record: BTreeMap<String, BTreeMap<Digest, BTreeSet<String>>> = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let known = self
            .known_blobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = record.entry(self.registry.clone()).or_default();
        for (digest, repositories) in known.iter() {
            entry
                .entry(*digest)
                .or_default()
                .extend(repositories.iter().cloned());
        }
        drop(known);
        let bytes = serde_json::to_vec(&record).map_err(|e| io(std::io::Error::other(e)))?;
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut temp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
        std::io::Write::write_all(&mut temp, &bytes).map_err(io)?;
        temp.persist(path).map_err(|e| io(e.error))?;
        Ok(())
    }

    /// Repositories other than `except` known to hold `digest`.
    pub(crate) fn mount_candidates(&self, digest: &Digest, except: &str) -> Vec<String> {
        let known = self
            .known_blobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        known
            .get(digest)
            .map(|repos| repos.iter().filter(|r| *r != except).cloned().collect())
            .unwrap_or_default()
    }

    /// `scheme://host/v2/<path>`.
    pub(crate) async fn url(&self, path: &str) -> Result<String, RegistryError> {
        Ok(format!("{}/v2/{path}", self.base_url().await?))
    }

    async fn base_url(&self) -> Result<&str, RegistryError> {
        self.base_url
            .get_or_try_init(|| async {
                let scheme = match self.transport {
                    Transport::Http => "http",
                    Transport::Https => "https",
                    Transport::HttpsOrHttp => self.probe_scheme().await?,
                };
                Ok(format!("{scheme}://{}", self.api_host))
            })
            .await
            .map(String::as_str)
    }

    /// For loopback registries: plain HTTP when the server speaks it, else
    /// HTTPS with its certificate checked like any other. Plain HTTP is
    /// asked first because a TLS server answers it at once, while a TLS
    /// handshake costs a loopback push more than all its requests.
    async fn probe_scheme(&self) -> Result<&'static str, RegistryError> {
        let bare = http_client(
            &self.options,
            &self.extra_roots,
            Some(self.options.read_timeout),
            false,
        )?;
        match bare
            .get(format!("http://{}/v2/", self.api_host))
            .send()
            .await
        {
            // Go's TLS servers answer a plain request with this 400.
            Ok(response) => {
                let tls_server = response.status() == StatusCode::BAD_REQUEST
                    && response
                        .text()
                        .await
                        .unwrap_or_default()
                        .contains("HTTPS server");
                if tls_server {
                    return Ok("https");
                }
                // Exactly the client `http()` would make for this registry:
                // keep it, and its open connection.
                let _ = self.http.set(bare);
                Ok("http")
            }
            Err(_) => {
                let full = http_client(
                    &self.options,
                    &self.extra_roots,
                    Some(self.options.read_timeout),
                    true,
                )?;
                match full
                    .get(format!("https://{}/v2/", self.api_host))
                    .send()
                    .await
                {
                    Err(err) => match tls_problem(&err) {
                        Some(why) => Err(RegistryError::Tls {
                            registry: self.registry.clone(),
                            why,
                        }),
                        // Unreachable either way: requests will retry and report.
                        None => Ok("http"),
                    },
                    Ok(_) => Ok("https"),
                }
            }
        }
    }

    /// Resolves an upload `Location` header, which may be relative.
    pub(crate) fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_owned()
        } else {
            let base = self.base_url.get().map_or("", String::as_str);
            format!("{base}/{}", location.trim_start_matches('/'))
        }
    }

    /// Sends a request built by `make`, handling the auth handshake and, for
    /// idempotent requests, retrying transient failures with backoff.
    ///
    /// Returns any response that is not a transient failure; the caller
    /// interprets its status.
    pub(crate) async fn send(
        &self,
        what: &str,
        scopes: &[Scope],
        idempotent: Idempotent,
        reporter: &dyn Reporter,
        make: &(dyn Fn(&reqwest::Client) -> RequestBuilder + Sync),
    ) -> Result<Response, RegistryError> {
        let mut scopes = scopes.to_vec();
        scopes.sort();
        let mut delays = self.options.retry.delays();
        let mut attempt = 0u32;
        let mut authenticated_once = false;
        loop {
            attempt += 1;
            let header = self.authorization(&scopes).await?;
            let mut request = make(self.http().await?);
            if let Some(header) = header {
                request = request.header(AUTHORIZATION, header);
            }
            let failure = match request.send().await {
                Ok(response) if response.status() == StatusCode::UNAUTHORIZED => {
                    if authenticated_once {
                        return Err(self.refused(&scopes));
                    }
                    authenticated_once = true;
                    self.handle_challenge(response.headers(), &scopes).await?;
                    // The handshake is not a failure: do not count it.
                    attempt -= 1;
                    continue;
                }
                Ok(response) if is_transient(response.status()) => {
                    let retry_after = retry_after(response.headers())
                        .map(|d| d.min(self.options.retry.max_retry_after));
                    let status = response.status();
                    (format!("HTTP {status}"), retry_after)
                }
                Ok(response) => return Ok(response),
                Err(err) => {
                    if let Some(tls) = tls_problem(&err) {
                        return Err(RegistryError::Tls {
                            registry: self.registry.clone(),
                            why: tls,
                        });
                    }
                    (error_chain(&err), None)
                }
            };
            let (why, retry_after) = failure;
            let next = if idempotent == Idempotent::Yes {
                delays.next()
            } else {
                None
            };
            match next {
                Some(delay) => {
                    let delay = retry_after.unwrap_or(delay);
                    reporter.retrying(what, attempt, delay, &why);
                    tokio::time::sleep(delay).await;
                }
                None => {
                    return Err(RegistryError::Unreachable {
                        registry: self.registry.clone(),
                        what: what.to_owned(),
                        attempts: attempt,
                        why,
                    });
                }
            }
        }
    }

    fn refused(&self, scopes: &[Scope]) -> RegistryError {
        let why = match &self.credentials.credentials {
            None => format!(
                "the registry requires credentials for {}: run `docker login {}` or pass --username and --password-stdin",
                scope_list(scopes),
                self.registry
            ),
            Some(Credentials::Basic { username, .. }) => format!(
                "the registry refused user `{username}` for {} (credentials from {}): check the password and the user's permissions",
                scope_list(scopes),
                self.credentials.origin
            ),
            Some(Credentials::IdentityToken(_)) => format!(
                "the registry refused the identity token from {} for {}: run `docker login {}` again",
                self.credentials.origin,
                scope_list(scopes),
                self.registry
            ),
        };
        RegistryError::Unauthorized {
            registry: self.registry.clone(),
            why,
        }
    }

    /// The Authorization header to send for `scopes`, fetching a bearer token
    /// when the registry is known to use them.
    async fn authorization(&self, scopes: &[Scope]) -> Result<Option<String>, RegistryError> {
        let bearer = {
            let state = self.lock_auth();
            match &state.scheme {
                AuthScheme::Unknown => return Ok(None),
                AuthScheme::Basic => return Ok(self.basic_header()),
                AuthScheme::Bearer { realm, service } => match state.tokens.get(scopes) {
                    Some(token) => return Ok(Some(format!("Bearer {token}"))),
                    None => (realm.clone(), service.clone()),
                },
            }
        };
        let token = self
            .fetch_token(&bearer.0, bearer.1.as_deref(), scopes)
            .await?;
        self.lock_auth()
            .tokens
            .insert(scopes.to_vec(), token.clone());
        Ok(Some(format!("Bearer {token}")))
    }

    fn lock_auth(&self) -> std::sync::MutexGuard<'_, AuthState> {
        // A panic while holding this lock cannot leave the map half-updated
        // in a way that matters: at worst a token is fetched again.
        self.auth
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn basic_header(&self) -> Option<String> {
        match &self.credentials.credentials {
            Some(Credentials::Basic { username, password }) => Some(format!(
                "Basic {}",
                base64_encode(format!("{username}:{password}").as_bytes())
            )),
            _ => None,
        }
    }

    async fn handle_challenge(
        &self,
        headers: &HeaderMap,
        scopes: &[Scope],
    ) -> Result<(), RegistryError> {
        let challenge = headers
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let (scheme, params) = parse_challenge(challenge);
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => {
                if self.basic_header().is_none() {
                    return Err(self.refused(scopes));
                }
                self.lock_auth().scheme = AuthScheme::Basic;
                Ok(())
            }
            "bearer" => {
                let realm =
                    params
                        .get("realm")
                        .cloned()
                        .ok_or_else(|| RegistryError::Unauthorized {
                            registry: self.registry.clone(),
                            why: "the bearer challenge names no realm to get a token from"
                                .to_owned(),
                        })?;
                let service = params.get("service").cloned();
                let token = self.fetch_token(&realm, service.as_deref(), scopes).await?;
                let mut state = self.lock_auth();
                state.scheme = AuthScheme::Bearer { realm, service };
                state.tokens.insert(scopes.to_vec(), token);
                Ok(())
            }
            _ => Err(RegistryError::Unauthorized {
                registry: self.registry.clone(),
                why: format!("unsupported authentication challenge `{scheme}`"),
            }),
        }
    }

    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scopes: &[Scope],
    ) -> Result<String, RegistryError> {
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(service) = service {
            query.push(("service", service.to_owned()));
        }
        for scope in scopes {
            query.push(("scope", scope.as_param()));
        }
        let request = match &self.credentials.credentials {
            Some(Credentials::IdentityToken(token)) => {
                let mut form = query.clone();
                form.push(("grant_type", "refresh_token".to_owned()));
                form.push(("refresh_token", token.clone()));
                form.push(("client_id", "broker-images".to_owned()));
                self.http().await?.post(realm).form(&form)
            }
            Some(Credentials::Basic { username, password }) => self
                .http()
                .await?
                .get(realm)
                .query(&query)
                .basic_auth(username, Some(password)),
            None => self.http().await?.get(realm).query(&query),
        };
        let response = request.send().await.map_err(|e| match tls_problem(&e) {
            Some(why) => RegistryError::Tls {
                registry: self.registry.clone(),
                why,
            },
            None => RegistryError::Unreachable {
                registry: self.registry.clone(),
                what: "token request".to_owned(),
                attempts: 1,
                why: error_chain(&e),
            },
        })?;
        if response.status() == StatusCode::UNAUTHORIZED
            || response.status() == StatusCode::FORBIDDEN
        {
            return Err(self.refused(scopes));
        }
        if !response.status().is_success() {
            return Err(RegistryError::Status {
                registry: self.registry.clone(),
                what: "token request".to_owned(),
                status: response.status().as_u16(),
                detail: String::new(),
            });
        }
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
        }
        let body: TokenResponse =
            response
                .json()
                .await
                .map_err(|e| RegistryError::Unauthorized {
                    registry: self.registry.clone(),
                    why: format!("the token service answered something that is not a token: {e}"),
                })?;
        body.token
            .or(body.access_token)
            .ok_or_else(|| RegistryError::Unauthorized {
                registry: self.registry.clone(),
                why: "the token service answered without a token".to_owned(),
            })
    }

    /// Turns an unexpected response into an error carrying the registry's
    /// own error code and message (never request headers).
    pub(crate) async fn unexpected(&self, what: &str, response: Response) -> RegistryError {
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        let detail = registry_error_detail(&body);
        if status == 404 {
            return RegistryError::NotFound {
                registry: self.registry.clone(),
                what: format!("{what}{detail}"),
            };
        }
        RegistryError::Status {
            registry: self.registry.clone(),
            what: what.to_owned(),
            status,
            detail,
        }
    }
}

/// A reqwest client for `options`, trusting `extra_roots` besides the
/// system roots, with reqwest's read timeout when given.
fn http_client(
    options: &ClientOptions,
    extra_roots: &[reqwest::Certificate],
    read_timeout: Option<Duration>,
    system_roots: bool,
) -> Result<reqwest::Client, RegistryError> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(options.connect_timeout)
        .user_agent(concat!("broker-images/", env!("CARGO_PKG_VERSION")))
        // Redirects to blob storage (S3, CDN) must not carry our
        // registry credentials; reqwest drops Authorization on
        // cross-host redirects.
        .redirect(reqwest::redirect::Policy::limited(10));
    if let Some(timeout) = read_timeout {
        builder = builder.read_timeout(timeout);
    }
    if !system_roots {
        builder = builder.tls_certs_only(extra_roots.to_vec());
    } else if !extra_roots.is_empty() {
        builder = builder.tls_certs_merge(extra_roots.to_vec());
    }
    if options.skip_tls_verify {
        builder = builder.danger_accept_invalid_certs(true);
    }
    builder.build().map_err(|e| {
        RegistryError::Config(format!("cannot set up HTTP client: {}", error_chain(&e)))
    })
}

fn scope_list(scopes: &[Scope]) -> String {
    scopes
        .iter()
        .map(Scope::as_param)
        .collect::<Vec<_>>()
        .join(" ")
}

fn is_transient(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Parses `Bearer realm="…",service="…",scope="…"` into the scheme and its
/// parameters. Quoted values may contain commas.
fn parse_challenge(header: &str) -> (String, HashMap<String, String>) {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let mut params = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars
            .by_ref()
            .take_while(|c| *c != '=')
            .collect::<String>()
            .trim()
            .to_ascii_lowercase();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = chars
                .by_ref()
                .take_while(|c| *c != ',')
                .collect::<String>()
                .trim()
                .to_owned();
        }
        params.insert(key, value);
    }
    (scheme.to_owned(), params)
}

/// The registry's `{"errors":[{"code","message"}]}` as ": CODE message".
fn registry_error_detail(body: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorEntry {
        code: Option<String>,
        message: Option<String>,
    }
    match serde_json::from_str::<Errors>(body) {
        Ok(parsed) if !parsed.errors.is_empty() => {
            let parts: Vec<String> = parsed
                .errors
                .iter()
                .map(|e| {
                    format!(
                        "{} {}",
                        e.code.as_deref().unwrap_or(""),
                        e.message.as_deref().unwrap_or("")
                    )
                    .trim()
                    .to_owned()
                })
                .collect();
            format!(": {}", parts.join("; "))
        }
        _ => String::new(),
    }
}

/// The error and all its causes on one line.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
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

/// A certificate problem in the chain of `err`, explained with the flag
/// that fixes it.
fn tls_problem(err: &reqwest::Error) -> Option<String> {
    let chain = error_chain(err);
    let lower = chain.to_ascii_lowercase();
    let is_cert = lower.contains("certificate")
        || lower.contains("unknownissuer")
        || lower.contains("invalid peer");
    is_cert.then(|| {
        format!("the server's certificate is not trusted ({chain}); pass --ca-file with the CA that signed it (or, for a throwaway registry only, --insecure-skip-tls-verify)")
    })
}

fn base64_encode(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_insecure_by_default() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("127.3.4.5"));
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("registry.example:5000"));
        assert!(!is_loopback("10.0.0.1:5000"));
    }

    #[test]
    fn bearer_challenges_parse_with_commas_in_quotes() {
        let (scheme, params) = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(scheme, "Bearer");
        assert_eq!(params["realm"], "https://auth.example/token");
        assert_eq!(params["service"], "registry.example");
        assert_eq!(params["scope"], "repository:a/b:pull,push");
        let (scheme, params) = parse_challenge(r#"Basic realm="Registry Realm""#);
        assert_eq!(scheme, "Basic");
        assert_eq!(params["realm"], "Registry Realm");
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(input.as_bytes()), expected);
        }
    }

    #[test]
    fn registry_errors_are_summarised() {
        let body = r#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry","detail":"sha256:abc"}]}"#;
        assert_eq!(
            registry_error_detail(body),
            ": BLOB_UNKNOWN blob unknown to registry"
        );
        assert_eq!(registry_error_detail("not json"), "");
    }

    #[test]
    fn retry_delays_are_bounded() {
        let policy = RetryPolicy {
            max_attempts: 4,
            min_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            max_retry_after: Duration::from_secs(1),
        };
        let delays: Vec<Duration> = policy.delays().collect();
        assert_eq!(delays.len(), 3);
        assert!(
            delays.iter().all(|d| *d <= Duration::from_millis(100)),
            "{delays:?}"
        );
    }
}
