//! A real CNCF Distribution registry (`docker-registry`) per test.

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::docker::{require_tool, run_ok};

/// User agent of the fixture's own readiness probe; its requests are left out
/// of [`TestRegistry::requests`].
const PROBE_USER_AGENT: &str = "broker-test-support-probe";

/// How long a registry may take to answer `GET /v2/` after it was spawned.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Path of the registry configuration shipped in this repository
/// (`registry/config.yml`), the template every [`TestRegistry`] runs with.
pub fn shipped_config_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../registry/config.yml")
}

/// One HTTP request the registry handled, parsed from its access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// HTTP method, e.g. `HEAD`.
    pub method: String,
    /// Request target including the query, e.g. `/v2/app/blobs/uploads/?mount=…&from=…`.
    pub path: String,
    /// Response status code.
    pub status: u16,
}

impl RequestRecord {
    /// The path without its query.
    pub fn path_without_query(&self) -> &str {
        self.path.split('?').next().unwrap_or(&self.path)
    }

    /// The query string (without `?`), empty when there is none.
    pub fn query(&self) -> &str {
        self.path.split_once('?').map(|(_, q)| q).unwrap_or("")
    }

    fn has_query_param(&self, name: &str) -> bool {
        self.query()
            .split('&')
            .any(|kv| kv.split('=').next() == Some(name))
    }

    fn is_upload_post(&self) -> bool {
        self.method == "POST" && {
            let p = self.path_without_query().trim_end_matches('/');
            p.starts_with("/v2/") && p.ends_with("/blobs/uploads")
        }
    }
}

/// Parses one line of the Apache combined log format Distribution writes to
/// stdout: `host - user [date] "METHOD URI PROTO" STATUS SIZE "referer" "agent"`.
/// Returns the record and the user agent.
pub fn parse_access_log_line(line: &str) -> Option<(RequestRecord, String)> {
    let start = line.find("] \"")? + 3;
    let rest = &line[start..];
    // The request line ends at the first `" NNN ` (quote, space, status).
    let bytes = rest.as_bytes();
    let mut end = None;
    for (i, _) in rest.match_indices("\" ") {
        let s = &bytes[i + 2..];
        if s.len() >= 4 && s[..3].iter().all(u8::is_ascii_digit) && s[3] == b' ' {
            end = Some(i);
            break;
        }
    }
    let end = end?;
    let request_line = &rest[..end];
    let mut parts = request_line.split(' ');
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let status: u16 = rest[end + 2..end + 5].parse().ok()?;
    // The user agent is the last quoted field.
    let agent = line
        .trim_end()
        .strip_suffix('"')
        .and_then(|l| l.rfind('"').map(|i| l[i + 1..].to_string()))
        .unwrap_or_default();
    Some((
        RequestRecord {
            method,
            path,
            status,
        },
        agent,
    ))
}

struct Tls {
    ca_cert: PathBuf,
    cert_dir: PathBuf,
}

/// How a test registry authenticates clients.
enum Auth<'a> {
    /// Not at all.
    None,
    /// HTTP basic auth against this htpasswd file.
    Htpasswd(&'a Path),
    /// Bearer tokens from a token service (`auth.token`).
    Token {
        /// Where clients get tokens.
        realm: String,
        /// The CA bundle token signatures chain to.
        root_cert: &'a Path,
    },
}

