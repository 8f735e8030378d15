//! Pushes through a flaky network: a real CNCF Distribution registry behind
//! an in-process proxy that injects faults (error statuses, connection
//! resets, stalls, body-size limits). Every push that completes is checked
//! by skopeo against the registry itself; every push that fails must leave
//! no tag behind.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use broker_oci::{Digest, Store};
use broker_registry::{
    ClientOptions, PushedImage, Reference, RegistryClient, RegistryError, Reporter, RetryPolicy,
    push_from_store,
};
use broker_test_support::{
    Fault, FaultPolicy, FaultProxy, TestRegistry, output_ok, require_tool, runtime, synthetic,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Fast retries, so faulty pushes finish in seconds.
fn fast_options(max_attempts: u32, read_timeout: Duration) -> ClientOptions {
    ClientOptions {
        retry: RetryPolicy {
            max_attempts,
            min_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(100),
            max_retry_after: Duration::from_millis(100),
        },
        read_timeout,
        connect_timeout: Duration::from_secs(2),
        ..ClientOptions::default()
    }
}

/// Asks skopeo, straight from the registry (not through the proxy), for
/// the manifest bytes of `repo@digest` and checks they hash to `digest`.
fn assert_registry_serves(registry: &TestRegistry, repo: &str, digest: &Digest) {
    require_tool("skopeo", "apt-get install -y skopeo");
    let pinned = format!("{}/{repo}@{digest}", registry.host());
    let out = output_ok(
        Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{pinned}")),
    );
    assert_eq!(
        Digest::of(&out.stdout),
        *digest,
        "the registry serves our exact manifest bytes"
    );
}

struct Pushed {
    result: Result<PushedImage, RegistryError>,
    elapsed: Duration,
    /// What the client retried, and why.
    retries: Vec<String>,
}

/// Keeps every retry the client reports, for failure messages.
#[derive(Default)]
struct Retries(std::sync::Mutex<Vec<String>>);

impl Reporter for Retries {
    fn retrying(&self, what: &str, attempt: u32, _delay: Duration, why: &str) {
        self.0
            .lock()
            .unwrap()
            .push(format!("{what} (attempt {attempt}): {why}"));
    }
}

fn push(store: &Store, tag: &str, host: &str, repo: &str, options: &ClientOptions) -> Pushed {
    let target: Reference = format!("{host}/{repo}:v1").parse().unwrap();
    let start = Instant::now();
    let retries = Arc::new(Retries::default());
    let reporter: Arc<dyn Reporter> = retries.clone();
    let result = runtime().block_on(async {
        let client = RegistryClient::for_reference(&target, options)?;
        push_from_store(&client, store, tag, &target, &reporter).await
    });
    Pushed {
        result,
        elapsed: start.elapsed(),
        retries: retries.0.lock().unwrap().clone(),
    }
}

/// Pushes a multi-layer image through a proxy with `policy` and checks the
/// result with skopeo.
fn push_survives(policy: FaultPolicy, layers: usize, size: usize, options: ClientOptions) {
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(&registry, policy.clone());
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let image = synthetic::image(&store, "app", 7, layers, size);
    let (digest, blobs) = (image.digest, image.blobs());
    let pushed = push(&store, "app", &proxy.host(), "broker/app", &options);
    let result = pushed.result.unwrap_or_else(|e| {
        panic!(
            "push through {policy:?} failed after {:?} ({} requests, {} faults): {e}\nretries: {:#?}\n{}",
            pushed.elapsed,
            proxy.requests_seen(),
            proxy.faults_injected(),
            pushed.retries,
            registry.log()
        )
    });
    assert_eq!(result.digest, digest);
    assert_eq!(
        result.stats.uploaded + result.stats.existed + result.stats.mounted,
        blobs.len()
    );
    assert!(
        proxy.faults_injected() > 0,
        "no fault was injected: the test proved nothing"
    );
    assert!(registry.has_tag("broker/app", "v1"));
    let stored = registry.stored_blobs();
    for blob in &blobs {
        assert!(stored.contains(&blob.to_string()), "{blob} missing");
    }
    assert_registry_serves(&registry, "broker/app", &digest);
}

#[test]
fn every_third_request_503_still_pushes() {
    push_survives(
        FaultPolicy::EveryNth {
            n: 3,
            fault: Fault::Status(503),
        },
        4,
        512 * 1024,
        ClientOptions {
            concurrency: 1,
            ..fast_options(8, Duration::from_secs(10))
        },
    );
}

#[test]
fn every_third_connection_reset_mid_upload_still_pushes() {
    push_survives(
        FaultPolicy::EveryNth {
            n: 3,
            fault: Fault::ResetConnection,
        },
        4,
        4 * 1024 * 1024,
        ClientOptions {
            concurrency: 1,
            ..fast_options(8, Duration::from_secs(10))
        },
    );
}

#[test]
fn stalled_requests_time_out_and_are_retried() {
    // Stalls of 5 s against a 2 s read timeout: every stalled request must
    // be abandoned and sent again, or the push would take far longer.
    push_survives(
        FaultPolicy::EveryNth {
            n: 5,
            fault: Fault::Stall(Duration::from_secs(5)),
        },
        3,
        256 * 1024,
        fast_options(8, Duration::from_secs(2)),
    );
}

fn assert_fails_cleanly(fault: Fault) {
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(&registry, FaultPolicy::FailAll(fault.clone()));
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    synthetic::image(&store, "app", 8, 2, 64 * 1024);
    let pushed = push(
        &store,
        "app",
        &proxy.host(),
        "broker/app",
        &fast_options(3, Duration::from_secs(5)),
    );
    let err = pushed
        .result
        .expect_err("a push through a proxy failing everything must fail");
    assert!(
        pushed.elapsed < Duration::from_secs(30),
        "{fault:?}: giving up took {:?}",
        pushed.elapsed
    );
    let text = err.to_string();
    assert!(!text.contains('\n'), "not one line: {text}");
    assert!(
        text.contains(&proxy.host()),
        "the error does not name the registry: {text}"
    );
    assert!(proxy.faults_injected() > 0);
    assert!(!registry.has_tag("broker/app", "v1"));
    assert!(
        registry.requests().is_empty(),
        "nothing should have reached the registry"
    );
}

#[test]
fn registry_answering_503_forever_fails_fast_without_a_tag() {
    assert_fails_cleanly(Fault::Status(503));
}

#[test]
fn registry_resetting_every_connection_fails_fast_without_a_tag() {
    assert_fails_cleanly(Fault::ResetConnection);
}

#[test]
fn interrupted_push_leaves_no_tag_and_the_retry_sends_only_what_is_missing() {
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(&registry, FaultPolicy::None);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let image = synthetic::image(&store, "app", 9, 6, 4 * 1024 * 1024);
    let (digest, blobs) = (image.digest, image.blobs());
    let options = ClientOptions {
        concurrency: 2,
        ..fast_options(3, Duration::from_secs(5))
    };

    // The network goes down as soon as the registry holds the first blob.
    let done = AtomicBool::new(false);
    let pushed = std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::SeqCst) {
                if !registry.stored_blobs().is_empty() {
                    proxy.set_policy(FaultPolicy::FailAll(Fault::Status(503)));
                    return;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        let pushed = push(&store, "app", &proxy.host(), "broker/app", &options);
        done.store(true, Ordering::SeqCst);
        pushed
    });
    let err = pushed.result.expect_err("the network went down mid-push");
    assert!(err.to_string().contains(&proxy.host()), "{err}");
    let held = registry.stored_blobs();
    assert!(
        !held.is_empty() && held.len() < blobs.len(),
        "the outage should have hit mid-push, but the registry holds {} of {} blobs",
        held.len(),
        blobs.len()
    );
    assert!(!registry.has_tag("broker/app", "v1"));
    let manifest_puts: Vec<_> = registry
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT" && r.path.contains("/manifests/"))
        .collect();
    assert!(
        manifest_puts.is_empty(),
        "a manifest was stored before all its blobs: {manifest_puts:?}"
    );

    // The network is back: a new run (fresh client) sends only what is missing.
    proxy.set_policy(FaultPolicy::None);
    let uploads_before = registry.blob_upload_count();
    let pushed = push(&store, "app", &proxy.host(), "broker/app", &options);
    let result = pushed.result.unwrap();
    assert_eq!(result.digest, digest);
    assert_eq!(result.stats.existed, held.len(), "{:?}", result.stats);
    assert_eq!(result.stats.uploaded, blobs.len() - held.len());
    assert_eq!(
        registry.blob_upload_count() - uploads_before,
        blobs.len() - held.len(),
        "upload sessions opened by the second run"
    );
    assert!(registry.has_tag("broker/app", "v1"));
    assert_registry_serves(&registry, "broker/app", &digest);
}

