//! What a build is made of and what it records (issue 12, build side): the
//! provenance labels of every tree baked in, `verify` and `build
//! --registry` using what the build used, readable deps failures, an extra
//! CA for the deps stage that never reaches an image, and bases tracked by
//! digest.
//!
//! Each test runs the built binary on a tiny image spec on the busybox base
//! with the real Docker engine (and a real registry where one is needed).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use broker_test_support::{
    TestRegistry, Workspace, busybox, describe, git, remove_repository_from_engine_when_done,
    require_tool, run_ok, succeeded, unique_suffix,
};

/// The label prefix broker-build documents for further trees.
const TREE_LABEL: &str = "io.github.broker-images.source.ttn-formatters";

/// A workspace with a broker tree (not a git checkout), a formatters git
/// repository and an images folder holding one image, `tiny`, whose deps
/// Dockerfile is `dockerfile`.
struct Tiny {
    ws: Workspace,
    formatters_url: String,
    formatters_commit: String,
}

/// The deps images the engine built for `tiny` leave it when the test
/// process ends, as multi_platform.rs does for its image.
impl Drop for Tiny {
    fn drop(&mut self) {
        remove_repository_from_engine_when_done("broker-images/tiny");
    }
}

impl Tiny {
    fn new(dockerfile: &str) -> Self {
        let ws = Workspace::new(env!("CARGO_BIN_EXE_broker-images"));
        let app = ws.path("broker/app");
        std::fs::create_dir_all(&app).unwrap();
        std::fs::write(app.join("main.sh"), "echo tiny\n").unwrap();
        let formatters = ws.path("formatters");
        std::fs::create_dir_all(formatters.join("uplink")).unwrap();
        std::fs::write(formatters.join("uplink/a.js"), "module.exports = 1;\n").unwrap();
        git(&formatters, &["init", "--quiet", "-b", "main"]);
        git(&formatters, &["add", "."]);
        git(&formatters, &["commit", "--quiet", "-m", "formatters"]);
        let formatters_commit = git(&formatters, &["rev-parse", "HEAD"]);
        let tiny = ws.path("images/tiny");
        std::fs::create_dir_all(&tiny).unwrap();
        std::fs::write(tiny.join("Dockerfile"), dockerfile).unwrap();
        std::fs::write(
            tiny.join("image.yaml"),
            "deps:\n  base: unused/base:1\nlayers:\n  - name: app\n    from: app\n    to: /app\n  - name: formatters\n    tree: ttn-formatters\n    from: .\n    to: /formatters\nconfig:\n  cmd: [\"sh\", \"/app/main.sh\"]\n",
        )
        .unwrap();
        Self {
            formatters_url: format!("file://{}", formatters.display()),
            formatters_commit,
            ws,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.ws.path(rel)
    }

    /// `broker-images SUBCOMMAND` on this workspace's trees, without a base.
    fn bare(&self, subcommand: &str) -> Command {
        let mut cmd = self.ws.command(&[subcommand]);
        cmd.arg("--images")
            .arg(self.path("images"))
            .arg("--source")
            .arg(self.path("broker"))
            .arg("--cache")
            .arg(self.path("cache"))
            .arg("--lock")
            .arg(self.path("images.lock"))
            .args([
                "--formatters",
                &self.formatters_url,
                "--formatters-rev",
                &self.formatters_commit,
            ]);
        cmd
    }

    /// `bare(subcommand)` with `--base tiny=<base>`.
    fn command(&self, subcommand: &str, base: &str) -> Command {
        let mut cmd = self.bare(subcommand);
        cmd.arg("--base").arg(format!("tiny={base}"));
        cmd
    }

    fn lock(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.path("images.lock")).unwrap()).unwrap()
    }

    /// The labels of the store's image `name`, read from its stored config.
    fn labels(&self, name: &str) -> HashMap<String, String> {
        let image = self.ws.store().image(name).unwrap();
        image
            .config
            .config()
            .as_ref()
            .and_then(|c| c.labels().clone())
            .unwrap_or_default()
    }
}