/// A running `docker-registry` child process on `127.0.0.1:<ephemeral>`
/// with its own temporary storage, started from the shipped
/// `registry/config.yml`.
///
/// Dropping it kills and reaps the process, removes the temporary
/// directory and, when the Docker engine talked to it, every engine
/// reference under its `127.0.0.1:PORT` (see [`crate::engine_images`]). The process runs under a small `sh` watchdog that polls the
/// test process once a second and, when it is gone (e.g. a test run killed
/// with SIGKILL), kills the registry and removes its temporary directory, so
/// neither outlives a killed test for long.
pub struct TestRegistry {
    child: Child,
    port: u16,
    tls: Option<Tls>,
    credentials: Option<(String, String)>,
    storage: PathBuf,
    access_log: PathBuf,
    error_log: PathBuf,
    config: PathBuf,
    /// The engine's references under this host are removed when the test
    /// process ends rather than when the registry drops.
    engine_refs_at_exit: std::sync::atomic::AtomicBool,
    // Last: removed after the process is gone.
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for TestRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestRegistry")
            .field("url", &self.url())
            .field("pid", &self.child.id())
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl TestRegistry {
    /// A registry speaking plain HTTP, without authentication.
    pub fn start() -> TestRegistry {
        Self::start_variant(false, None)
    }

    /// A plain-HTTP registry requiring bearer tokens from `issuer` (Docker
    /// Hub's scheme): it sends clients to the issuer's realm and verifies
    /// every token's signature, audience, expiry and scopes itself.
    pub fn start_with_token_auth(issuer: &crate::TokenIssuer) -> TestRegistry {
        let token = Auth::Token {
            realm: issuer.realm(),
            root_cert: issuer.root_cert_path(),
        };
        Self::start_configured(false, None, &token)
    }

    /// A plain-HTTP registry requiring basic authentication as `user` /
    /// `password` (htpasswd file with a bcrypt hash made by `htpasswd -Bbn`).
    pub fn start_with_auth(user: &str, password: &str) -> TestRegistry {
        Self::start_variant(false, Some((user, password)))
    }

    /// A registry speaking HTTPS with a server certificate for `127.0.0.1`
    /// and `localhost`, signed by a CA made for this registry with openssl
    /// (see [`ca_cert_path`](Self::ca_cert_path)).
    pub fn start_tls() -> TestRegistry {
        Self::start_variant(true, None)
    }

    /// HTTPS (as [`start_tls`](Self::start_tls)) plus basic authentication
    /// (as [`start_with_auth`](Self::start_with_auth)).
    pub fn start_tls_with_auth(user: &str, password: &str) -> TestRegistry {
        Self::start_variant(true, Some((user, password)))
    }

    fn start_variant(tls: bool, auth: Option<(&str, &str)>) -> TestRegistry {
        Self::start_configured(tls, auth, &Auth::None)
    }

    /// Starts a registry; basic `auth` (user, password) wins over `token`.
    fn start_configured(tls: bool, auth: Option<(&str, &str)>, token: &Auth<'_>) -> TestRegistry {
        let registry_bin = require_tool(
            "docker-registry",
            "the CNCF Distribution registry is needed: apt-get install -y docker-registry",
        );
        let dir = tempfile::Builder::new()
            .prefix("broker-test-registry-")
            .tempdir()
            .expect("cannot create a temporary directory for the registry");
        let storage = dir.path().join("storage");
        fs::create_dir(&storage).expect("cannot create the registry storage directory");

        let tls = tls.then(|| make_tls(dir.path()));
        let htpasswd = auth.map(|(user, password)| make_htpasswd(dir.path(), user, password));
        let template_path = shipped_config_path();
        let template = fs::read_to_string(&template_path).unwrap_or_else(|e| {
            panic!(
                "cannot read the shipped registry config {}: {e}",
                template_path.display()
            )
        });

        let access_log = dir.path().join("access.log");
        let error_log = dir.path().join("registry.log");
        let config = dir.path().join("config.yml");

        let mut last_log = String::new();
        for _attempt in 0..8 {
            let port = free_port();
            let rendered = render_config(
                &template,
                &storage,
                &format!("127.0.0.1:{port}"),
                tls.as_ref().map(|_| {
                    (
                        dir.path().join("tls.crt").display().to_string(),
                        dir.path().join("tls.key").display().to_string(),
                    )
                }),
                match (&htpasswd, token) {
                    (Some(path), _) => Auth::Htpasswd(path),
                    (None, Auth::Token { realm, root_cert }) => Auth::Token {
                        realm: realm.clone(),
                        root_cert,
                    },
                    (None, _) => Auth::None,
                },
            );
            fs::write(&config, rendered).expect("cannot write the registry config");
            let mut child =
                spawn_watched(&registry_bin, dir.path(), &config, &access_log, &error_log);
            match wait_ready(&mut child, port, &access_log, &error_log) {
                Ok(()) => {
                    crate::engine_images::journal("host", &format!("127.0.0.1:{port}"));
                    return TestRegistry {
                        child,
                        port,
                        tls,
                        credentials: auth.map(|(u, p)| (u.to_string(), p.to_string())),
                        storage,
                        access_log,
                        error_log,
                        config,
                        engine_refs_at_exit: false.into(),
                        dir,
                    };
                }
                Err(log) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let port_taken = log.contains("address already in use");
                    last_log = log;
                    if !port_taken {
                        break;
                    }
                }
            }
        }
        panic!(
            "docker-registry did not start (config rendered from {}):\n{last_log}",
            template_path.display()
        );
    }

