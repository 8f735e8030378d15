//! `broker-images dev` as a process: the first build, push and start, one
//! line (or one JSON event) per saved file, and Ctrl-C printing the one
//! command that returns the cluster to the release lock. The cluster is
//! the scripted API endpoint of broker-cluster's tests (it records
//! requests; it is not a Kubernetes API server); the registry is a real
//! CNCF Distribution; the deps stage runs on the Docker engine.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../broker-cluster/tests/support/mod.rs"]
mod support;

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use broker_test_support::{
    EXAMPLE_IMAGES as IMAGES, TestRegistry, Workspace, busybox, dev_example, kubeconfig_for,
    repo_root,
};

/// The example tree, formatters and specs with a `FROM`-only deps stage
/// in `ws`, and a kubeconfig for the endpoint at `api`.
fn prepare(ws: &Workspace, api: &std::net::SocketAddr) {
    dev_example(ws.dir());
    // The release lock: an earlier release with nothing built.
    broker_pins::Lock::new()
        .write(&ws.path("images.lock"))
        .unwrap();
    kubeconfig_for(ws.dir(), api);
}

/// `dev` for the workspace, its stderr read line by line.
fn spawn(ws: &Workspace, registry: &TestRegistry, json: bool) -> (Child, mpsc::Receiver<String>) {
    let base = busybox().docker_ref;
    let mut args: Vec<String> = vec![
        "dev".into(),
        "--source".into(),
        "broker".into(),
        "--formatters".into(),
        "fmt".into(),
        "--images".into(),
        "images".into(),
        "--source-revision".into(),
        "cli-dev".into(),
        "--registry".into(),
        format!("{}/broker", registry.host()),
        "--environment".into(),
        repo_root()
            .join("environments/single-node.yaml")
            .display()
            .to_string(),
        "--env-file".into(),
        "broker.env".into(),
        "--catalogue".into(),
        repo_root().join("manifests").display().to_string(),
        "--kubeconfig".into(),
        "kubeconfig".into(),
    ];
    for image in IMAGES {
        args.push("--base".into());
        args.push(format!("{image}={base}"));
    }
    if json {
        args.push("--json".into());
    }
    let mut child = ws
        .command(&args)
        .env_remove("KUBECONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (sender, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    (child, lines)
}

/// Reads lines until one satisfies `wanted`; all lines read so far on
/// failure.
fn wait_for(
    lines: &mpsc::Receiver<String>,
    seen: &mut Vec<String>,
    wanted: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match lines.recv_timeout(left) {
            Ok(line) => {
                seen.push(line.clone());
                if wanted(&line) {
                    return line;
                }
            }
            Err(_) => break,
        }
    }
    panic!("no such line; stderr so far:\n{}", seen.join("\n"));
}

fn interrupt(child: &Child) {
    // The shell's own `kill`: no procps needed.
    let status = std::process::Command::new("sh")
        .args(["-c", &format!("kill -INT {}", child.id())])
        .status()
        .unwrap();
    assert!(status.success());
}

fn save(path: &Path, text: &str) {
    let temp = path.with_extension("tmp-save");
    std::fs::write(&temp, text).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_is_one_line_and_ctrl_c_names_the_way_back_to_the_release_lock() {
    let api = support::serve(None).await;
    let registry = TestRegistry::start();
    let ws = Workspace::new(env!("CARGO_BIN_EXE_broker-images"));
    prepare(&ws, &api.addr);
    let restapi = ws.path("broker/src/python/restapi/RestAPI.py");
    let text = std::fs::read_to_string(&restapi).unwrap();

    let release = std::fs::read(ws.path("images.lock")).unwrap();
    let (mut child, lines) = spawn(&ws, &registry, false);
    let mut seen = Vec::new();
    let lines_ref = &lines;
    tokio::task::block_in_place(|| {
        wait_for(lines_ref, &mut seen, |l| l.starts_with("dev: started"));
    });
    save(&restapi, &format!("{text}\n# edited\n"));
    let line = tokio::task::block_in_place(|| {
        wait_for(lines_ref, &mut seen, |l| l.contains(" ms after the write"))
    });
    assert!(
        line.starts_with("src/python/restapi/RestAPI.py") && line.contains("→ python-base@sha256:"),
        "{line}"
    );
    for workload in ["restapi", "lm", "wombat"] {
        assert!(line.contains(workload), "{line}");
    }
    assert!(!line.contains("website"), "{line}");
    interrupt(&child);
    let back = tokio::task::block_in_place(|| {
        wait_for(lines_ref, &mut seen, |l| l.starts_with("dev: stopped"))
    });
    let status = tokio::task::block_in_place(|| child.wait().unwrap());
    assert!(status.success(), "{status:?}\n{}", seen.join("\n"));
    assert!(
        back.ends_with(&format!(
            "To return it to the release lock: broker-images start --environment {} --source broker --lock images.lock --env-file broker.env --catalogue {} --namespace broker --kubeconfig kubeconfig",
            repo_root().join("environments/single-node.yaml").display(),
            repo_root().join("manifests").display()
        )),
        "{back}"
    );
    // The release lock was not written: dev keeps its own record.
    assert_eq!(
        std::fs::read(ws.path("images.lock")).unwrap(),
        release,
        "the release lock changed"
    );
    assert!(ws.path("images.dev.lock").is_file());
    // status against the release lock: drift, named as dev builds.
    let status = tokio::task::block_in_place(|| {
        ws.command(&[
            "status",
            "--lock",
            "images.lock",
            "--kubeconfig",
            "kubeconfig",
        ])
        .env_remove("KUBECONFIG")
        .output()
        .unwrap()
    });
    assert_eq!(status.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&status.stdout);
    assert!(
        stdout.contains("restapi runs a dev build of python-base (sha256:"),
        "{stdout}"
    );
    assert!(
        stdout.contains("recorded in images.dev.lock), not images.lock"),
        "{stdout}"
    );

    // With --json: one event per change carrying the timings.
    let (mut child, lines) = spawn(&ws, &registry, true);
    let lines_ref = &lines;
    let mut seen = Vec::new();
    tokio::task::block_in_place(|| {
        wait_for(lines_ref, &mut seen, |l| l.contains("dev: started"));
    });
    save(&restapi, &format!("{text}\n# edited again\n"));
    let event = tokio::task::block_in_place(|| {
        wait_for(lines_ref, &mut seen, |l| l.contains(r#""event":"change""#))
    });
    let event: serde_json::Value = serde_json::from_str(&event).unwrap();
    assert_eq!(
        event["files"][0], "src/python/restapi/RestAPI.py",
        "{event}"
    );
    for part in [
        "seen_ms",
        "build_ms",
        "push_ms",
        "apply_ms",
        "rollout_ms",
        "write_to_ready_ms",
    ] {
        assert!(event["timings"][part].is_number(), "{part}: {event}");
    }
    interrupt(&child);
    let output = tokio::task::block_in_place(|| {
        let mut stdout = String::new();
        std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut stdout).unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "{status:?}");
        stdout
    });
    let result: serde_json::Value = serde_json::from_str(&output).unwrap();
    assert!(
        result["return_to_release"]
            .as_str()
            .unwrap()
            .starts_with("broker-images start --environment"),
        "{result}"
    );
}
