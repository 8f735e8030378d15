//! `broker-images build --push` end to end: the example broker tree on the
//! Debian minbase, a real registry, the real Docker engine running the
//! results.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use broker_test_support::{
    TestRegistry, Workspace, copy_dir, debian_minbase, docker_cli, git, repo_root, require_tool,
    unique_suffix,
};

const IMAGES: [&str; 3] = ["mgmt-app", "python-base", "ttn_decoder"];

/// A workspace (the shared one: store, Docker config) holding a copy of the
/// example broker tree (not a git checkout) and the formatters as a git
/// repository.
struct Example {
    ws: Workspace,
    formatters_url: String,
    formatters_commit: String,
}

impl Example {
    /// A copy of the example tree using the formatters at `url`, `commit`.
    fn with_formatters(url: &str, commit: &str) -> Self {
        let ws = Workspace::new(env!("CARGO_BIN_EXE_broker-images"));
        copy_dir(&repo_root().join("examples/broker"), &ws.path("broker"));
        Self {
            ws,
            formatters_url: url.to_owned(),
            formatters_commit: commit.to_owned(),
        }
    }

    fn new() -> Self {
        let ws = Workspace::new(env!("CARGO_BIN_EXE_broker-images"));
        copy_dir(&repo_root().join("examples/broker"), &ws.path("broker"));
        let formatters = ws.path("ttn-formatters");
        copy_dir(&repo_root().join("examples/ttn-formatters"), &formatters);
        git(&formatters, &["init", "--quiet", "-b", "main"]);
        git(&formatters, &["add", "."]);
        git(&formatters, &["commit", "--quiet", "-m", "formatters"]);
        let formatters_commit = git(&formatters, &["rev-parse", "HEAD"]);
        let formatters_url = format!("file://{}", formatters.display());
        Self {
            ws,
            formatters_url,
            formatters_commit,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.ws.path(rel)
    }

    fn lock(&self) -> PathBuf {
        self.path("images.lock")
    }

    /// `broker-images --store … <subcommand> --images … --source … --cache …
    /// --lock …` for this workspace.
    fn command(&self, subcommand: &str, images: &Path, source: &Path) -> Command {
        let mut cmd = self.ws.command(&[subcommand]);
        cmd.arg("--images")
            .arg(images)
            .arg("--source")
            .arg(source)
            .arg("--cache")
            .arg(self.path("cache"))
            .arg("--lock")
            .arg(self.lock())
            // The shipped specs list linux/arm64 too; its deps stage needs
            // an arm64 base, which tests/multi_platform.rs covers.
            .args(["--platform", "linux/amd64"]);
        cmd
    }

    /// `command(subcommand)` on the example tree, its formatters, and the
    /// offline base for every image.
    fn offline(&self, subcommand: &str) -> Command {
        let base = debian_minbase();
        let mut cmd = self.command(
            subcommand,
            &repo_root().join("images"),
            &self.path("broker"),
        );
        cmd.args([
            "--formatters",
            &self.formatters_url,
            "--formatters-rev",
            &self.formatters_commit,
        ]);
        for image in IMAGES {
            cmd.arg("--base")
                .arg(format!("{image}={}", base.docker_ref));
        }
        cmd.args(["--build-arg", "ttn_decoder:NPM_PACKAGES="]);
        cmd
    }

    /// `broker-images build` with the offline base and this workspace's
    /// paths; `extra` is appended.
    fn build(&self, extra: &[&str], envs: &[(&str, &str)]) -> Output {
        let mut cmd = self.offline("build");
        cmd.args(extra);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn failed(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "expected failure; stdout:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Image name → (pinned reference, digest, uploaded blobs) from `--json`.
fn results(stdout: &str) -> std::collections::BTreeMap<String, (String, String, u64)> {
    let v: serde_json::Value = serde_json::from_str(stdout).unwrap();
    v["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let pushed = &i["pushed"];
            (
                i["name"].as_str().unwrap().to_owned(),
                (
                    pushed["pinned"].as_str().unwrap_or_default().to_owned(),
                    i["digest"].as_str().unwrap().to_owned(),
                    pushed["stats"]["uploaded"].as_u64().unwrap_or(0),
                ),
            )
        })
        .collect()
}

fn docker_ok(args: &[&str]) -> String {
    let out = docker_cli().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Runs `image` detached with `port` published on loopback; returns the
/// container id and the host port.
fn serve(image: &str, port: u16) -> (String, u16) {
    let id = docker_ok(&[
        "run",
        "-d",
        "--rm",
        "-p",
        &format!("127.0.0.1::{port}"),
        image,
    ]);
    let mapping = docker_ok(&["port", &id, &format!("{port}/tcp")]);
    let host_port = mapping
        .lines()
        .next()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    (id, host_port)
}

/// Sends an HTTP request with curl until the service answers.
fn http(method: &str, url: &str, body: Option<&str>) -> String {
    require_tool("curl", "apt-get install -y curl");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--fail-with-body", "-X", method, url]);
        if let Some(body) = body {
            cmd.args(["-H", "Content-Type: application/json", "--data", body]);
        }
        let out = cmd.output().unwrap();
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        assert!(
            Instant::now() < deadline,
            "{method} {url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn build_push_run_rebuild_and_reproduce() {
    let registry = TestRegistry::start();
    let prefix = format!("{}/broker-{}", registry.host(), unique_suffix());
    let ws = Example::new();
    let push = ["--push", "--registry", prefix.as_str(), "--json"];

    // 1. Cold build: deps through the engine, everything pushed.
    let first = results(&ok(&ws.build(&push, &[])));
    assert_eq!(first.keys().map(String::as_str).collect::<Vec<_>>(), IMAGES);
    let lock_bytes = std::fs::read(ws.lock()).unwrap();
    let lock: serde_json::Value = serde_json::from_slice(&lock_bytes).unwrap();
    for (name, (pinned, digest, _)) in &first {
        assert_eq!(lock["images"][name]["reference"], pinned.as_str());
        assert_eq!(lock["images"][name]["digest"], digest.as_str());
        assert!(
            pinned.starts_with(&format!("{prefix}/{name}@sha256:")),
            "{pinned}"
        );
    }
    assert_eq!(
        lock["images"]["ttn_decoder"]["sources"]["ttn-formatters"]["revision"],
        ws.formatters_commit.as_str()
    );

    // 2. Pull each by digest and run it.
    let python = &first["python-base"].0;
    docker_ok(&["pull", python]);
    let out = docker_ok(&["run", "--rm", python, "python", "-m", "ydoc.Wombat"]);
    assert_eq!(out, "broker-example ydoc.Wombat ok");
    let out = docker_ok(&[
        "run",
        "--rm",
        python,
        "sh",
        "-c",
        "id -un; pwd; stat -c '%U %a' /home/broker /home/broker/python",
    ]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["broker", "/home/broker/python", "broker 755", "broker 755"]
    );

    let www = &first["mgmt-app"].0;
    docker_ok(&["pull", www]);
    let listing = docker_ok(&["run", "--rm", www, "find", "/app"]);
    assert!(listing.contains("/app/app/main.py"), "{listing}");
    for junk in ["chromedriver.exe", "uitests.py", "/app/tests"] {
        assert!(!listing.contains(junk), "{junk} shipped: {listing}");
    }
    let (id, port) = serve(www, 5000);
    let page = http("GET", &format!("http://127.0.0.1:{port}/"), None);
    docker_ok(&["rm", "-f", &id]);
    assert!(page.contains("broker-example mgmt-app"), "{page}");

    let decoder = &first["ttn_decoder"].0;
    docker_ok(&["pull", decoder]);
    let (id, port) = serve(decoder, 3001);
    // 0x0915 = 2325 → 23.25 °C, 0x1770 = 6000 → 60.00 %RH
    let uplink = r#"{"decoder":"temperature-humidity","end_device_ids":{"device_id":"dev-1"},"uplink_message":{"f_port":1,"frm_payload":"CRUXcA=="}}"#;
    let decoded = http("POST", &format!("http://127.0.0.1:{port}/"), Some(uplink));
    docker_ok(&["rm", "-f", &id]);
    let decoded: serde_json::Value = serde_json::from_str(&decoded).unwrap();
    assert_eq!(decoded["decoded"]["temperature"], 23.25, "{decoded}");
    assert_eq!(decoded["decoded"]["humidity"], 60.0, "{decoded}");

    // 3. Nothing changed: no engine (an unreachable DOCKER_HOST proves it),
    //    no upload, the same lock bytes.
    let uploads = registry.blob_upload_count();
    let again = results(&ok(
        &ws.build(&push, &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")])
    ));
    assert_eq!(
        registry.blob_upload_count(),
        uploads,
        "a no-change rebuild uploaded something"
    );
    for name in IMAGES {
        assert_eq!(again[name].1, first[name].1, "{name} changed");
        assert_eq!(again[name].2, 0, "{name} uploaded blobs");
    }
    assert_eq!(
        std::fs::read(ws.lock()).unwrap(),
        lock_bytes,
        "the lock changed"
    );

    // 4. One Python file changed: only python-base changes, by one layer
    //    (plus its config), and only those two blobs are uploaded.
    let file = ws.path("broker/src/python/ydoc/YDOC.py");
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str("\n# a one-line change\n");
    std::fs::write(&file, text).unwrap();
    let before = registry.stored_blobs();
    let changed = results(&ok(
        &ws.build(&push, &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")])
    ));
    assert_ne!(changed["python-base"].1, first["python-base"].1);
    assert_eq!(changed["mgmt-app"].1, first["mgmt-app"].1);
    assert_eq!(changed["ttn_decoder"].1, first["ttn_decoder"].1);
    assert_eq!(
        changed["python-base"].2, 2,
        "the new sources layer and the new config"
    );
    let new_blobs: Vec<String> = registry
        .stored_blobs()
        .difference(&before)
        .cloned()
        .collect();
    let new_lock: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ws.lock()).unwrap()).unwrap();
    let new_layer = new_lock["images"]["python-base"]["sources"]["python-sources"]["layer"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        new_blobs.len(),
        3,
        "layer + config + manifest: {new_blobs:?}"
    );
    assert!(new_blobs.contains(&new_layer), "{new_blobs:?}");

    // 5. verify reproduces the lock from the same inputs.
    let verify = ws.offline("verify").output().unwrap();
    let out = ok(&verify);
    assert_eq!(
        out.lines().filter(|l| l.ends_with("reproduced")).count(),
        3,
        "{out}"
    );

    // 6. A clean build elsewhere (another path, fresh store and cache; deps
    //    from the registry, no engine) gives the same digests.
    let elsewhere = Example::with_formatters(&ws.formatters_url, &ws.formatters_commit);
    std::fs::copy(&file, elsewhere.path("broker/src/python/ydoc/YDOC.py")).unwrap();
    // The lock is committed with the tree: its base digests key the deps
    // stage where neither an engine nor the bases' registry answers (the
    // test bases exist only in this machine's engine).
    std::fs::copy(ws.lock(), elsewhere.lock()).unwrap();
    let clean = results(&ok(
        &elsewhere.build(&push, &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")])
    ));
    for name in IMAGES {
        assert_eq!(clean[name].1, changed[name].1, "{name} is not reproducible");
    }
}

#[test]
fn bad_input_fails_cleanly_and_leaves_the_lock_alone() {
    let ws = Example::new();
    let lock = ws.lock();
    std::fs::write(&lock, "{\"version\":1,\"images\":{},\"mirrors\":{}}\n").unwrap();
    let untouched = std::fs::read(&lock).unwrap();

    let images = repo_root().join("images");
    let mut missing_source = ws.command("build", &images, &ws.path("no-such-tree"));
    let err = failed(&missing_source.output().unwrap());
    assert!(
        err.contains("no-such-tree") && err.contains("--source"),
        "{err}"
    );

    let mut bad_commit = ws.command("build", &images, &ws.path("broker"));
    bad_commit.args([
        "--formatters",
        &ws.formatters_url,
        "--formatters-rev",
        "0000000000000000000000000000000000000bad",
    ]);
    let err = failed(&bad_commit.output().unwrap());
    assert!(
        err.contains("commit `0000000000000000000000000000000000000bad` not found"),
        "{err}"
    );

    // A malformed spec: error with file:line:column, one line.
    let images = ws.path("images");
    copy_dir(&repo_root().join("images"), &images);
    std::fs::write(images.join("mgmt-app/image.yaml"), "deps:\n  base: x\nlayers:\n  - name: www\n    from: src/www\n    to: /app\n    owner: [1, 2\n").unwrap();
    let mut bad_spec = ws.command("build", &images, &ws.path("broker"));
    let err = failed(&bad_spec.output().unwrap());
    let error_lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(error_lines.len(), 1, "{err}");
    assert!(error_lines[0].contains("mgmt-app/image.yaml:7:"), "{err}");

    // A Dockerfile failing at a RUN step: the step and its output shown.
    std::fs::remove_dir_all(&images).unwrap();
    let failing = images.join("failing");
    std::fs::create_dir_all(&failing).unwrap();
    std::fs::write(
        failing.join("Dockerfile"),
        "ARG BASE\nFROM ${BASE}\nRUN echo preparing-the-failure && exit 3\n",
    )
    .unwrap();
    std::fs::write(
        failing.join("image.yaml"),
        "deps:\n  base: unused\nlayers: []\n",
    )
    .unwrap();
    let busybox = broker_test_support::busybox();
    let mut bad_run = ws.command("build", &images, &ws.path("broker"));
    bad_run
        .arg("--base")
        .arg(format!("failing={}", busybox.docker_ref));
    let err = failed(&bad_run.output().unwrap());
    assert!(
        err.contains("RUN echo preparing-the-failure && exit 3"),
        "{err}"
    );
    assert!(
        err.contains("preparing-the-failure\n") || err.contains("| preparing-the-failure"),
        "step output missing: {err}"
    );
    assert!(err.contains("non-zero code: 3"), "{err}");

    assert_eq!(
        std::fs::read(&lock).unwrap(),
        untouched,
        "a failed build touched the lock"
    );
}