    /// Keeps what the engine holds under this registry's host (a base it
    /// pulled, an image a test pulled for later tests) beyond the
    /// registry's drop, until the test process ends, when it is removed:
    /// for a test that goes on using those images once the registry is gone.
    pub fn keep_engine_references_until_exit(&self) {
        self.engine_refs_at_exit
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.host())
    }

    /// Whether it speaks HTTPS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The CA certificate (PEM) that signed the server certificate; `None`
    /// for plain HTTP.
    pub fn ca_cert_path(&self) -> Option<&Path> {
        self.tls.as_ref().map(|t| t.ca_cert.as_path())
    }

    /// A directory holding only `ca.crt` (the CA), in the layout skopeo's
    /// `--cert-dir`/`--dest-cert-dir` and Docker's `certs.d/<host>/` expect;
    /// `None` for plain HTTP.
    pub fn cert_dir(&self) -> Option<&Path> {
        self.tls.as_ref().map(|t| t.cert_dir.as_path())
    }

    /// The user and password it requires, if started with authentication.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.credentials
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// The filesystem storage root (`storage.filesystem.rootdirectory`).
    pub fn storage_dir(&self) -> &Path {
        &self.storage
    }

    /// The rendered configuration file the registry runs with.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The registry's output so far: its access log (stdout) and its
    /// application log (stderr).
    pub fn log(&self) -> String {
        read_logs(&self.access_log, &self.error_log)
    }

    /// `sha256:<hex>` of every blob in storage
    /// (`docker/registry/v2/blobs/sha256/xx/<hex>/data`).
    pub fn stored_blobs(&self) -> BTreeSet<String> {
        let root = self.storage.join("docker/registry/v2/blobs/sha256");
        let mut blobs = BTreeSet::new();
        let Ok(prefixes) = fs::read_dir(&root) else {
            return blobs;
        };
        for prefix in prefixes.flatten() {
            let Ok(entries) = fs::read_dir(prefix.path()) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.path().join("data").is_file() {
                    blobs.insert(format!("sha256:{}", entry.file_name().to_string_lossy()));
                }
            }
        }
        blobs
    }

    /// Whether `repo:tag` exists in storage
    /// (`docker/registry/v2/repositories/<repo>/_manifests/tags/<tag>/current/link`).
    pub fn has_tag(&self, repo: &str, tag: &str) -> bool {
        self.storage
            .join("docker/registry/v2/repositories")
            .join(repo)
            .join("_manifests/tags")
            .join(tag)
            .join("current/link")
            .is_file()
    }

    /// Every HTTP request the registry handled so far, in log order, parsed
    /// from its access log (the fixture's own readiness probes left out).
    ///
    /// The registry writes a log line just after answering, so this first
    /// waits until the log stops growing (at most one second).
    pub fn requests(&self) -> Vec<RequestRecord> {
        let size = || fs::metadata(&self.access_log).map(|m| m.len()).unwrap_or(0);
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut last = size();
        loop {
            std::thread::sleep(Duration::from_millis(60));
            let now = size();
            if now == last || Instant::now() > deadline {
                break;
            }
            last = now;
        }
        fs::read_to_string(&self.access_log)
            .unwrap_or_default()
            .lines()
            .filter_map(parse_access_log_line)
            .filter(|(_, agent)| agent != PROBE_USER_AGENT)
            .map(|(r, _)| r)
            .collect()
    }

    /// Number of blob uploads started: `POST /v2/<repo>/blobs/uploads/`
    /// answered `202 Accepted` (an upload session; this includes a
    /// cross-repository mount the registry declined, which answers 202 and
    /// makes the client upload) plus monolithic `POST …?digest=` uploads
    /// answered `201`. Successful mounts are not counted here but in
    /// [`blob_mount_count`](Self::blob_mount_count).
    pub fn blob_upload_count(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.is_upload_post())
            .filter(|r| {
                r.status == 202
                    || (r.status == 201
                        && !r.has_query_param("mount")
                        && r.has_query_param("digest"))
            })
            .count()
    }

    /// Number of cross-repository mounts done:
    /// `POST /v2/<repo>/blobs/uploads/?mount=…&from=…` answered `201 Created`.
    pub fn blob_mount_count(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.is_upload_post() && r.has_query_param("mount") && r.status == 201)
            .count()
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // What the engine pulled from here or pushed here (its user agent
        // is `docker/…`) is this test's: nobody else had this port.
        let engine_came =
            fs::read_to_string(&self.access_log).is_ok_and(|log| log.contains("\"docker/"));
        if engine_came {
            let at_exit = self
                .engine_refs_at_exit
                .load(std::sync::atomic::Ordering::Relaxed);
            crate::engine_images::remove_references_under(&self.host(), at_exit);
        }
    }
}