/// A TCP proxy that answers `413 Payload Too Large` to any PUT whose body is
/// larger than `limit` bytes, as nginx with `client_max_body_size` does, and
/// forwards everything else. Each connection carries one request
/// (`Connection: close` is added towards the registry), so every request is
/// inspected.
struct BodyLimitProxy {
    host: String,
    refused: Arc<AtomicUsize>,
    _runtime: tokio::runtime::Runtime,
}

impl BodyLimitProxy {
    fn start(upstream: String, limit: u64) -> Self {
        let runtime = runtime();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let refused = Arc::new(AtomicUsize::new(0));
        let counter = refused.clone();
        runtime.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let _ = Self::serve(client, &upstream, limit, &counter).await;
                });
            }
        });
        Self {
            host,
            refused,
            _runtime: runtime,
        }
    }

    async fn serve(
        mut client: tokio::net::TcpStream,
        upstream: &str,
        limit: u64,
        refused: &AtomicUsize,
    ) -> std::io::Result<()> {
        let mut buf = Vec::new();
        let head_end = loop {
            let mut chunk = [0u8; 8192];
            let n = client.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let method = lines
            .next()
            .and_then(|l| l.split(' ').next())
            .unwrap_or("")
            .to_owned();
        let mut kept = vec![head.split("\r\n").next().unwrap_or("").to_owned()];
        let mut length = 0u64;
        for line in lines.filter(|l| !l.is_empty()) {
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            if !lower.starts_with("connection:") {
                kept.push(line.to_owned());
            }
        }
        if method == "PUT" && length > limit {
            refused.fetch_add(1, Ordering::SeqCst);
            // Read the body away first, so the client sees the answer
            // rather than a reset.
            let mut left = length.saturating_sub((buf.len() - head_end) as u64);
            let mut sink = vec![0u8; 64 * 1024];
            while left > 0 {
                let n = client.read(&mut sink).await?;
                if n == 0 {
                    break;
                }
                left = left.saturating_sub(n as u64);
            }
            client
                .write_all(
                    b"HTTP/1.1 413 Request Entity Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await?;
            return client.shutdown().await;
        }
        kept.push("Connection: close".to_owned());
        let mut forwarded = (kept.join("\r\n") + "\r\n\r\n").into_bytes();
        forwarded.extend_from_slice(&buf[head_end..]);
        let mut server = tokio::net::TcpStream::connect(upstream).await?;
        server.write_all(&forwarded).await?;
        tokio::io::copy_bidirectional(&mut client, &mut server).await?;
        Ok(())
    }
}

#[test]
fn body_limit_413_falls_back_to_chunked_upload() {
    let registry = TestRegistry::start();
    let proxy = BodyLimitProxy::start(registry.host(), 2 * 1024 * 1024);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let size = 5 * 1024 * 1024 + 123;
    let image = synthetic::image(&store, "app", 10, 2, size);
    let (digest, blobs) = (image.digest, image.blobs());
    let options = ClientOptions {
        chunk_size: 1024 * 1024,
        ..fast_options(3, Duration::from_secs(10))
    };
    let pushed = push(&store, "app", &proxy.host, "broker/app", &options);
    let result = pushed.result.unwrap();
    assert_eq!(result.digest, digest);
    assert_eq!(result.stats.uploaded, blobs.len());
    assert_eq!(
        proxy.refused.load(Ordering::SeqCst),
        2,
        "both large layers were refused as one body"
    );
    let patches: Vec<_> = registry
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .collect();
    // Two layers of 5 MiB + 123 bytes in 1 MiB chunks: 6 PATCHes each.
    assert_eq!(patches.len(), 12, "{patches:?}");
    assert!(patches.iter().all(|r| r.status == 202), "{patches:?}");
    assert!(registry.has_tag("broker/app", "v1"));
    assert_registry_serves(&registry, "broker/app", &digest);
}

/// A TCP forwarder that lets client bytes through at `bytes_per_sec` (a
/// slow uplink) and answers at full speed.
///
/// Its receive buffer is small, as on a real slow link, where the window
/// (bandwidth × delay) keeps little data in flight. On loopback the kernel
/// would otherwise buffer megabytes, taking the whole body from the client
/// at once and delivering it long after.
struct SlowUplink {
    host: String,
    _runtime: tokio::runtime::Runtime,
}

impl SlowUplink {
    fn start(upstream: String, bytes_per_sec: u64) -> Self {
        let runtime = runtime();
        let listener = runtime
            .block_on(async {
                let socket = tokio::net::TcpSocket::new_v4()?;
                socket.set_recv_buffer_size(32 * 1024)?;
                socket.bind("127.0.0.1:0".parse().unwrap())?;
                socket.listen(16)
            })
            .unwrap();
        let host = listener.local_addr().unwrap().to_string();
        runtime.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let up = async {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = client_read.read(&mut buf).await?;
                            if n == 0 {
                                return server_write.shutdown().await;
                            }
                            server_write.write_all(&buf[..n]).await?;
                            let pause = n as f64 / bytes_per_sec as f64;
                            tokio::time::sleep(Duration::from_secs_f64(pause)).await;
                        }
                    };
                    let down = tokio::io::copy(&mut server_read, &mut client_write);
                    let _: (std::io::Result<()>, std::io::Result<u64>) = tokio::join!(up, down);
                });
            }
        });
        Self {
            host,
            _runtime: runtime,
        }
    }
}

