//! The dev loop end to end on real files, a real registry (CNCF
//! Distribution, its access log) and the Docker engine for the deps stage,
//! against the scripted API endpoint of broker-cluster's tests (it records
//! every request; it is not a Kubernetes API server). The images are the
//! shipped specs on a busybox base with a deps stage of `FROM` only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../broker-cluster/tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use broker_build::build::{BuildHooks, BuildOptions, BuildReporter};
use broker_dev::{ChangeReport, DevError, DevOptions, DevReporter, DevSession, Watcher};
use broker_registry::{ClientOptions, Publisher, RegistryPrefix, RetryPolicy, Silent};
use broker_test_support::{
    EngineImages, Fault, FaultPolicy, FaultProxy, TestRegistry, busybox, dev_example, repo_root,
};
use support::{Recorded, Scripted};
use tokio::sync::mpsc;

/// The python-base workloads of the catalogue.
const PYTHON_WORKLOADS: [&str; 8] = [
    "delivery",
    "frred",
    "lm",
    "restapi",
    "ttn-processor",
    "ttn-webhook",
    "wombat",
    "ydoc",
];

struct QuietBuild;

impl broker_build::deps::BuildOutput for QuietBuild {
    fn line(&self, _image: &str, _line: &str) {}
}

impl BuildReporter for QuietBuild {
    fn stage(&self, _image: &str, _message: &str) {}
    fn notice(&self, _message: &str) {}
}

/// What the loop reported, in order.
#[derive(Debug)]
enum Round {
    Changed(ChangeReport),
    Failed(String),
}

struct Recorder {
    rounds: mpsc::UnboundedSender<Round>,
    lines: Arc<std::sync::Mutex<Vec<String>>>,
}

impl broker_cluster::Reporter for Recorder {
    fn line(&self, text: &str) {
        self.lines.lock().unwrap().push(text.to_owned());
    }
}

impl DevReporter for Recorder {
    fn changed(&self, report: &ChangeReport) {
        let _ = self.rounds.send(Round::Changed(report.clone()));
    }
    fn failed(&self, error: &DevError) {
        let mut chain = vec![error.to_string()];
        let mut next = std::error::Error::source(error);
        while let Some(cause) = next {
            chain.push(cause.to_string());
            next = cause.source();
        }
        let _ = self.rounds.send(Round::Failed(chain.join(": ")));
    }
}

/// A broker tree, formatters, image specs, a registry behind a proxy that
/// can fail it, and the scripted endpoint with the API "down" switch.
struct Project {
    /// First: it reads the store (the deps images the builds left in the
    /// engine) before the directory goes.
    _engine: EngineImages,
    dir: tempfile::TempDir,
    registry: TestRegistry,
    proxy: FaultProxy,
    api: Scripted,
    /// Between the cluster client and the endpoint: resets every
    /// connection while the API server is "gone".
    api_proxy: FaultProxy,
}

