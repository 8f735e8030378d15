//! The fault-injecting proxy against a real registry, with curl and skopeo
//! as clients.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use broker_test_support::docker::run_ok;
use broker_test_support::{Fault, FaultPolicy, FaultProxy, TestRegistry, busybox, require_tool};
use sha2::{Digest, Sha256};

fn curl() -> Command {
    Command::new(require_tool("curl", "apt-get install -y curl"))
}

fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// `curl` printing only the status code (and the Location header on a second
/// line when asked).
fn status_of(args: &[&str]) -> String {
    run_ok(
        curl()
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}"])
            .args(args),
    )
}

#[test]
fn every_third_request_gets_503() {
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(
        &registry,
        FaultPolicy::EveryNth {
            n: 3,
            fault: Fault::Status(503),
        },
    );
    let url = format!("{}/v2/", proxy.url());
    let codes: Vec<String> = (0..9).map(|_| status_of(&[&url])).collect();
    assert_eq!(
        codes,
        [
            "200", "200", "503", "200", "200", "503", "200", "200", "503"
        ]
    );
    assert_eq!(proxy.requests_seen(), 9);
    assert_eq!(proxy.faults_injected(), 3);
    // Faulted requests never reached the registry.
    assert_eq!(registry.requests().len(), 6);
    let headers = run_ok(curl().args(["-sS", "-D", "-", "-o", "/dev/null", &url]));
    assert!(headers.starts_with("HTTP/1.1 200"), "{headers}");
    let headers = run_ok(curl().args(["-sS", "-D", "-", "-o", "/dev/null", &url]));
    assert!(headers.starts_with("HTTP/1.1 200"), "{headers}");
    let headers = run_ok(curl().args(["-sS", "-D", "-", "-o", "/dev/null", &url]));
    assert!(headers.starts_with("HTTP/1.1 503"), "{headers}");
    assert!(
        headers.to_ascii_lowercase().contains("retry-after: 0"),
        "{headers}"
    );
}

#[test]
fn skopeo_copy_through_a_pass_through_proxy() {
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(&registry, FaultPolicy::None);
    let skopeo = require_tool("skopeo", "apt-get install -y skopeo");
    let dir = tempfile::tempdir().unwrap();
    let digest_file = dir.path().join("digest");
    run_ok(
        Command::new(&skopeo)
            .args([
                "--insecure-policy",
                "copy",
                "--dest-tls-verify=false",
                "--digestfile",
            ])
            .arg(&digest_file)
            .arg(busybox().oci_ref())
            .arg(format!("docker://{}/proxied/busybox:v1", proxy.host())),
    );
    let digest = fs::read_to_string(&digest_file).unwrap();
    assert!(registry.has_tag("proxied/busybox", "v1"));
    assert!(registry.blob_upload_count() >= 2);
    // Every request the registry handled came through the proxy: the
    // upload Locations were rewritten to the proxy.
    assert_eq!(proxy.requests_seen(), registry.requests().len());
    let inspected = run_ok(
        Command::new(&skopeo)
            .args(["inspect", "--tls-verify=false"])
            .arg(format!(
                "docker://{}/proxied/busybox@{}",
                proxy.host(),
                digest.trim()
            )),
    );
    assert!(inspected.contains(digest.trim()), "{inspected}");
    // A pull copies every blob back through the proxy.
    let out = dir.path().join("pulled");
    run_ok(
        Command::new(&skopeo)
            .args(["--insecure-policy", "copy", "--src-tls-verify=false"])
            .arg(format!("docker://{}/proxied/busybox:v1", proxy.host()))
            .arg(format!("oci:{}:v1", out.display())),
    );
    assert!(out.join("index.json").is_file());
}

fn upload_blob_through(proxy: &FaultProxy, repo: &str, body: &[u8], chunked: bool) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("blob");
    fs::write(&file, body).unwrap();
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(body)));
    // Start a session; the Location must point back at the proxy.
    let location = run_ok(curl().args([
        "-sS",
        "-X",
        "POST",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %header{location}",
        &format!("{}/v2/{repo}/blobs/uploads/", proxy.url()),
    ]));
    let (code, location) = location.split_once(' ').unwrap();
    assert_eq!(code, "202");
    assert!(
        location.starts_with(&format!("{}/v2/{repo}/blobs/uploads/", proxy.url())),
        "{location}"
    );
    // Send the data with PATCH (Content-Length or chunked), then close with PUT.
    let mut patch = curl();
    patch.args([
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %header{location}",
        "-X",
        "PATCH",
    ]);
    patch.args(["-H", "Content-Type: application/octet-stream"]);
    if chunked {
        patch.args(["-H", "Transfer-Encoding: chunked"]);
    }
    patch
        .arg("--data-binary")
        .arg(format!("@{}", file.display()))
        .arg(location);
    let patched = run_ok(&mut patch);
    let (code, location) = patched.split_once(' ').unwrap();
    assert_eq!(code, "202", "PATCH answered {patched}");
    let sep = if location.contains('?') { '&' } else { '?' };
    let put = status_of(&["-X", "PUT", &format!("{location}{sep}digest={digest}")]);
    assert_eq!(put, "201");
    digest
}

