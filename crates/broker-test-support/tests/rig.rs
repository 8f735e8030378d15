//! Smoke tests of the rig itself, against the real components: the Docker
//! engine, docker-registry, skopeo, curl.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use broker_test_support::docker::run_ok;
use broker_test_support::{
    BaseImage, TestRegistry, busybox, debian_minbase, docker_cli, engine, require_tool,
    unique_suffix,
};

fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn docker(config: Option<&Path>) -> Command {
    let mut cmd = docker_cli();
    if let Some(dir) = config {
        cmd.env("DOCKER_CONFIG", dir);
    }
    cmd
}

/// Builds `FROM busybox` + `RUN` + `CMD` as `tag` with the engine.
fn build_hello(tag: &str, config: Option<&Path>) {
    let ctx = tempfile::tempdir().unwrap();
    fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM {}\nRUN echo hello-from-rig > /hello\nCMD [\"cat\", \"/hello\"]\n",
            busybox().docker_ref
        ),
    )
    .unwrap();
    // The CLI on PATH may lack buildx: use the engine's classic builder.
    run_ok(
        docker(config)
            .env("DOCKER_BUILDKIT", "0")
            .args(["build", "-q", "-t", tag])
            .arg(ctx.path()),
    );
}

/// `docker push`, returning the pushed manifest digest.
fn push(tag: &str, config: Option<&Path>) -> String {
    let out = run_ok(docker(config).args(["push", tag]));
    out.split_whitespace()
        .find(|w| w.starts_with("sha256:") && w.len() == 71)
        .unwrap_or_else(|| panic!("no digest in the docker push output:\n{out}"))
        .to_string()
}

