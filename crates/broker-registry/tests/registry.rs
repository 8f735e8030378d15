//! The registry client against a real CNCF Distribution registry and real
//! peers (skopeo, the Docker engine).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use broker_oci::{Digest, Store};
use broker_registry::{
    ClientOptions, CredentialSource, Credentials, Publisher, Reference, RegistryClient,
    RegistryError, RegistryPrefix, Reporter, Silent, mirror, pull_into_store, push_from_store,
    resolve,
};
use broker_test_support::{
    TestRegistry, TokenIssuer, copy_dir, docker_cli, output_ok, require_tool, run_ok, runtime,
    synthetic, unique_suffix,
};

fn silent() -> Arc<dyn Reporter> {
    Arc::new(Silent)
}

fn reference(registry: &TestRegistry, repo: &str, tag: &str) -> Reference {
    format!("{}/{repo}:{tag}", registry.host()).parse().unwrap()
}

fn skopeo_raw(registry: &TestRegistry, pinned: &str, extra: &[&str]) -> Vec<u8> {
    require_tool("skopeo", "apt-get install -y skopeo");
    let mut cmd = Command::new("skopeo");
    cmd.arg("inspect").arg("--raw");
    if registry.is_tls() {
        cmd.arg(format!(
            "--cert-dir={}",
            registry.cert_dir().unwrap().display()
        ));
    } else {
        cmd.arg("--tls-verify=false");
    }
    cmd.args(extra).arg(format!("docker://{pinned}"));
    let out = output_ok(&mut cmd);
    out.stdout
}

#[test]
fn pushed_busybox_is_pulled_and_run_by_docker() {
    let base = broker_test_support::busybox();
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&base.oci_layout, dir.path());
    let store = Store::open(dir.path()).unwrap();
    let registry = TestRegistry::start();
    let repo = format!("rig/busybox-{}", unique_suffix());
    let target = reference(&registry, &repo, "v1");
    let rt = runtime();
    let pushed = rt.block_on(async {
        let client = RegistryClient::for_reference(&target, &ClientOptions::default()).unwrap();
        push_from_store(&client, &store, &base.oci_tag, &target, &silent())
            .await
            .unwrap()
    });
    assert!(registry.has_tag(&repo, "v1"));
    let raw = skopeo_raw(&registry, &pushed.pinned, &[]);
    assert_eq!(
        Digest::of(&raw),
        pushed.digest,
        "the registry serves our exact manifest bytes"
    );
    run_ok(docker_cli().args(["pull", &pushed.pinned]));
    let out = docker_cli()
        .args([
            "run",
            "--rm",
            &pushed.pinned,
            "sh",
            "-c",
            "echo pushed-and-ran",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "pushed-and-ran",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = docker_cli().args(["rmi", &pushed.pinned]).output();
}

#[test]
fn repush_uploads_nothing_and_another_repository_mounts() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let digest = synthetic::image(&store, "app", 1, 3, 512 * 1024).digest;
    let registry = TestRegistry::start();
    let first = reference(&registry, "broker/app", "v1");
    let rt = runtime();
    rt.block_on(async {
        let client = RegistryClient::for_reference(&first, &ClientOptions::default()).unwrap();
        let pushed = push_from_store(&client, &store, "app", &first, &silent())
            .await
            .unwrap();
        assert_eq!(pushed.digest, digest);
        assert_eq!(
            (pushed.stats.uploaded, pushed.stats.mounted),
            (4, 0),
            "config + 3 layers uploaded"
        );
        assert_eq!(registry.blob_upload_count(), 4);

        // Same client, same target: nothing sent.
        let again = push_from_store(&client, &store, "app", &first, &silent())
            .await
            .unwrap();
        assert_eq!(again.digest, digest);
        assert_eq!(again.stats.uploaded, 0);
        // A fresh client (a new process) also sends nothing.
        let fresh = RegistryClient::for_reference(&first, &ClientOptions::default()).unwrap();
        let again = push_from_store(&fresh, &store, "app", &first, &silent())
            .await
            .unwrap();
        assert_eq!(again.stats.uploaded, 0);
        assert_eq!(
            registry.blob_upload_count(),
            4,
            "no upload session was opened"
        );

        // Another repository of the same registry: blobs are mounted.
        let second = reference(&registry, "broker/other", "v1");
        let pushed = push_from_store(&client, &store, "app", &second, &silent())
            .await
            .unwrap();
        assert_eq!(pushed.digest, digest);
        assert_eq!((pushed.stats.uploaded, pushed.stats.mounted), (0, 4));
        assert_eq!(registry.blob_upload_count(), 4);
        assert_eq!(registry.blob_mount_count(), 4);
        assert!(registry.has_tag("broker/other", "v1"));
    });
}

