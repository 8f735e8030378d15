//! The Docker engine and command-line tools tests use.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bollard::{ClientVersion, Docker};

/// Seconds bollard waits for one engine request.
const ENGINE_TIMEOUT_SECS: u64 = 600;

/// The engine address tests talk to: `DOCKER_HOST`, else the default socket.
pub fn docker_host() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unix:///var/run/docker.sock".to_string())
}

fn connect(host: &str, version: &ClientVersion) -> Result<Docker, bollard::errors::Error> {
    if host.starts_with("unix://") {
        Docker::connect_with_unix(host, ENGINE_TIMEOUT_SECS, version)
    } else if host.starts_with("tcp://") || host.starts_with("http://") {
        Docker::connect_with_http(host, ENGINE_TIMEOUT_SECS, version)
    } else {
        Docker::connect_with_host(host)
    }
}

/// Connects to the Docker engine at `DOCKER_HOST` (or the default unix
/// socket), negotiates the API version and pings it.
///
/// Blocking, and callable both inside and outside a tokio runtime: the probe
/// runs on its own thread with its own current-thread runtime, and the client
/// returned is a fresh one (pinned to the negotiated API version) that is not
/// tied to any runtime, so it can be used from the caller's runtime.
///
/// # Panics
/// When no engine answers, with a message telling how to install and start
/// one.
pub fn engine() -> Docker {
    let host = docker_host();
    let probe_host = host.clone();
    let probed = std::thread::spawn(move || -> Result<ClientVersion, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot build a tokio runtime: {e}"))?;
        rt.block_on(async move {
            let docker =
                connect(&probe_host, bollard::API_DEFAULT_VERSION).map_err(|e| e.to_string())?;
            let docker = tokio::time::timeout(Duration::from_secs(20), docker.negotiate_version())
                .await
                .map_err(|_| "timed out negotiating the API version".to_string())?
                .map_err(|e| e.to_string())?;
            tokio::time::timeout(Duration::from_secs(20), docker.ping())
                .await
                .map_err(|_| "timed out pinging".to_string())?
                .map_err(|e| e.to_string())?;
            Ok(docker.client_version())
        })
    })
    .join()
    .expect("the Docker engine probe thread panicked");
    match probed.and_then(|v| connect(&host, &v).map_err(|e| e.to_string())) {
        Ok(docker) => docker,
        Err(e) => panic!(
            "no Docker engine answers at {host} ({e}): install and start one: \
             apt-get install -y docker.io && bash .ci/start-docker"
        ),
    }
}

/// Finds the executable `name` on `PATH`.
///
/// # Panics
/// When it is not there, with `install_hint` (e.g. `apt-get install -y skopeo`).
pub fn require_tool(name: &str, install_hint: &str) -> PathBuf {
    find_tool(name)
        .unwrap_or_else(|| panic!("`{name}` is not installed (not found on PATH): {install_hint}"))
}

/// Finds the executable `name` on `PATH`, `None` when it is not there.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// A `docker` command talking to the same engine as [`engine`] (it gets
/// `DOCKER_HOST` set explicitly).
///
/// # Panics
/// When the `docker` CLI is missing, with an install hint.
pub fn docker_cli() -> Command {
    let docker = require_tool("docker", "apt-get install -y docker.io");
    let mut cmd = Command::new(docker);
    cmd.env("DOCKER_HOST", docker_host());
    cmd
}

/// Runs `cmd`, panicking with its command line, status, stdout and stderr
/// when it fails; returns its stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&output_ok(cmd).stdout).into_owned()
}

/// Runs `cmd`, panicking with its command line, status, stdout and stderr
/// when it fails; returns its output (stdout as bytes, e.g. a manifest
/// whose digest matters).
pub fn output_ok(cmd: &mut Command) -> std::process::Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// `git -C dir ARGS…` with a fixed author (tests commit into throwaway
/// trees on machines without a git identity); returns its trimmed stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    require_tool("git", "apt-get install -y git");
    let out = run_ok(
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args([
                "-c",
                "user.name=test",
                "-c",
                "user.email=test@example.invalid",
            ])
            .args(args),
    );
    out.trim().to_owned()
}

/// Removes, when this test process ends, every image the engine now holds
/// under `repository` (e.g. `broker-images/NAME`, where a build leaves its
/// deps images as `NAME:deps-<key>`), as [`remove_from_engine_when_done`]
/// does for one reference. Best effort and never a panic (it may run
/// while a failed test unwinds): an engine that cannot list leaves the
/// images.
pub fn remove_repository_from_engine_when_done(repository: &str) {
    let docker = find_tool("docker").unwrap_or_else(|| PathBuf::from("docker"));
    let Ok(listed) = Command::new(docker)
        .env("DOCKER_HOST", docker_host())
        .args(["images", "--format", "{{.Repository}}:{{.Tag}}", repository])
        .output()
    else {
        return;
    };
    for reference in String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter(|l| !l.is_empty())
    {
        remove_from_engine_when_done(reference);
    }
}

/// Removes `reference` from the Docker engine once this test process has
/// ended: images a test pulled or tagged (`127.0.0.1:PORT/…` from its own
/// registry) would otherwise pile up run after run. Removal waits for the
/// process to end because images may be shared by the tests of one binary
/// (a fixture built once); one `sh` watchdog per process does it, reading
/// the references from a file this process appends to.
pub fn remove_from_engine_when_done(reference: &str) {
    use std::io::Write as _;
    use std::sync::OnceLock;
    static LIST: OnceLock<PathBuf> = OnceLock::new();
    let list = LIST.get_or_init(|| {
        let list =
            std::env::temp_dir().join(format!("broker-test-engine-images-{}", std::process::id()));
        let _ = std::fs::write(&list, b"");
        // xargs -r: nothing to do when no reference was added.
        const SCRIPT: &str = r#"parent=$1; list=$2; docker=$3
( exec >/dev/null 2>&1 </dev/null
  while kill -0 "$parent"; do sleep 1; done
  sort -u "$list" | xargs -r "$docker" rmi -f
  rm -f "$list" ) &"#;
        let docker = find_tool("docker").unwrap_or_else(|| PathBuf::from("docker"));
        let _ = Command::new("sh")
            .arg("-c")
            .arg(SCRIPT)
            .arg("broker-test-engine-images")
            .arg(std::process::id().to_string())
            .arg(&list)
            .arg(docker)
            .env("DOCKER_HOST", docker_host())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        list
    });
    if let Ok(mut file) = std::fs::OpenOptions::new().append(true).open(list) {
        let _ = writeln!(file, "{reference}");
    }
}
