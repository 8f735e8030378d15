//! The render stage on the shipped catalogue and environments with the
//! example broker tree and a fixed lock: whole-output snapshots, strict
//! validation by kubernetes-validate, `kubectl kustomize` agreeing on the
//! objects and on the generated names, and the properties issue 13 asks
//! for.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use broker_render::{Inputs, Rendered, render};
use broker_test_support::{copy_dir, repo_root, require_tool};
use serde_json::Value;

mod pod_security;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Credential values of the fixtures: none may appear in plain text.
const CREDENTIALS: &[&str] = &[
    "test-pg-secret-1",
    "test-mq-secret-2",
    "test-ttn-token-3",
    "test-ubidots-token-4",
    "test-greenbrain-5",
];

/// What a test renders: paths it may redirect to copies.
struct Setup {
    manifests: PathBuf,
    source: PathBuf,
    environment: PathBuf,
    env_file: PathBuf,
    lock: PathBuf,
}

impl Setup {
    fn new(profile: &str) -> Self {
        let root = repo_root();
        Self {
            manifests: root.join("manifests"),
            source: root.join("examples/broker"),
            environment: root.join(format!("environments/{profile}.yaml")),
            env_file: if profile == "cluster" {
                fixture("cluster.env")
            } else {
                root.join("environments/env.sample")
            },
            lock: fixture("images.lock"),
        }
    }

    /// The render inputs of this setup, every image required pinned.
    fn inputs(&self) -> Inputs<'_> {
        Inputs {
            lock: &self.lock,
            source: &self.source,
            environment: &self.environment,
            env_file: Some(&self.env_file),
            manifests: &self.manifests,
            require_pinned: true,
        }
    }

    fn render(&self) -> Rendered {
        render(&self.inputs()).unwrap_or_else(|e| panic!("render failed: {e}"))
    }

    /// Why rendering this setup fails (it must).
    fn render_error(&self) -> String {
        render(&self.inputs()).unwrap_err().to_string()
    }
}

fn documents(stream: &str) -> Vec<Value> {
    serde_saphyr::from_str_multiple::<Value, Vec<Value>>(stream)
        .unwrap()
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}

fn key(object: &Value) -> String {
    format!(
        "{}/{}",
        object["kind"].as_str().unwrap(),
        object["metadata"]["name"].as_str().unwrap()
    )
}

fn by_key(objects: Vec<Value>) -> BTreeMap<String, Value> {
    objects.into_iter().map(|o| (key(&o), o)).collect()
}

#[test]
fn single_node_output_snapshot() {
    let rendered = Setup::new("single-node").render();
    assert!(rendered.warnings.is_empty(), "{:?}", rendered.warnings);
    insta::assert_snapshot!("single-node", rendered.to_stream());
    insta::assert_snapshot!("single-node-kustomization", rendered.kustomization());
}

#[test]
fn cluster_output_snapshot() {
    let rendered = Setup::new("cluster").render();
    assert!(rendered.warnings.is_empty(), "{:?}", rendered.warnings);
    insta::assert_snapshot!("cluster", rendered.to_stream());
}

/// Every document passes `kubernetes-validate --strict` for 1.33, and
/// `kubectl kustomize` accepts the directory and yields the same objects.
#[test]
fn output_validates_strictly_and_kustomize_builds_the_same_objects() {
    let validate = require_tool("kubernetes-validate", "pip install kubernetes-validate");
    let kubectl = require_tool(
        "kubectl",
        "install kubectl (it ships with the machine image)",
    );
    for profile in ["single-node", "cluster"] {
        let rendered = Setup::new(profile).render();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        rendered.write_dir(&out).unwrap();
        let files: Vec<PathBuf> = rendered
            .objects
            .iter()
            .map(|o| out.join(&o.file_name))
            .collect();
        let run = Command::new(&validate)
            .args(["--strict", "-k", "1.33.0"])
            .args(&files)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        );
        assert!(run.status.success(), "{profile}: {text}");
        assert_eq!(
            text.matches(" passed for resource ").count(),
            rendered.objects.len(),
            "{profile}: every object validated: {text}"
        );

        let built = Command::new(&kubectl)
            .arg("kustomize")
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            built.status.success(),
            "{profile}: {}",
            String::from_utf8_lossy(&built.stderr)
        );
        // Everything but the Namespace, which the kustomization leaves out
        // (issue 23 item 7; pinned by its own test below).
        let mut ours = by_key(documents(&rendered.to_stream()));
        ours.retain(|_, o| o["kind"] != "Namespace");
        let theirs = by_key(documents(&String::from_utf8(built.stdout).unwrap()));
        assert_eq!(
            ours.keys().collect::<Vec<_>>(),
            theirs.keys().collect::<Vec<_>>()
        );
        for (name, object) in &ours {
            assert_eq!(
                object, &theirs[name],
                "{profile}: {name} differs after kustomize"
            );
        }
    }
}

