//! `broker-images render` through the binary: bad input gives one clear
//! line naming the file (and line, for YAML), a non-zero exit and leaves the
//! previous output untouched; credentials never reach stdout or stderr.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use broker_test_support::{copy_dir, repo_root};

const BIN: &str = env!("CARGO_BIN_EXE_broker-images");

/// A private copy of every input, so a case can break one of them.
struct Inputs {
    _dir: tempfile::TempDir,
    manifests: PathBuf,
    source: PathBuf,
    environments: PathBuf,
    lock: PathBuf,
    creds: PathBuf,
    out: PathBuf,
}

impl Inputs {
    fn new() -> Self {
        let root = repo_root();
        let dir = tempfile::tempdir().unwrap();
        let at = |p: &str| dir.path().join(p);
        copy_dir(&root.join("manifests"), &at("manifests"));
        copy_dir(&root.join("examples/broker"), &at("broker"));
        copy_dir(&root.join("environments"), &at("environments"));
        let fixtures = root.join("crates/broker-render/tests/fixtures");
        std::fs::copy(fixtures.join("images.lock"), at("images.lock")).unwrap();
        std::fs::copy(fixtures.join("cluster.env"), at("cluster.env")).unwrap();
        Self {
            manifests: at("manifests"),
            source: at("broker"),
            environments: at("environments"),
            lock: at("images.lock"),
            creds: at("cluster.env"),
            out: at("rendered"),
            _dir: dir,
        }
    }

    fn render(&self, profile: &str, env_file: &Path, out: &Path) -> Output {
        self.render_with(profile, env_file, out, &[])
    }

    fn render_with(&self, profile: &str, env_file: &Path, out: &Path, extra: &[&str]) -> Output {
        Command::new(BIN)
            .arg("render")
            .arg("--lock")
            .arg(&self.lock)
            .arg("--source")
            .arg(&self.source)
            .arg("--catalogue")
            .arg(&self.manifests)
            .arg("--environment")
            .arg(self.environments.join(format!("{profile}.yaml")))
            .arg("--env-file")
            .arg(env_file)
            .arg("--out")
            .arg(out)
            .args(extra)
            .output()
            .unwrap()
    }

    fn edit(&self, path: &Path, from: &str, to: &str) {
        let text = std::fs::read_to_string(path).unwrap();
        assert!(text.contains(from), "{from} not in {}", path.display());
        std::fs::write(path, text.replacen(from, to, 1)).unwrap();
    }
}

fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(snapshot(&path));
        } else {
            files.insert(path.clone(), std::fs::read(&path).unwrap());
        }
    }
    files
}

/// 1-based line of the first line of `path` containing `needle`.
fn line_of(path: &Path, needle: &str) -> usize {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .position(|l| l.contains(needle))
        .unwrap()
        + 1
}

/// Renders good output first, breaks the inputs with `breakage`, renders
/// again into the same directory and checks the failure: exit status, one
/// line on stderr containing every `expected` fragment, output untouched.
fn fails_cleanly(
    profile: &str,
    breakage: impl FnOnce(&Inputs) -> (PathBuf, Vec<String>),
) -> String {
    let inputs = Inputs::new();
    let good = inputs.render(profile, &inputs.creds, &inputs.out);
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let before = snapshot(&inputs.out);
    let (env_file, expected) = breakage(&inputs);
    let bad = inputs.render(profile, &env_file, &inputs.out);
    let stderr = String::from_utf8(bad.stderr).unwrap();
    assert!(!bad.status.success(), "bad input accepted: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("error: render failed: "), "{stderr}");
    for fragment in &expected {
        assert!(
            stderr.contains(fragment.as_str()),
            "`{fragment}` missing: {stderr}"
        );
    }
    assert!(bad.stdout.is_empty());
    assert_eq!(snapshot(&inputs.out), before, "the previous output changed");
    let parent = inputs.out.parent().unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".rendered"))
        .collect();
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
    stderr
}

#[test]
fn unknown_image_names_the_file_and_the_workload() {
    fails_cleanly("cluster", |i| {
        i.edit(
            &i.manifests.join("workloads/lm.yaml"),
            "image: python-base",
            "image: python-bse",
        );
        (
            i.creds.clone(),
            vec![
                "workloads/lm.yaml: workload `lm` uses image `python-bse`".into(),
                "mgmt-app, python-base, ttn_decoder".into(),
            ],
        )
    });
}

#[test]
fn malformed_yaml_names_file_and_line() {
    fails_cleanly("cluster", |i| {
        let file = i.manifests.join("workloads/lm.yaml");
        i.edit(&file, "kind: Deployment", "kind: Deployment: lm");
        let line = line_of(&file, "kind: Deployment: lm");
        (
            i.creds.clone(),
            vec![format!(
                "workloads/lm.yaml:{line}:17: mapping values are not allowed in this context"
            )],
        )
    });
}