#[test]
fn declined_mount_falls_back_to_upload() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    synthetic::image(&store, "app", 2, 1, 1024);
    let registry = TestRegistry::start();
    let target = reference(&registry, "broker/app", "v1");
    let rt = runtime();
    rt.block_on(async {
        let client = RegistryClient::for_reference(&target, &ClientOptions::default()).unwrap();
        // Claim the blobs live in a repository that does not exist: the
        // registry declines the mount (202 + an upload session).
        let manifest = store.resolve("app").unwrap();
        let raw = store
            .read_blob(&broker_oci::oci_digest::from_oci(manifest.digest()).unwrap())
            .unwrap();
        let parsed = broker_registry::manifest::Manifest::parse(&raw, "app").unwrap();
        for blob in parsed.blobs() {
            client.remember_blob(blob.digest, "nowhere/else");
        }
        let pushed = push_from_store(&client, &store, "app", &target, &silent())
            .await
            .unwrap();
        assert_eq!((pushed.stats.uploaded, pushed.stats.mounted), (2, 0));
    });
    assert!(registry.has_tag("broker/app", "v1"));
}

fn write_docker_config(dir: &Path, json: &str) {
    std::fs::write(dir.join("config.json"), json).unwrap();
}

fn base64(s: &str) -> String {
    let out = Command::new("base64")
        .arg("-w0")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    out.stdin.as_ref().unwrap().write_all(s.as_bytes()).unwrap();
    String::from_utf8(out.wait_with_output().unwrap().stdout).unwrap()
}

#[test]
fn htpasswd_registry_takes_config_json_and_helpers_and_refuses_wrong_passwords() {
    let registry = TestRegistry::start_with_auth("ci", "s3cret-pass");
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    synthetic::image(&store, "app", 3, 1, 2048);
    let target = reference(&registry, "broker/app", "v1");
    let rt = runtime();

    // 1. auths in config.json
    let config_dir = dir.path().join("docker-auths");
    std::fs::create_dir_all(&config_dir).unwrap();
    write_docker_config(
        &config_dir,
        &format!(
            r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#,
            registry.host(),
            base64("ci:s3cret-pass")
        ),
    );
    let options = ClientOptions {
        credentials: CredentialSource::DockerConfig(Some(config_dir)),
        ..ClientOptions::default()
    };
    rt.block_on(async {
        let client = RegistryClient::for_reference(&target, &options).unwrap();
        push_from_store(&client, &store, "app", &target, &silent())
            .await
            .unwrap();
    });
    assert!(registry.has_tag("broker/app", "v1"));

    // 2. credential helpers are found on PATH, so that case runs the CLI
    // in a child process with its own PATH (crates/broker-images/tests).

    // 3. wrong password: one clear error, no secret in it
    let options = ClientOptions {
        credentials: CredentialSource::Explicit(Credentials::Basic {
            username: "ci".into(),
            password: "wrong-horse".into(),
        }),
        ..ClientOptions::default()
    };
    let target3 = reference(&registry, "broker/app", "v3");
    let err = rt.block_on(async {
        let client = RegistryClient::for_reference(&target3, &options).unwrap();
        push_from_store(&client, &store, "app", &target3, &silent())
            .await
            .unwrap_err()
    });
    let text = format!("{err} {err:?}");
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{text}");
    assert!(text.contains("refused user `ci`"), "{text}");
    assert!(!text.contains("wrong-horse"), "the password leaked: {text}");
    assert!(!registry.has_tag("broker/app", "v3"));

    // 4. no credentials at all
    let options = ClientOptions {
        credentials: CredentialSource::Anonymous,
        ..ClientOptions::default()
    };
    let err = rt.block_on(async {
        let client = RegistryClient::for_reference(&target3, &options).unwrap();
        push_from_store(&client, &store, "app", &target3, &silent())
            .await
            .unwrap_err()
    });
    assert!(err.to_string().contains("docker login"), "{err}");
}

