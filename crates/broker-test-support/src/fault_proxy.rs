//! An in-process HTTP/1.1 reverse proxy in front of a plain-HTTP
//! [`TestRegistry`] that injects faults (connection resets, error statuses,
//! stalls) into chosen requests, for testing clients' retries.
//!
//! The proxy runs on its own thread with its own current-thread tokio
//! runtime, so it works the same from synchronous tests and from inside any
//! runtime. Dropping the [`FaultProxy`] stops it.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::background::BackgroundServer;
use crate::registry::TestRegistry;

/// A fault injected into one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Close the connection without answering. When the request has a body
    /// (an upload), the proxy first reads part of it, so the client is cut
    /// off mid-body; the socket is closed with a TCP reset (`SO_LINGER` 0).
    ResetConnection,
    /// Answer with this status (e.g. 503) and `Retry-After: 0` without
    /// forwarding the request.
    Status(u16),
    /// Hold the request for this long, then forward it.
    Stall(Duration),
    /// Hold the request for this long (its body is read meanwhile, as a
    /// buffering proxy would), then forward it — unless the client gave up
    /// on it first: then it is dropped and the registry never sees it, as
    /// when a hung connection loses a request. Unlike [`Fault::Stall`], a
    /// request the client abandoned cannot reach the registry late, after
    /// the client went on (CNCF Distribution cancels an upload session
    /// when a stale request for it arrives).
    Hang(Duration),
}

/// Which requests get a fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultPolicy {
    /// Forward everything unchanged.
    None,
    /// Every `n`-th request (the `n`-th, `2n`-th, … counted from 1 over all
    /// requests the proxy received) gets `fault`; the others are forwarded.
    EveryNth {
        /// Period; 0 means never.
        n: usize,
        /// The fault.
        fault: Fault,
    },
    /// Every request gets the fault.
    FailAll(Fault),
    /// Every `n`-th request gets the next fault of `faults`, in turn: with
    /// `n = 3` and `[503, reset, hang]`, request 3 gets the 503, request 6
    /// the reset, request 9 the hang, request 12 the 503 again.
    EveryNthMixed {
        /// Period; 0 means never.
        n: usize,
        /// The faults, used in turn.
        faults: Vec<Fault>,
    },
    /// Only the `n`-th request (counted from 1) gets `fault`.
    Only {
        /// Which request.
        n: usize,
        /// The fault.
        fault: Fault,
    },
    /// The first closing `PUT` of every upload session (a `PUT` to
    /// `…/blobs/uploads/<id>?digest=…`) gets `fault`; a `PUT` to the same
    /// session after that is forwarded.
    CommitsFailOnce(Fault),
    /// Every closing `PUT` of an upload session gets `fault`, every time;
    /// everything else is forwarded.
    CommitsFail(Fault),
}

impl FaultPolicy {
    fn fault_for(&self, request_number: usize) -> Option<Fault> {
        match self {
            FaultPolicy::None | FaultPolicy::CommitsFailOnce(_) | FaultPolicy::CommitsFail(_) => {
                None
            }
            FaultPolicy::EveryNth { n, fault } => {
                (*n > 0 && request_number.is_multiple_of(*n)).then(|| fault.clone())
            }
            FaultPolicy::FailAll(fault) => Some(fault.clone()),
            FaultPolicy::EveryNthMixed { n, faults } => {
                if *n == 0 || faults.is_empty() || !request_number.is_multiple_of(*n) {
                    return None;
                }
                Some(faults[(request_number / n - 1) % faults.len()].clone())
            }
            FaultPolicy::Only { n, fault } => (request_number == *n).then(|| fault.clone()),
        }
    }
}

/// The upload session a closing `PUT` commits (its path), if `method` and
/// `uri` are one.
fn committed_session(method: &hyper::Method, uri: &Uri) -> Option<String> {
    let is_commit = method == hyper::Method::PUT
        && uri.path().contains("/blobs/uploads/")
        && uri
            .query()
            .is_some_and(|q| q.split('&').any(|p| p.starts_with("digest=")));
    is_commit.then(|| uri.path().to_owned())
}