#[test]
fn slow_but_moving_upload_is_not_a_stall() {
    // A 24 MiB layer at 4 MiB/s takes 6 s; the stall timeout is 3 s. The
    // upload never stops moving, so it must not be cut off: a stall timeout
    // is about silence, not about how long a transfer takes. (The client's
    // socket buffer, up to 4 MiB here, drains within 1 s after the last
    // byte left the client.)
    let registry = TestRegistry::start();
    let uplink = SlowUplink::start(registry.host(), 4 * 1024 * 1024);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let image = synthetic::image(&store, "app", 11, 1, 24 * 1024 * 1024);
    let digest = image.digest;
    let pushed = push(
        &store,
        "app",
        &uplink.host,
        "broker/app",
        &fast_options(2, Duration::from_secs(3)),
    );
    let result = pushed.result.unwrap_or_else(|e| {
        panic!(
            "a slow upload was treated as stalled after {:?}: {e}\nretries: {:#?}",
            pushed.elapsed, pushed.retries
        )
    });
    assert_eq!(result.digest, digest);
    assert!(
        pushed.elapsed > Duration::from_secs(4),
        "the uplink was not slow: {:?}",
        pushed.elapsed
    );
    assert!(pushed.retries.is_empty(), "{:#?}", pushed.retries);
    assert!(registry.has_tag("broker/app", "v1"));
    assert_registry_serves(&registry, "broker/app", &digest);
}