#[test]
fn tls_registry_needs_the_ca() {
    let registry = TestRegistry::start_tls();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    synthetic::image(&store, "app", 4, 1, 2048);
    let target = reference(&registry, "broker/app", "v1");
    let rt = runtime();
    let err = rt.block_on(async {
        let client = RegistryClient::for_reference(&target, &ClientOptions::default()).unwrap();
        push_from_store(&client, &store, "app", &target, &silent())
            .await
            .unwrap_err()
    });
    assert!(matches!(err, RegistryError::Tls { .. }), "{err}");
    assert!(err.to_string().contains("--ca-file"), "{err}");
    assert!(!registry.has_tag("broker/app", "v1"));

    let options = ClientOptions {
        ca_files: vec![registry.ca_cert_path().unwrap().to_path_buf()],
        ..ClientOptions::default()
    };
    let pushed = rt.block_on(async {
        let client = RegistryClient::for_reference(&target, &options).unwrap();
        push_from_store(&client, &store, "app", &target, &silent())
            .await
            .unwrap()
    });
    assert!(registry.has_tag("broker/app", "v1"));
    let raw = skopeo_raw(&registry, &pushed.pinned, &[]);
    assert_eq!(Digest::of(&raw), pushed.digest);

    // A CA file that is not PEM is an error naming the file.
    let bogus = dir.path().join("bogus.pem");
    std::fs::write(&bogus, "not a certificate").unwrap();
    let options = ClientOptions {
        ca_files: vec![bogus],
        ..ClientOptions::default()
    };
    let err = RegistryClient::for_reference(&target, &options)
        .unwrap_err()
        .to_string();
    assert!(err.contains("bogus.pem"), "{err}");
}

