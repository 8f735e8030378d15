//! Probe commands run for real (issue 19): every workload whose image the
//! tests can build or stand in runs under the Docker engine as the
//! single-node render describes it — image pinned from the lock, the
//! environment from the rendered ConfigMap and Secret (`PGHOST=db`
//! included), user, capabilities, working directory, command, pod hostname
//! and volumes — and its rendered probes are run against it: exec probes
//! with `docker exec`, httpGet and tcpSocket probes as the same request
//! from inside the container to its own address (the kubelet dials the pod
//! IP, never loopback or a Service). With the server up every probe must
//! pass; with the server not running (the same container whose command is
//! replaced by `sleep`), and for db while the image's init-time server
//! runs, they must fail.
//!
//! The broker images are the example tree's (built and pushed once per
//! run, as build_e2e does, on the Debian minbase, with uvicorn from PyPI as
//! the e2e workflow adds it); db and mq run the postgres and rabbitmq
//! stand-ins of broker-test-support, recorded in the lock as mirrors.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::Engine as _;
use broker_test_support::{
    Standin, TestRegistry, Workspace, copy_dir, debian_minbase, docker_cli, repo_root,
    unique_suffix,
};
use serde_json::Value;

const IMAGES: [&str; 3] = ["mgmt-app", "python-base", "ttn_decoder"];

/// The system CA bundle: build containers here reach PyPI through a
/// TLS-intercepting proxy whose CA is in it (elsewhere it is just the
/// usual bundle).
const HOST_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The rendered single-node objects, every image they name in the engine.
struct Fixture {
    objects: Vec<Value>,
}