#[test]
fn silent_registry_is_given_up_after_the_budget_not_the_retries() {
    // Issue 12, item 5: many attempts with long timeouts must not add up;
    // the give-up budget bounds the whole run.
    let silent = broker_test_support::SilentServer::start();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    synthetic::image(&store, "app", 20, 2, 64 * 1024);
    let options = ClientOptions {
        give_up_after: Duration::from_secs(3),
        ..fast_options(10, Duration::from_secs(60))
    };
    let pushed = push(&store, "app", &silent.host(), "broker/app", &options);
    let err = pushed.result.expect_err("nothing answers");
    assert!(matches!(err, RegistryError::Unresponsive { .. }), "{err}");
    assert!(
        pushed.elapsed < Duration::from_secs(6),
        "gave up after {:?}",
        pushed.elapsed
    );
    assert!(err.to_string().contains(&silent.host()), "{err}");
}

#[test]
fn connection_reset_mid_chunk_continues_from_what_the_registry_holds() {
    // Issue 12, item 4: a connection reset mid-body continues the upload
    // from what the registry holds instead of restarting it. Behind a
    // store-and-forward proxy a cut chunk never reaches the registry, so
    // the session stays resumable (with Distribution, a session that got
    // part of a chunk cannot be continued and is started afresh).
    const MIB: usize = 1024 * 1024;
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start_buffering(&registry, u64::MAX);
    proxy.set_policy(FaultPolicy::EveryNth {
        n: 4,
        fault: Fault::ResetConnection,
    });
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let image = synthetic::image(&store, "app", 26, 1, 8 * MIB);
    let options = ClientOptions {
        concurrency: 1,
        chunk_size: MIB as u64,
        resumable_from: 4 * MIB as u64,
        ..fast_options(8, Duration::from_secs(10))
    };
    let pushed = push(&store, "app", &proxy.host(), "broker/app", &options);
    let result = pushed
        .result
        .unwrap_or_else(|e| panic!("{e}\nretries: {:#?}\n{}", pushed.retries, registry.log()));
    assert_eq!(result.digest, image.digest);
    assert!(proxy.faults_injected() > 0, "no fault was injected");
    assert!(
        pushed.retries.iter().any(|r| r.contains("upload of")),
        "no chunk was cut off: {:#?}",
        pushed.retries
    );
    let patches: Vec<_> = registry
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .collect();
    assert_eq!(
        patches.len(),
        8,
        "each 1 MiB chunk reached the registry once: {patches:#?}"
    );
    assert!(patches.iter().all(|r| r.status == 202), "{patches:#?}");
    assert_eq!(
        registry.blob_upload_count(),
        2,
        "one upload session per blob: none restarted"
    );
    assert_registry_serves(&registry, "broker/app", &image.digest);
}