pub(crate) struct State {
    upstream: String,
    proxy_host: String,
    policy: Mutex<FaultPolicy>,
    seen: AtomicUsize,
    faults: AtomicUsize,
    /// Store-and-forward: each request body is read whole (at this many
    /// bytes per second) before anything of it is forwarded.
    buffer_rate: Option<u64>,
    /// Request body bytes received from clients (store-and-forward mode).
    body_bytes: AtomicU64,
    /// Bytes of request bodies being received right now.
    receiving: AtomicU64,
    /// Request body bytes forwarded to the upstream (every mode).
    forwarded: Arc<AtomicU64>,
    /// Upload sessions whose closing `PUT` already failed once
    /// ([`FaultPolicy::CommitsFailOnce`]).
    failed_commits: Mutex<std::collections::HashSet<String>>,
    client: Client<HttpConnector, ProxyBody>,
    /// The fake OCI 1.1 referrers API, when started as one.
    referrers: Option<crate::referrers_fake::Referrers>,
}

/// A running fault-injecting reverse proxy on `127.0.0.1:<ephemeral>`
/// forwarding to a plain-HTTP upstream (a [`TestRegistry`]).
///
/// Request bodies and responses are streamed in both directions (with
/// Content-Length or chunked framing); `Location` headers pointing at the
/// upstream are rewritten to the proxy so clients keep going through it.
pub struct FaultProxy {
    host: String,
    state: Arc<State>,
    _server: BackgroundServer,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("host", &self.host)
            .field("upstream", &self.state.upstream)
            .field("policy", &self.policy())
            .finish()
    }
}

impl FaultProxy {
    /// Starts a proxy in front of `registry`, which must speak plain HTTP.
    ///
    /// # Panics
    /// When the registry speaks HTTPS, or the proxy cannot bind a port.
    pub fn start(registry: &TestRegistry, policy: FaultPolicy) -> FaultProxy {
        assert!(
            !registry.is_tls(),
            "FaultProxy forwards plain HTTP only; start the registry with TestRegistry::start() or start_with_auth()"
        );
        Self::start_to(&registry.host(), policy)
    }

    /// Starts a proxy in front of the plain-HTTP server at `upstream_host`
    /// (`HOST:PORT`).
    pub fn start_to(upstream_host: &str, policy: FaultPolicy) -> FaultProxy {
        Self::start_with(upstream_host, policy, None, false)
    }

    /// A fake of what the Debian registry here (Distribution 2.8) cannot
    /// do: the OCI 1.1 referrers API. In front of `registry`, it answers a
    /// manifest PUT that has a `subject` with the `OCI-Subject` header and
    /// serves `GET /v2/<name>/referrers/<digest>` from the manifests pushed
    /// through it; everything else goes to the real registry unchanged.
    pub fn referrers_api_fake(registry: &TestRegistry) -> FaultProxy {
        assert!(!registry.is_tls(), "FaultProxy forwards plain HTTP only");
        Self::start_with(&registry.host(), FaultPolicy::None, None, true)
    }

    /// How many referrers lists the [`referrers_api_fake`](Self::referrers_api_fake) served.
    pub fn referrers_served(&self) -> usize {
        self.state
            .referrers
            .as_ref()
            .map_or(0, crate::referrers_fake::Referrers::served)
    }

    /// Starts a store-and-forward proxy in front of `registry`, as nginx is
    /// by default (`proxy_request_buffering on`): each request body is read
    /// whole, at `bytes_per_sec`, before it is forwarded, so a client cut
    /// off mid-body sends the registry nothing of that request.
    pub fn start_buffering(registry: &TestRegistry, bytes_per_sec: u64) -> FaultProxy {
        assert!(!registry.is_tls(), "FaultProxy forwards plain HTTP only");
        Self::start_with(
            &registry.host(),
            FaultPolicy::None,
            Some(bytes_per_sec.max(1)),
            false,
        )
    }

    fn start_with(
        upstream_host: &str,
        policy: FaultPolicy,
        buffer_rate: Option<u64>,
        referrers: bool,
    ) -> FaultProxy {
        let mut proxy_state = None;
        let server = BackgroundServer::start("fault-proxy", |host| {
            let state = Arc::new(State {
                upstream: upstream_host.to_string(),
                proxy_host: host.to_owned(),
                policy: Mutex::new(policy),
                seen: AtomicUsize::new(0),
                faults: AtomicUsize::new(0),
                buffer_rate,
                body_bytes: AtomicU64::new(0),
                receiving: AtomicU64::new(0),
                forwarded: Arc::new(AtomicU64::new(0)),
                failed_commits: Mutex::new(std::collections::HashSet::new()),
                client: Client::builder(TokioExecutor::new()).build_http(),
                referrers: referrers.then(crate::referrers_fake::Referrers::default),
            });
            proxy_state = Some(Arc::clone(&state));
            move |stream| serve_connection(stream, Arc::clone(&state))
        });
        let host = server.host().to_owned();
        let state = proxy_state.expect("the handler factory ran");
        FaultProxy {
            host,
            state,
            _server: server,
        }
    }