impl Fixture {
    fn get() -> &'static Fixture {
        static FIXTURE: OnceLock<Fixture> = OnceLock::new();
        FIXTURE.get_or_init(Fixture::make)
    }

    /// Builds and pushes the example images, mirrors the stand-ins into the
    /// lock, renders single-node and pulls every pinned image, so the
    /// registry is no longer needed.
    fn make() -> Fixture {
        let started = Instant::now();
        let registry = TestRegistry::start();
        let path = format!("probes-{}", unique_suffix());
        let prefix = format!("{}/{path}", registry.host());
        let ws = Workspace::new(env!("CARGO_BIN_EXE_broker-images"));
        let broker = ws.path("broker");
        copy_dir(&repo_root().join("examples/broker"), &broker);
        // As the e2e workflow does: the HTTP services need uvicorn.
        std::fs::write(
            broker.join("images/restapi/requirements.txt"),
            "uvicorn==0.30.6\n",
        )
        .unwrap();
        let formatters = ws.path("ttn-formatters");
        copy_dir(&repo_root().join("examples/ttn-formatters"), &formatters);
        let lock = ws.path("images.lock");

        let base = debian_minbase();
        let mut build = ws.command(&["build"]);
        build
            .arg("--images")
            .arg(repo_root().join("images"))
            .arg("--source")
            .arg(&broker)
            .arg("--source-revision")
            .arg("probe-test")
            .arg("--formatters")
            .arg(&formatters)
            .arg("--cache")
            .arg(ws.path("cache"))
            .arg("--lock")
            .arg(&lock)
            .args(["--push", "--registry", &prefix])
            .args(["--build-arg", "ttn_decoder:NPM_PACKAGES="])
            // The Debian minbase here is amd64 only.
            .args(["--platform", "linux/amd64"]);
        for image in IMAGES {
            build
                .arg("--base")
                .arg(format!("{image}={}", base.docker_ref));
        }
        if Path::new(HOST_CA_BUNDLE).is_file() {
            build.arg("--deps-ca-file").arg(HOST_CA_BUNDLE);
        }
        ok(&build.output().unwrap(), "broker-images build");
        for standin in Standin::ALL {
            standin.mirror_into_lock(&registry, &path, &lock);
        }

        let env_file = ws.path("broker.env");
        std::fs::write(
            &env_file,
            "PGPASSWORD=probe-pg-1\nPOSTGRES_PASSWORD=probe-pg-1\nRABBITMQ_DEFAULT_PASS=probe-mq-2\n\
             TTN_API_TOKEN=probe-ttn-3\nUBIDOTS_API_TOKEN=probe-ubi-4\nGREENBRAIN_PASSWORDS=probe-gb-5\n",
        )
        .unwrap();
        let rendered = broker_render::render(&broker_render::Inputs {
            lock: &lock,
            source: &broker,
            environment: &repo_root().join("environments/single-node.yaml"),
            env_file: Some(&env_file),
            manifests: &repo_root().join("manifests"),
            require_pinned: true,
        })
        .unwrap_or_else(|e| panic!("render: {e}"));
        let objects: Vec<Value> = rendered.objects.into_iter().map(|o| o.value).collect();
        let mut pulled = std::collections::BTreeSet::new();
        for object in &objects {
            let pod = &object["spec"]["template"]["spec"];
            for list in ["initContainers", "containers"] {
                for container in pod[list].as_array().into_iter().flatten() {
                    let image = container["image"].as_str().unwrap().to_owned();
                    if pulled.insert(image.clone()) {
                        docker(&["pull", "--quiet", &image]);
                    }
                }
            }
        }
        eprintln!(
            "probe fixture: {} images built, mirrored and pulled in {:.0?}",
            pulled.len(),
            started.elapsed()
        );
        // The tests run the pulled images: they stay until the process ends.
        registry.keep_engine_references_until_exit();
        drop(registry);
        Fixture { objects }
    }

    fn object(&self, kind: &str, name: &str) -> &Value {
        self.objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
    }

    fn named(&self, kind: &str, name: &str) -> &Value {
        // Generated ConfigMaps and Secrets carry a hash suffix; references
        // in the pods name them in full.
        self.object(kind, name)
    }

    fn deployment(&self, name: &str) -> &Value {
        self.object("Deployment", name)
    }

    /// The environment the kubelet gives `container`: `envFrom` in order,
    /// then `env` (which wins).
    fn environment(&self, container: &Value) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        for source in container["envFrom"].as_array().into_iter().flatten() {
            if let Some(name) = source["configMapRef"]["name"].as_str() {
                for (k, v) in self.named("ConfigMap", name)["data"].as_object().unwrap() {
                    env.insert(k.clone(), v.as_str().unwrap().to_owned());
                }
            }
            if let Some(name) = source["secretRef"]["name"].as_str() {
                for (k, v) in self.named("Secret", name)["data"].as_object().unwrap() {
                    env.insert(k.clone(), decode(v));
                }
            }
        }
        for var in container["env"].as_array().into_iter().flatten() {
            let name = var["name"].as_str().unwrap().to_owned();
            let value = if let Some(v) = var["value"].as_str() {
                v.to_owned()
            } else if let Some(r) = var["valueFrom"]["secretKeyRef"].as_object() {
                decode(
                    &self.named("Secret", r["name"].as_str().unwrap())["data"]
                        [r["key"].as_str().unwrap()],
                )
            } else if let Some(r) = var["valueFrom"]["configMapKeyRef"].as_object() {
                self.named("ConfigMap", r["name"].as_str().unwrap())["data"]
                    [r["key"].as_str().unwrap()]
                .as_str()
                .unwrap()
                .to_owned()
            } else {
                panic!("env {name}: unsupported source {var}");
            };
            env.insert(name, value);
        }
        env
    }
}

fn decode(value: &Value) -> String {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value.as_str().unwrap())
        .unwrap();
    String::from_utf8(bytes).unwrap()
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn docker(args: &[&str]) -> String {
    ok(
        &docker_cli().args(args).output().unwrap(),
        &format!("docker {args:?}"),
    )
    .trim()
    .to_owned()
}

/// A directory as `DirectoryOrCreate` makes it on a fresh node: root:root
/// 0755 (a temporary directory is 0700).
fn node_directory() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// What replaces the container's command when the server must not run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Server {
    Up,
    NotRunning,
}

