//! Runs the example broker tree (`examples/broker`) and the example
//! ttn-formatters (`examples/ttn-formatters`) for real with the machine's
//! `python3` and `node`: every service the images will bake must actually
//! start from the layout it is baked in.
//!
//! Missing interpreters are a failure with installation advice, never a skip.

// Test helpers outside #[test] functions: a failed expectation is a test failure.
#![allow(clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use broker_test_support::{repo_root, require_tool};

fn broker_tree() -> PathBuf {
    repo_root().join("examples/broker")
}

fn python3() -> &'static str {
    require_tool(
        "python3",
        "install Python 3 (Debian/Ubuntu: `apt-get install python3`) and put it on PATH",
    );
    "python3"
}

fn node() -> &'static str {
    require_tool(
        "node",
        "install Node.js (Debian/Ubuntu: `apt-get install nodejs`) and put it on PATH",
    );
    "node"
}

/// A python3 command that leaves no `__pycache__` in the repository and does
/// not inherit a PYTHONPATH that could hide broken imports.
fn python_in(dir: &Path) -> Command {
    let mut cmd = Command::new(python3());
    cmd.current_dir(dir)
        .env_remove("PYTHONPATH")
        .env_remove("PYTHONHOME")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null());
    cmd
}

fn assert_prints(out: &Output, what: &str, line: &str) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{what} exited with {}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.lines().any(|l| l.trim_end() == line),
        "{what} did not print {line:?}; stdout:\n{stdout}"
    );
}

#[test]
fn python_modules_run_from_src_python() {
    let src = broker_tree().join("src/python");
    for module in [
        "logical_mapper.LogicalMapper",
        "delivery.UbidotsWriter",
        "delivery.FRRED",
        "ydoc.YDOC",
        "ydoc.Wombat",
    ] {
        let out = python_in(&src)
            .args(["-m", module])
            .output()
            .expect("python3 runs");
        assert_prints(
            &out,
            &format!("python -m {module}"),
            &format!("broker-example {module} ok"),
        );
    }
}

#[test]
fn python_scripts_run_from_their_own_directory() {
    let src = broker_tree().join("src/python");
    for (dir, script, line) in [
        (
            "ttn",
            "AllMsgsWriter.py",
            "broker-example ttn.AllMsgsWriter ok",
        ),
        ("ttn", "WebHook.py", "broker-example ttn.WebHook ok"),
        ("restapi", "RestAPI.py", "broker-example restapi.RestAPI ok"),
    ] {
        let out = python_in(&src.join(dir))
            .arg(script)
            .output()
            .expect("python3 runs");
        assert_prints(&out, &format!("python {script} in src/python/{dir}"), line);
    }
}

/// Kills the child process when dropped, so a failed assertion leaves no server behind.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

struct Response {
    status: u16,
    body: String,
}

/// One HTTP/1.1 request over a fresh connection (`Connection: close`).
fn http(port: u16, method: &str, path: &str, body: &str) -> std::io::Result<Response> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no HTTP header end in {text:?}")))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no HTTP status in {head:?}")))?;
    Ok(Response {
        status,
        body: body.to_owned(),
    })
}

/// Polls `GET /` until the server answers (any status) or the deadline passes.
fn wait_until_serving(server: &mut KillOnDrop, port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = server.0.try_wait().expect("try_wait") {
            let mut stderr = String::new();
            if let Some(mut e) = server.0.stderr.take() {
                let _ = e.read_to_string(&mut stderr);
            }
            panic!("{what} exited early with {status}; stderr:\n{stderr}");
        }
        if http(port, "GET", "/", "").is_ok() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not answer on port {port} within 20 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn www_app_serves_index() {
    let www = broker_tree().join("src/www");
    let port = free_port();
    let child = python_in(&www)
        .arg("./app/main.py")
        .env("PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python3 ./app/main.py");
    let mut server = KillOnDrop(child);
    wait_until_serving(&mut server, port, "the www app");

    let index = http(port, "GET", "/", "").expect("GET /");
    assert_eq!(index.status, 200, "GET / body:\n{}", index.body);
    assert!(
        index.body.contains("broker-example mgmt-app"),
        "GET / body lacks the marker:\n{}",
        index.body
    );
    let css = http(port, "GET", "/static/style.css", "").expect("GET /static/style.css");
    assert_eq!(css.status, 200);
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("broker-build-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

fn uplink(decoder: &str, payload_base64: &str) -> String {
    serde_json::json!({
        "end_device_ids": { "device_id": "example-th-1" },
        "uplink_message": { "f_port": 1, "frm_payload": payload_base64 },
        "decoder": decoder,
    })
    .to_string()
}

#[test]
fn ttn_decoder_decodes_with_the_formatters() {
    let node = node();
    // The image layout: /usr/src/ttn_decoder (working dir) next to
    // /usr/src/ttn_formatters.
    let tmp = TempDir::new("ttn");
    let decoder_dir = tmp.0.join("ttn_decoder");
    copy_tree(&broker_tree().join("src/js/ttn_decoder"), &decoder_dir);
    copy_tree(
        &repo_root().join("examples/ttn-formatters"),
        &tmp.0.join("ttn_formatters"),
    );

    let port = free_port();
    let child = Command::new(node)
        .arg("src")
        .current_dir(&decoder_dir)
        .env("PORT", port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn node src");
    let mut server = KillOnDrop(child);
    wait_until_serving(&mut server, port, "the ttn decoder");

    // Bytes F7 9A 11 94: int16 BE -2150 -> -21.5 °C (signed), 4500 -> 45 %.
    let resp = http(
        port,
        "POST",
        "/",
        &uplink("temperature-humidity", "95oRlA=="),
    )
    .expect("POST /");
    assert_eq!(resp.status, 200, "body: {}", resp.body);
    let json: serde_json::Value = serde_json::from_str(&resp.body).expect("JSON response");
    assert_eq!(json["decoded"]["temperature"], serde_json::json!(-21.5));
    assert_eq!(json["decoded"]["humidity"], serde_json::json!(45));
    assert_eq!(json["device_id"], "example-th-1");

    // /decode with ?decoder= works too: 0x00000102 -> 258.
    let resp = http(
        port,
        "POST",
        "/decode?decoder=counter",
        &uplink("ignored-when-query-given", "AAABAg=="),
    )
    .expect("POST /decode");
    assert_eq!(resp.status, 200, "body: {}", resp.body);
    let json: serde_json::Value = serde_json::from_str(&resp.body).expect("JSON response");
    assert_eq!(json["decoded"]["count"], 258);

    let resp = http(port, "POST", "/", &uplink("no-such-decoder", "AA==")).expect("POST unknown");
    assert_eq!(resp.status, 404, "unknown decoder; body: {}", resp.body);
    assert!(
        serde_json::from_str::<serde_json::Value>(&resp.body).is_ok(),
        "404 body is JSON: {}",
        resp.body
    );

    for name in ["../ttn_decoder/src/index", "..%2Fpackage", "/etc/passwd"] {
        let resp = http(port, "POST", "/", &uplink(name, "AA==")).expect("POST traversal");
        assert!(
            resp.status == 400 || resp.status == 404,
            "decoder name {name:?} must be refused, got {}: {}",
            resp.status,
            resp.body
        );
    }

    let resp = http(port, "POST", "/", "{not json").expect("POST bad JSON");
    assert_eq!(resp.status, 400, "bad JSON; body: {}", resp.body);
}