    /// `127.0.0.1:PORT` of the proxy.
    pub fn host(&self) -> String {
        self.host.clone()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.host)
    }

    /// Number of requests the proxy received so far (faulted ones included).
    pub fn requests_seen(&self) -> usize {
        self.state.seen.load(Ordering::SeqCst)
    }

    /// Number of requests that got a fault so far.
    pub fn faults_injected(&self) -> usize {
        self.state.faults.load(Ordering::SeqCst)
    }

    /// Request body bytes received from clients so far (store-and-forward
    /// proxies only; others count nothing).
    pub fn body_bytes_received(&self) -> u64 {
        self.state.body_bytes.load(Ordering::SeqCst)
    }

    /// Request body bytes forwarded to the registry so far, in any mode:
    /// what a client's uploads cost the registry's link, resends included
    /// and faulted requests excluded.
    pub fn body_bytes_forwarded(&self) -> u64 {
        self.state.forwarded.load(Ordering::SeqCst)
    }

    /// Bytes of request bodies being received right now, not yet forwarded
    /// (store-and-forward proxies only): nonzero while a client is
    /// mid-body.
    pub fn receiving(&self) -> u64 {
        self.state.receiving.load(Ordering::SeqCst)
    }

    /// The current policy.
    pub fn policy(&self) -> FaultPolicy {
        self.state
            .policy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the policy for the requests that arrive from now on (the
    /// request count keeps running).
    pub fn set_policy(&self, policy: FaultPolicy) {
        *self.state.policy.lock().unwrap_or_else(|e| e.into_inner()) = policy;
    }
}

async fn serve_connection(stream: TcpStream, state: Arc<State>) {
    let _ = stream.set_nodelay(true);
    let stream = Arc::new(stream);
    let kill = Arc::new(Notify::new());
    let io = TokioIo::new(SharedStream(stream.clone()));
    let svc_kill = kill.clone();
    let svc = service_fn(move |req| handle(req, state.clone(), stream.clone(), svc_kill.clone()));
    let conn = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io, svc);
    tokio::select! {
        _ = conn => {}
        _ = kill.notified() => {}
    }
    // The connection (and the last reference to the socket) is dropped here.
}

pub(crate) type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// Returned by the service to make hyper drop the connection unanswered.
#[derive(Debug)]
struct Reset;

impl std::fmt::Display for Reset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection reset by the fault proxy")
    }
}

impl std::error::Error for Reset {}