/// One rendered container running under the engine, removed on drop.
struct Running {
    id: String,
    name: String,
    _dirs: Vec<tempfile::TempDir>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = docker_cli()
            .args(["rm", "--force", &self.id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// How to run one container of a rendered pod.
struct Launch<'a> {
    fixture: &'a Fixture,
    pod: &'a Value,
    container: &'a Value,
    /// Host directories for volumes, by volume name (else a fresh node
    /// directory for a hostPath, the rendered files for a ConfigMap).
    host_dirs: BTreeMap<String, PathBuf>,
    extra_env: Vec<(String, String)>,
    server: Server,
    detach: bool,
}

impl<'a> Launch<'a> {
    fn new(fixture: &'a Fixture, workload: &str, list: &str) -> Self {
        let pod = &fixture.deployment(workload)["spec"]["template"]["spec"];
        Launch {
            fixture,
            pod,
            container: &pod[list][0],
            host_dirs: BTreeMap::new(),
            extra_env: Vec::new(),
            server: Server::Up,
            detach: true,
        }
    }

    /// `docker run` for the container, its volumes made under `dirs`.
    fn command(&self, dirs: &mut Vec<tempfile::TempDir>) -> Command {
        let (pod, container) = (self.pod, self.container);
        let mut cmd = docker_cli();
        cmd.arg("run");
        cmd.arg(if self.detach { "--detach" } else { "--rm" });
        let name = format!(
            "probe-{}-{}",
            container["name"].as_str().unwrap(),
            unique_suffix()
        );
        cmd.args(["--name", &name]);
        if let Some(hostname) = pod["hostname"].as_str() {
            cmd.args(["--hostname", hostname]);
        }
        let context = |key: &str| {
            container["securityContext"][key]
                .as_i64()
                .or_else(|| pod["securityContext"][key].as_i64())
        };
        if let Some(uid) = context("runAsUser") {
            let user = match context("runAsGroup") {
                Some(gid) => format!("{uid}:{gid}"),
                None => uid.to_string(),
            };
            cmd.args(["--user", &user]);
        }
        if let Some(group) = pod["securityContext"]["fsGroup"].as_i64() {
            cmd.args(["--group-add", &group.to_string()]);
        }
        let security = &container["securityContext"];
        for cap in security["capabilities"]["drop"]
            .as_array()
            .into_iter()
            .flatten()
        {
            cmd.args(["--cap-drop", cap.as_str().unwrap()]);
        }
        for cap in security["capabilities"]["add"]
            .as_array()
            .into_iter()
            .flatten()
        {
            cmd.args(["--cap-add", cap.as_str().unwrap()]);
        }
        if security["allowPrivilegeEscalation"] == false {
            cmd.args(["--security-opt", "no-new-privileges"]);
        }
        for (k, v) in self.fixture.environment(container) {
            cmd.arg("--env").arg(format!("{k}={v}"));
        }
        for (k, v) in &self.extra_env {
            cmd.arg("--env").arg(format!("{k}={v}"));
        }
        for mount in container["volumeMounts"].as_array().into_iter().flatten() {
            let volume_name = mount["name"].as_str().unwrap();
            let volume = pod["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == volume_name)
                .unwrap();
            let source = if let Some(dir) = self.host_dirs.get(volume_name) {
                dir.clone()
            } else if let Some(config) = volume["configMap"]["name"].as_str() {
                let dir = tempfile::tempdir().unwrap();
                std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
                    .unwrap();
                let data = &self.fixture.named("ConfigMap", config)["data"];
                for (file, text) in data.as_object().unwrap() {
                    let path = dir.path().join(file);
                    std::fs::write(&path, text.as_str().unwrap()).unwrap();
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
                        .unwrap();
                }
                let path = dir.path().to_path_buf();
                dirs.push(dir);
                path
            } else if volume["hostPath"].is_object() {
                let dir = node_directory();
                let path = dir.path().to_path_buf();
                dirs.push(dir);
                path
            } else {
                panic!("volume {volume} is neither a ConfigMap nor a hostPath");
            };
            let source = match mount["subPath"].as_str() {
                Some(sub) => source.join(sub),
                None => source,
            };
            let mut spec = format!(
                "type=bind,source={},target={}",
                source.display(),
                mount["mountPath"].as_str().unwrap()
            );
            if mount["readOnly"] == true {
                spec.push_str(",readonly");
            }
            cmd.arg("--mount").arg(spec);
        }
        if let Some(dir) = container["workingDir"].as_str() {
            cmd.args(["--workdir", dir]);
        }
        let image = container["image"].as_str().unwrap();
        let words: Vec<&str> = container["command"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|w| w.as_str().unwrap())
            .collect();
        match (self.server, words.split_first()) {
            (Server::NotRunning, _) => {
                cmd.args(["--entrypoint", "sleep", image, "infinity"]);
            }
            (Server::Up, Some((first, rest))) => {
                cmd.args(["--entrypoint", first, image]).args(rest);
            }
            (Server::Up, None) => {
                cmd.arg(image);
            }
        }
        cmd
    }

    /// Starts the container, after the pod's init containers ran to
    /// success on the same node directories (as the kubelet runs them).
    fn start(mut self) -> Running {
        let mut dirs = Vec::new();
        self.run_init_containers(&mut dirs);
        let out = self.command(&mut dirs).output().unwrap();
        let id = ok(&out, "docker run").trim().to_owned();
        Running {
            id,
            name: self.container["name"].as_str().unwrap().to_owned(),
            _dirs: dirs,
        }
    }

    /// For a pod's main container: makes a fresh node directory for every
    /// hostPath the test did not give one, and runs each init container on
    /// them to success.
    fn run_init_containers(&mut self, dirs: &mut Vec<tempfile::TempDir>) {
        let inits = self.pod["initContainers"].as_array();
        let is_init = inits.is_some_and(|l| l.iter().any(|c| std::ptr::eq(c, self.container)));
        let Some(inits) = inits.filter(|_| !is_init) else {
            return;
        };
        for volume in self.pod["volumes"].as_array().into_iter().flatten() {
            let name = volume["name"].as_str().unwrap();
            if volume["hostPath"].is_object() && !self.host_dirs.contains_key(name) {
                let dir = node_directory();
                self.host_dirs.insert(name.to_owned(), dir.path().into());
                dirs.push(dir);
            }
        }
        for init in inits {
            let launch = Launch {
                fixture: self.fixture,
                pod: self.pod,
                container: init,
                host_dirs: self.host_dirs.clone(),
                extra_env: Vec::new(),
                server: Server::Up,
                detach: true,
            };
            let name = init["name"].as_str().unwrap();
            ok(&launch.run(), &format!("init container {name}"));
        }
    }

    /// Runs the container to completion; its output.
    fn run(mut self) -> Output {
        self.detach = false;
        let mut dirs = Vec::new();
        self.command(&mut dirs).output().unwrap()
    }
}

/// One rendered probe of a container.
struct Probe<'a> {
    kind: &'static str,
    spec: &'a Value,
    container: &'a Value,
}

fn probes(container: &Value) -> Vec<Probe<'_>> {
    ["startupProbe", "readinessProbe", "livenessProbe"]
        .into_iter()
        .filter(|kind| container[*kind].is_object())
        .map(|kind| Probe {
            kind,
            spec: &container[kind],
            container,
        })
        .collect()
}

/// Python run inside the container: connect (and GET) to the container's
/// own address, as the kubelet does to the pod IP.
const HTTP_CHECK: &str = "import socket,sys,urllib.request\n\
ip=socket.gethostbyname(socket.gethostname())\n\
r=urllib.request.urlopen(f'http://{ip}:{sys.argv[1]}{sys.argv[2]}',timeout=float(sys.argv[3]))\n\
sys.exit(0 if 200<=r.status<400 else 1)\n";
const TCP_CHECK: &str = "import socket,sys\n\
ip=socket.gethostbyname(socket.gethostname())\n\
socket.create_connection((ip,int(sys.argv[1])),timeout=float(sys.argv[2])).close()\n";

impl Probe<'_> {
    fn port(&self, port: &Value) -> String {
        if let Some(n) = port.as_u64() {
            return n.to_string();
        }
        let name = port.as_str().unwrap();
        self.container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no port named {name}"))["containerPort"]
            .to_string()
    }

