//! The cluster commands' command line without a cluster: bad input is
//! refused with one line and exit 1 before anything is written; an
//! unreachable API server is reported within 10 s. Request shapes against
//! a scripted endpoint are tested in broker-cluster.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_broker-images");

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../broker-cluster/tests/fixtures/rendered")
}

/// A kubeconfig whose only context points at a port nothing listens on.
fn kubeconfig(dir: &Path) -> (PathBuf, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:{port}\ncontexts:\n- name: kind-broker\n  context:\n    cluster: c\n    user: u\ncurrent-context: kind-broker\nusers:\n- name: u\n  user:\n    token: t\n"
        ),
    )
    .unwrap();
    (path, port)
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn unknown_context_is_one_line_naming_the_known_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = kubeconfig(dir.path());
    let out = run(&[
        "status",
        "--kubeconfig",
        config.to_str().unwrap(),
        "--context",
        "prod",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        "error: kubeconfig: context prod is not in the kubeconfig (have: kind-broker); pass --context with one of them"
    );
}

#[test]
fn manifests_without_our_labels_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = kubeconfig(dir.path());
    let manifests = dir.path().join("out");
    std::fs::create_dir(&manifests).unwrap();
    std::fs::write(
        manifests.join("svc.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: stray\nspec:\n  ports: [{port: 80}]\n",
    )
    .unwrap();
    let out = run(&[
        "start",
        "--manifests",
        manifests.to_str().unwrap(),
        "--kubeconfig",
        config.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    assert!(
        text.contains("Service/stray: lacks label app.kubernetes.io/part-of=broker"),
        "{text}"
    );
    assert_eq!(text.trim().lines().count(), 1, "{text}");
}

#[test]
fn unreachable_api_server_fails_within_ten_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let (config, port) = kubeconfig(dir.path());
    let started = Instant::now();
    let out = run(&[
        "start",
        "--manifests",
        fixture().to_str().unwrap(),
        "--kubeconfig",
        config.to_str().unwrap(),
    ]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    assert!(
        text.contains(&format!(
            "cannot reach the Kubernetes API server at http://127.0.0.1:{port}"
        )),
        "{text}"
    );
}

#[test]
fn delete_data_off_a_terminal_needs_yes() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = kubeconfig(dir.path());
    let out = run(&[
        "stop",
        "--delete-data",
        "--kubeconfig",
        config.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    assert!(
        text.contains("confirm on a terminal or pass --yes"),
        "{text}"
    );
}

#[test]
fn kubeconfig_env_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = kubeconfig(dir.path());
    let out = Command::new(BIN)
        .args(["status", "--context", "other"])
        .env("KUBECONFIG", &config)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("(have: kind-broker)"),
        "{}",
        stderr(&out)
    );
}

/// In a pod without a kubeconfig (a CI runner pod), the service account
/// is used: the run goes to `KUBERNETES_SERVICE_HOST`, or says in one line
/// why the mounted token cannot be used.
#[test]
fn without_a_kubeconfig_a_pod_uses_its_service_account() {
    let home = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(BIN)
        .args(["status"])
        .env_remove("KUBECONFIG")
        .env("HOME", home.path())
        .env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        .env("KUBERNETES_SERVICE_PORT", port.to_string())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    assert_eq!(text.lines().count(), 1, "{text}");
    if Path::new("/var/run/secrets/kubernetes.io/serviceaccount/token").exists() {
        // This test itself runs in a pod: the service account is taken.
        assert!(
            text.contains(&format!("https://127.0.0.1:{port}")),
            "{text}"
        );
    } else {
        assert!(
            text.starts_with("error: kubeconfig: no kubeconfig, and the pod's service account in /var/run/secrets/kubernetes.io/serviceaccount cannot be used ("),
            "{text}"
        );
        assert!(
            text.contains("/var/run/secrets/kubernetes.io/serviceaccount "),
            "{text}"
        );
        assert!(
            text.trim_end()
                .ends_with("mount its token or pass --kubeconfig"),
            "{text}"
        );
    }
}

/// The contract between render and the cluster commands: what `render`
/// writes for the example (both shipped environments and the e2e one)
/// reads as our objects, and plans namespace first, then config and
/// storage, db and mq waited for before the other ten workloads.
#[test]
fn render_output_is_what_start_applies() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("broker.env");
    std::fs::write(
        &env_file,
        "PGPASSWORD=p1x\nPOSTGRES_PASSWORD=p1x\nRABBITMQ_DEFAULT_PASS=p2x\nTTN_API_TOKEN=t1x\nUBIDOTS_API_TOKEN=t2x\nGREENBRAIN_PASSWORDS=g1x\n",
    )
    .unwrap();
    for environment in [
        "environments/single-node.yaml",
        "environments/cluster.yaml",
        ".github/e2e/environment.yaml",
    ] {
        let out = dir.path().join(environment.replace('/', "_"));
        let rendered = Command::new(BIN)
            .current_dir(&root)
            .args([
                "render",
                "--lock",
                "crates/broker-render/tests/fixtures/images.lock",
            ])
            .args(["--source", "examples/broker", "--environment", environment])
            .arg("--env-file")
            .arg(&env_file)
            .arg("--out")
            .arg(&out)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            rendered.status.success(),
            "{environment}: {}",
            stderr(&rendered)
        );

        let set = broker_cluster::RenderedSet::read_dir(&out, "broker")
            .unwrap_or_else(|e| panic!("{environment}: {e}"));
        let prepared =
            broker_cluster::plan::prepare(&set, &broker_cluster::ApplySet::new("broker"));
        let plan = broker_cluster::StartPlan::new(
            &prepared,
            &Default::default(),
            None,
            broker_cluster::StartOptions::default(),
        );
        let steps: Vec<String> = plan.steps.iter().map(ToString::to_string).collect();
        assert_eq!(
            steps[0], "apply   Namespace/broker",
            "{environment}: {steps:#?}"
        );
        let waits: Vec<&String> = steps.iter().filter(|s| s.starts_with("wait")).collect();
        assert_eq!(waits.len(), 2, "{environment}: {steps:#?}");
        assert_eq!(waits[0].as_str(), "wait    Deployment/db, Deployment/mq");
        assert_eq!(
            waits[1].matches("Deployment/").count(),
            10,
            "{environment}: {}",
            waits[1]
        );
        let first_workload = steps
            .iter()
            .position(|s| s.contains("Deployment/"))
            .unwrap();
        assert!(
            steps[..first_workload]
                .iter()
                .all(|s| !s.contains("Deployment/")),
            "{environment}"
        );
    }
}