pub(crate) fn full(status: StatusCode, text: impl Into<Bytes>) -> Response<ProxyBody> {
    let mut resp = Response::new(
        Full::new(text.into())
            .map_err(|n: Infallible| match n {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<State>,
    stream: Arc<TcpStream>,
    kill: Arc<Notify>,
) -> Result<Response<ProxyBody>, Reset> {
    let req = match &state.referrers {
        Some(referrers) => match referrers.intercept(req, &state).await {
            Ok(answered) => return Ok(answered),
            Err(req) => req,
        },
        None => req,
    };
    let number = state.seen.fetch_add(1, Ordering::SeqCst) + 1;
    let policy = state
        .policy
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let fault = match (&policy, committed_session(req.method(), req.uri())) {
        (FaultPolicy::CommitsFailOnce(fault), Some(session)) => state
            .failed_commits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(session)
            .then(|| fault.clone()),
        (FaultPolicy::CommitsFail(fault), Some(_)) => Some(fault.clone()),
        _ => policy.fault_for(number),
    };
    if fault.is_some() {
        state.faults.fetch_add(1, Ordering::SeqCst);
    }
    match fault {
        None => Ok(forward(req, &state).await),
        Some(Fault::Stall(d)) => {
            tokio::time::sleep(d).await;
            Ok(forward(req, &state).await)
        }
        Some(Fault::Hang(d)) => hang(req, d, &state, &stream, &kill).await,
        Some(Fault::Status(code)) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            let mut resp = full(
                status,
                format!("fault injected by the test proxy: {status}\n"),
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("0"));
            Ok(resp)
        }
        Some(Fault::ResetConnection) => {
            let mut body = req.into_body();
            if !body.is_end_stream() {
                // Take part of the upload so the client is cut off mid-body.
                let _ = tokio::time::timeout(Duration::from_secs(2), body.frame()).await;
            }
            let _ = stream.set_zero_linger();
            kill.notify_one();
            Err(Reset)
        }
    }
}

/// Holds `req` for `d`, reading its body meanwhile, and forwards it only
/// when the client is still waiting for the answer; else drops it (and the
/// connection) unseen by the upstream.
async fn hang(
    req: Request<Incoming>,
    d: Duration,
    state: &State,
    stream: &TcpStream,
    kill: &Notify,
) -> Result<Response<ProxyBody>, Reset> {
    let until = tokio::time::Instant::now() + d;
    let (parts, body) = req.into_parts();
    // The whole body first: a client that gives up mid-body shows as a
    // body error, one that gives up after it as end of stream.
    let body = match tokio::time::timeout_at(until, body.collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(_)) | Err(_) => {
            kill.notify_one();
            return Err(Reset);
        }
    };
    tokio::time::sleep_until(until).await;
    // A client that gave up has closed its end: reading shows end of
    // stream (HTTP/1.1 clients here do not pipeline, so nothing else can
    // be waiting on the connection).
    let mut probe = [0u8; 1];
    let gone = std::future::poll_fn(|cx| {
        let mut buf = ReadBuf::new(&mut probe);
        match stream.poll_peek(cx, &mut buf) {
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => Poll::Ready(true),
            Poll::Ready(Ok(_)) => Poll::Ready(false),
            Poll::Pending => Poll::Ready(false),
        }
    })
    .await;
    if gone {
        kill.notify_one();
        return Err(Reset);
    }
    let body = Full::new(body)
        .map_err(|never: Infallible| match never {})
        .boxed();
    Ok(forward_parts(parts, body, state).await)
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) plus `Expect`, which this proxy
/// already answered towards the client.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::EXPECT,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

async fn forward(req: Request<Incoming>, state: &State) -> Response<ProxyBody> {
    let (parts, body) = req.into_parts();
    let body = match state.buffer_rate {
        None => body.boxed(),
        Some(rate) => match receive_whole(body, rate, state).await {
            Some(bytes) => Full::new(bytes)
                .map_err(|never: Infallible| match never {})
                .boxed(),
            // The client went away mid-body: nothing is forwarded.
            None => return full(StatusCode::BAD_REQUEST, "request body cut off\n"),
        },
    };
    forward_parts(parts, body, state).await
}

/// Forwards a request (its body already chosen) to the upstream, counting
/// the body bytes that go out.
pub(crate) async fn forward_parts(
    mut parts: hyper::http::request::Parts,
    body: ProxyBody,
    state: &State,
) -> Response<ProxyBody> {
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    parts.uri = match format!("http://{}{path_and_query}", state.upstream).parse::<Uri>() {
        Ok(uri) => uri,
        Err(e) => {
            return full(
                StatusCode::BAD_REQUEST,
                format!("bad request target: {e}\n"),
            );
        }
    };
    strip_hop_by_hop(&mut parts.headers);
    if let Ok(host) = HeaderValue::from_str(&state.upstream) {
        parts.headers.insert(header::HOST, host);
    }
    parts.version = hyper::Version::HTTP_11;
    let forwarded = Arc::clone(&state.forwarded);
    let body = body
        .map_frame(move |frame| {
            if let Some(data) = frame.data_ref() {
                forwarded.fetch_add(data.len() as u64, Ordering::SeqCst);
            }
            frame
        })
        .boxed();
    let upstream = match state.client.request(Request::from_parts(parts, body)).await {
        Ok(resp) => resp,
        Err(e) => {
            return full(
                StatusCode::BAD_GATEWAY,
                format!("fault proxy: upstream {} failed: {e}\n", state.upstream),
            );
        }
    };
    let (mut parts, body) = upstream.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    rewrite_location(&mut parts.headers, &state.upstream, &state.proxy_host);
    Response::from_parts(parts, body.boxed())
}

/// Reads a request body whole at `rate` bytes per second; `None` when the
/// client is cut off before its end.
async fn receive_whole(mut body: Incoming, rate: u64, state: &State) -> Option<Bytes> {
    let mut whole = Vec::new();
    let outcome = loop {
        match body.frame().await {
            None => break true,
            Some(Err(_)) => break false,
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    whole.extend_from_slice(data);
                    state.body_bytes.fetch_add(n, Ordering::SeqCst);
                    state.receiving.fetch_add(n, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_secs_f64(n as f64 / rate as f64)).await;
                }
            }
        }
    };
    state
        .receiving
        .fetch_sub(whole.len() as u64, Ordering::SeqCst);
    outcome.then(|| Bytes::from(whole))
}