/// What `skopeo inspect docker://<reference>` says (plain HTTP, no
/// credentials).
fn skopeo_inspect(reference: &str) -> serde_json::Value {
    require_tool("skopeo", "apt-get install -y skopeo");
    let out = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--no-creds"])
        .arg(format!("docker://{reference}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo inspect: {}", describe(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The labels skopeo reads from `docker://<reference>`.
fn skopeo_labels(reference: &str) -> serde_json::Value {
    skopeo_inspect(reference)["Labels"].clone()
}

const PLAIN: &str = "ARG BASE\nFROM ${BASE}\n";

/// Issue 12 item 1: every tree baked in is named in the labels, the broker
/// revision comes from `--source-revision` or its environment variable when
/// the tree is no checkout (else one line says so and the lock records
/// "unknown"), and the base label names the real base.
#[test]
fn images_record_the_provenance_of_every_tree_and_the_real_base() {
    let base = busybox();
    let tiny = Tiny::new(PLAIN);

    // No revision anywhere: one line says so; the lock says "unknown".
    let err = succeeded(&tiny.command("build", &base.docker_ref).output().unwrap());
    let notes = lines_with(&err, "not a git checkout");
    assert_eq!(notes.len(), 1, "{err}");
    assert!(notes[0].contains("--source-revision"), "{err}");
    let lock = tiny.lock();
    assert_eq!(
        lock["images"]["tiny"]["sources"]["app"]["revision"],
        "unknown"
    );
    let labels = tiny.labels("tiny");
    assert!(
        !labels.contains_key("org.opencontainers.image.revision"),
        "{labels:?}"
    );
    assert_eq!(
        labels[&format!("{TREE_LABEL}.revision")],
        tiny.formatters_commit
    );
    assert_eq!(labels[&format!("{TREE_LABEL}.source")], tiny.formatters_url);
    assert_eq!(
        labels["org.opencontainers.image.base.name"], base.docker_ref,
        "the real base, not the internal deps tag"
    );
    let unlabelled = tiny.ws.store().resolve("tiny").unwrap();

    // --source-revision: the label and the lock carry it; nothing is noted.
    let registry = TestRegistry::start();
    let prefix = format!("{}/prov-{}", registry.host(), unique_suffix());
    let mut cmd = tiny.command("build", &base.docker_ref);
    cmd.args([
        "--source-revision",
        "1234abcd",
        "--push",
        "--registry",
        &prefix,
    ]);
    let err = succeeded(&cmd.output().unwrap());
    assert!(!err.contains("not a git checkout"), "{err}");
    let labels = tiny.labels("tiny");
    assert_eq!(labels["org.opencontainers.image.revision"], "1234abcd");
    let lock = tiny.lock();
    assert_eq!(
        lock["images"]["tiny"]["sources"]["app"]["revision"],
        "1234abcd"
    );
    assert_eq!(
        lock["images"]["tiny"]["sources"]["formatters"]["revision"],
        tiny.formatters_commit.as_str()
    );
    // What a registry client sees.
    let pinned = lock["images"]["tiny"]["reference"].as_str().unwrap();
    let pushed = skopeo_labels(pinned);
    assert_eq!(pushed["org.opencontainers.image.revision"], "1234abcd");
    assert_eq!(
        pushed[format!("{TREE_LABEL}.revision")],
        tiny.formatters_commit.as_str()
    );
    assert_eq!(
        pushed["org.opencontainers.image.base.name"],
        base.docker_ref.as_str()
    );
    let first = tiny.ws.store().resolve("tiny").unwrap();
    assert_ne!(first.digest(), unlabelled.digest());

    // The environment variable CI sets does the same, and the labels are
    // deterministic: the same revision gives the same digest.
    let mut cmd = tiny.command("build", &base.docker_ref);
    cmd.env("BROKER_IMAGES_SOURCE_REVISION", "1234abcd");
    succeeded(&cmd.output().unwrap());
    assert_eq!(
        tiny.ws.store().resolve("tiny").unwrap().digest(),
        first.digest()
    );
}

fn failed(out: &Output) -> String {
    assert!(!out.status.success(), "expected failure: {}", describe(out));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// An engine address nothing answers at: a command that succeeds with it
/// used no engine.
const NO_ENGINE: &str = "unix:///nonexistent/docker.sock";

/// Issue 12 item 3: verify rebuilds on the bases and build args the lock
/// records (the same deps key), takes `--registry` as its error advises,
/// and `build --registry` without `--push` finds deps images there.
#[test]
fn verify_and_build_use_what_the_build_used() {
    let base = busybox();
    let tiny =
        Tiny::new("ARG BASE\nFROM ${BASE}\nARG FLAVOUR=plain\nRUN echo \"$FLAVOUR\" > /flavour\n");
    let registry = TestRegistry::start();
    let prefix = format!("{}/verify-{}", registry.host(), unique_suffix());
    let wipe_store = || {
        std::fs::remove_dir_all(tiny.path("store")).unwrap();
        std::fs::create_dir_all(tiny.path("store")).unwrap();
    };

    let mut build = tiny.command("build", &base.docker_ref);
    build.args([
        "--build-arg",
        "tiny:FLAVOUR=spicy",
        "--source-revision",
        "r1",
    ]);
    build.args(["--push", "--registry", &prefix]);
    let err = succeeded(&build.output().unwrap());
    // Issue 22 item 6: build --push says what it pushed, as push does.
    assert!(
        err.lines().any(|l| l.starts_with("   pushed tiny: ")
            && l.contains(" uploaded (")
            && l.contains(" mounted, ")),
        "{err}"
    );
    let lock = tiny.lock();
    assert_eq!(lock["images"]["tiny"]["build_args"]["FLAVOUR"], "spicy");
    assert_eq!(lock["images"]["tiny"]["base"], base.docker_ref.as_str());
    let digest = lock["images"]["tiny"]["digest"]
        .as_str()
        .unwrap()
        .to_owned();

    // verify with none of the build's flags, no engine, an empty store:
    // the lock's base, args and revision give the same key and digest.
    wipe_store();
    let mut verify = tiny.bare("verify");
    verify.env("DOCKER_HOST", NO_ENGINE);
    let out = verify.output().unwrap();
    succeeded(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("tiny {digest} reproduced")),
        "{stdout}"
    );

    // build --registry without --push: deps from the registry, nothing
    // pushed, the lock names the store image.
    wipe_store();
    let uploads = registry.blob_upload_count();
    let mut build = tiny.command("build", &base.docker_ref);
    build.args([
        "--build-arg",
        "tiny:FLAVOUR=spicy",
        "--source-revision",
        "r1",
    ]);
    build
        .args(["--registry", &prefix])
        .env("DOCKER_HOST", NO_ENGINE);
    let err = succeeded(&build.output().unwrap());
    assert!(err.contains(&format!("from {prefix}/tiny")), "{err}");
    assert_eq!(
        registry.blob_upload_count(),
        uploads,
        "pushed without --push"
    );
    let lock = tiny.lock();
    assert_eq!(
        lock["images"]["tiny"]["reference"],
        format!("tiny@{digest}")
    );

    // The lock no longer says where the build pushed: verify says to pass
    // --registry, and --registry exists.
    wipe_store();
    let mut verify = tiny.bare("verify");
    verify.env("DOCKER_HOST", NO_ENGINE);
    let err = failed(&verify.output().unwrap());
    assert!(err.contains("pass --registry"), "{err}");
    let mut verify = tiny.bare("verify");
    verify
        .args(["--registry", &prefix])
        .env("DOCKER_HOST", NO_ENGINE);
    let out = verify.output().unwrap();
    succeeded(&out);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("reproduced"),
        "{}",
        describe(&out)
    );
}

/// Issue 12 item 8: a deps step failing with a pip-like error amid noise
/// and colour codes shows the error line (not only the last lines), no
/// terminal escapes, the tail, and the path of the full log in the store.
#[test]
fn deps_failures_show_the_first_error_and_keep_the_full_log() {
    let base = busybox();
    let tiny = Tiny::new(concat!(
        "ARG BASE\nFROM ${BASE}\n",
        "RUN i=0; while [ $i -lt 50 ]; do echo \"collecting noise-$i\"; i=$((i+1)); done; ",
        "printf '\\033[1;31mERROR: No matching distribution found for pandas==9.9\\033[0m\\n'; ",
        "i=0; while [ $i -lt 40 ]; do printf '\\033[32mcleanup-%s\\033[0m\\n' $i; i=$((i+1)); done; exit 1\n",
    ));
    let err = failed(&tiny.command("build", &base.docker_ref).output().unwrap());
    assert!(
        !err.contains('\u{1b}'),
        "terminal escapes passed through: {err:?}"
    );
    assert!(
        err.contains("ERROR: No matching distribution found for pandas==9.9"),
        "{err}"
    );
    assert!(err.contains("cleanup-39"), "the tail: {err}");
    assert!(
        !err.contains("collecting noise-10\n"),
        "all the noise: {err}"
    );
    let error_lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(error_lines.len(), 1, "{err}");
    assert!(error_lines[0].contains("non-zero code: 1"), "{err}");
    let log = error_lines[0]
        .split("full log: ")
        .nth(1)
        .unwrap_or_else(|| panic!("no log path: {err}"));
    let log = PathBuf::from(log.trim());
    assert!(log.starts_with(tiny.path("store")), "{}", log.display());
    let full = std::fs::read_to_string(&log).unwrap();
    for line in [
        "collecting noise-0",
        "collecting noise-49",
        "ERROR: No matching",
        "cleanup-39",
    ] {
        assert!(full.contains(line), "{line} missing from the log: {full}");
    }
    assert!(!full.contains('\u{1b}'), "{full:?}");
}

/// Issue 12 item 5: one image whose deps step fails does not stop the
/// others; they are built and locked, and the error names the one that
/// failed, once, and exits non-zero.
#[test]
fn one_failing_deps_build_does_not_stop_the_other_images() {
    let base = busybox();
    let tiny = Tiny::new("ARG BASE\nFROM ${BASE}\nRUN echo 'ERROR: no such package'; exit 3\n");
    let good = tiny.path("images/good");
    std::fs::create_dir_all(&good).unwrap();
    std::fs::write(good.join("Dockerfile"), "ARG BASE\nFROM ${BASE}\n").unwrap();
    std::fs::write(
        good.join("image.yaml"),
        "deps:\n  base: unused/base:1\nlayers:\n  - name: app\n    from: app\n    to: /app\nconfig:\n  cmd: [\"sh\", \"/app/main.sh\"]\n",
    )
    .unwrap();
    let out = tiny
        .command("build", &base.docker_ref)
        .arg("--base")
        .arg(format!("good={}", base.docker_ref))
        .output()
        .unwrap();
    let err = failed(&out);
    let error_lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(error_lines.len(), 1, "{err}");
    assert!(
        error_lines[0].starts_with("error: 1 of 2 images not built: tiny: "),
        "{err}"
    );
    assert!(!error_lines[0].contains("good"), "{err}");
    assert!(!error_lines[0].contains("tiny: tiny"), "{err}");
    let lock = tiny.lock();
    assert!(lock["images"]["good"]["digest"].is_string(), "{lock}");
    assert!(lock["images"].get("tiny").is_none(), "{lock}");
    assert!(tiny.ws.store().image("good").is_ok());
}

/// `openssl ARGS…` in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let openssl = require_tool("openssl", "apt-get install -y openssl");
    run_ok(Command::new(openssl).current_dir(dir).args(args));
}

/// An HTTPS server on 127.0.0.1 with a certificate from a throwaway CA,
/// stopped when dropped.
struct HttpsServer {
    child: std::process::Child,
    port: u16,
    ca: PathBuf,
    _dir: tempfile::TempDir,
}

impl HttpsServer {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-subj",
                "/CN=throwaway deps CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        openssl(
            d,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        );
        std::fs::write(
            d.join("ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nauthorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n",
        )
        .unwrap();
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "1",
                "-out",
                "server.pem",
                "-extfile",
                "ext",
            ],
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("openssl")
            .current_dir(d)
            .args([
                "s_server",
                "-quiet",
                "-www",
                "-cert",
                "server.pem",
                "-key",
                "server.key",
            ])
            .arg("-accept")
            .arg(format!("127.0.0.1:{port}"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "openssl s_server did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Self {
            child,
            port,
            ca: d.join("ca.pem"),
            _dir: dir,
        }
    }
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every blob file under `dir` whose bytes (gunzipped when gzip) contain
/// `needle`.
fn blobs_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let mut bytes = std::fs::read(&path).unwrap();
            if bytes.starts_with(&[0x1f, 0x8b]) {
                let out = Command::new("gzip")
                    .arg("-dc")
                    .stdin(std::fs::File::open(&path).unwrap())
                    .output()
                    .unwrap();
                assert!(out.status.success(), "gzip -dc {}", path.display());
                bytes = out.stdout;
            }
            if bytes.windows(needle.len()).any(|w| w == needle) {
                found.push(path);
            }
        }
    }
    found
}