#[test]
fn mirror_copies_every_platform_with_the_same_digest() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let amd = synthetic::manifest(&store, 5, 2, 4096, "amd64").manifest;
    let arm = synthetic::manifest(&store, 6, 2, 4096, "arm64").manifest;
    let amd_d = store.write_blob(amd.as_bytes()).unwrap();
    let arm_d = store.write_blob(arm.as_bytes()).unwrap();
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{amd_d}","size":{},"platform":{{"architecture":"amd64","os":"linux"}}}},{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{arm_d}","size":{},"platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}}]}}"#,
        amd.len(),
        arm.len()
    );
    let index_d = store.write_blob(index.as_bytes()).unwrap();
    synthetic::tag(
        &store,
        "postgres",
        index_d,
        index.len(),
        "application/vnd.oci.image.index.v1+json",
    );

    let hub = TestRegistry::start();
    let internal = TestRegistry::start();
    let source = reference(&hub, "library/postgres", "14.2");
    let rt = runtime();
    rt.block_on(async {
        let hub_client = RegistryClient::for_reference(&source, &ClientOptions::default()).unwrap();
        push_from_store(&hub_client, &store, "postgres", &source, &silent())
            .await
            .unwrap();
        let target = reference(&internal, "mirror/library/postgres", "14.2");
        let internal_client =
            RegistryClient::for_reference(&target, &ClientOptions::default()).unwrap();
        let copied = mirror(&hub_client, &source, &internal_client, &target, &silent())
            .await
            .unwrap();
        assert_eq!(copied.digest, index_d);
        assert_eq!(copied.stats.uploaded, 6, "2 configs + 4 layers");
        assert_eq!(
            resolve(&internal_client, &target, &*silent())
                .await
                .unwrap(),
            index_d
        );
        // Both platforms are there, byte for byte.
        let raw = skopeo_raw(&internal, &copied.target_pinned, &[]);
        assert_eq!(raw, index.as_bytes());
        let arm_raw = skopeo_raw(
            &internal,
            &format!("{}/mirror/library/postgres@{arm_d}", internal.host()),
            &[],
        );
        assert_eq!(arm_raw, arm.as_bytes());
        // Mirroring again sends nothing.
        let again = mirror(&hub_client, &source, &internal_client, &target, &silent())
            .await
            .unwrap();
        assert_eq!(again.stats.uploaded, 0);

        // And a pull into a fresh store picks this machine's platform and verifies it.
        let fresh_dir = tempfile::tempdir().unwrap();
        let fresh = Store::open(fresh_dir.path()).unwrap();
        let pulled = pull_into_store(&internal_client, &target, &fresh, "pg", &silent())
            .await
            .unwrap();
        assert_eq!(
            pulled,
            if broker_registry::oci_arch() == "arm64" {
                arm_d
            } else {
                amd_d
            }
        );
    });
}

#[test]
fn concurrent_pushes_upload_a_shared_blob_once_and_later_runs_mount_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    synthetic::image(&store, "app", 7, 2, 256 * 1024);
    let registry = TestRegistry::start();
    let prefix: RegistryPrefix = format!("{}/broker", registry.host()).parse().unwrap();
    let publisher = || {
        Publisher::new(prefix.clone(), &ClientOptions::default(), silent())
            .unwrap()
            .recording_for(&store)
    };
    let rt = runtime();
    rt.block_on(async {
        let publisher = publisher();
        let (ra, rb) = tokio::join!(
            publisher.publish(&store, "app", "a", "v1"),
            publisher.publish(&store, "app", "b", "v1")
        );
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert_eq!(
            ra.stats.uploaded + rb.stats.uploaded,
            3,
            "each of the 3 blobs uploaded once"
        );
        assert_eq!(
            ra.stats.mounted + rb.stats.mounted,
            3,
            "and mounted into the other repository"
        );
    });
    assert_eq!(registry.blob_upload_count(), 3);
    assert!(store.dir().join(broker_registry::BLOB_LOCATIONS).is_file());

    // A later run (a new publisher, so a new client) mounts from where the
    // first one pushed: the publisher keeps the record beside the store.
    rt.block_on(async {
        let pushed = publisher().publish(&store, "app", "c", "v1").await.unwrap();
        assert_eq!((pushed.stats.uploaded, pushed.stats.mounted), (0, 3));
    });
    assert_eq!(registry.blob_upload_count(), 3);
}

/// Docker Hub's scheme on a real registry: `auth: token` with our issuer.
fn token_registry(lifetime: Duration) -> (TokenIssuer, TestRegistry) {
    let issuer = TokenIssuer::start(&[("ci", "tok-s3cret"), ("upstream", "up-s3cret")], lifetime);
    let registry = TestRegistry::start_with_token_auth(&issuer);
    (issuer, registry)
}

fn basic(user: &str, password: &str) -> ClientOptions {
    ClientOptions {
        credentials: CredentialSource::Explicit(Credentials::Basic {
            username: user.into(),
            password: password.into(),
        }),
        ..ClientOptions::default()
    }
}