/// Points absolute `Location`s at the upstream to the proxy instead.
fn rewrite_location(headers: &mut HeaderMap, upstream: &str, proxy: &str) {
    let Some(location) = headers.get(header::LOCATION).and_then(|v| v.to_str().ok()) else {
        return;
    };
    for scheme in ["http://", "https://"] {
        if let Some(rest) = location
            .strip_prefix(scheme)
            .and_then(|r| r.strip_prefix(upstream))
            && (rest.is_empty() || rest.starts_with(['/', '?']))
        {
            if let Ok(v) = HeaderValue::from_str(&format!("http://{proxy}{rest}")) {
                headers.insert(header::LOCATION, v);
            }
            return;
        }
    }
}

/// A TCP stream hyper reads and writes through a shared reference, so the
/// handler can still reach the socket (to reset it) while hyper owns the
/// connection.
struct SharedStream(Arc<TcpStream>);

impl AsyncRead for SharedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            match self.0.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for SharedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write(buf) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The socket is closed (FIN) when the connection drops its last
        // reference right after this.
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_nth_counts_from_one() {
        let p = FaultPolicy::EveryNth {
            n: 3,
            fault: Fault::Status(503),
        };
        let hits: Vec<usize> = (1..=9).filter(|k| p.fault_for(*k).is_some()).collect();
        assert_eq!(hits, [3, 6, 9]);
        assert!(FaultPolicy::None.fault_for(3).is_none());
        assert!(
            FaultPolicy::EveryNth {
                n: 0,
                fault: Fault::ResetConnection
            }
            .fault_for(5)
            .is_none()
        );
        assert!(
            FaultPolicy::FailAll(Fault::ResetConnection)
                .fault_for(1)
                .is_some()
        );
    }

    #[test]
    fn mixed_faults_take_turns_and_only_hits_one() {
        let p = FaultPolicy::EveryNthMixed {
            n: 3,
            faults: vec![
                Fault::Status(503),
                Fault::ResetConnection,
                Fault::Hang(Duration::from_secs(1)),
            ],
        };
        let hits: Vec<(usize, Fault)> = (1..=12)
            .filter_map(|k| p.fault_for(k).map(|f| (k, f)))
            .collect();
        assert_eq!(
            hits,
            [
                (3, Fault::Status(503)),
                (6, Fault::ResetConnection),
                (9, Fault::Hang(Duration::from_secs(1))),
                (12, Fault::Status(503)),
            ]
        );
        let only = FaultPolicy::Only {
            n: 4,
            fault: Fault::Status(500),
        };
        let hits: Vec<usize> = (1..=9).filter(|k| only.fault_for(*k).is_some()).collect();
        assert_eq!(hits, [4]);
    }

    #[test]
    fn commits_are_closing_puts_into_upload_sessions() {
        let put = hyper::Method::PUT;
        let commit: Uri = "/v2/a/blobs/uploads/u1?_state=x&digest=sha256:ab"
            .parse()
            .unwrap();
        assert_eq!(
            committed_session(&put, &commit).as_deref(),
            Some("/v2/a/blobs/uploads/u1")
        );
        let patch = hyper::Method::PATCH;
        assert!(committed_session(&patch, &commit).is_none());
        let manifest: Uri = "/v2/a/manifests/v1".parse().unwrap();
        assert!(committed_session(&put, &manifest).is_none());
        let no_digest: Uri = "/v2/a/blobs/uploads/u1?_state=x".parse().unwrap();
        assert!(committed_session(&put, &no_digest).is_none());
    }

    #[test]
    fn rewrites_only_upstream_locations() {
        let mut h = HeaderMap::new();
        h.insert(
            header::LOCATION,
            HeaderValue::from_static("http://127.0.0.1:5000/v2/a/blobs/uploads/u?_state=x"),
        );
        rewrite_location(&mut h, "127.0.0.1:5000", "127.0.0.1:6000");
        assert_eq!(
            h[header::LOCATION],
            "http://127.0.0.1:6000/v2/a/blobs/uploads/u?_state=x"
        );
        let mut h = HeaderMap::new();
        h.insert(
            header::LOCATION,
            HeaderValue::from_static("http://127.0.0.1:50001/x"),
        );
        rewrite_location(&mut h, "127.0.0.1:5000", "127.0.0.1:6000");
        assert_eq!(h[header::LOCATION], "http://127.0.0.1:50001/x");
        let mut h = HeaderMap::new();
        h.insert(
            header::LOCATION,
            HeaderValue::from_static("/v2/a/blobs/uploads/u"),
        );
        rewrite_location(&mut h, "127.0.0.1:5000", "127.0.0.1:6000");
        assert_eq!(h[header::LOCATION], "/v2/a/blobs/uploads/u");
    }
}
