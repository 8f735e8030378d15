//! The `broker-images` binary against real registries: credentials from a
//! Docker credential helper, a wrong `--password-stdin`, TLS with and without
//! `--ca-file`, a push killed half-way and resumed, and `mirror`.
//!
//! Every test runs the built binary with its own `DOCKER_CONFIG` and its own
//! store, filled with a synthetic image (registries do not look inside
//! layers).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use broker_oci::Digest;
use broker_test_support::{TestRegistry, Workspace, require_tool, synthetic};

fn workspace() -> Workspace {
    Workspace::new(env!("CARGO_BIN_EXE_broker-images"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn describe(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// The digest of the manifest skopeo reads from `docker://<pinned>`.
fn skopeo_digest(registry: &TestRegistry, pinned: &str) -> Digest {
    require_tool("skopeo", "apt-get install -y skopeo");
    let mut cmd = Command::new("skopeo");
    cmd.args(["inspect", "--raw"]);
    match registry.cert_dir() {
        Some(dir) => cmd.arg(format!("--cert-dir={}", dir.display())),
        None => cmd.arg("--tls-verify=false"),
    };
    if let Some((user, password)) = registry.credentials() {
        cmd.arg(format!("--creds={user}:{password}"));
    }
    let out = cmd.arg(format!("docker://{pinned}")).output().unwrap();
    assert!(
        out.status.success(),
        "skopeo inspect {pinned}: {}",
        describe(&out)
    );
    Digest::of(&out.stdout)
}

/// Installs `docker-credential-<name>` into the workspace's `bin/`: it
/// answers `get` for `host` only, and logs every server URL it was asked
/// for to `helper.log`.
fn install_credential_helper(ws: &Workspace, name: &str, host: &str, user: &str, secret: &str) {
    let log = ws.path("helper.log");
    let script = format!(
        r#"#!/bin/sh
set -eu
[ "${{1:-}}" = get ] || {{ echo "unsupported action ${{1:-}}" >&2; exit 1; }}
# Like Docker, the client writes the server URL without a newline.
url=$(cat)
echo "$url" >> '{log}'
if [ "$url" = '{host}' ]; then
  printf '{{"ServerURL":"%s","Username":"{user}","Secret":"{secret}"}}\n' "$url"
else
  echo "credentials not found in native keychain"
  exit 1
fi
"#,
        log = log.display()
    );
    let path = ws.path("bin").join(format!("docker-credential-{name}"));
    std::fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn push_with_credentials_from_a_credential_helper() {
    let registry = TestRegistry::start_with_auth("ci", "helper-s3cret");
    let ws = workspace();
    let digest = synthetic::image(&ws.store(), "app", 1, 2, 64 * 1024).digest;
    let other = synthetic::image(&ws.store(), "worker", 2, 1, 32 * 1024).digest;
    install_credential_helper(&ws, "brokertest", &registry.host(), "ci", "helper-s3cret");
    let prefix = format!("{}/broker", registry.host());

    // A helper that fails is named (once, correctly) and its output, which
    // may echo secrets, is not shown.
    let broken = ws.path("bin").join("docker-credential-brokenhelper");
    std::fs::write(
        &broken,
        "#!/bin/sh\ncat >/dev/null\necho 'leaked-helper-output'; echo 'leaked-helper-stderr' >&2; exit 3\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&broken, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        ws.path("docker/config.json"),
        format!(
            r#"{{"credHelpers":{{"{}":"brokenhelper"}}}}"#,
            registry.host()
        ),
    )
    .unwrap();
    let out = ws.run(&["push", "app", "--registry", &prefix, "--tag", "v1"]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        stderr.contains("`docker-credential-brokenhelper` failed")
            && !stderr.contains("docker-credential-docker-credential"),
        "{stderr}"
    );
    assert!(!stderr.contains("leaked-helper"), "{stderr}");

    std::fs::write(
        ws.path("docker/config.json"),
        format!(
            r#"{{"credHelpers":{{"{}":"brokertest"}}}}"#,
            registry.host()
        ),
    )
    .unwrap();
    let out = ws.run(&[
        "push",
        "app",
        "worker",
        "--registry",
        &prefix,
        "--tag",
        "v1",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        text(&out.stdout),
        format!("{prefix}/app@{digest}\n{prefix}/worker@{other}\n"),
        "stdout holds exactly the pinned references"
    );
    let asked = std::fs::read_to_string(ws.path("helper.log")).unwrap();
    assert!(
        asked.lines().all(|l| l == registry.host()) && !asked.is_empty(),
        "the helper was asked for: {asked:?}"
    );
    assert!(!text(&out.stderr).contains("helper-s3cret"));
    assert!(registry.has_tag("broker/app", "v1"));
    assert!(registry.has_tag("broker/worker", "v1"));
    assert_eq!(
        skopeo_digest(&registry, &format!("{prefix}/app@{digest}")),
        digest
    );
}

#[test]
fn wrong_password_is_one_clear_error_and_never_printed() {
    let password = "correct-horse-battery";
    let wrong = "Tr0ub4dor-and-3";
    let registry = TestRegistry::start_with_auth("ci", password);
    let ws = workspace();
    synthetic::image(&ws.store(), "app", 3, 1, 16 * 1024);
    let prefix = format!("{}/broker", registry.host());
    let base = [
        "push",
        "app",
        "--registry",
        &prefix,
        "--username",
        "ci",
        "--password-stdin",
    ];
    for extra in [
        &[][..],
        &["-v", "-v"][..],
        &["--json"][..],
        &["--json", "-vv"][..],
    ] {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let out = ws.run_with_stdin(&args, &format!("{wrong}\n"));
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(!out.status.success(), "{extra:?}: {}", describe(&out));
        for secret in [wrong, password] {
            assert!(
                !stdout.contains(secret) && !stderr.contains(secret),
                "{extra:?}: a password leaked:\n{}",
                describe(&out)
            );
        }
        // One error: a line, or with --json one JSON object (its chain
        // joined as the line would say it).
        let errors: Vec<String> = if extra.contains(&"--json") {
            stderr
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|v| v.get("error").is_some())
                .map(|v| {
                    let causes = v["causes"].as_array().into_iter().flatten();
                    std::iter::once(&v["error"])
                        .chain(causes)
                        .filter_map(|c| c.as_str())
                        .collect::<Vec<_>>()
                        .join(": ")
                })
                .collect()
        } else {
            let lines = stderr.lines().filter(|l| l.starts_with("error:"));
            lines.map(str::to_owned).collect()
        };
        assert_eq!(errors.len(), 1, "{extra:?}: {}", describe(&out));
        assert!(
            errors[0].contains(&registry.host()),
            "{extra:?}: the error does not name the registry: {}",
            errors[0]
        );
        assert!(
            stderr.contains("refused user `ci`") && stderr.contains("check the password"),
            "{extra:?}: the error does not say what to do:\n{stderr}"
        );
        assert!(stdout.trim().is_empty(), "{extra:?}: {stdout}");
    }
    assert!(!registry.has_tag("broker/app", "latest"));

    // And the right password works, through the same flag.
    let out = ws.run_with_stdin(&base, &format!("{password}\n"));
    assert!(out.status.success(), "{}", describe(&out));
    assert!(registry.has_tag("broker/app", "latest"));
}

#[test]
fn tls_registry_needs_ca_file() {
    let registry = TestRegistry::start_tls();
    let ws = workspace();
    let digest = synthetic::image(&ws.store(), "app", 4, 1, 16 * 1024).digest;
    let prefix = format!("{}/broker", registry.host());

    let out = ws.run(&["push", "app", "--registry", &prefix]);
    assert!(!out.status.success(), "{}", describe(&out));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("--ca-file"), "{}", describe(&out));
    assert!(stderr.contains(&registry.host()), "{}", describe(&out));
    assert!(!registry.has_tag("broker/app", "latest"));

    let ca = registry.ca_cert_path().unwrap().display().to_string();
    let out = ws.run(&["push", "app", "--registry", &prefix, "--ca-file", &ca]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(text(&out.stdout), format!("{prefix}/app@{digest}\n"));
    assert!(registry.has_tag("broker/app", "latest"));
    assert_eq!(
        skopeo_digest(&registry, &format!("{prefix}/app@{digest}")),
        digest
    );
}

#[test]
fn killed_push_leaves_no_tag_and_the_next_run_sends_only_what_is_missing() {
    let registry = TestRegistry::start();
    let ws = workspace();
    let layers = 6;
    let image = synthetic::image(&ws.store(), "big", 5, layers, 25 * 1024 * 1024);
    let (digest, layer_digests) = (image.digest, image.layers);
    let total_blobs = layers + 1;
    let layer_set: BTreeSet<String> = layer_digests.iter().map(Digest::to_string).collect();
    let prefix = format!("{}/broker", registry.host());
    let args = [
        "push",
        "big",
        "--registry",
        &prefix,
        "--tag",
        "v1",
        "--jobs",
        "1",
    ];

    let mut child = ws
        .command(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let held = registry.stored_blobs();
        if held.intersection(&layer_set).next().is_some() {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the push ended ({status}) before it could be interrupted");
        }
        assert!(Instant::now() < deadline, "no layer reached the registry");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success(), "the push finished before it was killed");
    // Let the registry finish whatever request was in flight.
    std::thread::sleep(Duration::from_millis(500));
    let held = registry.stored_blobs();
    assert!(
        held.len() < total_blobs,
        "the registry got everything before the kill"
    );
    assert!(
        !registry.has_tag("broker/big", "v1"),
        "a tag after a killed push"
    );

    let mut args_json = args.to_vec();
    args_json.push("--json");
    let out = ws.run(&args_json);
    assert!(out.status.success(), "{}", describe(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pushed = &json["pushed"][0];
    assert_eq!(pushed["digest"], digest.to_string(), "{json}");
    let stats = &pushed["stats"];
    let count = |key: &str| stats[key].as_u64().unwrap() as usize;
    assert!(
        count("uploaded") < total_blobs && count("existed") >= 1,
        "the second run uploaded {stats}"
    );
    assert_eq!(
        count("uploaded") + count("existed") + count("mounted"),
        total_blobs,
        "{stats}"
    );
    assert!(registry.has_tag("broker/big", "v1"));
    let pinned = format!("{prefix}/big@{digest}");
    assert_eq!(pushed["pinned"], pinned.as_str());
    assert_eq!(skopeo_digest(&registry, &pinned), digest);
}

#[test]
fn mirror_copies_by_digest_and_records_the_lock() {
    let hub = TestRegistry::start();
    let internal = TestRegistry::start();
    let ws = workspace();
    let digest = synthetic::image(&ws.store(), "postgres", 6, 2, 128 * 1024).digest;
    let out = ws.run(&[
        "push",
        "postgres",
        "--registry",
        &format!("{}/library", hub.host()),
        "--tag",
        "14.2",
    ]);
    assert!(out.status.success(), "{}", describe(&out));

    let source = format!("{}/library/postgres:14.2", hub.host());
    let lock = ws.path("images.lock");
    let out = ws.run(&[
        "mirror",
        &source,
        "--registry",
        &format!("{}/mirror", internal.host()),
        "--lock",
        lock.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let target = format!("{}/mirror/library/postgres@{digest}", internal.host());
    let source_pinned = format!("{}/library/postgres@{digest}", hub.host());
    assert_eq!(text(&out.stdout), format!("{source} {target}\n"));

    let lock_text = std::fs::read_to_string(&lock).unwrap();
    let lock_value: serde_json::Value = lock_value(&lock, &lock_text);
    let entry = &lock_value["mirrors"][source.as_str()];
    assert_eq!(entry["digest"], digest.to_string(), "{lock_text}");
    assert_eq!(entry["source"], source_pinned.as_str(), "{lock_text}");
    assert_eq!(entry["reference"], target.as_str(), "{lock_text}");

    assert!(internal.has_tag("mirror/library/postgres", "14.2"));
    assert_eq!(skopeo_digest(&hub, &source_pinned), digest);
    assert_eq!(skopeo_digest(&internal, &target), digest);
    assert_eq!(
        skopeo_digest(
            &internal,
            &format!("{}/mirror/library/postgres:14.2", internal.host())
        ),
        digest
    );
}

#[test]
fn mirror_name_equals_source_records_the_copy_under_the_name_the_manifests_use() {
    // An internal build standing in for postgres:14.2: render looks the
    // mirror up by `postgres:14.2`, the bytes come from the other image.
    let builds = TestRegistry::start();
    let internal = TestRegistry::start();
    let ws = workspace();
    let digest = synthetic::image(&ws.store(), "postgres", 3, 1, 16 * 1024).digest;
    let out = ws.run(&[
        "push",
        "postgres",
        "--registry",
        &format!("{}/hardened", builds.host()),
        "--tag",
        "14.2-patched",
    ]);
    assert!(out.status.success(), "{}", describe(&out));

    let source = format!("{}/hardened/postgres:14.2-patched", builds.host());
    let lock = ws.path("images.lock");
    let out = ws.run(&[
        "mirror",
        &format!("postgres:14.2={source}"),
        "--registry",
        &format!("{}/mirror", internal.host()),
        "--lock",
        lock.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains(&format!("mirrored postgres:14.2 (from {source})")),
        "{}",
        describe(&out)
    );
    let lock_text = std::fs::read_to_string(&lock).unwrap();
    let lock_value: serde_json::Value = lock_value(&lock, &lock_text);
    let mirrors = lock_value["mirrors"].as_object().unwrap();
    assert_eq!(mirrors.len(), 1, "{lock_text}");
    let entry = &mirrors["postgres:14.2"];
    assert_eq!(
        entry["source"],
        format!("{}/hardened/postgres@{digest}", builds.host()).as_str(),
        "{lock_text}"
    );
    let target = format!("{}/mirror/hardened/postgres@{digest}", internal.host());
    assert_eq!(entry["reference"], target.as_str(), "{lock_text}");
    assert_eq!(skopeo_digest(&internal, &target), digest);
}

#[test]
fn mirror_refuses_a_malformed_name_equals_source_before_copying_anything() {
    let ws = workspace();
    let lock = ws.path("images.lock");
    for (arg, says) in [
        ("=postgres:14.2", "expected IMAGE or NAME=SOURCE"),
        ("postgres:14.2=", "expected IMAGE or NAME=SOURCE"),
        ("Bad//name=postgres:14.2", "the name before '='"),
        ("postgres:14.2=Bad//source", "the source of postgres:14.2"),
    ] {
        // A port nothing listens on: a copy attempt would fail otherwise.
        let out = ws.run(&[
            "mirror",
            "postgres:15",
            arg,
            "--registry",
            "127.0.0.1:9/mirror",
            "--lock",
            lock.to_str().unwrap(),
        ]);
        assert!(!out.status.success(), "{arg}: {}", describe(&out));
        let err = text(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{arg}: {err}");
        assert!(err.contains(says), "{arg}: {err}");
        assert!(!lock.exists(), "{arg}: a lock was written");
    }
}

/// The lock file, which is JSON.
fn lock_value(path: &Path, text: &str) -> serde_json::Value {
    serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("{} is not JSON ({e}):\n{text}", path.display()))
}

/// The requests a registry handled below `/v2/<repository>/blobs/`.
fn blob_requests(
    registry: &TestRegistry,
    repository: &str,
) -> Vec<broker_test_support::RequestRecord> {
    let prefix = format!("/v2/{repository}/blobs/");
    registry
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with(&prefix))
        .collect()
}

#[test]
fn mirror_on_the_same_registry_mounts_every_blob_from_the_source() {
    // Issue 12, item 9: a mirror within one registry sent a 104 MB base
    // layer through the client again.
    let registry = TestRegistry::start();
    let pusher = workspace();
    let image = synthetic::image(&pusher.store(), "python-base", 12, 5, 1024 * 1024);
    let out = pusher.run(&[
        "push",
        "python-base",
        "--registry",
        &format!("{}/conca", registry.host()),
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let uploads_before = registry.blob_upload_count();

    // Another machine (an empty store, no record) mirrors it.
    let ws = workspace();
    let source = format!("{}/conca/python-base:latest", registry.host());
    let out = ws.run(&[
        "mirror",
        &source,
        "--registry",
        &format!("{}/mirror", registry.host()),
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let blobs = image.blobs().len();
    assert!(
        text(&out.stderr).contains(&format!("0 uploaded (0 B sent), {blobs} mounted")),
        "{}",
        describe(&out)
    );
    assert_eq!(
        registry.blob_upload_count(),
        uploads_before,
        "no upload session"
    );
    assert_eq!(registry.blob_mount_count(), blobs);
    // One request per blob, each a mount answered 201; nothing read from
    // the source's blobs, nothing written into an upload.
    let requests = blob_requests(&registry, "mirror/conca/python-base");
    assert_eq!(requests.len(), blobs, "{requests:#?}");
    assert!(
        requests
            .iter()
            .all(|r| r.method == "POST" && r.query().contains("mount=") && r.status == 201),
        "{requests:#?}"
    );
    let source_reads = blob_requests(&registry, "conca/python-base");
    assert!(
        source_reads.iter().all(|r| r.method != "GET"),
        "blob bytes went through the client: {source_reads:#?}"
    );
    let pinned = format!(
        "{}/mirror/conca/python-base@{}",
        registry.host(),
        image.digest
    );
    assert_eq!(skopeo_digest(&registry, &pinned), image.digest);
}

#[test]
fn mirror_across_registries_mounts_what_the_record_knows_and_streams_the_rest() {
    // Issue 12, item 9: blobs the target registry holds in a repository the
    // store's record knows are mounted; only the others cross the client.
    let hub = TestRegistry::start();
    let internal = TestRegistry::start();
    let ws = workspace();
    let store = ws.store();
    let amd = synthetic::manifest(&store, 13, 2, 256 * 1024, "amd64");
    let arm = synthetic::manifest(&store, 14, 2, 256 * 1024, "arm64");
    let oci_manifest = "application/vnd.oci.image.manifest.v1+json";
    synthetic::tag(
        &store,
        "pg-amd64",
        amd.digest,
        amd.manifest.len(),
        oci_manifest,
    );
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"{oci_manifest}","digest":"{}","size":{},"platform":{{"architecture":"amd64","os":"linux"}}}},{{"mediaType":"{oci_manifest}","digest":"{}","size":{},"platform":{{"architecture":"arm64","os":"linux"}}}}]}}"#,
        amd.digest,
        amd.manifest.len(),
        arm.digest,
        arm.manifest.len()
    );
    let index_digest = store.write_blob(index.as_bytes()).unwrap();
    synthetic::tag(
        &store,
        "postgres",
        index_digest,
        index.len(),
        "application/vnd.oci.image.index.v1+json",
    );
    // The hub has both platforms; the internal registry already holds the
    // amd64 image in another repository, pushed from this store (so its
    // record knows where).
    let out = ws.run(&[
        "push",
        "postgres",
        "--registry",
        &format!("{}/library", hub.host()),
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let out = ws.run(&[
        "push",
        "pg-amd64",
        "--registry",
        &format!("{}/broker", internal.host()),
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let uploads_before = internal.blob_upload_count();

    let source = format!("{}/library/postgres:latest", hub.host());
    let out = ws.run(&[
        "mirror",
        &source,
        "--registry",
        &format!("{}/mirror", internal.host()),
        "--lock",
        ws.path("images.lock").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let (mounted, streamed) = (amd.blobs().len(), arm.blobs().len());
    assert!(
        text(&out.stderr).contains(&format!("{streamed} uploaded")),
        "{}",
        describe(&out)
    );
    assert!(
        text(&out.stderr).contains(&format!("{mounted} mounted")),
        "{}",
        describe(&out)
    );
    assert_eq!(internal.blob_mount_count(), mounted);
    assert_eq!(internal.blob_upload_count() - uploads_before, streamed);
    // Only the arm64 blobs were read from the hub.
    let read: BTreeSet<String> = blob_requests(&hub, "library/postgres")
        .iter()
        .filter(|r| r.method == "GET")
        .map(|r| {
            r.path_without_query()
                .rsplit('/')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    let expected: BTreeSet<String> = arm.blobs().iter().map(Digest::to_string).collect();
    assert_eq!(read, expected);
    let pinned = format!("{}/mirror/library/postgres@{index_digest}", internal.host());
    assert_eq!(skopeo_digest(&internal, &pinned), index_digest);
}

#[test]
fn stalling_registry_is_given_up_within_90_seconds_in_one_line() {
    // Issue 12, item 5: a registry that accepts connections and never
    // answers took 444 s to give up on with default settings.
    let silent = broker_test_support::SilentServer::start();
    let ws = workspace();
    synthetic::image(&ws.store(), "app", 15, 1, 16 * 1024);
    synthetic::image(&ws.store(), "worker", 16, 1, 16 * 1024);
    let prefix = format!("{}/broker", silent.host());
    let started = Instant::now();
    let out = ws.run(&["push", "app", "worker", "--registry", &prefix]);
    let elapsed = started.elapsed();
    eprintln!(
        "gave up on a silent registry after {:.1}s",
        elapsed.as_secs_f64()
    );
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(silent.connections() > 0, "the registry was never contacted");
    assert!(elapsed < Duration::from_secs(90), "took {elapsed:?}");
    let stderr = text(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{}", describe(&out));
    let error = errors[0];
    assert!(
        error.contains(&silent.host())
            && error.contains("answered nothing")
            && error.contains("check"),
        "{error}"
    );
    // Both images are named, the cause said once.
    assert!(
        error.contains("2 of 2 images not pushed") && error.contains("app, worker"),
        "{error}"
    );
    assert_eq!(error.matches("answered nothing").count(), 1, "{error}");
}

#[test]
fn one_failing_image_does_not_stop_the_others() {
    // Issue 12, item 5: the other images still finish, the summary names
    // what failed and the exit status says so.
    let registry = TestRegistry::start();
    let ws = workspace();
    let store = ws.store();
    let app = synthetic::image(&store, "app", 17, 1, 16 * 1024).digest;
    let broken = synthetic::image(&store, "broken", 18, 2, 16 * 1024);
    let worker = synthetic::image(&store, "worker", 19, 1, 16 * 1024).digest;
    std::fs::remove_file(store.blob_path(&broken.layers[1])).unwrap();
    let prefix = format!("{}/broker", registry.host());
    let out = ws.run(&["push", "app", "broken", "worker", "--registry", &prefix]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert_eq!(
        text(&out.stdout),
        format!("{prefix}/app@{app}\n{prefix}/worker@{worker}\n"),
        "{}",
        describe(&out)
    );
    assert!(registry.has_tag("broker/app", "latest"));
    assert!(registry.has_tag("broker/worker", "latest"));
    assert!(!registry.has_tag("broker/broken", "latest"));
    let stderr = text(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{}", describe(&out));
    assert!(
        errors[0].contains("1 of 3 images not pushed")
            && errors[0].contains("broken")
            && errors[0].contains("missing from the store"),
        "{}",
        errors[0]
    );
}

#[test]
fn token_auth_registry_takes_credentials_from_a_credential_helper() {
    // Issue 12, item 6: Docker Hub's token flow, with the password from a
    // credential helper, against a registry that verifies the tokens.
    let issuer = broker_test_support::TokenIssuer::start(
        &[("ci", "helper-t0ken")],
        Duration::from_secs(300),
    );
    let registry = TestRegistry::start_with_token_auth(&issuer);
    let ws = workspace();
    let digest = synthetic::image(&ws.store(), "app", 24, 2, 64 * 1024).digest;
    install_credential_helper(&ws, "brokertoken", &registry.host(), "ci", "helper-t0ken");
    std::fs::write(
        ws.path("docker/config.json"),
        format!(
            r#"{{"credHelpers":{{"{}":"brokertoken"}}}}"#,
            registry.host()
        ),
    )
    .unwrap();
    let prefix = format!("{}/ci", registry.host());
    let out = ws.run(&["push", "app", "--registry", &prefix, "--tag", "v1", "-vv"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(text(&out.stdout), format!("{prefix}/app@{digest}\n"));
    for secret in ["helper-t0ken", "eyJ"] {
        assert!(
            !text(&out.stderr).contains(secret) && !text(&out.stdout).contains(secret),
            "a secret leaked: {}",
            describe(&out)
        );
    }
    assert!(registry.has_tag("ci/app", "v1"));
    assert!(!issuer.issued().is_empty());
}

/// The unfinished uploads to `repository` the registry holds data for, and
/// their bytes (`_uploads/<id>/data` in its storage; Distribution rewrites
/// an empty `hashstates` folder even for a cancelled session, so that is
/// not counted).
fn upload_bytes(registry: &TestRegistry, repository: &str) -> (usize, u64) {
    let dir = registry
        .storage_dir()
        .join("docker/registry/v2/repositories")
        .join(repository)
        .join("_uploads");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (0, 0);
    };
    let sizes: Vec<u64> = entries
        .flatten()
        .filter_map(|e| std::fs::metadata(e.path().join("data")).ok())
        .map(|m| m.len())
        .collect();
    (sizes.len(), sizes.iter().sum())
}

/// Runs `args` and kills it (SIGKILL) once the registry holds at least
/// 32 MiB of an upload to `repository` and the store-and-forward `proxy`
/// is receiving the next chunk.
fn kill_mid_blob(
    ws: &Workspace,
    args: &[&str],
    registry: &TestRegistry,
    proxy: &broker_test_support::FaultProxy,
    repository: &str,
) {
    const MIB: u64 = 1024 * 1024;
    let mut child = ws
        .command(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if upload_bytes(registry, repository).1 >= 32 * MIB && proxy.receiving() > MIB {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the push ended ({status}) before it could be killed mid-blob");
        }
        assert!(Instant::now() < deadline, "the upload never got going");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Let the registry finish whatever request was in flight.
    std::thread::sleep(Duration::from_millis(300));
}

#[test]
fn abandoned_upload_session_is_cancelled() {
    // Issue 12, item 4: a kept session that is no longer needed (another
    // run pushed the blob meanwhile) is cancelled, not left in the registry.
    const MIB: u64 = 1024 * 1024;
    let registry = TestRegistry::start();
    let proxy = broker_test_support::FaultProxy::start_buffering(&registry, 96 * MIB);
    let ws = workspace();
    synthetic::image(&ws.store(), "big", 27, 1, 80 * MIB as usize);
    let prefix = format!("{}/broker", proxy.host());
    let args = ["push", "big", "--registry", &prefix, "--json"];
    kill_mid_blob(&ws, &args, &registry, &proxy, "broker/big");
    assert_eq!(upload_bytes(&registry, "broker/big").0, 1);

    // Another machine pushes the same image meanwhile.
    let other = workspace();
    synthetic::image(&other.store(), "big", 27, 1, 80 * MIB as usize);
    let direct = format!("{}/broker", registry.host());
    let out = other.run(&["push", "big", "--registry", &direct]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        upload_bytes(&registry, "broker/big").0,
        1,
        "the killed run's session"
    );

    let out = ws.run(&args);
    assert!(out.status.success(), "{}", describe(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["pushed"][0]["stats"]["uploaded"], 0, "{json}");
    let deletes: Vec<_> = registry
        .requests()
        .into_iter()
        .filter(|r| r.method == "DELETE" && r.path.contains("/blobs/uploads/"))
        .collect();
    assert_eq!(deletes.len(), 1, "{deletes:#?}");
    assert_eq!(deletes[0].status, 204, "{deletes:#?}");
    assert_eq!(
        upload_bytes(&registry, "broker/big").0,
        0,
        "the session was left behind"
    );
    let kept = std::fs::read_to_string(ws.path("store").join(broker_registry::UPLOAD_SESSIONS))
        .unwrap_or_default();
    assert!(!kept.contains("broker/big"), "{kept}");
}

#[test]
fn push_killed_mid_blob_resumes_where_the_registry_stands() {
    // Issue 12, item 4: after `kill -9` in the middle of a 109 MB blob the
    // rerun sent that blob again from byte 0 and left its session behind.
    // The registry sits behind a store-and-forward proxy (nginx's default),
    // which also lets the kill land mid-chunk for certain: it is taken while
    // the proxy is receiving a chunk, so that chunk never reaches the
    // registry.
    const MIB: u64 = 1024 * 1024;
    let registry = TestRegistry::start();
    let proxy = broker_test_support::FaultProxy::start_buffering(&registry, 96 * MIB);
    let ws = workspace();
    let size = 112 * MIB;
    let image = synthetic::image(&ws.store(), "big", 25, 1, size as usize);
    let prefix = format!("{}/broker", proxy.host());
    let args = [
        "push",
        "big",
        "--registry",
        &prefix,
        "--tag",
        "v1",
        "--json",
    ];

    kill_mid_blob(&ws, &args, &registry, &proxy, "broker/big");
    let (sessions, held) = upload_bytes(&registry, "broker/big");
    assert_eq!(sessions, 1, "one upload session in the registry");
    assert!(held > 0 && held < size, "held {held} of {size}");
    let remaining = size - held;

    let before = proxy.body_bytes_received();
    let out = ws.run(&args);
    assert!(out.status.success(), "{}", describe(&out));
    let sent = proxy.body_bytes_received() - before;
    eprintln!(
        "blob {size} bytes, registry held {held} at the kill, the rerun sent {sent} bytes ({remaining} remaining)"
    );
    let chunk = 16 * MIB;
    assert!(
        sent < remaining + chunk,
        "the rerun sent {sent} bytes; {remaining} were missing (chunk {chunk})"
    );
    // Issue 20, item 5: the summary tells what was sent from what the
    // registry already held.
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let stats = &json["pushed"][0]["stats"];
    assert_eq!(stats["bytes_resumed"], held, "{json}");
    assert_eq!(stats["bytes_sent"], remaining, "{json}");
    assert_eq!(stats["bytes_uploaded"], size, "{json}");
    // It asked where the session stood, and left none behind.
    assert!(
        registry
            .requests()
            .iter()
            .any(|r| r.method == "GET" && r.path.contains("/blobs/uploads/") && r.status == 204),
        "no upload status was asked"
    );
    assert_eq!(
        upload_bytes(&registry, "broker/big").0,
        0,
        "a session was left behind"
    );
    let pinned = format!("{}/broker/big@{}", registry.host(), image.digest);
    assert_eq!(skopeo_digest(&registry, &pinned), image.digest);
}

#[test]
fn a_failed_push_is_said_once_in_one_line() {
    // Issue 20, item 6: a `   failed NAME` progress line came before the
    // error, in --json too.
    let registry = TestRegistry::start();
    let ws = workspace();
    let store = ws.store();
    let broken = synthetic::image(&store, "broken", 34, 2, 16 * 1024);
    std::fs::remove_file(store.blob_path(&broken.layers[1])).unwrap();
    synthetic::image(&store, "app", 35, 1, 16 * 1024);
    let prefix = format!("{}/broker", registry.host());
    for json in [false, true] {
        let mut args = vec!["push", "broken", "app", "--registry", &prefix];
        if json {
            args.push("--json");
        }
        let out = ws.run(&args);
        assert!(!out.status.success(), "{}", describe(&out));
        let stderr = text(&out.stderr);
        let naming: Vec<&str> = stderr.lines().filter(|l| l.contains("broken")).collect();
        assert_eq!(naming.len(), 1, "json {json}: {}", describe(&out));
        let error = naming[0];
        if json {
            let value: serde_json::Value = serde_json::from_str(error).unwrap();
            assert!(
                value["error"]
                    .as_str()
                    .is_some_and(|e| e.starts_with("1 of 2 images not pushed")),
                "{error}"
            );
        } else {
            assert!(
                error.starts_with("error: 1 of 2 images not pushed"),
                "{error}"
            );
        }
        assert_eq!(error.matches("broken").count(), 1, "{error}");
    }
}