/// `start --environment` renders in memory first: bad render input is the
/// render's one line (nothing is contacted), good input gets as far as the
/// API server, and neither route given is one line saying both.
#[test]
fn start_renders_first_from_an_environment() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = tempfile::tempdir().unwrap();
    let (config, port) = kubeconfig(dir.path());
    let lock = root.join("crates/broker-render/tests/fixtures/images.lock");
    let source = root.join("examples/broker");
    let catalogue = root.join("manifests");
    let env_sample = root.join("environments/env.sample");
    let start_with = |environment: &Path, extra: &[&str]| {
        let mut args = vec![
            "start",
            "--environment",
            environment.to_str().unwrap(),
            "--source",
            source.to_str().unwrap(),
            "--lock",
            lock.to_str().unwrap(),
            "--env-file",
            env_sample.to_str().unwrap(),
            "--catalogue",
            catalogue.to_str().unwrap(),
            "--kubeconfig",
            config.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        run(&args)
    };
    let start = |environment: &Path| start_with(environment, &[]);

    let out = start(&root.join("environments/single-node.yaml"));
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    assert!(
        text.contains(&format!(
            "cannot reach the Kubernetes API server at http://127.0.0.1:{port}"
        )),
        "{text}"
    );
    assert!(!text.contains("CHANGEME"), "{text}");

    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "profile: single-node\nnamespace: broker\nmystery: 1\n",
    )
    .unwrap();
    let out = start(&bad);
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    assert!(text.contains("bad.yaml:3"), "{text}");
    assert!(!text.contains("cannot reach"), "{text}");
    assert_eq!(text.trim().lines().count(), 1, "{text}");

    // A command line that cannot work is a usage error, as clap's are.
    let out = run(&["start", "--kubeconfig", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("start needs --manifests DIR"),
        "{}",
        stderr(&out)
    );

    // Issue 19 item 8: start --delete-data asks as stop --delete-data
    // does; off a terminal only --yes confirms, before any request.
    let out = start_with(
        &root.join("environments/single-node.yaml"),
        &["--delete-data"],
    );
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    assert!(
        text.contains("--delete-data prunes the broker's PersistentVolumeClaims")
            && text.contains("pass --yes"),
        "{text}"
    );
    assert!(!text.contains("cannot reach"), "{text}");
}