/// The bytes of `blobs` in `store`, added up.
fn blob_bytes(store: &Store, blobs: &[Digest]) -> u64 {
    blobs
        .iter()
        .map(|d| std::fs::metadata(store.blob_path(d)).unwrap().len())
        .sum()
}

/// Copies `repo:tag` straight from the registry with skopeo (every blob
/// read and verified), failing the test when it cannot.
fn assert_skopeo_copies(registry: &TestRegistry, repo: &str, tag: &str) {
    require_tool("skopeo", "apt-get install -y skopeo");
    let into = tempfile::tempdir().unwrap();
    output_ok(
        Command::new("skopeo")
            .args(["copy", "--src-tls-verify=false"])
            .arg(format!("docker://{}/{repo}:{tag}", registry.host()))
            .arg(format!("oci:{}:copy", into.path().display())),
    );
}

/// Options for layers above the chunking threshold: 2 MiB chunks for
/// blobs of 4 MiB and more, one blob at a time.
fn chunked_options(read_timeout: Duration) -> ClientOptions {
    const MIB: u64 = 1024 * 1024;
    ClientOptions {
        concurrency: 1,
        chunk_size: 2 * MIB,
        resumable_from: 4 * MIB,
        give_up_after: Duration::from_secs(20),
        ..fast_options(8, read_timeout)
    }
}

#[test]
fn mixed_faults_on_every_third_request_push_chunked_layers_within_1_5x_their_bytes() {
    // Issue 20: with 503s, resets and stalls on every third request, a
    // failed closing PUT restarted the chunked blob at byte 0, and with one
    // upload in flight the commit always landed on a fault: 367 MiB sent
    // for a 114.6 MiB blob, never committed.
    const MIB: usize = 1024 * 1024;
    let registry = TestRegistry::start();
    let policy = FaultPolicy::EveryNthMixed {
        n: 3,
        faults: vec![
            Fault::Status(503),
            Fault::ResetConnection,
            Fault::Hang(Duration::from_secs(3)),
        ],
    };
    let proxy = FaultProxy::start(&registry, policy);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let image = synthetic::image(&store, "app", 30, 2, 8 * MIB);
    let blobs = image.blobs();
    let bytes = blob_bytes(&store, &blobs);
    let pushed = push(
        &store,
        "app",
        &proxy.host(),
        "broker/app",
        &chunked_options(Duration::from_secs(1)),
    );
    let forwarded = proxy.body_bytes_forwarded();
    eprintln!(
        "pushed {bytes} blob bytes in {:.1}s: {forwarded} bytes forwarded ({:.2}x), {} requests, {} faults",
        pushed.elapsed.as_secs_f64(),
        forwarded as f64 / bytes as f64,
        proxy.requests_seen(),
        proxy.faults_injected()
    );
    let result = pushed
        .result
        .unwrap_or_else(|e| panic!("{e}\nretries: {:#?}\n{}", pushed.retries, registry.log()));
    assert_eq!(result.digest, image.digest);
    assert!(
        proxy.faults_injected() >= 3,
        "not every kind of fault was injected"
    );
    assert!(registry.has_tag("broker/app", "v1"));
    let stored = registry.stored_blobs();
    for blob in &blobs {
        assert!(stored.contains(&blob.to_string()), "{blob} missing");
    }
    assert_skopeo_copies(&registry, "broker/app", "v1");
    assert!(
        forwarded as f64 <= 1.5 * bytes as f64,
        "{forwarded} bytes forwarded for {bytes} bytes of blobs\nretries: {:#?}",
        pushed.retries
    );
    assert!(
        result.stats.bytes_sent >= bytes,
        "sent {} of {bytes}",
        result.stats.bytes_sent
    );
}