fn read_logs(access_log: &Path, error_log: &Path) -> String {
    format!(
        "--- access log (stdout) ---\n{}\n--- registry log (stderr) ---\n{}",
        fs::read_to_string(access_log).unwrap_or_default(),
        fs::read_to_string(error_log).unwrap_or_default()
    )
}

/// Waits until `GET /v2/` answers; on failure returns the registry's log.
fn wait_ready(
    child: &mut Child,
    port: u16,
    access_log: &Path,
    error_log: &Path,
) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "docker-registry exited with {status}\n{}",
                read_logs(access_log, error_log)
            ));
        }
        if probe(port) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "docker-registry did not answer GET /v2/ on 127.0.0.1:{port} within {START_TIMEOUT:?}\n{}",
                read_logs(access_log, error_log)
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Renders the shipped config for one test registry.
fn render_config(
    template: &str,
    storage: &Path,
    addr: &str,
    tls: Option<(String, String)>,
    auth: Auth<'_>,
) -> String {
    let mut config: Value = serde_saphyr::from_str(template)
        .unwrap_or_else(|e| panic!("the shipped registry config is not valid YAML: {e}"));
    fn get<'a>(config: &'a mut Value, path: &[&str]) -> &'a mut serde_json::Map<String, Value> {
        let mut v = config;
        for key in path {
            v = v.get_mut(*key).unwrap_or_else(|| {
                panic!("the shipped registry config lacks `{}`", path.join("."))
            });
        }
        v.as_object_mut().unwrap_or_else(|| {
            panic!(
                "`{}` in the shipped registry config is not a map",
                path.join(".")
            )
        })
    }
    get(&mut config, &["storage", "filesystem"]).insert(
        "rootdirectory".into(),
        Value::String(storage.display().to_string()),
    );
    get(&mut config, &["http"]).insert("addr".into(), Value::String(addr.into()));
    match tls {
        Some((cert, key)) => {
            let t = get(&mut config, &["http", "tls"]);
            t.insert("certificate".into(), Value::String(cert));
            t.insert("key".into(), Value::String(key));
        }
        None => {
            get(&mut config, &["http"]).remove("tls");
        }
    }
    match auth {
        Auth::Htpasswd(path) => {
            get(&mut config, &["auth", "htpasswd"])
                .insert("path".into(), Value::String(path.display().to_string()));
        }
        Auth::Token { realm, root_cert } => {
            let token = serde_json::json!({
                "realm": realm,
                "service": crate::token_issuer::SERVICE,
                "issuer": crate::token_issuer::ISSUER,
                "rootcertbundle": root_cert.display().to_string(),
            });
            let auth = serde_json::json!({ "token": token });
            config
                .as_object_mut()
                .expect("the shipped registry config is not a map")
                .insert("auth".into(), auth);
        }
        Auth::None => {
            config
                .as_object_mut()
                .expect("the shipped registry config is not a map")
                .remove("auth");
        }
    }
    // YAML is a superset of JSON: the registry reads this as it is.
    serde_json::to_string_pretty(&config).expect("cannot serialise the registry config")
}

/// An ephemeral port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("cannot bind 127.0.0.1:0")
        .port()
}

/// Spawns `docker-registry serve CONFIG` under an `sh` watchdog that kills
/// it and removes its temporary directory `dir` when this process disappears. `exec` makes the returned child the
/// registry itself, so killing the child kills the registry.
fn spawn_watched(
    registry_bin: &Path,
    dir: &Path,
    config: &Path,
    stdout: &Path,
    stderr: &Path,
) -> Child {
    const SCRIPT: &str = r#"parent=$1; dir=$2; shift 2
( exec >/dev/null 2>&1 </dev/null
  while kill -0 "$parent"; do
    kill -0 $$ || exit 0
    sleep 1
  done
  kill -9 $$
  sleep 1
  case "$dir" in */broker-test-registry-*) rm -rf "$dir" ;; esac ) &
exec "$@""#;
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(SCRIPT)
        .arg("broker-test-registry")
        .arg(std::process::id().to_string())
        .arg(dir)
        .arg(registry_bin)
        .arg("serve")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::from(
            fs::File::create(stdout).expect("cannot create the access log"),
        ))
        .stderr(Stdio::from(
            fs::File::create(stderr).expect("cannot create the registry log"),
        ));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("REGISTRY_") {
            cmd.env_remove(key);
        }
    }
    cmd.spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", registry_bin.display()))
}