/// Issue 12 item 7: `--deps-ca-file` lets a RUN step fetch over HTTPS from
/// a server whose certificate a throwaway CA signed (without it the step
/// fails), the CA reaches no layer and no config stored or pushed, and
/// the deps key is the same without it.
#[test]
fn a_deps_ca_is_trusted_during_run_and_stored_nowhere() {
    let base = broker_test_support::debian_minbase();
    let server = HttpsServer::start();
    let tiny = Tiny::new(&format!(
        "ARG BASE\nFROM ${{BASE}}\nRUN python3 -c \"import urllib.request as u; print('fetched', u.urlopen('https://127.0.0.1:{}/').status)\"\n",
        server.port
    ));
    let registry = TestRegistry::start();
    let prefix = format!("{}/ca-{}", registry.host(), unique_suffix());

    let mut without = tiny.command("build", &base.docker_ref);
    without.args(["--deps-network", "host"]);
    let err = failed(&without.output().unwrap());
    assert!(err.contains("CERTIFICATE_VERIFY_FAILED"), "{err}");

    let mut with = tiny.command("build", &base.docker_ref);
    with.args(["--deps-network", "host", "--push", "--registry", &prefix]);
    with.env("BROKER_IMAGES_DEPS_CA_FILE", &server.ca);
    succeeded(&with.output().unwrap());

    let pem = std::fs::read_to_string(&server.ca).unwrap();
    let body_line = pem.lines().nth(3).unwrap();
    assert_eq!(body_line.len(), 64, "{pem}");
    for dir in [
        tiny.path("store").join("blobs"),
        registry.storage_dir().to_path_buf(),
    ] {
        let found = blobs_containing(&dir, body_line.as_bytes());
        assert!(found.is_empty(), "the CA is stored in {found:?}");
    }
    let store = tiny.ws.store();
    let config = serde_json::to_string(&store.image("tiny").unwrap().config).unwrap();
    assert!(!config.contains(".broker-images-deps-ca"), "{config}");

    // Nor does the engine keep an image holding it.
    let key = tiny.lock()["images"]["tiny"]["deps_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let engine_image = format!("broker-images/tiny:deps-{}", &key[..32]);
    let inspect = broker_test_support::docker_cli()
        .args(["image", "inspect", &engine_image])
        .output()
        .unwrap();
    assert!(
        !inspect.status.success(),
        "{engine_image} is still in the engine"
    );

    // The same key without the CA: the deps image is found in the store,
    // no engine needed.
    let key = tiny.lock()["images"]["tiny"]["deps_key"].clone();
    let mut again = tiny.command("build", &base.docker_ref);
    again.env("DOCKER_HOST", NO_ENGINE);
    succeeded(&again.output().unwrap());
    assert_eq!(tiny.lock()["images"]["tiny"]["deps_key"], key);
}

fn docker(args: &[&str]) -> String {
    run_ok(broker_test_support::docker_cli().args(args))
        .trim()
        .to_owned()
}

/// The registry digest the engine recorded for `reference` (pushed).
fn repo_digest(reference: &str) -> String {
    let digests = docker(&[
        "image",
        "inspect",
        "--format",
        "{{json .RepoDigests}}",
        reference,
    ]);
    let digests: Vec<String> = serde_json::from_str(&digests).unwrap();
    let repo = reference.rsplit_once(':').unwrap().0;
    digests
        .iter()
        .find_map(|d| d.strip_prefix(&format!("{repo}@")))
        .unwrap_or_else(|| panic!("no RepoDigest of {repo}: {digests:?}"))
        .to_owned()
}

/// Replaces the content behind `reference` in its registry with the old
/// content plus a file, as a re-tagged `python:3.10` with security fixes.
fn retag_with_new_content(reference: &str, marker: &str) -> String {
    let name = format!("retag-{}", unique_suffix());
    docker(&[
        "run",
        "--name",
        &name,
        reference,
        "sh",
        "-c",
        &format!("echo {marker} > /{marker}"),
    ]);
    docker(&["commit", &name, reference]);
    docker(&["rm", &name]);
    docker(&["push", reference]);
    repo_digest(reference)
}

/// `build --json` on `base`; the image's result object.
fn build_json(tiny: &Tiny, base: &str, extra: &[&str]) -> serde_json::Value {
    let mut cmd = tiny.command("build", base);
    cmd.arg("--json").args(extra);
    let out = cmd.output().unwrap();
    succeeded(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["images"][0].clone()
}

/// Issue 12 item 2: a base re-tagged to new content in its registry gives
/// a new deps key (deps rebuilt) while every source layer comes from the
/// cache with the same digest; the lock records the base digest, and
/// `--offline` keeps the recorded one.
#[test]
fn a_retagged_base_rebuilds_deps_and_reuses_every_source_layer() {
    let registry = TestRegistry::start();
    let base = format!("{}/base-{}/bb:1", registry.host(), unique_suffix());
    docker(&["tag", &busybox().docker_ref, &base]);
    docker(&["push", &base]);
    let v1 = repo_digest(&base);
    let tiny = Tiny::new("ARG BASE\nFROM ${BASE}\nRUN echo deps > /deps\n");

    // --offline with no lock recording the base: one line says what to do.
    let mut offline = tiny.command("build", &base);
    offline.arg("--offline");
    let err = failed(&offline.output().unwrap());
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(errors[0].contains("no recorded digest"), "{err}");

    let first = build_json(&tiny, &base, &[]);
    assert_eq!(first["deps_origin"], "engine");
    let lock1 = tiny.lock();
    assert_eq!(lock1["images"]["tiny"]["base_digest"], v1.as_str());
    assert_eq!(
        tiny.labels("tiny")["org.opencontainers.image.base.name"],
        format!("{base}@{v1}")
    );
    assert_eq!(
        tiny.labels("tiny")["org.opencontainers.image.base.digest"],
        v1
    );

    let v2 = retag_with_new_content(&base, "security-fix");
    assert_ne!(v1, v2);
    let second = build_json(&tiny, &base, &[]);
    assert_eq!(
        second["deps_origin"], "engine",
        "deps not rebuilt: {second}"
    );
    assert_ne!(second["deps_key"], first["deps_key"]);
    for (layer, built) in second["layers"].as_object().unwrap() {
        assert_eq!(built[0], first["layers"][layer][0], "{layer} changed");
        assert_eq!(built[1], true, "{layer} was not taken from the cache");
    }
    let lock2 = tiny.lock();
    assert_eq!(lock2["images"]["tiny"]["base_digest"], v2.as_str());
    assert_ne!(
        lock2["images"]["tiny"]["deps_digest"],
        lock1["images"]["tiny"]["deps_digest"]
    );
    assert_eq!(
        lock2["images"]["tiny"]["sources"], lock1["images"]["tiny"]["sources"],
        "source layers are byte-identical"
    );
    // The deps image holds the new content.
    let deps = tiny.ws.store().image("tiny").unwrap();
    assert_eq!(
        deps.manifest.layers().len(),
        1 + 1 + 1 + 2,
        "busybox + security-fix + RUN + two source layers"
    );

    // --offline keeps the recorded digest: a third re-tag is not seen.
    let v3 = retag_with_new_content(&base, "another-fix");
    let offline = build_json(&tiny, &base, &["--offline"]);
    assert_eq!(offline["deps_origin"], "store");
    assert_eq!(offline["deps_key"], second["deps_key"]);
    assert_eq!(tiny.lock()["images"]["tiny"]["base_digest"], v2.as_str());
    let online = build_json(&tiny, &base, &[]);
    assert_eq!(tiny.lock()["images"]["tiny"]["base_digest"], v3.as_str());
    assert_ne!(online["deps_key"], second["deps_key"]);
}

/// The lines of `output` that contain `needle`.
fn lines_with<'a>(output: &'a str, needle: &str) -> Vec<&'a str> {
    output.lines().filter(|l| l.contains(needle)).collect()
}