#[test]
fn a_failed_commit_continues_the_session_instead_of_resending_the_blob() {
    // Issue 20, item 1: every closing PUT fails once (reset, then 503 in a
    // second run); the upload continues its session, so no chunk reaches
    // the registry twice and no session is opened again.
    const MIB: usize = 1024 * 1024;
    for (seed, fault) in [(31, Fault::ResetConnection), (32, Fault::Status(503))] {
        let registry = TestRegistry::start();
        let proxy = FaultProxy::start(&registry, FaultPolicy::CommitsFailOnce(fault.clone()));
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let image = synthetic::image(&store, "app", seed, 2, 8 * MIB);
        let blobs = image.blobs();
        let bytes = blob_bytes(&store, &blobs);
        let pushed = push(
            &store,
            "app",
            &proxy.host(),
            "broker/app",
            &chunked_options(Duration::from_secs(5)),
        );
        let result = pushed.result.unwrap_or_else(|e| {
            panic!(
                "{fault:?}: {e}\nretries: {:#?}\n{}",
                pushed.retries,
                registry.log()
            )
        });
        assert_eq!(result.digest, image.digest);
        assert_eq!(
            proxy.faults_injected(),
            blobs.len(),
            "one failed commit per blob"
        );
        let forwarded = proxy.body_bytes_forwarded();
        let manifest = image.manifest.len() as u64;
        assert_eq!(
            forwarded,
            bytes + manifest * 2,
            "{fault:?}: every blob byte forwarded once (and the manifest by digest and by tag)"
        );
        let patches = registry
            .requests()
            .into_iter()
            .filter(|r| r.method == "PATCH")
            .count();
        assert_eq!(
            patches, 8,
            "{fault:?}: two 8 MiB layers in 2 MiB chunks, each once"
        );
        assert_eq!(
            registry.blob_upload_count(),
            blobs.len(),
            "{fault:?}: one upload session per blob"
        );
        assert!(
            pushed.retries.iter().any(|r| r.starts_with("commit of")),
            "{fault:?}: {:#?}",
            pushed.retries
        );
        assert!(registry.has_tag("broker/app", "v1"));
        assert_registry_serves(&registry, "broker/app", &image.digest);
    }
}