impl Project {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        dev_example(dir.path());
        std::fs::copy(
            repo_root().join("environments/single-node.yaml"),
            dir.path().join("env.yaml"),
        )
        .unwrap();
        // The release lock a developer has: it must come out untouched.
        broker_pins::Lock::new()
            .write(&dir.path().join("images.lock"))
            .unwrap();
        let registry = TestRegistry::start();
        let proxy = FaultProxy::start(&registry, FaultPolicy::None);
        let api = support::serve(None).await;
        let api_proxy = FaultProxy::start_to(&api.addr.to_string(), FaultPolicy::None);
        let engine = EngineImages::new();
        engine.watch_store(&dir.path().join("store"));
        Self {
            _engine: engine,
            dir,
            registry,
            proxy,
            api,
            api_proxy,
        }
    }

    /// A client of the endpoint through the proxy.
    fn cluster(&self) -> broker_cluster::Cluster {
        let url = self.api_proxy.url();
        let mut config = kube::Config::new(url.parse::<hyper::Uri>().unwrap());
        config.default_namespace = "broker".to_owned();
        let client = kube::Client::try_from(config).unwrap();
        broker_cluster::Cluster::from_client(client, &url, "broker")
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn options(&self) -> DevOptions {
        let base = busybox().docker_ref;
        let build = BuildOptions {
            images_dir: self.path("images"),
            broker_tree: self.path("broker"),
            formatters: Some(self.path("fmt").display().to_string()),
            formatters_rev: None,
            source_revision: Some("dev-test".to_owned()),
            only: Vec::new(),
            platforms: vec![broker_pins::Platform::host()],
            base_overrides: ["python-base", "mgmt-app", "ttn_decoder"]
                .into_iter()
                .map(|i| (i.to_owned(), base.clone()))
                .collect(),
            arg_overrides: BTreeMap::new(),
            recorded: BTreeMap::new(),
            recorded_bases: BTreeMap::new(),
            offline: false,
            deps_ca_files: Vec::new(),
            deps_network: None,
            store_dir: self.path("store"),
            cache_dir: self.path("cache"),
            layer_threads: 1,
            verify: false,
        };
        DevOptions {
            build,
            tag: "dev".to_owned(),
            release_lock: self.path("images.lock"),
            dev_lock: broker_dev::dev_lock_path(&self.path("images.lock")),
            environment: self.path("env.yaml"),
            env_file: Some(self.path("broker.env")),
            catalogue: repo_root().join("manifests"),
            require_pinned: false,
            namespace: None,
            timeout: Duration::from_secs(20),
            force_conflicts: false,
        }
    }

    /// Builds, pushes and starts, then runs the loop in the background.
    async fn start(&self) -> Running {
        let prefix: RegistryPrefix = format!("{}/broker", self.proxy.host()).parse().unwrap();
        let client = ClientOptions {
            retry: RetryPolicy {
                max_attempts: 1,
                ..RetryPolicy::default()
            },
            give_up_after: Duration::from_secs(5),
            read_timeout: Duration::from_secs(2),
            ..ClientOptions::default()
        };
        let publisher = Arc::new(Publisher::new(prefix, &client, Arc::new(Silent)).unwrap());
        let hooks = BuildHooks {
            deps_source: None,
            base_resolver: None,
            layer_streams: None,
            reporter: Arc::new(QuietBuild),
        };
        let mut session = DevSession::prepare(self.options(), hooks, publisher).unwrap();
        let watcher = Watcher::start(&session.plan().roots()).unwrap();
        assert!(watcher.missing.is_empty(), "{:?}", watcher.missing);
        session.build_all().await.unwrap();
        let rendered = session.render().unwrap();
        let (sender, rounds) = mpsc::unbounded_channel();
        let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
        let recorder = Recorder {
            rounds: sender,
            lines: Arc::clone(&lines),
        };
        session
            .start(self.cluster(), &rendered, &recorder)
            .await
            .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let stop = async {
                let _ = stopped.await;
            };
            broker_dev::run(session, watcher, &recorder, stop)
                .await
                .finish()
                .await;
        });
        self.api.clear();
        Running {
            rounds,
            lines,
            stop: Some(stop),
            task,
        }
    }

    /// Writes `text` to `rel` the way editors save: a temp file in the
    /// same folder, renamed over.
    fn save(&self, rel: &str, text: &str) {
        let path = self.path(rel);
        let temp = path.with_file_name(format!(
            ".{}.tmp",
            path.file_name().unwrap().to_str().unwrap()
        ));
        std::fs::write(&temp, text).unwrap();
        std::fs::rename(&temp, &path).unwrap();
    }

    /// The Deployments and ConfigMaps the endpoint saw applied.
    fn applied(&self) -> BTreeSet<String> {
        self.api
            .requests()
            .into_iter()
            .filter(|r| r.method == "PATCH" && !r.path.contains("/leases/"))
            .filter(|r| !r.path.ends_with("/secrets/broker"))
            .map(|r| {
                let mut parts = r.path.rsplit('/');
                let name = parts.next().unwrap().to_owned();
                format!("{}/{name}", parts.next().unwrap())
            })
            .collect()
    }

    /// Writes seen by the endpoint, leases left out.
    fn writes(&self) -> Vec<Recorded> {
        self.api
            .requests()
            .into_iter()
            .filter(|r| r.is_write() && !r.path.contains("/leases/"))
            .collect()
    }

    /// Every file path in a stored layer blob, by `tar`.
    fn layer_entries(&self, digest: &str) -> Vec<String> {
        let hex = digest.trim_start_matches("sha256:");
        let blob = self.path("store").join("blobs/sha256").join(hex);
        let out = Command::new("tar").arg("tzf").arg(&blob).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The python-sources layer digest of python-base in the dev lock.
    fn python_layer(&self) -> String {
        let lock = broker_pins::Lock::read(&self.path("images.dev.lock"))
            .unwrap()
            .unwrap();
        lock.images["python-base"].sources["python-sources"]
            .layer
            .to_string()
    }
}

