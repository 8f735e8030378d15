//! A token service as Docker Hub runs one, following the Docker registry
//! token specification: `GET /token?service=…&scope=…` with HTTP basic
//! credentials answers `{"token", "access_token", "expires_in",
//! "issued_at"}`, the token an ES256-signed JWT whose `access` claim lists
//! the granted actions. A [`TestRegistry`](crate::TestRegistry) started
//! with [`start_with_token_auth`](crate::TestRegistry::start_with_token_auth)
//! verifies it against this issuer's root certificate (`x5c` header) and
//! enforces its scopes itself.
//!
//! The policy mirrors Docker Hub's: the user pushes and pulls in its own
//! namespace (`<user>/…`); pulling any other repository (the source of a
//! cross-repository mount) is granted only when configured
//! ([`TokenIssuer::grant_foreign_pull`]); nothing is granted anonymously.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::background::BackgroundServer;
use crate::docker::{require_tool, run_ok};

/// The `service` (JWT audience) the issuer and its registries agree on.
pub const SERVICE: &str = "broker-test-registry";
/// The `iss` claim the registry trusts.
pub const ISSUER: &str = "broker-test-token-issuer";

/// Distribution accepts a token up to this long past its `exp` (clock
/// skew leeway, `registry/auth/token`): the issuer dates `exp` back by it,
/// so a token lasts exactly what `expires_in` says.
const REGISTRY_LEEWAY_SECS: u64 = 60;

/// One token handed out: who asked, what for, what was granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The `scope` parameters asked for.
    pub requested: Vec<String>,
    /// The granted scopes, `repository:NAME:ACTIONS` (actions joined by `,`).
    pub granted: Vec<String>,
}

struct State {
    /// Users and their passwords; each owns the namespace `<user>/`.
    users: Vec<(String, String)>,
    lifetime_secs: AtomicU64,
    foreign_pull: AtomicBool,
    signing_key: jsonwebtoken::EncodingKey,
    /// The signing certificate, DER in standard base64 (the `x5c` chain).
    x5c: Vec<String>,
    issued: Mutex<Vec<IssuedToken>>,
    refused: AtomicU64,
}

/// A running token service on `127.0.0.1:<ephemeral>`; stops on drop.
pub struct TokenIssuer {
    host: String,
    state: Arc<State>,
    root_cert: PathBuf,
    _server: BackgroundServer,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("realm", &self.realm())
            .finish_non_exhaustive()
    }
}

impl TokenIssuer {
    /// Issues tokens valid for `lifetime` to `users` (user, password), each
    /// owning the namespace `<user>/`, signed by a key whose certificate
    /// chains to a CA made here with openssl.
    pub fn start(users: &[(&str, &str)], lifetime: Duration) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("broker-test-token-issuer-")
            .tempdir()
            .expect("cannot create a temporary directory for the token issuer");
        let (root_cert, key_pem, cert_der) = make_signing_chain(dir.path());
        let signing_key = jsonwebtoken::EncodingKey::from_ec_pem(&key_pem)
            .expect("the token signing key made by openssl is not an EC PEM key");
        let state = Arc::new(State {
            users: users
                .iter()
                .map(|(u, p)| ((*u).to_owned(), (*p).to_owned()))
                .collect(),
            lifetime_secs: AtomicU64::new(lifetime.as_secs().max(1)),
            foreign_pull: AtomicBool::new(false),
            signing_key,
            x5c: vec![base64::engine::general_purpose::STANDARD.encode(cert_der)],
            issued: Mutex::new(Vec::new()),
            refused: AtomicU64::new(0),
        });
        let handler_state = Arc::clone(&state);
        let server = BackgroundServer::start("token-issuer", move |_host| {
            move |stream| serve_connection(stream, Arc::clone(&handler_state))
        });
        let host = server.host().to_owned();
        Self {
            host,
            state,
            root_cert,
            _server: server,
            _dir: dir,
        }
    }

    /// The realm registries send clients to: `http://127.0.0.1:PORT/token`.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.host)
    }

    /// The CA certificate (PEM) the registry's `rootcertbundle` names.
    pub fn root_cert_path(&self) -> &Path {
        &self.root_cert
    }

    /// Tokens issued from now on last `lifetime`.
    pub fn set_lifetime(&self, lifetime: Duration) {
        self.state
            .lifetime_secs
            .store(lifetime.as_secs().max(1), Ordering::SeqCst);
    }

    /// Whether pull on repositories outside the user's namespace is
    /// granted (Docker Hub: a public or shared repository).
    pub fn grant_foreign_pull(&self, grant: bool) {
        self.state.foreign_pull.store(grant, Ordering::SeqCst);
    }

    /// Every token issued so far, in order.
    pub fn issued(&self) -> Vec<IssuedToken> {
        self.state
            .issued
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Token requests refused (wrong or missing credentials).
    pub fn refused(&self) -> u64 {
        self.state.refused.load(Ordering::SeqCst)
    }
}

async fn serve_connection(stream: tokio::net::TcpStream, state: Arc<State>) {
    let svc = service_fn(move |req| {
        let state = Arc::clone(&state);
        async move { Ok::<_, Infallible>(answer(&req, &state)) }
    });
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), svc)
        .await;
}