/// A kustomization with the same generator input as the catalogue (files,
/// literals, an env file) must name every generated object as render does,
/// including content Go's JSON escapes differently (`<`, `&`, U+2028) and a
/// file that is not UTF-8.
#[test]
fn generated_names_equal_kubectl_kustomize() {
    let kubectl = require_tool(
        "kubectl",
        "install kubectl (it ships with the machine image)",
    );
    let work = tempfile::tempdir().unwrap();
    let mut setup = Setup::new("single-node");
    setup.source = work.path().join("broker");
    copy_dir(&repo_root().join("examples/broker"), &setup.source);
    let init = setup.source.join("db/init.d");
    std::fs::write(
        init.join("zz_tricky.sql"),
        "SELECT 1 < 2 AND 3 > 2 & true; -- \"quoted\" \\ back\tslash \u{2028} é\n",
    )
    .unwrap();
    std::fs::write(init.join("blob.bin"), [0xff_u8, 0xfe, 0x00, 0x41]).unwrap();
    let rendered = setup.render();
    let ours: BTreeMap<String, String> = rendered
        .objects
        .iter()
        .filter(|o| o.kind == "ConfigMap" || o.kind == "Secret")
        .map(|o| {
            (
                o.value["metadata"]["labels"]["app.kubernetes.io/name"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                o.name.clone(),
            )
        })
        .collect();

    let k = work.path().join("kustomize");
    std::fs::create_dir_all(k.join("init")).unwrap();
    let mut init_files = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(&init)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for file in names {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        std::fs::copy(&file, k.join("init").join(&name)).unwrap();
        init_files.push(format!("init/{name}"));
    }
    std::fs::copy(
        setup.source.join("config/rabbitmq/enabled_plugins"),
        k.join("enabled_plugins"),
    )
    .unwrap();
    std::fs::copy(&setup.env_file, k.join("credentials.env")).unwrap();
    let env_text = std::fs::read_to_string(&setup.environment).unwrap();
    let environment: Value = serde_saphyr::from_str(&env_text).unwrap();
    let literals: Vec<String> = environment["env"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
        .collect();
    let kustomization = serde_json::json!({
        "configMapGenerator": [
            {"name": "db-init", "files": init_files},
            {"name": "rabbitmq-config", "files": ["enabled_plugins"]},
            {"name": "broker-env", "literals": literals},
        ],
        "secretGenerator": [
            {"name": "broker-credentials", "envs": ["credentials.env"]},
        ],
    });
    // JSON is YAML: kustomize reads it as is.
    std::fs::write(k.join("kustomization.yaml"), kustomization.to_string()).unwrap();
    let built = Command::new(&kubectl)
        .arg("kustomize")
        .arg(&k)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let theirs: BTreeMap<String, String> = documents(&String::from_utf8(built.stdout).unwrap())
        .iter()
        .map(|o| {
            let name = o["metadata"]["name"].as_str().unwrap().to_owned();
            let base = name.rsplit_once('-').unwrap().0.to_owned();
            (base, name)
        })
        .collect();
    assert_eq!(ours, theirs);
    let db_init = rendered
        .objects
        .iter()
        .find(|o| o.name.starts_with("db-init-"))
        .unwrap();
    assert!(
        db_init.value["binaryData"]["blob.bin"].is_string(),
        "non-UTF-8 file goes to binaryData"
    );
    // kubectl's YAML reader sees the same tricky content render wrote.
    let out = work.path().join("out");
    rendered.write_dir(&out).unwrap();
    let built = Command::new(&kubectl)
        .arg("kustomize")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let theirs = by_key(documents(&String::from_utf8(built.stdout).unwrap()));
    assert_eq!(
        theirs[&format!("ConfigMap/{}", db_init.name)],
        db_init.value
    );
}

#[test]
fn cluster_profile_has_no_host_path_and_single_node_no_claims() {
    let cluster = Setup::new("cluster").render().to_stream();
    assert!(
        !cluster.contains("hostPath"),
        "hostPath in the cluster profile"
    );
    assert_eq!(cluster.matches("kind: PersistentVolumeClaim").count(), 3);
    assert!(cluster.contains("type: LoadBalancer"));
    let single = Setup::new("single-node").render().to_stream();
    assert!(!single.contains("PersistentVolumeClaim"));
    assert!(!single.contains("persistentVolumeClaim"));
    for path in [
        "/opt/broker_data/db",
        "/opt/broker_data/mq",
        "/opt/databolt/raw_data",
    ] {
        assert!(
            single.contains(&format!("path: {path}\n")),
            "{path} missing"
        );
    }
    for port in ["30672", "30687", "30688", "30500"] {
        assert!(
            single.contains(&format!("nodePort: {port}\n")),
            "{port} missing"
        );
    }
}

#[test]
fn every_container_image_is_digest_pinned() {
    for profile in ["single-node", "cluster"] {
        let rendered = Setup::new(profile).render();
        let mut images = 0;
        for object in &rendered.objects {
            let Some(pod) = object.value.pointer("/spec/template/spec") else {
                continue;
            };
            for list in ["initContainers", "containers"] {
                for container in pod[list].as_array().into_iter().flatten() {
                    let image = container["image"].as_str().unwrap();
                    let (_, digest) = image
                        .split_once("@sha256:")
                        .unwrap_or_else(|| panic!("{image} not pinned"));
                    assert!(
                        digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
                        "{image}"
                    );
                    images += 1;
                }
            }
        }
        // Single-node: db's, mq's and frred's init containers prepare their
        // node directories (db and mq run as 999 since issue 23 item 6).
        let expected = if profile == "single-node" { 15 } else { 12 };
        assert_eq!(
            images, expected,
            "{profile}: one container per workload (and db's, mq's and frred's init containers)"
        );
    }
}

#[test]
fn every_object_carries_the_labels_and_its_namespace() {
    for profile in ["single-node", "cluster"] {
        for object in Setup::new(profile).render().objects {
            let labels = &object.value["metadata"]["labels"];
            assert!(
                labels["app.kubernetes.io/name"].is_string(),
                "{}",
                object.name
            );
            assert_eq!(labels["app.kubernetes.io/part-of"], "broker");
            assert_eq!(labels["app.kubernetes.io/managed-by"], "broker-images");
            let namespace = &object.value["metadata"]["namespace"];
            if object.kind == "Namespace" {
                assert!(namespace.is_null());
            } else {
                assert_eq!(namespace, "broker", "{}", object.name);
            }
        }
    }
}

/// A changed plugin list renames the ConfigMap and changes mq's pod
/// template (so mq, and only mq, rolls); every other file is identical.
#[test]
fn changing_enabled_plugins_changes_only_its_config_map_and_mq() {
    let work = tempfile::tempdir().unwrap();
    let mut setup = Setup::new("single-node");
    setup.source = work.path().join("broker");
    copy_dir(&repo_root().join("examples/broker"), &setup.source);
    let before = setup.render();
    std::fs::write(
        setup.source.join("config/rabbitmq/enabled_plugins"),
        "[rabbitmq_mqtt,rabbitmq_management].\n",
    )
    .unwrap();
    let after = setup.render();
    let files = |r: &Rendered| -> BTreeMap<String, String> {
        r.objects
            .iter()
            .map(|o| (o.file_name.clone(), o.yaml.clone()))
            .collect()
    };
    let (before_files, after_files) = (files(&before), files(&after));
    assert_eq!(
        before_files.keys().collect::<Vec<_>>(),
        after_files.keys().collect::<Vec<_>>()
    );
    let changed: Vec<&String> = before_files
        .iter()
        .filter(|(name, yaml)| after_files[*name] != **yaml)
        .map(|(name, _)| name)
        .collect();
    assert_eq!(
        changed,
        ["configmap-rabbitmq-config.yaml", "deployment-mq.yaml"]
    );
    assert_eq!(before.kustomization(), after.kustomization());
    let old = before
        .objects
        .iter()
        .find(|o| o.file_name == "configmap-rabbitmq-config.yaml")
        .unwrap();
    let new = after
        .objects
        .iter()
        .find(|o| o.file_name == "configmap-rabbitmq-config.yaml")
        .unwrap();
    assert_ne!(old.name, new.name);
    let mq = after
        .objects
        .iter()
        .find(|o| o.file_name == "deployment-mq.yaml")
        .unwrap();
    assert!(mq.yaml.contains(&format!("name: {}\n", new.name)));
}

#[test]
fn no_credential_in_any_config_map_and_the_secret_holds_them_all() {
    let rendered = Setup::new("cluster").render();
    for object in &rendered.objects {
        if object.kind == "Secret" {
            continue;
        }
        for value in CREDENTIALS {
            assert!(
                !object.yaml.contains(value),
                "{value} in {}",
                object.file_name
            );
        }
        if object.kind == "ConfigMap" {
            for key in [
                "PGPASSWORD",
                "POSTGRES_PASSWORD",
                "RABBITMQ_DEFAULT_PASS",
                "TTN_API_TOKEN",
                "UBIDOTS_API_TOKEN",
                "GREENBRAIN_PASSWORDS",
            ] {
                assert!(!object.yaml.contains(key), "{key} in {}", object.file_name);
            }
        }
    }
    let secret = rendered
        .objects
        .iter()
        .find(|o| o.kind == "Secret")
        .unwrap();
    assert_eq!(secret.value["data"].as_object().unwrap().len(), 6);
    // Only base64 in the object itself.
    for value in CREDENTIALS {
        assert!(!secret.yaml.contains(value));
    }
}

#[test]
fn same_inputs_give_identical_bytes_and_the_secret_file_is_private() {
    let setup = Setup::new("cluster");
    let (first, second) = (setup.render(), setup.render());
    assert_eq!(first.to_stream(), second.to_stream());
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    first.write_dir(&a).unwrap();
    second.write_dir(&b).unwrap();
    // Rendering again over an existing output replaces it whole.
    second.write_dir(&a).unwrap();
    let listing = |d: &Path| -> BTreeMap<String, Vec<u8>> {
        std::fs::read_dir(d)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(listing(&a), listing(&b));
    assert_eq!(listing(&a).len(), first.objects.len() + 1);
    assert!(
        std::fs::read_dir(dir.path()).unwrap().count() == 2,
        "no staging directory left behind"
    );
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(a.join("secret-broker-credentials.yaml"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let mode = std::fs::metadata(a.join("deployment-db.yaml"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644);
}

/// Issue 13: adding a workload and a config file means editing manifests/
/// only. A thirteenth workload with its own generated ConfigMap renders
/// pinned, labelled and wired to the hashed name.
#[test]
fn a_thirteenth_workload_needs_only_catalogue_files() {
    let work = tempfile::tempdir().unwrap();
    let mut setup = Setup::new("single-node");
    setup.manifests = work.path().join("manifests");
    setup.source = work.path().join("broker");
    copy_dir(&repo_root().join("manifests"), &setup.manifests);
    copy_dir(&repo_root().join("examples/broker"), &setup.source);
    std::fs::create_dir_all(setup.source.join("config/poller")).unwrap();
    std::fs::write(
        setup.source.join("config/poller/poller.toml"),
        "interval = 60\n",
    )
    .unwrap();
    let mut catalogue = std::fs::read_to_string(setup.manifests.join("catalogue.yaml")).unwrap();
    catalogue = catalogue.replace(
        "configMaps:\n",
        "configMaps:\n  - name: poller-config\n    files:\n      - config/poller/poller.toml\n",
    );
    std::fs::write(setup.manifests.join("catalogue.yaml"), catalogue).unwrap();
    std::fs::write(
        setup.manifests.join("workloads/poller.yaml"),
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: poller
spec:
  selector:
    matchLabels:
      app.kubernetes.io/name: poller
  template:
    metadata:
      labels:
        app.kubernetes.io/name: poller
    spec:
      containers:
        - name: poller
          image: python-base
          command: [python, -m, pollers.Poller]
          envFrom:
            - configMapRef:
                name: broker-env
          volumeMounts:
            - name: config
              mountPath: /etc/poller
      volumes:
        - name: config
          configMap:
            name: poller-config
",
    )
    .unwrap();
    let rendered = setup.render();
    let deployments = rendered
        .objects
        .iter()
        .filter(|o| o.kind == "Deployment")
        .count();
    assert_eq!(deployments, 13);
    let poller = rendered
        .objects
        .iter()
        .find(|o| o.file_name == "deployment-poller.yaml")
        .unwrap();
    let config = rendered
        .objects
        .iter()
        .find(|o| o.file_name == "configmap-poller-config.yaml")
        .unwrap();
    assert!(config.name.starts_with("poller-config-"));
    assert!(
        poller.yaml.contains(&format!("name: {}\n", config.name)),
        "{}",
        poller.yaml
    );
    assert!(
        poller
            .yaml
            .contains("image: registry.example:5000/broker/python-base@sha256:"),
        "{}",
        poller.yaml
    );
    assert_eq!(
        poller.value["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "broker-images"
    );
}

#[test]
fn an_unmirrored_third_party_image_is_a_warning_or_with_require_pinned_an_error() {
    let work = tempfile::tempdir().unwrap();
    let mut setup = Setup::new("single-node");
    let mut lock: Value =
        serde_json::from_str(&std::fs::read_to_string(&setup.lock).unwrap()).unwrap();
    lock["mirrors"]
        .as_object_mut()
        .unwrap()
        .remove("rabbitmq:3.9-management");
    lock["mirrors"]
        .as_object_mut()
        .unwrap()
        .remove("postgres:14.2");
    setup.lock = work.path().join("images.lock");
    std::fs::write(&setup.lock, lock.to_string()).unwrap();
    let inputs = Inputs {
        require_pinned: false,
        ..setup.inputs()
    };
    let rendered = render(&inputs).unwrap();
    // Issue 22 item 2: one warning with the whole command, which works
    // as printed (the registry the lock's images went to, the lock).
    assert_eq!(rendered.warnings.len(), 1, "{:?}", rendered.warnings);
    let lock_path = setup.lock.display().to_string();
    assert_eq!(
        rendered.warnings[0],
        format!(
            "`postgres:14.2`, `rabbitmq:3.9-management` not mirrored in {lock_path}, left unpinned: run `broker-images mirror postgres:14.2 rabbitmq:3.9-management --registry registry.example:5000/broker --lock {lock_path}`"
        )
    );
    assert!(
        rendered
            .to_stream()
            .contains("image: rabbitmq:3.9-management\n")
    );
    let err = render(&Inputs {
        require_pinned: true,
        ..inputs
    })
    .unwrap_err()
    .to_string();
    // Every unmirrored image named, not only the first.
    assert!(
        err.starts_with("--require-pinned: `postgres:14.2` (db in ")
            && err.contains("db.yaml), `rabbitmq:3.9-management` (mq in ")
            && err.contains("mq.yaml) have no mirror in")
            && err.contains("run `broker-images mirror postgres:14.2 rabbitmq:3.9-management --registry registry.example:5000/broker --lock "),
        "{err}"
    );
}

/// Operators who manage credentials elsewhere name the Secret: no Secret
/// is rendered, no env file is read, and references use that name.
#[test]
fn an_existing_secret_replaces_the_generated_one() {
    let work = tempfile::tempdir().unwrap();
    let setup = Setup::new("cluster");
    let environment = work.path().join("cluster.yaml");
    let text = std::fs::read_to_string(&setup.environment).unwrap();
    std::fs::write(
        &environment,
        text.replace(
            "pullSecret: broker-pull\n",
            "pullSecret: broker-pull\nexistingSecrets:\n  broker-credentials: from-vault\nregistry: nodes.example:5000\n",
        ),
    )
    .unwrap();
    let rendered = render(&Inputs {
        lock: &setup.lock,
        source: &setup.source,
        environment: &environment,
        env_file: None,
        manifests: &setup.manifests,
        require_pinned: true,
    })
    .unwrap();
    let stream = rendered.to_stream();
    assert!(!stream.contains("kind: Secret"));
    assert!(stream.contains("name: from-vault\n"));
    assert!(!stream.contains("broker-credentials-"));
    assert!(stream.contains("image: nodes.example:5000/broker/python-base@sha256:"));
    assert!(stream.contains("image: nodes.example:5000/mirror/library/postgres@sha256:"));
    assert!(!stream.contains("registry.example:5000"));
}

#[test]
fn a_credential_in_the_environment_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let mut setup = Setup::new("single-node");
    let text = std::fs::read_to_string(&setup.environment).unwrap();
    setup.environment = work.path().join("single-node.yaml");
    std::fs::write(
        &setup.environment,
        text.replace(
            "  TZ: Australia/Sydney\n",
            "  TZ: Australia/Sydney\n  PGPASSWORD: hunter2\n",
        ),
    )
    .unwrap();
    let err = setup.render_error();
    assert!(err.contains("env.PGPASSWORD is a credential"), "{err}");
    assert!(!err.contains("hunter2"));
}

/// The seed's defects stay fixed (broker-facts.md) and every workload has
/// the basics: requests, probes where a port exists, non-root broker pods.
#[test]
fn the_seed_defects_stay_fixed() {
    let rendered = Setup::new("cluster").render();
    let deployment = |name: &str| {
        rendered
            .objects
            .iter()
            .find(|o| o.kind == "Deployment" && o.name == name)
            .unwrap_or_else(|| panic!("no Deployment {name}"))
            .value
            .clone()
    };
    let container =
        |name: &str| deployment(name)["spec"]["template"]["spec"]["containers"][0].clone();
    assert_eq!(
        container("wombat")["command"],
        serde_json::json!(["python", "-m", "ydoc.Wombat"])
    );
    assert_eq!(
        container("website")["command"],
        serde_json::json!(["python", "./app/main.py"])
    );
    // Issue 19 item 1: db's probes ask the local server in exec form
    // (probe commands expand no variables, so none may appear).
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        let command = container("db")[probe]["exec"]["command"].clone();
        let words: Vec<&str> = command
            .as_array()
            .unwrap_or_else(|| panic!("db {probe} is not an exec probe"))
            .iter()
            .map(|w| w.as_str().unwrap())
            .collect();
        assert_eq!(words[0], "pg_isready", "{probe}: {words:?}");
        assert!(words.contains(&"--host=127.0.0.1"), "{probe}: {words:?}");
        assert!(words.iter().all(|w| !w.contains('$')), "{probe}: {words:?}");
    }
    for name in ["db", "mq"] {
        assert_eq!(
            deployment(name)["spec"]["strategy"]["type"],
            "Recreate",
            "{name}"
        );
    }
    let mq = deployment("mq");
    assert_eq!(mq["spec"]["template"]["spec"]["hostname"], "mq");
    assert!(
        container("mq")["env"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!({"name": "RABBITMQ_NODENAME", "value": "rabbit@mq"}))
    );
    for object in rendered.objects.iter().filter(|o| o.kind == "Deployment") {
        let pod = &object.value["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        assert!(
            container["resources"]["requests"]["cpu"].is_string(),
            "{}",
            object.name
        );
        assert!(
            container["resources"]["requests"]["memory"].is_string(),
            "{}",
            object.name
        );
        if container["ports"].is_array() {
            assert!(container["readinessProbe"].is_object(), "{}", object.name);
            assert!(container["livenessProbe"].is_object(), "{}", object.name);
        }
        let image = container["image"].as_str().unwrap();
        if image.contains("/broker/") {
            assert_eq!(
                pod["securityContext"]["runAsNonRoot"], true,
                "{}",
                object.name
            );
            assert!(
                pod["securityContext"]["runAsUser"].as_u64().unwrap() > 0,
                "{}",
                object.name
            );
            assert_eq!(
                container["securityContext"]["allowPrivilegeEscalation"], false,
                "{}",
                object.name
            );
        }
    }
}

/// Objects of the wrong shape are errors naming the file, never a panic.
#[test]
fn misshapen_objects_are_errors_not_panics() {
    for (body, expected) in [
        ("spec: 5\n", "has no spec.template.spec mapping"),
        (
            "spec:\n  template: []\n",
            "has no spec.template.spec mapping",
        ),
        (
            "spec:\n  template:\n    spec:\n      containers: [python-base]\n",
            "an entry of containers is not a mapping",
        ),
    ] {
        let work = tempfile::tempdir().unwrap();
        let mut setup = Setup::new("single-node");
        setup.manifests = work.path().join("manifests");
        copy_dir(&repo_root().join("manifests"), &setup.manifests);
        std::fs::write(
            setup.manifests.join("workloads/odd.yaml"),
            format!("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: odd\n{body}"),
        )
        .unwrap();
        let err = setup.render_error();
        assert!(
            err.contains("workloads/odd.yaml: ") && err.contains(expected),
            "{err}"
        );
    }
}

/// Issue 19 item 9: access modes are immutable, so the catalogue's
/// ReadWriteMany must survive an environment that sets none.
#[test]
fn read_write_many_from_the_catalogue_is_kept_unless_the_environment_sets_modes() {
    let work = tempfile::tempdir().unwrap();
    let mut setup = Setup::new("cluster");
    let environment = std::fs::read_to_string(&setup.environment).unwrap();
    assert!(environment.contains("    accessModes: [ReadWriteMany]\n"));
    setup.environment = work.path().join("cluster.yaml");
    std::fs::write(
        &setup.environment,
        environment.replace("    accessModes: [ReadWriteMany]\n", ""),
    )
    .unwrap();
    let rendered = setup.render();
    let modes = |name: &str| {
        rendered
            .objects
            .iter()
            .find(|o| o.kind == "PersistentVolumeClaim" && o.name == name)
            .unwrap()
            .value["spec"]["accessModes"]
            .clone()
    };
    assert_eq!(
        modes("databolt-output"),
        serde_json::json!(["ReadWriteMany"])
    );
    assert_eq!(modes("db-data"), serde_json::json!(["ReadWriteOnce"]));
}

/// Issue 19 item 10: start, stop, restart and status handle Deployments;
/// another workload kind is refused by render, not half-run.
#[test]
fn a_stateful_set_is_refused_in_one_line_naming_the_file() {
    let work = tempfile::tempdir().unwrap();
    let mut setup = Setup::new("single-node");
    setup.manifests = work.path().join("manifests");
    copy_dir(&repo_root().join("manifests"), &setup.manifests);
    let mq = setup.manifests.join("workloads/mq.yaml");
    let text = std::fs::read_to_string(&mq).unwrap();
    std::fs::write(
        &mq,
        text.replacen("kind: Deployment", "kind: StatefulSet", 1),
    )
    .unwrap();
    let error = setup.render_error();
    assert!(!error.contains('\n'), "{error}");
    assert!(
        error.contains("workloads/mq.yaml")
            && error.contains("StatefulSet `mq`: broker-images starts, stops, restarts and waits on Deployments only"),
        "{error}"
    );
}

/// Every Service name of the rendered set, and every key of the environment
/// ConfigMap (client settings such as PGHOST=db).
fn services_and_client_keys(rendered: &Rendered) -> (Vec<String>, Vec<String>) {
    let services = rendered
        .objects
        .iter()
        .filter(|o| o.kind == "Service")
        .map(|o| o.name.clone())
        .collect();
    let env = rendered
        .objects
        .iter()
        .find(|o| o.kind == "ConfigMap" && o.name.starts_with("broker-env-"))
        .expect("no broker-env ConfigMap");
    let keys = env.value["data"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    (services, keys)
}

/// Issue 19 item 1: on a real node the db probe honoured PGHOST=db, dialled
/// the db Service, which has no endpoint until that very probe passes, and
/// db never came up. No probe of any workload may name a Service, set a
/// host, or read the environment meant for clients.
#[test]
fn no_probe_depends_on_a_service_or_on_client_environment() {
    for profile in ["single-node", "cluster"] {
        let rendered = Setup::new(profile).render();
        let (services, client_keys) = services_and_client_keys(&rendered);
        let mut probes = 0;
        for object in rendered.objects.iter().filter(|o| o.kind == "Deployment") {
            let pod = &object.value["spec"]["template"]["spec"];
            for container in pod["containers"].as_array().unwrap() {
                for kind in ["startupProbe", "readinessProbe", "livenessProbe"] {
                    let probe = &container[kind];
                    if probe.is_null() {
                        continue;
                    }
                    probes += 1;
                    let what = format!("{profile}: {} {kind}", object.name);
                    for action in ["httpGet", "tcpSocket", "grpc"] {
                        assert!(probe[action]["host"].is_null(), "{what} sets a host");
                    }
                    let Some(words) = probe["exec"]["command"].as_array() else {
                        continue;
                    };
                    for word in words.iter().map(|w| w.as_str().unwrap()) {
                        assert!(!word.contains('$'), "{what} reads a variable: {word}");
                        for service in &services {
                            let named = word
                                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                                .any(|part| part == service);
                            assert!(!named, "{what} names the Service `{service}`: {word}");
                        }
                        for key in &client_keys {
                            assert!(!word.contains(key.as_str()), "{what} uses {key}: {word}");
                        }
                    }
                }
            }
        }
        // db: startup, readiness, liveness; mq: the same; four HTTP/TCP
        // workloads: readiness and liveness.
        assert_eq!(probes, 14, "{profile}");
    }
}

/// Issue 19 item 1: in the db container `psql` means this server. The
/// environment's PGHOST=db routes through the Service, which asks for a
/// password; the db container points PGHOST at the local socket instead.
#[test]
fn the_db_container_points_clients_at_its_own_socket() {
    let rendered = Setup::new("single-node").render();
    let db = rendered
        .objects
        .iter()
        .find(|o| o.kind == "Deployment" && o.name == "db")
        .unwrap();
    let env = db.value["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap();
    let pghost = env
        .iter()
        .find(|v| v["name"] == "PGHOST")
        .expect("db sets no PGHOST of its own");
    assert_eq!(pghost["value"], "/var/run/postgresql");
}

/// Issue 19 item 1: a worker with no port has no probe, so a pod would
/// count as ready the moment its process starts, even one that crashes a
/// second later. They count only after staying up.
#[test]
fn port_less_workers_count_as_ready_only_after_staying_up() {
    let rendered = Setup::new("cluster").render();
    let mut workers = Vec::new();
    for object in rendered.objects.iter().filter(|o| o.kind == "Deployment") {
        let containers = object.value["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap();
        let probed = containers
            .iter()
            .any(|c| c["readinessProbe"].is_object() || c["ports"].is_array());
        if !probed {
            workers.push(object.name.clone());
            let seconds = object.value["spec"]["minReadySeconds"]
                .as_u64()
                .unwrap_or(0);
            assert!(seconds >= 10, "{}: minReadySeconds {seconds}", object.name);
        }
    }
    workers.sort();
    assert_eq!(
        workers,
        ["delivery", "frred", "lm", "ttn-processor", "wombat", "ydoc"]
    );
}

/// Issue 19 item 12: on a fresh single-node install the node directory of
/// databolt-output is made root:root 0755 and frred (uid 1000) could not
/// write it. Single-node gives that directory frred's fsGroup through an
/// init container; the cluster profile (a claim, fsGroup applies) has none.
#[test]
fn single_node_gives_node_directories_the_pods_fs_group() {
    let frred = |profile: &str| {
        Setup::new(profile)
            .render()
            .objects
            .into_iter()
            .find(|o| o.kind == "Deployment" && o.name == "frred")
            .unwrap()
            .value["spec"]["template"]["spec"]
            .clone()
    };
    let single = frred("single-node");
    let init = &single["initContainers"][0];
    assert_eq!(init["name"], broker_render::HOST_PATH_INIT);
    assert_eq!(init["image"], single["containers"][0]["image"]);
    assert_eq!(
        init["command"],
        serde_json::json!([
            "install",
            "-d",
            "-o",
            "1000",
            "-g",
            "1000",
            "-m",
            "2775",
            "/raw_data"
        ])
    );
    assert_eq!(
        init["volumeMounts"],
        serde_json::json!([{"name": "databolt-output", "mountPath": "/raw_data"}])
    );
    assert_eq!(init["securityContext"]["runAsUser"], 0);
    assert_eq!(
        init["securityContext"]["capabilities"],
        serde_json::json!({"drop": ["ALL"], "add": ["CHOWN", "FOWNER"]})
    );
    assert!(frred("cluster")["initContainers"].is_null());
    // db and mq run as 999 (issue 23 item 6): no longer root, they cannot
    // chown their data themselves, so they get one too, for 999; nothing
    // else mounts a node directory.
    let rendered = Setup::new("single-node").render();
    for object in rendered.objects.iter().filter(|o| o.kind == "Deployment") {
        let pod = &object.value["spec"]["template"]["spec"];
        match object.name.as_str() {
            "db" | "mq" => {
                let command = &pod["initContainers"][0]["command"];
                let mount = if object.name == "db" {
                    "/var/lib/postgresql/data"
                } else {
                    "/var/lib/rabbitmq/mnesia"
                };
                assert_eq!(
                    command,
                    &serde_json::json!([
                        "install", "-d", "-o", "999", "-g", "999", "-m", "2775", mount
                    ]),
                    "{}",
                    object.name
                );
            }
            "frred" => {}
            _ => assert!(pod["initContainers"].is_null(), "{}", object.name),
        }
    }
    for name in ["db", "mq"] {
        let cluster = Setup::new("cluster").render();
        let pod = &cluster
            .objects
            .iter()
            .find(|o| o.kind == "Deployment" && o.name == name)
            .unwrap()
            .value["spec"]["template"]["spec"];
        assert!(pod["initContainers"].is_null(), "cluster {name}");
    }
}

/// Issue 23 item 7: `kubectl delete -k` of the rendered directory, or Flux
/// or Argo CD pruning it, must not delete the namespace (and with it every
/// claim). The differential check: what `kubectl kustomize` builds from the
/// directory holds no Namespace, while the directory still holds its file
/// (which `start` applies first); claims carry both tools' protections.
#[test]
fn the_rendered_kustomization_reaches_no_namespace_and_claims_refuse_pruning() {
    let kubectl = require_tool(
        "kubectl",
        "install kubectl (it ships with the machine image)",
    );
    for profile in ["single-node", "cluster"] {
        let rendered = Setup::new(profile).render();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        rendered.write_dir(&out).unwrap();
        let built = Command::new(&kubectl)
            .arg("kustomize")
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            built.status.success(),
            "{profile}: {}",
            String::from_utf8_lossy(&built.stderr)
        );
        let built = documents(&String::from_utf8(built.stdout).unwrap());
        assert!(!built.is_empty());
        let kinds: Vec<&str> = built.iter().map(|o| o["kind"].as_str().unwrap()).collect();
        assert!(!kinds.contains(&"Namespace"), "{profile}: {kinds:?}");
        // Every other object is still built, the claims included.
        assert_eq!(built.len(), rendered.objects.len() - 1, "{profile}");

        let namespace = std::fs::read_to_string(out.join("namespace-broker.yaml")).unwrap();
        let namespace = &documents(&namespace)[0];
        assert_eq!(namespace["kind"], "Namespace");
        assert_eq!(namespace["metadata"]["name"], "broker");
        assert!(
            rendered
                .kustomization()
                .contains("kubectl apply -f` on its namespace-*.yaml"),
            "the kustomization says how to create the namespace"
        );

        let claims: Vec<&Value> = built
            .iter()
            .filter(|o| o["kind"] == "PersistentVolumeClaim")
            .collect();
        assert_eq!(claims.len(), if profile == "cluster" { 3 } else { 0 });
        for claim in claims {
            let annotations = &claim["metadata"]["annotations"];
            assert_eq!(
                annotations[broker_render::FLUX_PRUNE],
                "disabled",
                "{claim}"
            );
            assert_eq!(
                annotations[broker_render::ARGOCD_SYNC_OPTIONS],
                "Prune=false,Delete=false",
                "{claim}"
            );
        }
    }
}

/// The pod templates of every rendered workload, by workload name.
fn pod_templates(rendered: &Rendered) -> Vec<(String, Value)> {
    rendered
        .objects
        .iter()
        .filter_map(|o| {
            let template = o.value.pointer("/spec/template")?;
            Some((o.name.clone(), template.clone()))
        })
        .collect()
}

/// Issue 23 item 6: every pod of the cluster profile, db and mq included,
/// meets Pod Security "restricted" (so a namespace labelled
/// `pod-security.kubernetes.io/enforce: restricted` admits it). Single-node
/// mounts node directories (hostPath), which no level but privileged
/// allows: there it breaks exactly the hostPath controls and, in the init
/// container that gives those directories their owner, the run-as-root
/// ones — and nothing else.
#[test]
fn every_pod_meets_pod_security_restricted_on_cluster_and_single_node_only_breaks_host_path() {
    use pod_security::{Level, check};
    let cluster = pod_templates(&Setup::new("cluster").render());
    assert_eq!(cluster.len(), 12);
    for (name, template) in &cluster {
        assert_eq!(check(template), vec![], "cluster: {name}");
    }
    let single = pod_templates(&Setup::new("single-node").render());
    assert_eq!(single.len(), 12);
    let mut with_host_path = Vec::new();
    for (name, template) in &single {
        let found = check(template);
        if found.is_empty() {
            continue;
        }
        with_host_path.push(name.as_str());
        let init = format!("initContainers[{}]", broker_render::HOST_PATH_INIT);
        for violation in &found {
            let allowed = match violation.control {
                "HostPath Volumes" | "Volume Types" => violation.field.ends_with(".hostPath"),
                "Running as Non-root" | "Running as Non-root user" => {
                    violation.field.starts_with(&init)
                }
                "Capabilities" => {
                    violation.level == Level::Restricted && violation.field.starts_with(&init)
                }
                _ => false,
            };
            assert!(allowed, "single-node {name}: {violation:?}");
        }
    }
    assert_eq!(with_host_path, ["db", "frred", "mq"]);

    // The cluster profile's Namespace has the API server enforce it.
    let namespace = |profile: &str| {
        Setup::new(profile)
            .render()
            .objects
            .into_iter()
            .find(|o| o.kind == "Namespace")
            .unwrap()
            .value["metadata"]["labels"]
            .clone()
    };
    let labels = namespace("cluster");
    assert_eq!(labels[broker_render::POD_SECURITY_ENFORCE], "restricted");
    assert_eq!(labels[broker_render::POD_SECURITY_ENFORCE_VERSION], "v1.33");
    assert!(namespace("single-node")[broker_render::POD_SECURITY_ENFORCE].is_null());
}

/// Issue 23 item 6: a memory request and limit on every container, init
/// containers included, whatever the profile.
#[test]
fn every_container_has_a_memory_request_and_limit() {
    for profile in ["single-node", "cluster"] {
        for (name, template) in pod_templates(&Setup::new(profile).render()) {
            for list in ["initContainers", "containers"] {
                for container in template["spec"][list].as_array().into_iter().flatten() {
                    let resources = &container["resources"];
                    for field in ["requests", "limits"] {
                        assert!(
                            resources[field]["memory"].is_string(),
                            "{profile} {name} {list} {}: no memory {field}",
                            container["name"]
                        );
                    }
                }
            }
        }
    }
}

/// The shipped `cluster.yaml` with its commented `ingress:` and
/// `workloads:` examples switched on, as an operator would.
fn cluster_with_examples(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(repo_root().join("environments/cluster.yaml")).unwrap();
    let mut out = String::new();
    let mut in_example = false;
    for line in text.lines() {
        if line == "# ingress:" || line == "# workloads:" {
            in_example = true;
        } else if !line.starts_with("# ") {
            in_example = false;
        }
        match line.strip_prefix("# ").filter(|_| in_example) {
            Some(uncommented) => out.push_str(uncommented),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    let path = dir.join("cluster.yaml");
    std::fs::write(&path, out).unwrap();
    path
}

/// Issue 23 item 4: per-environment settings without editing the
/// catalogue — the examples cluster.yaml ships, switched on: replicas,
/// resources, nodeSelector, tolerations, affinity, extra env, Ingresses
/// with TLS and class, and mq exposed on AMQP alone. Snapshot of what they
/// add, and kubernetes-validate --strict of the whole output.
#[test]
fn environment_settings_from_the_shipped_examples() {
    let dir = tempfile::tempdir().unwrap();
    let mut setup = Setup::new("cluster");
    setup.environment = cluster_with_examples(dir.path());
    let rendered = setup.render();
    let plain = Setup::new("cluster").render();
    // Only what the settings touch differs from the plain cluster render.
    let before = by_key(documents(&plain.to_stream()));
    let after = by_key(documents(&rendered.to_stream()));
    let mut changed = String::new();
    for object in &rendered.objects {
        if before.get(&format!("{}/{}", object.kind, object.name)) != Some(&object.value) {
            changed.push_str("---\n");
            changed.push_str(&object.yaml);
        }
    }
    let removed: Vec<&String> = before.keys().filter(|k| !after.contains_key(*k)).collect();
    assert!(removed.is_empty(), "{removed:?}");
    insta::assert_snapshot!("cluster-settings", changed);

    let restapi = &after["Deployment/restapi"];
    assert_eq!(restapi["spec"]["replicas"], 2);
    let container = &restapi["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["resources"]["requests"]["cpu"], "200m");
    assert_eq!(container["resources"]["limits"]["memory"], "1Gi");
    assert!(
        container["env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == "LOG_LEVEL" && v["value"] == "info")
    );
    let ingress = &after["Ingress/ttn-webhook"];
    assert_eq!(ingress["spec"]["ingressClassName"], "nginx");
    assert_eq!(ingress["spec"]["tls"][0]["secretName"], "ttn-webhook-tls");

    let validate = require_tool("kubernetes-validate", "pip install kubernetes-validate");
    let out = dir.path().join("out");
    rendered.write_dir(&out).unwrap();
    let run = Command::new(&validate)
        .args(["--strict", "-k", "1.33.0"])
        .args(rendered.objects.iter().map(|o| out.join(&o.file_name)))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(run.status.success(), "{text}");
    assert_eq!(
        text.matches(" passed for resource ").count(),
        rendered.objects.len(),
        "{text}"
    );
}

/// mq exposed on AMQP alone: the in-cluster Service keeps every port, the
/// LoadBalancer has only 5672 (never the management port unless listed).
#[test]
fn mq_leaves_the_cluster_on_amqp_alone() {
    let rendered = Setup::new("cluster").render();
    let objects = by_key(documents(&rendered.to_stream()));
    let inside = &objects["Service/mq"];
    assert!(inside["spec"]["type"].is_null(), "{inside}");
    assert_eq!(inside["spec"]["ports"].as_array().unwrap().len(), 4);
    let outside = &objects["Service/mq-external"];
    assert_eq!(outside["spec"]["type"], "LoadBalancer");
    assert_eq!(
        outside["spec"]["ports"],
        serde_json::json!([{"name": "amqp", "port": 5672, "targetPort": "amqp"}])
    );
    assert_eq!(outside["spec"]["selector"], inside["spec"]["selector"]);
    assert_eq!(
        outside["metadata"]["labels"]["app.kubernetes.io/name"],
        "mq"
    );
    assert_eq!(
        outside["metadata"]["annotations"]["service.beta.kubernetes.io/load-balancer-source-ranges"],
        "10.0.0.0/8"
    );
    assert!(inside["metadata"]["annotations"].is_null());
}

/// Each mistake in the settings is one line naming the file and line.
#[test]
fn environment_settings_errors_name_file_and_line() {
    let cases: &[(&str, &str)] = &[
        (
            "unknown-workload",
            "workloads:\n  restapi:\n    replicas: 2\n  resapi:\n    replicas: 1\n",
        ),
        ("db-replicas", "workloads:\n  db:\n    replicas: 2\n"),
        (
            "credential-env",
            "workloads:\n  lm:\n    env:\n      TZ: UTC\n      PGPASSWORD: x\n",
        ),
        ("unknown-setting", "workloads:\n  lm:\n    replica: 2\n"),
        (
            "ingress-unknown-service",
            "ingress:\n  services:\n    ttn-hook:\n      host: a.example.org\n",
        ),
        (
            "ingress-unknown-port",
            "ingress:\n  services:\n    ttn-webhook:\n      host: a.example.org\n      port: https\n",
        ),
        (
            "ingress-no-http-port",
            "ingress:\n  services:\n    db:\n      host: a.example.org\n",
        ),
        (
            "ingress-bad-host",
            "ingress:\n  services:\n    website:\n      host: https://a.example.org/\n",
        ),
        (
            "expose-unknown-port",
            "expose:\n  mq:\n    ports: [amqp, managment]\n",
        ),
        (
            "expose-unknown-service",
            "expose:\n  mq: {}\n  rest-api: {}\n",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::read_to_string(repo_root().join("environments/cluster.yaml")).unwrap();
    // The shipped expose/ingress/workloads sections are replaced by the case.
    let head = &base[..base.find("\nexpose:").unwrap() + 1];
    let mut all = String::new();
    for (name, section) in cases {
        let mut setup = Setup::new("cluster");
        setup.environment = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&setup.environment, format!("{head}{section}")).unwrap();
        let error = setup.render_error();
        let shown = error.replace(&dir.path().display().to_string(), "ENV");
        assert!(!shown.contains('\n'), "{shown}");
        assert!(shown.starts_with(&format!("ENV/{name}.yaml:")), "{shown}");
        all.push_str(&format!("{name}: {shown}\n"));
    }
    insta::assert_snapshot!("environment-settings-errors", all);
}

/// A credential store as the CLI's Docker configuration lookup answers:
/// entries for several hosts; records every key render asked for.
struct Store {
    entries: BTreeMap<&'static str, (&'static str, &'static str)>,
    asked: std::cell::RefCell<Vec<String>>,
}

impl broker_render::PullCredentialLookup for Store {
    fn lookup(&self, key: &str) -> Result<Option<broker_render::PullCredentials>, String> {
        self.asked.borrow_mut().push(key.to_owned());
        Ok(self
            .entries
            .get(key)
            .map(|(username, password)| broker_render::PullCredentials {
                username: (*username).to_owned(),
                password: (*password).to_owned(),
            }))
    }
}

fn store(entries: &[(&'static str, (&'static str, &'static str))]) -> Store {
    Store {
        entries: entries.iter().copied().collect(),
        asked: std::cell::RefCell::new(Vec::new()),
    }
}

/// The cluster environment with `generatedPullSecret` and, in `workload`'s
/// catalogue Deployment, a pull Secret of the catalogue's own.
fn with_generated_pull_secret(work: &Path, extra: &str) -> Setup {
    let mut setup = Setup::new("cluster");
    let manifests = work.join("manifests");
    copy_dir(&setup.manifests, &manifests);
    let restapi = manifests.join("workloads/restapi.yaml");
    let text = std::fs::read_to_string(&restapi).unwrap();
    std::fs::write(
        &restapi,
        text.replace(
            "      containers:\n",
            "      imagePullSecrets:\n        - name: catalogue-pull\n      containers:\n",
        ),
    )
    .unwrap();
    setup.manifests = manifests;
    let environment = work.join("cluster.yaml");
    let text = std::fs::read_to_string(&setup.environment).unwrap();
    std::fs::write(
        &environment,
        text.replace(
            "pullSecret: broker-pull\n",
            &format!(
                "pullSecret: broker-pull\ngeneratedPullSecret: broker-push-credentials\n{extra}"
            ),
        ),
    )
    .unwrap();
    setup.environment = environment;
    setup
}

/// Issue 23 item 5: a dockerconfigjson Secret from the credentials the
/// push used, holding only the registry the images are pinned to (the
/// store's other hosts never), hash-named like the other generated
/// Secrets, written 0600, referenced by every pod after the catalogue's
/// and the named `pullSecret` (merged, not overwritten).
#[test]
fn a_generated_pull_secret_holds_only_the_pinned_registry_and_is_merged_into_every_pod() {
    let work = tempfile::tempdir().unwrap();
    let setup = with_generated_pull_secret(work.path(), "");
    let credentials = store(&[
        ("registry.example:5000", ("ci", "push-password-6")),
        ("other.example", ("someone", "other-password-7")),
        ("https://index.docker.io/v1/", ("hub", "hub-password-8")),
    ]);
    let rendered =
        broker_render::render_with_pull_credentials(&setup.inputs(), &credentials).unwrap();
    assert_eq!(*credentials.asked.borrow(), ["registry.example:5000"]);

    let secret = rendered
        .objects
        .iter()
        .find(|o| o.kind == "Secret" && o.name.starts_with("broker-push-credentials-"))
        .unwrap();
    assert!(secret.secret);
    assert_eq!(secret.file_name, "secret-broker-push-credentials.yaml");
    assert_eq!(secret.value["type"], "kubernetes.io/dockerconfigjson");
    let data = secret.value["data"].as_object().unwrap();
    assert_eq!(data.keys().collect::<Vec<_>>(), [".dockerconfigjson"]);
    let config: Value = serde_json::from_str(&decode(&data[".dockerconfigjson"])).unwrap();
    assert_eq!(
        config,
        serde_json::json!({"auths": {"registry.example:5000": {
            "auth": "Y2k6cHVzaC1wYXNzd29yZC02",
            "password": "push-password-6",
            "username": "ci",
        }}})
    );
    let stream = rendered.to_stream();
    for other in ["other-password-7", "hub-password-8", "other.example"] {
        assert!(!stream.contains(other), "{other}");
    }

    for (name, template) in pod_templates(&rendered) {
        let expected: Vec<&str> = if name == "restapi" {
            vec!["catalogue-pull", "broker-pull", &secret.name]
        } else {
            vec!["broker-pull", &secret.name]
        };
        let names: Vec<&str> = template["spec"]["imagePullSecrets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, expected, "{name}");
    }

    // The hash follows the content: other credentials, another name.
    let changed = store(&[("registry.example:5000", ("ci", "rotated-9"))]);
    let again = broker_render::render_with_pull_credentials(&setup.inputs(), &changed).unwrap();
    assert!(again.objects.iter().any(|o| o.kind == "Secret"
        && o.name.starts_with("broker-push-credentials-")
        && o.name != secret.name));

    // Written 0600 like the other Secret; kubernetes-validate accepts it.
    let out = work.path().join("out");
    rendered.write_dir(&out).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(out.join(&secret.file_name))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let validate = require_tool("kubernetes-validate", "pip install kubernetes-validate");
    let run = Command::new(&validate)
        .args(["--strict", "-k", "1.33.0"])
        .arg(out.join(&secret.file_name))
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stdout)
    );
}

/// `registry` in the environment moves the pinned host, and the generated
/// Secret's entry with it; a store without it is one line saying what to
/// do, and never a password.
#[test]
fn a_generated_pull_secret_follows_the_environment_registry_or_says_what_is_missing() {
    let work = tempfile::tempdir().unwrap();
    let setup = with_generated_pull_secret(work.path(), "registry: nodes.example:5000\n");
    let credentials = store(&[
        ("registry.example:5000", ("ci", "push-password-6")),
        ("nodes.example:5000", ("node", "node-password-10")),
    ]);
    let rendered =
        broker_render::render_with_pull_credentials(&setup.inputs(), &credentials).unwrap();
    assert_eq!(*credentials.asked.borrow(), ["nodes.example:5000"]);
    assert!(!rendered.to_stream().contains("registry.example:5000"));

    let none = store(&[("registry.example:5000", ("ci", "push-password-6"))]);
    let error = broker_render::render_with_pull_credentials(&setup.inputs(), &none)
        .unwrap_err()
        .to_string()
        .replace(&work.path().display().to_string(), "WORK");
    assert!(!error.contains("password-6"));
    // Without a lookup (plain render) it is the same line.
    let plain = render(&setup.inputs())
        .unwrap_err()
        .to_string()
        .replace(&work.path().display().to_string(), "WORK");
    assert_eq!(error, plain);
    insta::assert_snapshot!("generated-pull-secret-without-credentials", error);
}

/// Standard base64 back to text (the test's own reading of what render
/// encoded).
fn decode(encoded: &Value) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for byte in encoded.as_str().unwrap().bytes().filter(|b| *b != b'=') {
        let value = ALPHABET.iter().position(|a| *a == byte).unwrap();
        bits = (bits << 6) | u32::try_from(value).unwrap();
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push(u8::try_from((bits >> count) & 0xff).unwrap());
        }
    }
    String::from_utf8(out).unwrap()
}