struct Running {
    rounds: mpsc::UnboundedReceiver<Round>,
    /// The progress lines the loop reported.
    lines: Arc<std::sync::Mutex<Vec<String>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn next(&mut self) -> Round {
        tokio::time::timeout(Duration::from_secs(30), self.rounds.recv())
            .await
            .expect("no round within 30 s")
            .expect("the loop ended")
    }

    async fn changed(&mut self) -> ChangeReport {
        match self.next().await {
            Round::Changed(report) => report,
            Round::Failed(why) => panic!("round failed: {why}"),
        }
    }

    async fn failed(&mut self) -> String {
        match self.next().await {
            Round::Failed(why) => why,
            Round::Changed(report) => panic!("round applied: {report:?}"),
        }
    }

    /// No round within `wait`.
    async fn quiet(&mut self, wait: Duration) {
        if let Ok(round) = tokio::time::timeout(wait, self.rounds.recv()).await {
            panic!("unexpected round: {round:?}");
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
        self.task.await.unwrap();
    }
}

/// The manifest references (digests, tags) put since request `from`.
fn manifests_put_since(registry: &TestRegistry, from: usize) -> BTreeSet<String> {
    let requests = registry.requests();
    requests[from.min(requests.len())..]
        .iter()
        .filter(|r| r.method == "PUT" && r.path.contains("/manifests/"))
        .map(|r| {
            r.path_without_query()
                .rsplit('/')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// One dev session at a time on the shared Docker engine.
static ENGINE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_saved_file_pushes_one_layer_and_rolls_only_the_workloads_of_its_image() {
    // The tests build the same images, so the same deps tags on the one
    // Docker engine; one test's clean-up must not remove a tag another is
    // exporting.
    let _engine = ENGINE.lock().await;
    let project = Project::new().await;
    let release = std::fs::read(project.path("images.lock")).unwrap();
    let mut running = project.start().await;
    let before = project.registry.requests().len();
    let uploads_before = project.registry.blob_upload_count();

    // An editor's atomic save of one Python file: one round.
    let restapi = "broker/src/python/restapi/RestAPI.py";
    let text = std::fs::read_to_string(project.path(restapi)).unwrap();
    project.save(restapi, &format!("{text}\n# one more line\n"));
    let report = running.changed().await;
    assert!(
        report
            .files
            .contains(&"src/python/restapi/RestAPI.py".to_owned()),
        "{report:?}"
    );
    assert_eq!(
        report.images.keys().collect::<Vec<_>>(),
        ["python-base"],
        "{report:?}"
    );
    assert_eq!(report.layers_built, ["python-base/python-sources"]);
    let mut workloads = report.workloads.clone();
    workloads.sort();
    assert_eq!(workloads, PYTHON_WORKLOADS);
    // Exactly one layer blob and the config uploaded, the manifest put
    // by digest and by the dev tag.
    let manifests = manifests_put_since(&project.registry, before);
    let uploads = project.registry.blob_upload_count() - uploads_before;
    assert_eq!(uploads, 2, "{:#?}", project.registry.requests());
    let digest = report.images["python-base"].to_string();
    assert_eq!(manifests, BTreeSet::from([digest, "dev".to_owned()]));
    // Exactly the python-base Deployments applied: no ConfigMap, no other
    // workload.
    let expected: BTreeSet<String> = PYTHON_WORKLOADS
        .iter()
        .map(|w| format!("deployments/{w}"))
        .collect();
    assert_eq!(project.applied(), expected);
    running.quiet(Duration::from_millis(400)).await;

    // Inside excluded paths: nothing at all.
    project.api.clear();
    std::fs::write(project.path("broker/src/www/app/chromedriver.exe"), "x").unwrap();
    std::fs::create_dir_all(project.path("broker/src/python/restapi/__pycache__")).unwrap();
    std::fs::write(
        project.path("broker/src/python/restapi/__pycache__/RestAPI.cpython-310.pyc"),
        "x",
    )
    .unwrap();
    std::fs::write(project.path("broker/src/python/restapi/RestAPI.py~"), "x").unwrap();
    std::fs::write(project.path("broker/src/python/restapi/4913"), "").unwrap();
    std::fs::remove_file(project.path("broker/src/python/restapi/4913")).unwrap();
    running.quiet(Duration::from_millis(600)).await;
    assert!(project.writes().is_empty(), "{:?}", project.writes());

    // Twenty saves in a burst: one rebuild.
    for i in 0..20 {
        project.save(restapi, &format!("{text}\n# save {i}\n"));
    }
    let report = running.changed().await;
    assert_eq!(report.images.len(), 1);
    // Long enough for a second round to show even on a loaded machine.
    running.quiet(Duration::from_millis(1500)).await;

    // A new file is in the next layer, a deleted one is gone from it.
    let new_file = "broker/src/python/restapi/Extra.py";
    std::fs::write(project.path(new_file), "X = 1\n").unwrap();
    let report = running.changed().await;
    assert!(
        report
            .files
            .contains(&"src/python/restapi/Extra.py".to_owned()),
        "{report:?}"
    );
    let entries = project.layer_entries(&project.python_layer());
    assert!(
        entries.iter().any(|e| e.ends_with("restapi/Extra.py")),
        "{entries:?}"
    );
    std::fs::remove_file(project.path(new_file)).unwrap();
    let report = running.changed().await;
    assert!(
        report
            .files
            .contains(&"src/python/restapi/Extra.py".to_owned()),
        "{report:?}"
    );
    let entries = project.layer_entries(&project.python_layer());
    assert!(
        !entries.iter().any(|e| e.ends_with("restapi/Extra.py")),
        "{entries:?}"
    );

    // A generated ConfigMap's file: that ConfigMap and the pods using it.
    project.api.clear();
    let init = "broker/db/init.d/init_db.sql";
    let sql = std::fs::read_to_string(project.path(init)).unwrap();
    project.save(init, &format!("{sql}\n-- one more line\n"));
    let report = running.changed().await;
    assert!(report.images.is_empty(), "{report:?}");
    let applied = project.applied();
    assert_eq!(applied.len(), 2, "{applied:?}");
    assert!(
        applied.iter().any(|a| a.starts_with("configmaps/db-init-")),
        "{applied:?}"
    );
    assert!(applied.contains("deployments/db"), "{applied:?}");

    running.stop().await;
    // The release lock is byte-identical; the dev record is beside it.
    assert_eq!(std::fs::read(project.path("images.lock")).unwrap(), release);
    assert!(project.path("images.dev.lock").is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_one_line_applies_nothing_and_the_next_good_save_is_applied() {
    // The tests build the same images, so the same deps tags on the one
    // Docker engine; one test's clean-up must not remove a tag another is
    // exporting.
    let _engine = ENGINE.lock().await;
    let project = Project::new().await;
    let mut running = project.start().await;
    let restapi = "broker/src/python/restapi/RestAPI.py";
    let text = std::fs::read_to_string(project.path(restapi)).unwrap();
    let mut good = 0;
    let mut good_save = |project: &Project| {
        good += 1;
        project.save(restapi, &format!("{text}\n# good save {good}\n"));
    };

    // A fifo in a tree.
    project.api.clear();
    let fifo = project.path("broker/src/python/restapi/pipe");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let why = running.failed().await;
    assert!(
        why.contains("is a fifo, which a layer cannot hold"),
        "{why}"
    );
    assert!(project.writes().is_empty(), "{:?}", project.writes());
    // Removing it leaves the tree as it was: the same image, nothing to
    // apply; the next good save rolls.
    std::fs::remove_file(&fifo).unwrap();
    assert!(running.changed().await.applied.is_empty());
    good_save(&project);
    assert_eq!(
        running.changed().await.workloads.len(),
        PYTHON_WORKLOADS.len()
    );

    // A symlink out of the tree.
    project.api.clear();
    let link = project.path("broker/src/python/restapi/escape");
    std::os::unix::fs::symlink("/etc/passwd", &link).unwrap();
    let why = running.failed().await;
    assert!(why.contains("outside the source tree"), "{why}");
    assert!(project.writes().is_empty(), "{:?}", project.writes());
    std::fs::remove_file(&link).unwrap();
    assert!(running.changed().await.applied.is_empty());
    good_save(&project);
    assert_eq!(
        running.changed().await.workloads.len(),
        PYTHON_WORKLOADS.len()
    );

    // A YAML error in the environment file.
    project.api.clear();
    let env = std::fs::read_to_string(project.path("env.yaml")).unwrap();
    std::fs::write(
        project.path("env.yaml"),
        format!("{env}\n  bad: [unclosed\n"),
    )
    .unwrap();
    let why = running.failed().await;
    assert!(why.starts_with("render failed: "), "{why}");
    assert!(why.contains("env.yaml"), "{why}");
    assert!(project.writes().is_empty(), "{:?}", project.writes());
    std::fs::write(project.path("env.yaml"), &env).unwrap();
    running.changed().await;

    // A deps build that fails, said before it starts.
    project.api.clear();
    let dockerfile = project.path("images/mgmt-app/Dockerfile");
    std::fs::write(
        &dockerfile,
        "ARG BASE\nFROM ${BASE}\nRUN echo 'ERROR: no such package' && exit 3\n",
    )
    .unwrap();
    let why = running.failed().await;
    assert!(why.starts_with("deps stage of mgmt-app failed"), "{why}");
    // Said on one line before the deps build started.
    let said = running.lines.lock().unwrap().clone();
    assert!(
        said.contains(
            &"mgmt-app: its deps inputs changed: rebuilding its deps stage as build does"
                .to_owned()
        ),
        "{said:?}"
    );
    assert!(project.writes().is_empty(), "{:?}", project.writes());
    // Fixed with a step of its own: a new deps image, the website rolls.
    std::fs::write(
        &dockerfile,
        "ARG BASE\nFROM ${BASE}\nRUN echo fixed > /fixed\n",
    )
    .unwrap();
    let report = running.changed().await;
    assert_eq!(report.deps_rebuilt, ["mgmt-app"]);
    assert_eq!(report.workloads, ["website"]);

    // The registry goes away, and comes back.
    project.api.clear();
    project
        .proxy
        .set_policy(FaultPolicy::FailAll(Fault::Status(503)));
    good_save(&project);
    let why = running.failed().await;
    assert!(why.starts_with("python-base: cannot publish"), "{why}");
    assert!(project.writes().is_empty(), "{:?}", project.writes());
    project.proxy.set_policy(FaultPolicy::None);
    good_save(&project);
    assert_eq!(
        running.changed().await.workloads.len(),
        PYTHON_WORKLOADS.len()
    );

    // The API server goes away, and comes back.
    project
        .api_proxy
        .set_policy(FaultPolicy::FailAll(Fault::ResetConnection));
    project.api.clear();
    good_save(&project);
    let why = running.failed().await;
    assert!(why.starts_with("apply failed: "), "{why}");
    assert!(project.writes().is_empty(), "{:?}", project.writes());
    project.api_proxy.set_policy(FaultPolicy::None);
    good_save(&project);
    assert_eq!(
        running.changed().await.workloads.len(),
        PYTHON_WORKLOADS.len()
    );

    running.stop().await;
}

#[test]
fn the_dev_record_sits_beside_the_release_lock() {
    assert_eq!(
        broker_dev::dev_lock_path(Path::new("deploy/images.lock")),
        Path::new("deploy/images.dev.lock")
    );
}