/// How many of `requests` with `method` name the blob `digest` in their
/// query (a PUT closing its upload, a POST mounting it).
fn blob_requests(
    requests: &[broker_test_support::RequestRecord],
    method: &str,
    digest: &str,
) -> usize {
    let hex = digest.trim_start_matches("sha256:");
    requests
        .iter()
        .filter(|r| r.method == method && r.query().contains(hex))
        .count()
}

/// The layer digests of `reference` as its registry serves it.
fn registry_layers(reference: &str) -> Vec<String> {
    skopeo_inspect(reference)["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_owned())
        .collect()
}

/// Issue 14: a base the engine pulled from a registry keeps that
/// registry's compressed layers in the deps image (nothing recompressed:
/// the same digest on every machine, whatever the thread count), they reach
/// the target registry in one upload however many images share them, and a
/// base registry that cannot answer only means they are compressed here.
#[test]
fn a_registry_base_keeps_its_registry_layers_and_they_are_uploaded_once() {
    let upstream = TestRegistry::start();
    let base = format!("{}/library/bb-{}:1", upstream.host(), unique_suffix());
    docker(&["tag", &busybox().docker_ref, &base]);
    docker(&["push", &base]);
    let base_layers = registry_layers(&base);
    let dockerfile = "ARG BASE\nFROM ${BASE}\nRUN echo deps > /deps\n";

    let target = TestRegistry::start();
    let tiny = Tiny::new(dockerfile);
    let mut build = tiny.command("build", &base);
    build
        .args(["--json", "--push", "--registry"])
        .arg(format!("{}/first", target.host()));
    let out = build.output().unwrap();
    let err = succeeded(&out);
    assert!(
        err.contains("layers kept as its registry compressed them"),
        "{err}"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let built = &v["images"][0];
    let pushed = built["pushed"]["pinned"].as_str().unwrap();
    let layers = registry_layers(pushed);
    assert_eq!(layers[..base_layers.len()], base_layers[..], "{layers:?}");
    // Each base layer went to the target once (ahead of the images), then
    // only mounted or found: the deps image and the image share it.
    let requests = target.requests();
    for layer in &base_layers {
        let uploads = blob_requests(&requests, "PUT", layer);
        assert_eq!(uploads, 1, "{layer} uploaded {uploads} times");
    }

    // Pushed to the base's own registry (Docker Hub and library/python):
    // its layers are mounted from the base's repository, never uploaded.
    let same = Tiny::new(dockerfile);
    let mut build = same.command("build", &base);
    build
        .args(["--push", "--registry"])
        .arg(format!("{}/mine", upstream.host()));
    succeeded(&build.output().unwrap());
    let requests = upstream.requests();
    for layer in &base_layers {
        let puts = blob_requests(&requests, "PUT", layer);
        assert_eq!(puts, 1, "{layer}: only the base's own push uploads it");
        let mounts: Vec<_> = requests
            .iter()
            .filter(|r| r.query().contains("mount="))
            .cloned()
            .collect();
        assert!(
            blob_requests(&mounts, "POST", layer) >= 1,
            "{layer} was not mounted"
        );
    }

    // Another machine (an empty store), one compression thread: the same
    // deps image. (Not the same image: the workspace's formatters commit
    // differs.)
    let other = Tiny::new(dockerfile);
    let mut again = other.command("build", &base);
    again.args(["--json", "--layer-threads", "1"]);
    let out = again.output().unwrap();
    succeeded(&out);
    let deps_digest = |t: &Tiny| t.lock()["images"]["tiny"]["deps_digest"].clone();
    assert_eq!(
        deps_digest(&other),
        deps_digest(&tiny),
        "{:#}\n{:#}",
        tiny.lock(),
        other.lock()
    );

    // The base's registry gone: the build says so in one line and
    // compresses the base layer itself.
    // (The engine keeps the base: it was tagged there, not pulled.)
    upstream.keep_engine_references_until_exit();
    drop(upstream);
    let third = Tiny::new(dockerfile);
    let mut offline_base = third.command("build", &base);
    offline_base.arg("--json");
    let out = offline_base.output().unwrap();
    let err = succeeded(&out);
    let said = lines_with(&err, "compressing them here");
    assert_eq!(said.len(), 1, "{err}");
    let stored = third.ws.store().image("tiny").unwrap();
    assert_ne!(
        stored.manifest.layers()[0].digest().to_string(),
        base_layers[0],
        "the base layer cannot be the registry's blob without the registry"
    );
}

/// Issue 14: with `--push`, a large layer compressed here goes up while
/// it is compressed (PATCH pieces, then the PUT naming its digest), once;
/// A rebuild of what the registry holds asks it one thing per image, what
/// its tag points at: the question goes out while the image is built (the
/// push then has nothing left to ask), and it is not asked twice.
#[test]
fn a_no_change_build_push_asks_the_registry_once_per_image() {
    let registry = TestRegistry::start();
    let tiny = Tiny::new("ARG BASE\nFROM ${BASE}\n");
    let push = || {
        let mut build = tiny.command("build", &busybox().docker_ref);
        build
            .args(["--push", "--registry"])
            .arg(format!("{}/ahead", registry.host()));
        build.output().unwrap()
    };
    succeeded(&push());
    let before = registry.requests().len();
    let again = push();
    let err = succeeded(&again);
    assert!(err.contains("0 uploaded (0 B sent), 0 mounted"), "{err}");
    let asked: Vec<String> = registry.requests()[before..]
        .iter()
        .map(|r| format!("{} {} {}", r.method, r.path, r.status))
        .collect();
    assert_eq!(
        asked,
        ["GET /v2/ 200", "HEAD /v2/ahead/tiny/manifests/latest 200"],
        "{err}"
    );
}

/// the publish then finds it there.
#[test]
fn a_large_layer_compressed_here_is_uploaded_while_it_is_compressed() {
    let registry = TestRegistry::start();
    // 40 MiB that do not compress: well above the streaming threshold.
    let tiny = Tiny::new(
        "ARG BASE\nFROM ${BASE}\nRUN dd if=/dev/urandom of=/big bs=1048576 count=40 2>/dev/null\n",
    );
    let mut build = tiny.command("build", &busybox().docker_ref);
    build
        .args(["--json", "--push", "--registry"])
        .arg(format!("{}/streamed", registry.host()));
    let out = build.output().unwrap();
    let err = succeeded(&out);
    let streamed = lines_with(&err, "(while compressing)");
    assert_eq!(streamed.len(), 1, "{err}");
    let stored = tiny.ws.store().image("tiny").unwrap();
    let big = stored
        .manifest
        .layers()
        .iter()
        .max_by_key(|l| l.size())
        .unwrap()
        .digest()
        .to_string();
    assert!(streamed[0].contains(&big[7..19]), "{big}: {}", streamed[0]);
    let requests = registry.requests();
    let puts = blob_requests(&requests, "PUT", &big);
    assert_eq!(puts, 1, "{big} stored {puts} times");
    assert!(
        requests.iter().filter(|r| r.method == "PATCH").count() >= 5,
        "40 MiB in 8 MiB pieces"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pushed = v["images"][0]["pushed"]["pinned"].as_str().unwrap();
    assert!(registry_layers(pushed).contains(&big));
}