    /// Runs it once in `running`; whether it passed.
    fn passes(&self, running: &Running) -> bool {
        let timeout = self.spec["timeoutSeconds"].as_u64().unwrap_or(1);
        let mut cmd = Command::new("timeout");
        cmd.arg((timeout + 10).to_string());
        let docker = broker_test_support::require_tool("docker", "apt-get install -y docker.io");
        cmd.arg(docker)
            .env("DOCKER_HOST", broker_test_support::docker::docker_host())
            .args(["exec", &running.id]);
        if let Some(words) = self.spec["exec"]["command"].as_array() {
            cmd.args(words.iter().map(|w| w.as_str().unwrap()));
        } else if self.spec["httpGet"].is_object() {
            let get = &self.spec["httpGet"];
            cmd.args(["python3", "-c", HTTP_CHECK])
                .arg(self.port(&get["port"]))
                .arg(get["path"].as_str().unwrap_or("/"))
                .arg(timeout.to_string());
        } else if self.spec["tcpSocket"].is_object() {
            cmd.args(["python3", "-c", TCP_CHECK])
                .arg(self.port(&self.spec["tcpSocket"]["port"]))
                .arg(timeout.to_string());
        } else {
            panic!(
                "{} {}: unsupported probe {}",
                running.name, self.kind, self.spec
            );
        }
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    }