/// Sends `GET /v2/` in plain HTTP. A plain registry answers 200 or 401; a TLS
/// one answers Go's "400 Client sent an HTTP request to an HTTPS server":
/// either way it is serving.
fn probe(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!(
        "GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: {PROBE_USER_AGENT}\r\nConnection: close\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    let mut read = 0;
    while read < head.len() {
        match stream.read(&mut head[read..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => read += n,
        }
    }
    let head = String::from_utf8_lossy(&head[..read]);
    ["200", "401", "400"]
        .iter()
        .any(|code| head.starts_with("HTTP/1.") && head[9.min(head.len())..].starts_with(code))
}

fn make_htpasswd(dir: &Path, user: &str, password: &str) -> PathBuf {
    let htpasswd = require_tool("htpasswd", "apt-get install -y apache2-utils");
    let line = run_ok(Command::new(htpasswd).args(["-Bbn", user, password]));
    let path = dir.join("htpasswd");
    fs::write(&path, line.trim_end().to_string() + "\n").expect("cannot write the htpasswd file");
    path
}

/// Makes `ca.crt`/`ca.key` and a server `tls.crt`/`tls.key` for IP
/// 127.0.0.1 and DNS localhost signed by that CA; `certs/ca.crt` is a copy of
/// the CA for tools that take a certificate directory.
fn make_tls(dir: &Path) -> Tls {
    let openssl = require_tool("openssl", "apt-get install -y openssl");
    let p = |name: &str| dir.join(name);
    run_ok(
        Command::new(&openssl)
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args([
                "-nodes",
                "-days",
                "3",
                "-subj",
                "/CN=broker-test-support CA",
            ])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            .arg("-keyout")
            .arg(p("ca.key"))
            .arg("-out")
            .arg(p("ca.crt")),
    );
    run_ok(
        Command::new(&openssl)
            .args([
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-subj", "/CN=localhost"])
            .arg("-keyout")
            .arg(p("tls.key"))
            .arg("-out")
            .arg(p("tls.csr")),
    );
    fs::write(
        p("tls.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .expect("cannot write the certificate extensions");
    run_ok(
        Command::new(&openssl)
            .args(["x509", "-req", "-days", "3", "-set_serial"])
            .arg(format!(
                "{}",
                std::process::id() as u64 * 1000 + u64::from(free_port())
            ))
            .arg("-in")
            .arg(p("tls.csr"))
            .arg("-CA")
            .arg(p("ca.crt"))
            .arg("-CAkey")
            .arg(p("ca.key"))
            .arg("-extfile")
            .arg(p("tls.ext"))
            .arg("-out")
            .arg(p("tls.crt")),
    );
    let cert_dir = p("certs");
    fs::create_dir(&cert_dir).expect("cannot create the certificate directory");
    fs::copy(p("ca.crt"), cert_dir.join("ca.crt")).expect("cannot copy the CA certificate");
    Tls {
        ca_cert: p("ca.crt"),
        cert_dir,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_combined_log_lines() {
        let line = r#"127.0.0.1 - - [24/Nov/2026:08:11:39 +0000] "POST /v2/a/blobs/uploads/?mount=sha256:abc&from=b HTTP/1.1" 202 0 "" "curl/7.88.1""#;
        let (r, agent) = parse_access_log_line(line).unwrap();
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/v2/a/blobs/uploads/?mount=sha256:abc&from=b");
        assert_eq!(r.status, 202);
        assert_eq!(agent, "curl/7.88.1");
        assert!(r.is_upload_post());
        assert!(r.has_query_param("mount"));
        assert!(parse_access_log_line("time=\"x\" level=info msg=\"y\"").is_none());
    }

    #[test]
    fn renders_variants_from_the_shipped_config() {
        let template = fs::read_to_string(shipped_config_path()).unwrap();
        let plain = render_config(&template, Path::new("/s"), "127.0.0.1:1", None, Auth::None);
        let v: Value = serde_json::from_str(&plain).unwrap();
        assert_eq!(v["storage"]["filesystem"]["rootdirectory"], "/s");
        assert_eq!(v["http"]["addr"], "127.0.0.1:1");
        assert!(v["http"].get("tls").is_none());
        assert!(v.get("auth").is_none());
        assert_eq!(v["storage"]["delete"]["enabled"], true);
        let full = render_config(
            &template,
            Path::new("/s"),
            "127.0.0.1:1",
            Some(("/c".into(), "/k".into())),
            Auth::Htpasswd(Path::new("/h")),
        );
        let v: Value = serde_json::from_str(&full).unwrap();
        assert_eq!(v["http"]["tls"]["certificate"], "/c");
        assert_eq!(v["http"]["tls"]["key"], "/k");
        assert_eq!(v["auth"]["htpasswd"]["path"], "/h");
        assert!(v["auth"]["htpasswd"]["realm"].is_string());
    }
}