fn rmi(refs: &[&str]) {
    let _ = docker(None)
        .arg("rmi")
        .args(refs)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn pull_and_run(by_digest: &str, config: Option<&Path>) -> String {
    run_ok(docker(config).args(["pull", "-q", by_digest]));
    run_ok(docker(config).args(["run", "--rm", by_digest]))
}

#[test]
fn engine_answers_and_tools_are_found() {
    let docker = engine();
    let version = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(docker.version())
        .expect("the engine answers with the negotiated client");
    assert!(version.api_version.is_some());
    assert!(require_tool("sh", "apt-get install -y dash").is_file());
}

#[test]
#[should_panic(expected = "apt-get install -y no-such-package")]
fn missing_tool_panics_with_the_install_hint() {
    require_tool(
        "no-such-tool-broker-test",
        "apt-get install -y no-such-package",
    );
}

#[test]
fn docker_build_push_pull_run_through_plain_registry() {
    let registry = TestRegistry::start();
    let s = unique_suffix();
    let repo = format!("rig/hello-{s}");
    let tag = format!("{}/{repo}:v1", registry.host());
    build_hello(&tag, None);
    let digest = push(&tag, None);
    let by_digest = format!("{}/{repo}@{digest}", registry.host());
    rmi(&[&tag]);
    let out = pull_and_run(&by_digest, None);
    assert_eq!(out.trim(), "hello-from-rig");

    assert!(!registry.stored_blobs().is_empty());
    assert!(
        registry
            .stored_blobs()
            .iter()
            .all(|b| b.starts_with("sha256:") && b.len() == 71)
    );
    assert!(registry.has_tag(&repo, "v1"));
    assert!(!registry.has_tag(&repo, "v2"));
    let requests = registry.requests();
    assert!(
        requests.iter().any(|r| r.method == "PUT"
            && r.path == format!("/v2/{repo}/manifests/v1")
            && r.status == 201),
        "{requests:#?}"
    );
    assert!(
        requests.iter().any(|r| r.method == "GET"
            && r.path == format!("/v2/{repo}/manifests/{digest}")
            && r.status == 200),
        "{requests:#?}"
    );
    let uploads = registry.blob_upload_count();
    assert!(uploads >= 2, "{uploads} uploads: {requests:#?}");
    assert_eq!(registry.blob_mount_count(), 0);

    // The same image into another repository: docker mounts the blobs.
    let other_repo = format!("rig/other-{s}");
    let other_tag = format!("{}/{other_repo}:v1", registry.host());
    run_ok(docker(None).args(["tag", &by_digest, &other_tag]));
    assert_eq!(push(&other_tag, None), digest);
    assert!(registry.has_tag(&other_repo, "v1"));
    assert!(
        registry.blob_mount_count() >= 1,
        "no mount: {:#?}",
        registry.requests()
    );
    // Docker mounts the layers but uploads the (small) config blob again.
    assert!(
        registry.blob_upload_count() <= uploads + 1,
        "layers uploaded again: {:#?}",
        registry.requests()
    );
    rmi(&[&by_digest, &other_tag]);
}

#[test]
fn auth_registry_refuses_wrong_password_and_serves_the_right_one() {
    let registry = TestRegistry::start_with_auth("rig-user", "rig-secret-pw");
    assert_eq!(registry.credentials(), Some(("rig-user", "rig-secret-pw")));
    let config = tempfile::tempdir().unwrap();
    let login = |password: &str| {
        let mut login = docker(Some(config.path()));
        login.args([
            "login",
            "-u",
            "rig-user",
            "--password-stdin",
            &registry.host(),
        ]);
        broker_test_support::output_with_stdin(&mut login, password)
    };
    let refused = login("wrong-password");
    assert!(
        !refused.status.success(),
        "login with a wrong password worked"
    );
    let accepted = login("rig-secret-pw");
    assert!(
        accepted.status.success(),
        "{}",
        String::from_utf8_lossy(&accepted.stderr)
    );

    let s = unique_suffix();
    let repo = format!("rig/auth-{s}");
    let tag = format!("{}/{repo}:v1", registry.host());
    build_hello(&tag, Some(config.path()));
    let digest = push(&tag, Some(config.path()));
    let by_digest = format!("{}/{repo}@{digest}", registry.host());
    rmi(&[&tag]);
    assert_eq!(
        pull_and_run(&by_digest, Some(config.path())).trim(),
        "hello-from-rig"
    );
    rmi(&[&by_digest]);
    assert!(registry.has_tag(&repo, "v1"));
    assert!(registry.requests().iter().any(|r| r.status == 401));

    let curl = require_tool("curl", "apt-get install -y curl");
    let status = |creds: Option<&str>| {
        let mut cmd = Command::new(&curl);
        cmd.args(["-s", "-o", "/dev/null", "-w", "%{http_code}"]);
        if let Some(c) = creds {
            cmd.args(["-u", c]);
        }
        run_ok(cmd.arg(format!("{}/v2/", registry.url())))
    };
    assert_eq!(status(None), "401");
    assert_eq!(status(Some("rig-user:wrong")), "401");
    assert_eq!(status(Some("rig-user:rig-secret-pw")), "200");
}

#[test]
fn tls_registry_is_trusted_only_with_its_ca() {
    let registry = TestRegistry::start_tls();
    assert!(registry.url().starts_with("https://127.0.0.1:"));
    let ca = registry.ca_cert_path().expect("a TLS registry has a CA");
    let curl = require_tool("curl", "apt-get install -y curl");
    let v2 = format!("{}/v2/", registry.url());
    let trusted = run_ok(
        Command::new(&curl)
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(ca)
            .arg(&v2),
    );
    assert_eq!(trusted, "200");
    let localhost = run_ok(
        Command::new(&curl)
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(ca)
            .arg(format!("https://localhost:{}/v2/", registry.port())),
    );
    assert_eq!(localhost, "200");
    let untrusted = output(Command::new(&curl).args(["-sS", "-o", "/dev/null", &v2]));
    assert!(!untrusted.status.success());
    // 60: peer certificate cannot be authenticated with known CA certificates.
    assert_eq!(
        untrusted.status.code(),
        Some(60),
        "{}",
        String::from_utf8_lossy(&untrusted.stderr)
    );
    assert!(String::from_utf8_lossy(&untrusted.stderr).contains("certificate"));

    let pushed = busybox().push_to(&registry, "rig/tls", "v1");
    assert!(pushed.starts_with(&format!("{}/rig/tls@sha256:", registry.host())));
    let skopeo = require_tool("skopeo", "apt-get install -y skopeo");
    let inspected = run_ok(
        Command::new(&skopeo)
            .args(["inspect", "--cert-dir"])
            .arg(registry.cert_dir().unwrap())
            .arg(format!("docker://{pushed}")),
    );
    let digest = pushed.rsplit('@').next().unwrap();
    assert!(inspected.contains(digest), "{inspected}");
    assert!(registry.has_tag("rig/tls", "v1"));
    // Without the CA skopeo refuses.
    let refused = output(
        Command::new(&skopeo)
            .arg("inspect")
            .arg(format!("docker://{pushed}")),
    );
    assert!(!refused.status.success());
}

#[test]
fn tls_auth_registry_takes_push_to_with_credentials() {
    let registry = TestRegistry::start_tls_with_auth("tls-user", "tls-pw");
    let pushed = busybox().push_to(&registry, "rig/tls-auth", "v1");
    let skopeo = require_tool("skopeo", "apt-get install -y skopeo");
    let inspect = |creds: Option<&str>| {
        let mut cmd = Command::new(&skopeo);
        cmd.args(["inspect", "--cert-dir"])
            .arg(registry.cert_dir().unwrap());
        match creds {
            Some(c) => cmd.args(["--creds", c]),
            None => cmd.arg("--no-creds"),
        };
        output(cmd.arg(format!("docker://{pushed}")))
    };
    assert!(inspect(Some("tls-user:tls-pw")).status.success());
    assert!(!inspect(None).status.success());
    assert!(registry.blob_upload_count() >= 2);
}

fn check_base_image(image: &BaseImage, registry: &TestRegistry, repo: &str) {
    let skopeo = require_tool("skopeo", "apt-get install -y skopeo");
    assert!(image.oci_ref().starts_with("oci:"));
    run_ok(Command::new(&skopeo).arg("inspect").arg(image.oci_ref()));
    let pushed = image.push_to(registry, repo, "base");
    let inspected = run_ok(
        Command::new(&skopeo)
            .args(["inspect", "--tls-verify=false"])
            .arg(format!("docker://{pushed}")),
    );
    let digest = pushed.rsplit('@').next().unwrap();
    assert!(inspected.contains(digest), "{inspected}");
    assert!(registry.has_tag(repo, "base"));
}

#[test]
fn busybox_base_image_runs_and_copies() {
    let image = busybox();
    let out = run_ok(docker(None).args(["run", "--rm", &image.docker_ref, "sh", "-c", "echo ok"]));
    assert_eq!(out.trim(), "ok");
    let out = run_ok(docker(None).args([
        "run",
        "--rm",
        "--user",
        "nobody",
        &image.docker_ref,
        "sh",
        "-c",
        "id -u; stat -c %a /tmp; ls /bin/wget /bin/find /bin/cat >/dev/null && echo tools",
    ]));
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["65534", "1777", "tools"]
    );
    // Default command is /bin/sh.
    let out = run_ok(
        docker(None)
            .args(["run", "--rm", "-i", &image.docker_ref])
            .stdin(fs::File::open("/dev/null").unwrap()),
    );
    assert_eq!(out, "");
    let registry = TestRegistry::start();
    check_base_image(&image, &registry, "rig/busybox");
    // The same image comes back from the cache.
    assert_eq!(busybox(), image);
}