    /// Polls until it passes, within what the startup budget allows.
    fn passes_within(&self, running: &Running, limit: Duration) -> Result<Duration, String> {
        let started = Instant::now();
        loop {
            if self.passes(running) {
                return Ok(started.elapsed());
            }
            if started.elapsed() > limit {
                let logs = docker_cli()
                    .args(["logs", "--tail", "30", &running.id])
                    .output()
                    .unwrap();
                return Err(format!(
                    "{} {} did not pass within {limit:?}; logs:\n{}{}",
                    running.name,
                    self.kind,
                    String::from_utf8_lossy(&logs.stdout),
                    String::from_utf8_lossy(&logs.stderr)
                ));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// Every probe of `workload` passes with its server up and fails with the
/// same container not running it.
fn probes_pass_up_and_fail_down(fixture: &Fixture, workload: &str) {
    let up = Launch::new(fixture, workload, "containers").start();
    let container = Launch::new(fixture, workload, "containers").container;
    let all = probes(container);
    assert!(!all.is_empty(), "{workload} has no probe");
    for probe in &all {
        let took = probe
            .passes_within(&up, Duration::from_secs(120))
            .unwrap_or_else(|e| panic!("{e}"));
        eprintln!("{workload} {}: passed after {took:.1?}", probe.kind);
    }
    drop(up);
    let mut down = Launch::new(fixture, workload, "containers");
    down.server = Server::NotRunning;
    let down = down.start();
    for probe in &all {
        assert!(
            !probe.passes(&down),
            "{workload} {} passes with no server running",
            probe.kind
        );
    }
}

#[test]
fn db_probes_pass_once_postgres_serves_and_fail_while_it_initialises_or_is_not_running() {
    let fixture = Fixture::get();
    let container = &fixture.deployment("db")["spec"]["template"]["spec"]["containers"][0];
    let all = probes(container);
    assert_eq!(all.len(), 3, "startup, readiness and liveness");

    // An init script that holds the image's init-time server (socket only)
    // until the test releases it.
    let init = tempfile::tempdir().unwrap();
    std::fs::set_permissions(init.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for (file, text) in fixture.named(
        "ConfigMap",
        fixture.deployment("db")["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "init")
            .unwrap()["configMap"]["name"]
            .as_str()
            .unwrap(),
    )["data"]
        .as_object()
        .unwrap()
    {
        std::fs::write(init.path().join(file), text.as_str().unwrap()).unwrap();
    }
    std::fs::write(
        init.path().join("zz-hold.sh"),
        "while [ ! -e /tmp/release-init ]; do sleep 0.2; done\n",
    )
    .unwrap();
    let mut launch = Launch::new(fixture, "db", "containers");
    launch.host_dirs.insert("init".into(), init.path().into());
    let db = launch.start();

    // The init-time server answers on its socket, and the probes fail.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !docker_cli()
        .args([
            "exec",
            &db.id,
            "pg_isready",
            "--quiet",
            "--host=/var/run/postgresql",
        ])
        .status()
        .unwrap()
        .success()
    {
        assert!(
            Instant::now() < deadline,
            "the init-time server never came up"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    for probe in &all {
        assert!(
            !probe.passes(&db),
            "db {} passes while the init-time server (no TCP) runs",
            probe.kind
        );
    }
    docker(&["exec", &db.id, "touch", "/tmp/release-init"]);
    for probe in &all {
        let took = probe
            .passes_within(&db, Duration::from_secs(120))
            .unwrap_or_else(|e| panic!("{e}"));
        eprintln!(
            "db {}: passed {took:.1?} after the init scripts",
            probe.kind
        );
    }

    // `kubectl exec deploy/db -- psql` as an operator types it: the
    // container's own PGUSER/PGDATABASE/PGHOST, no password.
    let env = fixture.environment(container);
    assert_eq!(env["PGHOST"], "/var/run/postgresql");
    let out = docker(&[
        "exec",
        &db.id,
        "psql",
        "-v",
        "ON_ERROR_STOP=1",
        "-tAc",
        "select current_database(), count(*) from sources",
    ]);
    // The example schema's init script fills `sources`.
    let (database, rows) = out.split_once('|').unwrap();
    assert_eq!(database, env["PGDATABASE"], "{out}");
    assert!(rows.parse::<u32>().unwrap() > 0, "{out}");
    // Clients elsewhere (over TCP from another address) need the password.
    let ip = docker(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", &db.id]);
    let remote = |password: Option<&str>| {
        let mut cmd = docker_cli();
        cmd.args(["exec"]);
        if let Some(p) = password {
            cmd.args(["--env", &format!("PGPASSWORD={p}")]);
        }
        cmd.args([&db.id, "psql", "-w", "-h", &ip, "-tAc", "select 1"])
            .output()
            .unwrap()
    };
    assert!(
        !remote(None).status.success(),
        "no password needed over TCP"
    );
    ok(
        &remote(Some(&env["POSTGRES_PASSWORD"])),
        "psql over TCP with the password",
    );
    drop(db);

    let mut down = Launch::new(fixture, "db", "containers");
    down.server = Server::NotRunning;
    let down = down.start();
    for probe in &all {
        assert!(
            !probe.passes(&down),
            "db {} passes with no postgres",
            probe.kind
        );
    }
}

#[test]
fn mq_probes_pass_with_rabbitmq_up_and_fail_without_it() {
    let fixture = Fixture::get();
    probes_pass_up_and_fail_down(fixture, "mq");
}

#[test]
fn broker_service_probes_pass_with_the_server_up_and_fail_without_it() {
    let fixture = Fixture::get();
    std::thread::scope(|s| {
        for workload in ["restapi", "ttn-webhook", "ttn-decoder", "website"] {
            s.spawn(move || probes_pass_up_and_fail_down(fixture, workload));
        }
    });
}

/// Issue 19: a stop took 37 s on a real node, 30 of them the example
/// services ignoring SIGTERM (as PID 1 a process without a handler does).
#[test]
fn example_services_stop_promptly_on_sigterm() {
    let fixture = Fixture::get();
    std::thread::scope(|s| {
        for workload in [
            "restapi",
            "ttn-webhook",
            "ttn-decoder",
            "website",
            "ttn-processor",
            "lm",
            "delivery",
            "ydoc",
            "wombat",
        ] {
            s.spawn(move || {
                let mut launch = Launch::new(fixture, workload, "containers");
                launch
                    .extra_env
                    .push(("BROKER_EXAMPLE_STAY_UP".into(), "1".into()));
                let running = launch.start();
                let container =
                    &fixture.deployment(workload)["spec"]["template"]["spec"]["containers"][0];
                match probes(container).first() {
                    Some(probe) => {
                        probe
                            .passes_within(&running, Duration::from_secs(60))
                            .unwrap_or_else(|e| panic!("{e}"));
                    }
                    // Up once it has printed its banner (a SIGTERM before
                    // the handler is installed would be lost, as for any
                    // PID 1).
                    None => {
                        let deadline = Instant::now() + Duration::from_secs(60);
                        while !docker(&["logs", &running.id]).contains("broker-example") {
                            assert!(Instant::now() < deadline, "{workload} printed nothing");
                            std::thread::sleep(Duration::from_millis(300));
                        }
                    }
                }
                let state = docker(&["inspect", "-f", "{{.State.Running}}", &running.id]);
                assert_eq!(state, "true", "{workload} is not running before the stop");
                let started = Instant::now();
                docker(&["stop", "--time", "30", &running.id]);
                let took = started.elapsed();
                let code = docker(&["inspect", "-f", "{{.State.ExitCode}}", &running.id]);
                assert!(
                    took < Duration::from_secs(10),
                    "{workload} took {took:.1?} to stop (exit {code})"
                );
                eprintln!("{workload}: stopped in {took:.1?}, exit {code}");
            });
        }
    });
}

/// Issue 19 item 12: on a fresh single-node install the node directory is
/// root:root 0755; frred (uid 1000) could not write it. The rendered init
/// container gives it frred's group first.
#[test]
fn frred_writes_a_fresh_node_directory_after_its_init_container() {
    let fixture = Fixture::get();
    let pod = &fixture.deployment("frred")["spec"]["template"]["spec"];
    assert_eq!(pod["initContainers"].as_array().unwrap().len(), 1);
    let volume = pod["containers"][0]["volumeMounts"][0]["name"]
        .as_str()
        .unwrap()
        .to_owned();

    // Without the init container frred fails, as on the real node.
    let bare = node_directory();
    let mut frred = Launch::new(fixture, "frred", "containers");
    frred.host_dirs.insert(volume.clone(), bare.path().into());
    let out = frred.run();
    assert!(
        !out.status.success(),
        "frred wrote a root:root 0755 directory"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let dir = node_directory();
    let mut init = Launch::new(fixture, "frred", "initContainers");
    init.host_dirs.insert(volume.clone(), dir.path().into());
    ok(&init.run(), "frred's init container");
    let mut frred = Launch::new(fixture, "frred", "containers");
    frred.host_dirs.insert(volume, dir.path().into());
    let out = frred.run();
    ok(&out, "frred after its init container");
    let written: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        written.iter().any(|n| n.starts_with("frred-")),
        "{written:?}"
    );
}

/// Runs `workload`'s rotate-credentials script as `start
/// --rotate-credentials` has the API server's exec run it: `sh -c SCRIPT
/// rotate VARIABLE` in the running container, as its user, the new value
/// on standard input.
fn rotate(fixture: &Fixture, running: &Running, workload: &str, variable: &str, value: &str) {
    let script = fixture.deployment(workload)["metadata"]["annotations"]
        ["broker-images.io/rotate-credentials"]
        .as_str()
        .unwrap_or_else(|| panic!("{workload} has no rotate-credentials script"))
        .to_owned();
    let mut child = docker_cli()
        .args([
            "exec",
            "-i",
            &running.id,
            "sh",
            "-c",
            &script,
            "rotate",
            variable,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{value}").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    ok(&out, &format!("{workload}'s rotate-credentials script"));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!said.contains(value), "the script printed the new value");
}

/// Waits until every probe of the running workload passes.
fn until_probes_pass(fixture: &Fixture, running: &Running, workload: &str) {
    let container = Launch::new(fixture, workload, "containers").container;
    for probe in probes(container) {
        probe
            .passes_within(running, Duration::from_secs(120))
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

/// A password with the characters a careless script would break on.
const NEW_SECRET: &str = "n3w'pw\" ; select 1; -- $HOME `id`";

#[test]
fn db_rotate_credentials_script_changes_the_password_inside_a_running_postgres() {
    let fixture = Fixture::get();
    let container = &fixture.deployment("db")["spec"]["template"]["spec"]["containers"][0];
    let env = fixture.environment(container);
    let db = Launch::new(fixture, "db", "containers").start();
    until_probes_pass(fixture, &db, "db");
    let ip = docker(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", &db.id]);
    // Over TCP from another address, as the broker's services connect.
    let connects = |password: &str| {
        docker_cli()
            .args(["exec", "--env", &format!("PGPASSWORD={password}")])
            .args([&db.id, "psql", "-w", "-h", ip.trim(), "-tAc", "select 1"])
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(connects(&env["POSTGRES_PASSWORD"]));
    rotate(fixture, &db, "db", "POSTGRES_PASSWORD", NEW_SECRET);
    assert!(connects(NEW_SECRET), "the new password is refused");
    assert!(
        !connects(&env["POSTGRES_PASSWORD"]),
        "the old password still works"
    );
}

#[test]
fn mq_rotate_credentials_script_changes_the_password_inside_a_running_rabbitmq() {
    let fixture = Fixture::get();
    let container = &fixture.deployment("mq")["spec"]["template"]["spec"]["containers"][0];
    let env = fixture.environment(container);
    let mq = Launch::new(fixture, "mq", "containers").start();
    until_probes_pass(fixture, &mq, "mq");
    let user = env["RABBITMQ_DEFAULT_USER"].clone();
    let authenticates = |password: &str| {
        docker_cli()
            .args([
                "exec",
                &mq.id,
                "rabbitmqctl",
                "--quiet",
                "authenticate_user",
            ])
            .args([&user, password])
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(authenticates(&env["RABBITMQ_DEFAULT_PASS"]));
    rotate(fixture, &mq, "mq", "RABBITMQ_DEFAULT_PASS", NEW_SECRET);
    assert!(authenticates(NEW_SECRET), "the new password is refused");
    assert!(
        !authenticates(&env["RABBITMQ_DEFAULT_PASS"]),
        "the old password still works"
    );
}