#[test]
fn one_request_stalled_past_the_give_up_budget_is_retried_with_the_default_timeouts() {
    // Issue 20, item 2: with the default --stall-timeout (60 s) above the
    // default --give-up-after (30 s), one stalled blob HEAD made the run
    // give up on a registry that answered everything else. Request 4 is
    // the first blob's HEAD (after the scheme probe and the two manifest
    // HEADs); it hangs for longer than the budget.
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(
        &registry,
        FaultPolicy::Only {
            n: 4,
            fault: Fault::Hang(Duration::from_secs(45)),
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let image = synthetic::image(&store, "app", 33, 2, 64 * 1024);
    let defaults = ClientOptions::default();
    let options = ClientOptions {
        concurrency: 1,
        read_timeout: defaults.read_timeout,
        give_up_after: defaults.give_up_after,
        ..fast_options(6, defaults.read_timeout)
    };
    let pushed = push(&store, "app", &proxy.host(), "broker/app", &options);
    let result = pushed.result.unwrap_or_else(|e| {
        panic!(
            "after {:?}: {e}\nretries: {:#?}",
            pushed.elapsed, pushed.retries
        )
    });
    assert_eq!(result.digest, image.digest);
    assert_eq!(proxy.faults_injected(), 1, "the stall was not injected");
    assert!(
        pushed
            .retries
            .iter()
            .any(|r| r.starts_with("check of blob")),
        "the stalled HEAD was not retried: {:#?}",
        pushed.retries
    );
    assert!(
        pushed.elapsed < defaults.give_up_after,
        "took {:?}",
        pushed.elapsed
    );
    assert!(registry.has_tag("broker/app", "v1"));
}

/// The highest attempt number the retries report for `what`.
fn last_reported_attempt(retries: &[String], what: &str) -> u32 {
    retries
        .iter()
        .filter_map(|r| r.strip_prefix(&format!("{what} (attempt ")))
        .filter_map(|rest| rest.split(')').next()?.parse().ok())
        .max()
        .unwrap_or(0)
}

#[test]
fn the_final_error_counts_the_attempts_the_retries_reported() {
    // Issue 20, item 3: the error said `after 1 attempts` while the retry
    // lines said `attempt 5 failed`. Every commit fails: the chunked layer
    // gives up on its commit, the small one on its upload.
    const MIB: usize = 1024 * 1024;
    for (seed, size) in [(36, 8 * MIB), (37, 64 * 1024)] {
        let registry = TestRegistry::start();
        let proxy = FaultProxy::start(&registry, FaultPolicy::CommitsFail(Fault::Status(503)));
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let image = synthetic::image(&store, "app", seed, 1, size);
        if size >= 4 * MIB {
            // The config goes first; put it there directly, so the
            // chunked layer's commit is what fails.
            let curl = require_tool("curl", "apt-get install -y curl");
            let started = output_ok(
                Command::new(&curl)
                    .args(["-fsS", "-X", "POST", "-D", "-", "-o", "/dev/null"])
                    .arg(format!(
                        "http://{}/v2/broker/app/blobs/uploads/",
                        registry.host()
                    )),
            );
            let headers = String::from_utf8_lossy(&started.stdout).into_owned();
            let location = headers
                .lines()
                .find_map(|l| l.strip_prefix("Location: "))
                .expect("the registry names the session")
                .trim()
                .to_owned();
            output_ok(
                Command::new(&curl)
                    .args([
                        "-fsS",
                        "-X",
                        "PUT",
                        "-H",
                        "Content-Type: application/octet-stream",
                    ])
                    .arg("--data-binary")
                    .arg(format!("@{}", store.blob_path(&image.config).display()))
                    .arg(format!("{location}&digest={}", image.config)),
            );
        }
        let pushed = push(
            &store,
            "app",
            &proxy.host(),
            "broker/app",
            &chunked_options(Duration::from_secs(5)),
        );
        let err = pushed.result.expect_err("no commit ever succeeds");
        if size >= 4 * MIB {
            assert!(
                pushed.retries.iter().any(|r| r.starts_with("commit of")),
                "the chunked commit was not what failed: {:#?}",
                pushed.retries
            );
        }
        let RegistryError::GaveUp { what, attempts, .. } = &err else {
            panic!("{size}: not a give-up: {err}");
        };
        assert_eq!(*attempts, 8, "{size}: {err}");
        assert_eq!(
            last_reported_attempt(&pushed.retries, what),
            attempts - 1,
            "{size}: {err}\n{:#?}",
            pushed.retries
        );
        let text = err.to_string();
        assert!(
            text.contains("after 8 attempts") && text.contains(&proxy.host()),
            "{text}"
        );
        assert!(!registry.has_tag("broker/app", "v1"));
    }
}

/// Drops every upload session of `broker/app` from the registry's storage
/// once the first chunk of `layer` was acknowledged, and counts the
/// restarts reported.
struct SessionDropper {
    uploads: std::path::PathBuf,
    layer: Digest,
    dropped: AtomicBool,
    restarts: AtomicUsize,
}

impl Reporter for SessionDropper {
    fn blob_progress(&self, digest: &Digest, _bytes: u64) {
        if *digest == self.layer && !self.dropped.swap(true, Ordering::SeqCst) {
            std::fs::remove_dir_all(&self.uploads).unwrap();
        }
    }

    fn blob_restarted(&self, _image: &str, _digest: &Digest, why: &str) {
        assert!(why.contains("dropped"), "{why}");
        self.restarts.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn a_session_the_registry_dropped_restarts_from_byte_0_and_says_so() {
    // Issue 20, item 1: the blob starts over only when the registry says
    // the session is gone, and the progress says it did.
    const MIB: usize = 1024 * 1024;
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let image = synthetic::image(&store, "app", 38, 1, 8 * MIB);
    let dropper = Arc::new(SessionDropper {
        uploads: registry
            .storage_dir()
            .join("docker/registry/v2/repositories/broker/app/_uploads"),
        layer: image.layers[0],
        dropped: AtomicBool::new(false),
        restarts: AtomicUsize::new(0),
    });
    let reporter: Arc<dyn Reporter> = dropper.clone();
    let target: Reference = format!("{}/broker/app:v1", registry.host())
        .parse()
        .unwrap();
    let options = chunked_options(Duration::from_secs(5));
    let pushed = runtime().block_on(async {
        let client = RegistryClient::for_reference(&target, &options)?;
        push_from_store(&client, &store, "app", &target, &reporter).await
    });
    let pushed = pushed.unwrap_or_else(|e| panic!("{e}\n{}", registry.log()));
    assert_eq!(pushed.digest, image.digest);
    assert_eq!(dropper.restarts.load(Ordering::SeqCst), 1);
    assert_eq!(
        registry.blob_upload_count(),
        3,
        "config, layer, layer again"
    );
    assert_registry_serves(&registry, "broker/app", &image.digest);
}

#[test]
fn a_streamed_upload_continues_its_session_after_faults() {
    // Issue 20, item 1, for layers uploaded while they are compressed: a
    // failed piece or commit is continued, not the stream abandoned.
    use broker_registry::{Publisher, StreamedPiece};
    const MIB: usize = 1024 * 1024;
    for policy in [
        FaultPolicy::CommitsFailOnce(Fault::ResetConnection),
        FaultPolicy::EveryNthMixed {
            n: 3,
            faults: vec![
                Fault::Status(503),
                Fault::ResetConnection,
                Fault::Hang(Duration::from_secs(2)),
            ],
        },
    ] {
        let registry = TestRegistry::start();
        let proxy = FaultProxy::start(&registry, policy.clone());
        let bytes = synthetic::noise(39, 6 * MIB);
        let digest = Digest::of(&bytes);
        let prefix = format!("{}/broker", proxy.host()).parse().unwrap();
        let reporter: Arc<dyn Reporter> = Arc::new(Retries::default());
        let publisher =
            Publisher::new(prefix, &chunked_options(Duration::from_secs(1)), reporter).unwrap();
        let uploaded = runtime().block_on(async {
            let (tx, mut rx) = tokio::sync::mpsc::channel(4);
            let pieces = bytes.clone();
            let writer = tokio::spawn(async move {
                for piece in pieces.chunks(MIB) {
                    let piece = bytes::Bytes::copy_from_slice(piece);
                    tx.send(StreamedPiece::Bytes(piece)).await.unwrap();
                }
                let size = pieces.len() as u64;
                tx.send(StreamedPiece::Done { digest, size }).await.unwrap();
            });
            let uploaded = publisher.upload_streamed("app", &mut rx).await;
            writer.await.unwrap();
            uploaded
        });
        let uploaded = uploaded.unwrap_or_else(|e| panic!("{policy:?}: {e}\n{}", registry.log()));
        assert_eq!(uploaded, Some(digest), "{policy:?}");
        assert!(proxy.faults_injected() > 0, "{policy:?}");
        assert!(
            registry.stored_blobs().contains(&digest.to_string()),
            "{policy:?}"
        );
        assert_eq!(
            proxy.body_bytes_forwarded(),
            bytes.len() as u64,
            "{policy:?}: every piece reached the registry once"
        );
    }
}