fn respond(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

/// The user and password of a `Basic` authorization header.
fn basic_credentials(req: &Request<Incoming>) -> Option<(String, String)> {
    let value = req
        .headers()
        .get(hyper::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let (user, password) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// Decodes `%XX` escapes and `+` of a query value.
fn unescape(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn answer(req: &Request<Incoming>, state: &State) -> Response<Full<Bytes>> {
    if req.uri().path() != "/token" {
        return respond(StatusCode::NOT_FOUND, "{}".to_owned());
    }
    let query = req.uri().query().unwrap_or("");
    let params: Vec<(String, String)> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (unescape(k), unescape(v)))
        .collect();
    let service = params.iter().find(|(k, _)| k == "service").map(|(_, v)| v);
    let user = basic_credentials(req)
        .filter(|(user, password)| state.users.iter().any(|(u, p)| u == user && p == password));
    let Some((user, _)) = user.filter(|_| service.is_some_and(|s| s == SERVICE)) else {
        state.refused.fetch_add(1, Ordering::SeqCst);
        return respond(
            StatusCode::UNAUTHORIZED,
            r#"{"details":"incorrect username or password"}"#.to_owned(),
        );
    };
    let requested: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .map(|(_, v)| v.clone())
        .collect();
    let own_namespace = format!("{user}/");
    let foreign_pull = state.foreign_pull.load(Ordering::SeqCst);
    let mut access = Vec::new();
    let mut granted = Vec::new();
    for scope in &requested {
        // repository:NAME:ACTIONS; NAME may hold no colon (no port).
        let mut parts = scope.splitn(3, ':');
        let (Some("repository"), Some(name), Some(actions)) =
            (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let allowed: Vec<&str> = actions
            .split(',')
            .filter(|action| {
                if name.starts_with(&own_namespace) {
                    matches!(*action, "pull" | "push")
                } else {
                    *action == "pull" && foreign_pull
                }
            })
            .collect();
        if allowed.is_empty() {
            continue;
        }
        granted.push(format!("repository:{name}:{}", allowed.join(",")));
        access.push(serde_json::json!({"type": "repository", "name": name, "actions": allowed}));
    }
    let lifetime = state.lifetime_secs.load(Ordering::SeqCst);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let serial = state.issued.lock().map_or(0, |issued| issued.len());
    let claims = serde_json::json!({
        "iss": ISSUER,
        "sub": user,
        "aud": SERVICE,
        "exp": now + lifetime - REGISTRY_LEEWAY_SECS.min(now),
        "nbf": now,
        "iat": now,
        "jti": format!("{now}-{serial}"),
        "access": access,
    });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.x5c = Some(state.x5c.clone());
    let token = match jsonwebtoken::encode(&header, &claims, &state.signing_key) {
        Ok(token) => token,
        Err(e) => {
            return respond(
                StatusCode::INTERNAL_SERVER_ERROR,
                serde_json::json!({ "details": e.to_string() }).to_string(),
            );
        }
    };
    state
        .issued
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(IssuedToken { requested, granted });
    respond(
        StatusCode::OK,
        serde_json::json!({
            "token": token,
            "access_token": token,
            "expires_in": lifetime,
            "issued_at": now,
        })
        .to_string(),
    )
}

/// Makes a CA (`token-ca.crt`, the registry's root bundle) and an EC P-256
/// signing key with a certificate signed by it. Returns the CA path, the
/// signing key (PKCS#8 PEM) and its certificate (DER).
fn make_signing_chain(dir: &Path) -> (PathBuf, Vec<u8>, Vec<u8>) {
    let openssl = require_tool("openssl", "apt-get install -y openssl");
    let p = |name: &str| dir.join(name);
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run_ok(
        Command::new(&openssl)
            .args(["req", "-x509"])
            .args(ec)
            .args(["-days", "3", "-subj", "/CN=broker-test-support token CA"])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            .arg("-keyout")
            .arg(p("token-ca.key"))
            .arg("-out")
            .arg(p("token-ca.crt")),
    );
    run_ok(
        Command::new(&openssl)
            .arg("req")
            .args(ec)
            .args(["-subj", "/CN=broker-test-support token signer"])
            .arg("-keyout")
            .arg(p("signer.key"))
            .arg("-out")
            .arg(p("signer.csr")),
    );
    std::fs::write(
        p("signer.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n",
    )
    .expect("cannot write the signer's certificate extensions");
    run_ok(
        Command::new(&openssl)
            .args(["x509", "-req", "-days", "3", "-set_serial", "2"])
            .arg("-in")
            .arg(p("signer.csr"))
            .arg("-CA")
            .arg(p("token-ca.crt"))
            .arg("-CAkey")
            .arg(p("token-ca.key"))
            .arg("-extfile")
            .arg(p("signer.ext"))
            .args(["-outform", "DER"])
            .arg("-out")
            .arg(p("signer.der")),
    );
    let key = std::fs::read(p("signer.key")).expect("cannot read the signing key");
    let der = std::fs::read(p("signer.der")).expect("cannot read the signing certificate");
    (p("token-ca.crt"), key, der)
}