#[test]
fn missing_config_file_names_the_generator_and_the_file() {
    fails_cleanly("cluster", |i| {
        std::fs::remove_file(i.source.join("config/rabbitmq/enabled_plugins")).unwrap();
        (
            i.creds.clone(),
            vec![
                "catalogue.yaml: ConfigMap `rabbitmq-config` takes `config/rabbitmq/enabled_plugins`".into(),
                "config/rabbitmq/enabled_plugins cannot be read".into(),
            ],
        )
    });
}

#[test]
fn placeholder_credentials_are_refused_for_cluster() {
    let stderr = fails_cleanly("cluster", |i| {
        let creds = i.creds.clone();
        i.edit(
            &creds,
            "TTN_API_TOKEN=test-ttn-token-3",
            "TTN_API_TOKEN=CHANGEME",
        );
        i.edit(
            &creds,
            "GREENBRAIN_PASSWORDS=test-greenbrain-5",
            "GREENBRAIN_PASSWORDS=",
        );
        (
            creds,
            vec!["cluster.env: GREENBRAIN_PASSWORDS, TTN_API_TOKEN hold placeholder values".into()],
        )
    });
    assert!(!stderr.contains("test-pg-secret-1"));
    // The shipped sample is all placeholders: refused for cluster too.
    let inputs = Inputs::new();
    let sample = inputs.environments.join("env.sample");
    let out = inputs.render("cluster", &sample, &inputs.out);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("env.sample: GREENBRAIN_PASSWORDS, PGPASSWORD")
    );
    // …and accepted for single-node demos.
    let out = inputs.render("single-node", &sample, &inputs.out);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn unknown_key_in_the_environment_names_file_and_line() {
    fails_cleanly("single-node", |i| {
        let file = i.environments.join("single-node.yaml");
        i.edit(
            &file,
            "namespace: broker\n",
            "namespace: broker\nreplicas: 2\n",
        );
        let line = line_of(&file, "replicas: 2");
        (
            i.creds.clone(),
            vec![format!(
                "single-node.yaml:{line}:1: unknown field `replicas`"
            )],
        )
    });
}

#[test]
fn node_port_outside_the_range_names_file_and_line() {
    fails_cleanly("single-node", |i| {
        let file = i.environments.join("single-node.yaml");
        i.edit(&file, "http: 30500", "http: 40500");
        let line = line_of(&file, "http: 40500");
        (
            i.creds.clone(),
            vec![format!(
                "single-node.yaml:{line}: node port 40500 of website/http is outside 30000-32767"
            )],
        )
    });
}

#[test]
fn two_workloads_claiming_one_node_port_name_file_and_line() {
    fails_cleanly("single-node", |i| {
        let file = i.environments.join("single-node.yaml");
        i.edit(&file, "http: 30500", "http: 30687");
        let line = line_of(&file, "http: 30687");
        // restapi's entry comes first in the file; website's is the clash.
        let website = std::fs::read_to_string(&file)
            .unwrap()
            .lines()
            .enumerate()
            .filter(|(_, l)| l.contains("http: 30687"))
            .map(|(n, _)| n + 1)
            .last()
            .unwrap();
        assert!(website > line);
        (
            i.creds.clone(),
            vec![format!(
                "single-node.yaml:{website}: node port 30687 is claimed by both restapi/http and website/http"
            )],
        )
    });
}

#[test]
fn credentials_never_reach_stdout_or_stderr() {
    let inputs = Inputs::new();
    let values: Vec<String> = std::fs::read_to_string(&inputs.creds)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('=').map(|(_, v)| v.to_owned()))
        .collect();
    assert_eq!(values.len(), 6);
    let to_dir = inputs.render("cluster", &inputs.creds, &inputs.out);
    let to_stdout = inputs.render("cluster", &inputs.creds, Path::new("-"));
    for output in [&to_dir, &to_stdout] {
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        for value in &values {
            assert!(!text.contains(value.as_str()), "a credential was printed");
        }
    }
    // The stream is the directory's objects: the Namespace, which the
    // kustomization leaves out (issue 23 item 7), then the others in
    // kustomization order.
    let stream = String::from_utf8(to_stdout.stdout).unwrap();
    let kustomization = std::fs::read_to_string(inputs.out.join("kustomization.yaml")).unwrap();
    let mut expected = String::new();
    for file in std::iter::once("namespace-broker.yaml")
        .chain(kustomization.lines().filter_map(|l| l.strip_prefix("  - ")))
    {
        expected.push_str("---\n");
        expected.push_str(&std::fs::read_to_string(inputs.out.join(file)).unwrap());
    }
    assert_eq!(stream, expected);
}