#[test]
fn token_registry_takes_config_json_and_refuses_wrong_passwords_in_one_line() {
    // Issue 12, item 6: only basic auth was ever exercised.
    let (issuer, registry) = token_registry(Duration::from_secs(300));
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    synthetic::image(&store, "app", 21, 2, 4096);
    let target = reference(&registry, "ci/app", "v1");
    let config_dir = dir.path().join("docker");
    std::fs::create_dir_all(&config_dir).unwrap();
    write_docker_config(
        &config_dir,
        &format!(
            r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#,
            registry.host(),
            base64("ci:tok-s3cret")
        ),
    );
    let options = ClientOptions {
        credentials: CredentialSource::DockerConfig(Some(config_dir)),
        ..ClientOptions::default()
    };
    let rt = runtime();
    rt.block_on(async {
        let client = RegistryClient::for_reference(&target, &options).unwrap();
        push_from_store(&client, &store, "app", &target, &silent())
            .await
            .unwrap();
    });
    assert!(registry.has_tag("ci/app", "v1"));
    let issued = issuer.issued();
    assert!(
        issued
            .iter()
            .any(|t| t.granted == ["repository:ci/app:pull,push"]),
        "{issued:?}"
    );
    // The registry itself enforced the tokens: it challenged first.
    assert!(registry.requests().iter().any(|r| r.status == 401));

    let target = reference(&registry, "ci/app", "v2");
    let err = rt.block_on(async {
        let client = RegistryClient::for_reference(&target, &basic("ci", "wrong-horse")).unwrap();
        push_from_store(&client, &store, "app", &target, &silent())
            .await
            .unwrap_err()
    });
    let text = err.to_string();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{text}");
    assert!(
        !text.contains('\n') && text.contains(&registry.host()),
        "{text}"
    );
    assert!(
        text.contains("refused user `ci`") && text.contains("check the password"),
        "{text}"
    );
    assert!(!format!("{text} {err:?}").contains("wrong-horse"), "{text}");
    assert!(issuer.refused() > 0);
    assert!(!registry.has_tag("ci/app", "v2"));
}

#[test]
fn token_registry_mounts_only_with_pull_scope_on_the_source() {
    // Issue 12, item 6: Docker Hub mounts only from a repository the token
    // may pull; without that grant the push falls back to uploading.
    let (issuer, registry) = token_registry(Duration::from_secs(300));
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let image = synthetic::image(&store, "app", 22, 2, 64 * 1024);
    let rt = runtime();
    let source = reference(&registry, "upstream/base", "v1");
    rt.block_on(async {
        let client =
            RegistryClient::for_reference(&source, &basic("upstream", "up-s3cret")).unwrap();
        push_from_store(&client, &store, "app", &source, &silent())
            .await
            .unwrap();
    });
    let push_as_ci = |repo: &str| {
        let target = reference(&registry, repo, "v1");
        rt.block_on(async {
            let client =
                RegistryClient::for_reference(&target, &basic("ci", "tok-s3cret")).unwrap();
            // What the store's record would teach: upstream/base holds them.
            for blob in image.blobs() {
                client.remember_blob(blob, "upstream/base");
            }
            push_from_store(&client, &store, "app", &target, &silent())
                .await
                .unwrap()
        })
    };
    let blobs = image.blobs().len();

    // Not granted: the registry refuses the mount, the blobs are uploaded.
    let pushed = push_as_ci("ci/no-grant");
    assert_eq!((pushed.stats.mounted, pushed.stats.uploaded), (0, blobs));
    let asked_for_source = issuer
        .issued()
        .into_iter()
        .filter(|t| {
            t.requested
                .iter()
                .any(|s| s == "repository:upstream/base:pull")
        })
        .collect::<Vec<_>>();
    assert!(!asked_for_source.is_empty(), "no mount was tried");
    assert!(
        asked_for_source
            .iter()
            .all(|t| t.granted == ["repository:ci/no-grant:pull,push"]),
        "{asked_for_source:?}"
    );
    assert_eq!(registry.blob_mount_count(), 0);

    // Granted: every blob is mounted, nothing uploaded.
    issuer.grant_foreign_pull(true);
    let uploads = registry.blob_upload_count();
    let pushed = push_as_ci("ci/granted");
    assert_eq!((pushed.stats.mounted, pushed.stats.uploaded), (blobs, 0));
    assert_eq!(registry.blob_mount_count(), blobs);
    assert_eq!(registry.blob_upload_count(), uploads);
    assert!(registry.has_tag("ci/granted", "v1") && registry.has_tag("ci/no-grant", "v1"));
}