#[test]
fn debian_minbase_runs_python_and_node() {
    let image = debian_minbase();
    let run = |script: &str| {
        run_ok(docker(None).args(["run", "--rm", &image.docker_ref, "sh", "-c", script]))
            .trim()
            .to_string()
    };
    assert_eq!(run("echo ok"), "ok");
    assert_eq!(run("python3 -c 'print(1+1)'"), "2");
    assert_eq!(run("node -e 'console.log(2)'"), "2");
    assert!(run("python --version 2>&1").starts_with("Python 3."));
    assert_eq!(run("id -u"), "0");
    assert_eq!(run("ls /var/lib/apt/lists | grep -vx partial | wc -l"), "0");
    assert_eq!(
        run("ls /var/cache/apt/archives | grep -c '\\.deb$' || true"),
        "0"
    );
    let registry = TestRegistry::start();
    check_base_image(&image, &registry, "rig/debian");
}

#[test]
fn dropped_registry_stops_listening() {
    let registry = TestRegistry::start();
    let addr = registry.host();
    assert!(TcpStream::connect(&addr).is_ok());
    let storage = registry.storage_dir().to_path_buf();
    assert!(storage.is_dir());
    drop(registry);
    assert!(
        TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(1)).is_err(),
        "{addr} still accepts connections after drop"
    );
    assert!(!storage.exists(), "the storage directory is removed");
}

#[test]
fn registries_start_in_parallel_on_distinct_ports() {
    let registries: Vec<TestRegistry> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4).map(|_| s.spawn(TestRegistry::start)).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut hosts: Vec<String> = registries.iter().map(TestRegistry::host).collect();
    hosts.sort();
    hosts.dedup();
    assert_eq!(hosts.len(), 4);
}

#[test]
fn registry_dies_with_its_test_process() {
    // A child test process that starts a registry, prints its port and is
    // then killed with SIGKILL: the watchdog must take the registry down.
    if let Ok(port_file) = std::env::var("BROKER_RIG_CHILD_PORT_FILE") {
        let registry = TestRegistry::start();
        let dir = registry
            .storage_dir()
            .parent()
            .unwrap()
            .display()
            .to_string();
        fs::write(&port_file, format!("{}\n{dir}", registry.host())).unwrap();
        std::thread::sleep(Duration::from_secs(60));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port_file = dir.path().join("port");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "registry_dies_with_its_test_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("BROKER_RIG_CHILD_PORT_FILE", &port_file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (host, registry_dir) = loop {
        if let Ok(h) = fs::read_to_string(&port_file)
            && let Some((host, dir)) = h.split_once('\n')
        {
            break (host.to_string(), std::path::PathBuf::from(dir));
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the child never started a registry"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(TcpStream::connect(&host).is_ok());
    assert!(registry_dir.join("config.yml").is_file());
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(&host).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the registry at {host} outlived its killed test process"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    while registry_dir.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} outlived its killed test process",
            registry_dir.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