#[test]
fn streams_content_length_and_chunked_uploads() {
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(&registry, FaultPolicy::None);
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let d1 = upload_blob_through(&proxy, "streamed/a", &big, false);
    let d2 = upload_blob_through(&proxy, "streamed/b", &big[..1_234_567], true);
    let blobs = registry.stored_blobs();
    assert!(blobs.contains(&d1) && blobs.contains(&d2), "{blobs:?}");
    // Download it back through the proxy, byte for byte.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("back");
    let code = run_ok(
        curl()
            .args(["-sS", "-L", "-w", "%{http_code}", "-o"])
            .arg(&out)
            .arg(format!("{}/v2/streamed/a/blobs/{d1}", proxy.url())),
    );
    assert_eq!(code, "200");
    assert_eq!(fs::read(&out).unwrap(), big);
    assert_eq!(proxy.requests_seen(), registry.requests().len());
}

#[test]
fn fail_all_resets_make_curl_fail() {
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(&registry, FaultPolicy::FailAll(Fault::ResetConnection));
    let get = output(curl().args(["-sS", "-o", "/dev/null", &format!("{}/v2/", proxy.url())]));
    assert!(!get.status.success());
    // 52: empty reply; 56: failure receiving (connection reset).
    assert!(
        matches!(get.status.code(), Some(52 | 56)),
        "{:?} {}",
        get.status,
        String::from_utf8_lossy(&get.stderr)
    );
    // An upload is cut off mid-body.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("blob");
    fs::write(&file, vec![7u8; 8_000_000]).unwrap();
    let put = output(
        curl()
            .args(["-sS", "-o", "/dev/null", "-X", "PATCH", "--data-binary"])
            .arg(format!("@{}", file.display()))
            .arg(format!("{}/v2/r/blobs/uploads/x", proxy.url())),
    );
    assert!(!put.status.success(), "the upload went through");
    // 55: failure sending; 56: failure receiving (connection reset).
    assert!(
        matches!(put.status.code(), Some(55 | 56)),
        "{:?} {}",
        put.status,
        String::from_utf8_lossy(&put.stderr)
    );
    assert_eq!(proxy.requests_seen(), 2);
    assert!(registry.requests().is_empty(), "{:?}", registry.requests());

    // Switching the policy off lets requests through again.
    proxy.set_policy(FaultPolicy::None);
    assert_eq!(status_of(&[&format!("{}/v2/", proxy.url())]), "200");
}

#[test]
fn stall_delays_then_forwards() {
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(
        &registry,
        FaultPolicy::EveryNth {
            n: 2,
            fault: Fault::Stall(Duration::from_millis(700)),
        },
    );
    let url = format!("{}/v2/", proxy.url());
    let t = Instant::now();
    assert_eq!(status_of(&[&url]), "200");
    let first = t.elapsed();
    let t = Instant::now();
    assert_eq!(status_of(&[&url]), "200");
    let second = t.elapsed();
    assert!(first < Duration::from_millis(600), "{first:?}");
    assert!(second >= Duration::from_millis(700), "{second:?}");
}

#[test]
fn dropped_proxy_stops_listening() {
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(&registry, FaultPolicy::None);
    let host = proxy.host();
    let mut open = std::net::TcpStream::connect(&host).unwrap();
    drop(proxy);
    // The connection it had accepted is closed with it. (Connecting to the
    // port again proves nothing: a test running beside this one may have
    // been given the freed port already.)
    open.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 16];
    match std::io::Read::read(&mut open, &mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("the dropped proxy still answered {n} bytes"),
        Err(e) => assert_ne!(e.kind(), std::io::ErrorKind::WouldBlock, "still open: {e}"),
    }
}

#[test]
fn a_hung_request_the_client_gave_up_on_never_reaches_the_registry() {
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(
        &registry,
        FaultPolicy::Only {
            n: 1,
            fault: Fault::Hang(Duration::from_secs(2)),
        },
    );
    let url = format!("{}/v2/given-up/blobs/uploads/", proxy.url());
    // The client gives up after 1 s: the POST is dropped, unseen.
    let out = output(curl().args(["-sS", "--max-time", "1", "-X", "POST", &url]));
    assert!(!out.status.success(), "the hang did not hold the request");
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        registry.requests().is_empty(),
        "a request the client gave up on reached the registry: {:?}",
        registry.requests()
    );
    assert_eq!(proxy.faults_injected(), 1);

    // A client that waits gets the answer once the hang is over.
    proxy.set_policy(FaultPolicy::Only {
        n: 2,
        fault: Fault::Hang(Duration::from_secs(1)),
    });
    let started = Instant::now();
    assert_eq!(status_of(&["-X", "POST", &url]), "202");
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(registry.requests().len(), 1);
}

#[test]
fn forwarded_body_bytes_count_what_reached_the_registry() {
    let registry = TestRegistry::start();
    // The second request (the PATCH of the first upload) is cut off.
    let proxy = FaultProxy::start(
        &registry,
        FaultPolicy::Only {
            n: 2,
            fault: Fault::ResetConnection,
        },
    );
    let body = vec![7u8; 300 * 1024];
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("blob");
    fs::write(&file, &body).unwrap();
    let url = format!("{}/v2/counted/blobs/uploads/", proxy.url());
    let started = run_ok(curl().args([
        "-sS",
        "-X",
        "POST",
        "-o",
        "/dev/null",
        "-w",
        "%header{location}",
        &url,
    ]));
    let patch = |location: &str| {
        output(curl().args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "PATCH",
            "-H",
            "Content-Type: application/octet-stream",
            "--data-binary",
            &format!("@{}", file.display()),
            location,
        ]))
    };
    assert!(
        String::from_utf8_lossy(&patch(&started).stdout) != "202",
        "the PATCH was not cut off"
    );
    assert_eq!(proxy.body_bytes_forwarded(), 0);
    assert_eq!(String::from_utf8_lossy(&patch(&started).stdout), "202");
    assert_eq!(proxy.body_bytes_forwarded(), body.len() as u64);
}