#[test]
fn token_expiring_mid_push_is_renewed_before_the_registry_refuses_it() {
    // Issue 12, item 6: tokens last 4 s; the push, slowed by a proxy that
    // holds every second request, lasts longer. The client renews the token
    // from `expires_in` before it lapses: after the first handshake the
    // registry refuses nothing (an upload refused for its token could not
    // be resent: its body is gone).
    let (issuer, registry) = token_registry(Duration::from_secs(4));
    let proxy = broker_test_support::FaultProxy::start(
        &registry,
        broker_test_support::FaultPolicy::EveryNth {
            n: 2,
            fault: broker_test_support::Fault::Stall(Duration::from_millis(600)),
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let image = synthetic::image(&store, "app", 23, 5, 256 * 1024);
    let target: Reference = format!("{}/ci/app:v1", proxy.host()).parse().unwrap();
    let options = ClientOptions {
        concurrency: 1,
        ..basic("ci", "tok-s3cret")
    };
    let started = std::time::Instant::now();
    let pushed = runtime().block_on(async {
        let client = RegistryClient::for_reference(&target, &options).unwrap();
        push_from_store(&client, &store, "app", &target, &silent())
            .await
            .unwrap()
    });
    let elapsed = started.elapsed();
    assert_eq!(pushed.digest, image.digest);
    assert!(
        elapsed > Duration::from_secs(5),
        "the push was too quick to outlive a token: {elapsed:?}"
    );
    let tokens = issuer.issued().len();
    assert!(tokens >= 2, "no token was renewed in {elapsed:?}");
    let refused: Vec<_> = registry
        .requests()
        .into_iter()
        .filter(|r| r.status == 401 && r.path != "/v2/")
        .collect();
    // The scheme probe (GET /v2/) and the first request go out anonymous.
    assert_eq!(refused.len(), 1, "only the first handshake: {refused:#?}");
    assert!(registry.has_tag("ci/app", "v1"));
}

/// What a rollback checks before writing: a manifest the registry still
/// has passes, one it does not (deleted, or never pushed) is named as gone.
#[test]
fn missing_manifests_names_only_the_images_the_registry_lacks() {
    let base = broker_test_support::busybox();
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&base.oci_layout, dir.path());
    let store = Store::open(dir.path()).unwrap();
    let registry = TestRegistry::start();
    let repo = format!("rig/rollback-{}", unique_suffix());
    let target = reference(&registry, &repo, "v1");
    let rt = runtime();
    let pushed = rt.block_on(async {
        let client = RegistryClient::for_reference(&target, &ClientOptions::default()).unwrap();
        push_from_store(&client, &store, &base.oci_tag, &target, &silent())
            .await
            .unwrap()
    });
    let present: broker_pins::PinnedRef = pushed.pinned.parse().unwrap();
    let gone: broker_pins::PinnedRef =
        format!("{}/{repo}@sha256:{}", registry.host(), "0".repeat(64))
            .parse()
            .unwrap();
    let missing = rt.block_on(broker_registry::missing_manifests(
        &[present, gone.clone()],
        &ClientOptions::default(),
    ));
    assert_eq!(
        missing,
        [(
            gone.to_string(),
            "gone from its registry (the manifest answers 404)".to_owned()
        )]
    );
}