/// `--out` replaces its directory whole: never one that is not an earlier
/// render's output, such as the catalogue itself.
#[test]
fn out_never_replaces_a_directory_render_did_not_write() {
    let inputs = Inputs::new();
    let before = snapshot(&inputs.manifests);
    let out = inputs.render("cluster", &inputs.creds, &inputs.manifests);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success());
    assert!(
        stderr.contains("manifests: exists and is not the output of an earlier render"),
        "{stderr}"
    );
    assert_eq!(snapshot(&inputs.manifests), before);
    // An empty directory is fine, and so is rendering over the result.
    std::fs::create_dir(&inputs.out).unwrap();
    for _ in 0..2 {
        let out = inputs.render("cluster", &inputs.creds, &inputs.out);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn unmirrored_third_party_images_warn_or_fail_with_require_pinned() {
    let inputs = Inputs::new();
    let lock = std::fs::read_to_string(&inputs.lock).unwrap();
    let mut lock: serde_json::Value = serde_json::from_str(&lock).unwrap();
    lock["mirrors"] = serde_json::json!({});
    std::fs::write(&inputs.lock, lock.to_string()).unwrap();
    let out = inputs.render("single-node", &inputs.creds, &inputs.out);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("warning: `postgres:14.2`, `rabbitmq:3.9-management` not mirrored in")
            && stderr.contains(
                "run `broker-images mirror postgres:14.2 rabbitmq:3.9-management --registry "
            ),
        "{stderr}"
    );
    // Issue 22 item 5: with --json the warning is a JSON event too.
    let out = inputs.render_with("single-node", &inputs.creds, &inputs.out, &["--json"]);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stderr}");
    let event: serde_json::Value = serde_json::from_str(stderr.trim()).unwrap();
    assert_eq!(event["event"], "warning", "{stderr}");
    assert!(
        event["message"]
            .as_str()
            .unwrap()
            .contains("run `broker-images mirror postgres:14.2"),
        "{stderr}"
    );
    let before = snapshot(&inputs.out);
    let out = inputs.render_with(
        "single-node",
        &inputs.creds,
        &inputs.out,
        &["--require-pinned"],
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success());
    assert!(
        stderr.contains("--require-pinned: `postgres:14.2` (db in ")
            && stderr.contains("`rabbitmq:3.9-management` (mq in "),
        "{stderr}"
    );
    assert_eq!(snapshot(&inputs.out), before);
}

/// Issue 23 item 5 through the binary: `generatedPullSecret` takes the
/// credentials from the Docker configuration the push used
/// (`$DOCKER_CONFIG/config.json`), only the entry of the registry the
/// images are pinned to; nothing of either entry is printed.
#[test]
fn generated_pull_secret_comes_from_the_docker_config_entry_of_the_pinned_registry() {
    let inputs = Inputs::new();
    let environment = inputs.environments.join("cluster.yaml");
    inputs.edit(
        &environment,
        "pullSecret: broker-pull\n",
        "generatedPullSecret: broker-push-credentials\n",
    );
    let docker_config = tempfile::tempdir().unwrap();
    let auth = |user: &str, password: &str| {
        broker_render::hash::base64(format!("{user}:{password}").as_bytes())
    };
    let config = serde_json::json!({"auths": {
        "registry.example:5000": {"auth": auth("ci", "cli-push-password")},
        "elsewhere.example": {"auth": auth("other", "elsewhere-password")},
    }});
    std::fs::write(docker_config.path().join("config.json"), config.to_string()).unwrap();
    let out = Command::new(BIN)
        .args(["render", "--lock"])
        .arg(&inputs.lock)
        .arg("--source")
        .arg(&inputs.source)
        .arg("--catalogue")
        .arg(&inputs.manifests)
        .arg("--environment")
        .arg(&environment)
        .arg("--env-file")
        .arg(&inputs.creds)
        .arg("--out")
        .arg(&inputs.out)
        .env("DOCKER_CONFIG", docker_config.path())
        .output()
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{printed}");
    for secret in [
        "cli-push-password",
        "elsewhere-password",
        "elsewhere.example",
    ] {
        assert!(!printed.contains(secret), "{printed}");
    }
    let file = inputs.out.join("secret-broker-push-credentials.yaml");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let expected = serde_json::json!({"auths": {"registry.example:5000": {
        "auth": auth("ci", "cli-push-password"),
        "password": "cli-push-password",
        "username": "ci",
    }}});
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains("type: kubernetes.io/dockerconfigjson"),
        "{text}"
    );
    let encoded = text
        .lines()
        .find_map(|l| {
            let (key, value) = l.trim().split_once(": ")?;
            (key.trim_matches('"') == ".dockerconfigjson").then_some(value)
        })
        .unwrap()
        .trim_matches('"');
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    let stored: serde_json::Value = serde_json::from_slice(&decoded).unwrap();
    assert_eq!(stored, expected);
}
