//! Multi-platform images (issue 26): one OCI image index over a
//! linux/amd64 and a linux/arm64 manifest, the deps stage of each built by
//! the real Docker engine (arm64 under QEMU user emulation), the source
//! layers shared, and wrong platforms refused.
//!
//! Each test runs the built binary on a tiny image spec. The bases are
//! stand-ins made here: busybox-static of the host (amd64) and of Debian's
//! arm64 archive, pushed to a real registry as one index.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::process::{Command, Output};

use broker_test_support::{
    TestRegistry, Workspace, busybox, busybox_arm64, describe, push_multi_platform,
    remove_from_engine_when_done, remove_repository_from_engine_when_done, require_tool, run_ok,
    succeeded, unique_suffix,
};

/// The deps stage records the machine its RUN step ran on.
const DOCKERFILE: &str = "ARG BASE\nFROM ${BASE}\nRUN uname -m > /deps-machine\n";

/// A workspace with a broker tree holding `app/run.sh` and an images
/// folder with one image, `multiarch`, for `platforms` (a YAML list).
fn workspace(platforms: &str) -> Workspace {
    let ws = Workspace::new(env!("CARGO_BIN_EXE_broker-images"));
    let app = ws.path("broker/app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(
        app.join("run.sh"),
        "echo \"baked code on $(uname -m), deps built on $(cat /deps-machine)\"\n",
    )
    .unwrap();
    let spec = ws.path("images/multiarch");
    std::fs::create_dir_all(&spec).unwrap();
    std::fs::write(spec.join("Dockerfile"), DOCKERFILE).unwrap();
    std::fs::write(
        spec.join("image.yaml"),
        format!(
            "platforms: {platforms}\ndeps:\n  base: unused/base:1\nlayers:\n  - name: app\n    from: app\n    to: /app\nconfig:\n  cmd: [\"sh\", \"/app/run.sh\"]\n"
        ),
    )
    .unwrap();
    ws
}

/// `broker-images build` of `ws` on `base`, with the source revision given
/// (the tree is no checkout) and `extra` arguments.
fn build(ws: &Workspace, base: &str, extra: &[&str]) -> Output {
    let mut cmd = with_inputs(ws, "build", base);
    cmd.args(["--source-revision", "r1"]).args(extra);
    cmd.output().unwrap()
}

/// `command` (build or verify) on `ws`'s trees, cache and lock, on `base`.
fn with_inputs(ws: &Workspace, command: &str, base: &str) -> Command {
    let mut cmd = ws.command(&[command]);
    cmd.arg("--images")
        .arg(ws.path("images"))
        .arg("--source")
        .arg(ws.path("broker"))
        .arg("--cache")
        .arg(ws.path("cache"))
        .arg("--lock")
        .arg(ws.path("images.lock"))
        .arg("--base")
        .arg(format!("multiarch={base}"));
    cmd
}

/// The one `error:` line of a failed run.
fn one_error_line(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(1), "{}", describe(out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{}", describe(out));
    errors[0].to_owned()
}

/// `skopeo inspect --raw` of `reference` on a plain-HTTP registry.
fn raw_manifest(reference: &str) -> serde_json::Value {
    let skopeo = require_tool("skopeo", "apt-get install -y skopeo");
    let text = run_ok(
        Command::new(skopeo)
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{reference}")),
    );
    serde_json::from_str(&text).unwrap()
}

/// Removes, when this test process ends, the deps images the builds left
/// in the engine (`broker-images/multiarch:deps-…`, a name only this file
/// uses) and the platform manifests of `base` the engine pulled.
fn clean_engine_after(base: &str) {
    remove_repository_from_engine_when_done("broker-images/multiarch");
    if base.contains('/') && !base.starts_with("broker-test/") {
        let repository = base.rsplit_once(':').map_or(base, |(r, _)| r);
        let index = raw_manifest(base);
        for entry in index["manifests"].as_array().into_iter().flatten() {
            remove_from_engine_when_done(&format!(
                "{repository}@{}",
                entry["digest"].as_str().unwrap_or_default()
            ));
        }
    }
}

/// `verify` of the workspace's lock, without `--platform`.
fn verify(ws: &Workspace, base: &str) -> Output {
    with_inputs(ws, "verify", base).output().unwrap()
}

fn lock(ws: &Workspace) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(ws.path("images.lock")).unwrap()).unwrap()
}

/// The amd64 and arm64 busybox stand-ins pushed to `registry` as one index.
fn two_platform_base(registry: &TestRegistry) -> String {
    let (amd64, arm64) = (busybox(), busybox_arm64());
    let (reference, _) = push_multi_platform(
        registry,
        "bases/busybox",
        "1",
        &[(&amd64, "linux/amd64"), (&arm64, "linux/arm64")],
    );
    reference
}

#[test]
fn two_platforms_make_one_index_whose_manifests_run_their_machines_and_share_the_source_layer() {
    let registry = TestRegistry::start();
    let base = two_platform_base(&registry);
    let ws = workspace("[linux/amd64, linux/arm64]");
    let prefix = format!("{}/broker", registry.host());
    let tag = format!("v-{}", unique_suffix());
    let push = ["--push", "--registry", &prefix, "--tag", &tag];
    let built = build(&ws, &base, &push);
    clean_engine_after(&base);
    let stderr = succeeded(&built);
    for platform in ["linux/amd64", "linux/arm64"] {
        assert!(
            stderr.contains(&format!("multiarch ({platform})")),
            "progress names the platform:\n{stderr}"
        );
    }
    assert!(stderr.contains("under emulation"), "{stderr}");
    // The source layer is made once: the second platform takes the first's
    // (neither tarred nor hashed again).
    assert_eq!(
        stderr.matches("layer app → /app: built").count(),
        1,
        "{stderr}"
    );
    assert!(
        stderr
            .contains("[multiarch (linux/arm64)] layer app → /app: shared (made once in this run)"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "[multiarch (linux/arm64)] deps image is linux/arm64 (its /bin/sh is aarch64 code)"
        ),
        "the deps image was checked: {stderr}"
    );

    // The index: exactly the two platforms, in the spec's order.
    let index = raw_manifest(&format!("{prefix}/multiarch:{tag}"));
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let entries = index["manifests"].as_array().unwrap();
    let platforms: Vec<String> = entries
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap(),
                m["platform"]["architecture"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);

    // The lock pins the index and records each platform's manifest.
    let locked = &lock(&ws)["images"]["multiarch"];
    let index_digest = locked["digest"].as_str().unwrap().to_owned();
    assert_eq!(
        locked["reference"],
        format!("{prefix}/multiarch@{index_digest}").as_str()
    );
    let mut source_layers = Vec::new();
    for (entry, (machine, arch)) in entries
        .iter()
        .zip([("x86_64", "amd64"), ("aarch64", "arm64")])
    {
        let digest = entry["digest"].as_str().unwrap();
        let platform = format!("linux/{arch}");
        assert_eq!(locked["platforms"][&platform]["digest"], digest, "{locked}");
        let pinned = format!("{prefix}/multiarch@{digest}");
        let manifest = raw_manifest(&pinned);
        source_layers
            .push(manifest["layers"].as_array().unwrap().last().unwrap()["digest"].clone());
        // Each platform's manifest, pulled by digest, runs on its machine
        // and runs the baked code on deps built for it.
        run_ok(Command::new("docker").args(["pull", "-q", &pinned]));
        let said = run_ok(Command::new("docker").args(["run", "--rm", &pinned]));
        assert_eq!(
            said.trim(),
            format!("baked code on {machine}, deps built on {machine}"),
            "{platform}"
        );
        let config = run_ok(
            Command::new(require_tool("skopeo", "apt-get install -y skopeo"))
                .args(["inspect", "--config", "--raw", "--tls-verify=false"])
                .arg(format!("docker://{pinned}")),
        );
        let config: serde_json::Value = serde_json::from_str(&config).unwrap();
        assert_eq!(config["architecture"], arch, "the tool wrote the platform");
    }
    // The source layer: the same bytes for both, uploaded once.
    assert_eq!(source_layers[0], source_layers[1]);
    let layer = source_layers[0]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:");
    let uploads = registry
        .requests()
        .into_iter()
        .filter(|r| {
            (r.method == "PUT" || r.method == "POST")
                && r.status == 201
                && r.query().contains(layer)
        })
        .count();
    assert_eq!(uploads, 1, "the source layer went up once");

    // Reproducible: a build on another machine (a fresh store) takes both
    // deps images from the registry by key and gives the same index.
    let elsewhere = workspace("[linux/amd64, linux/arm64]");
    let stderr = succeeded(&build(&elsewhere, &base, &["--registry", &prefix]));
    clean_engine_after(&base);
    assert!(
        !stderr.contains("building with the Docker engine"),
        "{stderr}"
    );
    assert_eq!(
        lock(&elsewhere)["images"]["multiarch"]["digest"],
        index_digest.as_str()
    );

    // `verify` checks every platform against the lock.
    let out = verify(&ws, &base);
    succeeded(&out);
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains(&format!("multiarch {index_digest} reproduced")),
        "{}",
        describe(&out)
    );
}

#[test]
fn a_base_without_an_arm64_manifest_is_one_line() {
    let registry = TestRegistry::start();
    let amd64 = busybox();
    let (base, _) = push_multi_platform(
        &registry,
        "bases/amd64-only",
        "1",
        &[(&amd64, "linux/amd64")],
    );
    let ws = workspace("[linux/amd64, linux/arm64]");
    let line = one_error_line(&build(&ws, &base, &[]));
    assert!(
        line.contains(&format!(
            "base {base} has no linux/arm64 manifest (its index has linux/amd64)"
        )),
        "{line}"
    );
    assert!(!ws.path("images.lock").exists(), "nothing half-written");
}

#[test]
fn a_deps_image_of_the_wrong_platform_is_refused_and_not_kept() {
    // The engine's busybox is amd64 whatever the build asks: a linux/arm64
    // deps stage on it runs natively and holds amd64 binaries.
    let base = busybox();
    let ws = workspace("[linux/arm64]");
    let out = build(&ws, &base.docker_ref, &[]);
    let line = one_error_line(&out);
    assert!(
        line.contains("the deps image is not linux/arm64: its /bin/sh is a x86-64 executable"),
        "{line}"
    );
    let tags: Vec<String> = ws
        .store()
        .tags()
        .unwrap()
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    assert!(
        !tags.iter().any(|t| t.starts_with("multiarch")),
        "a wrong deps image is not found by its key next time: {tags:?}"
    );
    // So the next build refuses it again rather than taking it from the store.
    let out = build(&ws, &base.docker_ref, &[]);
    let again = one_error_line(&out);
    assert!(again.contains("is not linux/arm64"), "{again}");
}

/// GETs `path` below the registry's `/v2/` with curl, as JSON.
fn curl_json(registry: &TestRegistry, path: &str, accept: &str) -> serde_json::Value {
    let curl = require_tool("curl", "apt-get install -y curl");
    let text = run_ok(
        Command::new(curl)
            .args(["-sf", "-H", &format!("Accept: {accept}")])
            .arg(format!("{}/v2/{path}", registry.url())),
    );
    serde_json::from_str(&text).unwrap()
}

/// The statement in the DSSE envelope of the artifact `digest`.
fn statement_of(registry: &TestRegistry, repository: &str, digest: &str) -> serde_json::Value {
    use base64::Engine as _;
    let artifact = curl_json(
        registry,
        &format!("{repository}/manifests/{digest}"),
        "application/vnd.oci.image.manifest.v1+json",
    );
    let layer = artifact["layers"][0]["digest"].as_str().unwrap();
    let envelope = curl_json(registry, &format!("{repository}/blobs/{layer}"), "*/*");
    let payload = base64::engine::general_purpose::STANDARD
        .decode(envelope["payload"].as_str().unwrap())
        .unwrap();
    serde_json::from_slice(&payload).unwrap()
}

/// Issue 25 for an index: one provenance about the index naming each
/// platform's base manifest and deps image, one SBOM per platform manifest
/// (listed under that manifest), all recorded in the lock per platform, and
/// `verify --key` accepts them.
#[test]
fn a_signed_index_has_one_sbom_per_platform_and_a_provenance_naming_each_platform() {
    let registry = TestRegistry::start();
    let base = two_platform_base(&registry);
    let ws = workspace("[linux/amd64, linux/arm64]");
    let prefix = format!("{}/signed-{}", registry.host(), unique_suffix());
    let openssl = require_tool("openssl", "apt-get install -y openssl");
    let key = ws.path("cosign.key");
    run_ok(
        Command::new(&openssl)
            .args([
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
            ])
            .arg(&key),
    );
    let public = ws.path("cosign.pub");
    run_ok(
        Command::new(&openssl)
            .args(["pkey", "-pubout", "-in"])
            .arg(&key)
            .arg("-out")
            .arg(&public),
    );
    let key_arg = key.to_str().unwrap();
    let built = build(
        &ws,
        &base,
        &["--push", "--registry", &prefix, "--sign-key", key_arg],
    );
    clean_engine_after(&base);
    succeeded(&built);
    let lock = lock(&ws);
    let locked = &lock["images"]["multiarch"];
    let repository = format!("{}/multiarch", prefix.split_once('/').unwrap().1);
    let base_index = raw_manifest(&base);
    let platforms = locked["platforms"].as_object().unwrap();
    assert_eq!(platforms.len(), 2, "{locked}");
    assert!(locked.get("sbom").is_none(), "{locked}");

    let provenance = statement_of(
        &registry,
        &repository,
        locked["provenance"].as_str().unwrap(),
    );
    assert_eq!(
        provenance["subject"][0]["digest"]["sha256"],
        locked["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:")
    );
    let dependencies = provenance["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .unwrap();
    for (platform, entry) in platforms {
        let (os, arch) = platform.split_once('/').unwrap();
        let base_manifest = base_index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["platform"]["os"] == os && m["platform"]["architecture"] == arch)
            .unwrap();
        assert_eq!(entry["base_digest"], base_manifest["digest"], "{locked}");
        let named = |name: String| {
            dependencies
                .iter()
                .find(|d| d["name"] == name)
                .unwrap_or_else(|| panic!("no {name} in {dependencies:?}"))
                .clone()
        };
        let hex =
            |v: &serde_json::Value| v.as_str().unwrap().trim_start_matches("sha256:").to_owned();
        assert_eq!(
            named(format!("base:{platform}"))["digest"]["sha256"],
            hex(&entry["base_digest"])
        );
        assert_eq!(
            named(format!("deps:{platform}"))["digest"]["sha256"],
            hex(&entry["deps_digest"])
        );

        // Its SBOM: about its manifest, listed under it.
        let manifest = entry["digest"].as_str().unwrap();
        let sbom = entry["sbom"].as_str().expect("a platform SBOM");
        let index = curl_json(
            &registry,
            &format!("{repository}/manifests/sha256-{}", hex(&entry["digest"])),
            "application/vnd.oci.image.index.v1+json",
        );
        assert!(
            index["manifests"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["digest"] == sbom),
            "{index}"
        );
        let statement = statement_of(&registry, &repository, sbom);
        assert_eq!(statement["predicateType"], "https://cyclonedx.org/bom");
        assert_eq!(
            statement["subject"][0]["digest"]["sha256"],
            hex(&entry["digest"])
        );
        assert_eq!(
            statement["predicate"]["metadata"]["component"]["version"],
            manifest
        );
        assert_eq!(
            broker_test_support::cyclonedx::schema_errors(
                &serde_json::to_vec(&statement["predicate"]).unwrap()
            ),
            None
        );
    }
    let out = ws
        .command(&[
            "verify",
            "--key",
            public.to_str().unwrap(),
            "--no-rebuild",
            "--lock",
        ])
        .arg(ws.path("images.lock"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
}

/// `broker-images push multiarch` from `ws`'s store to `prefix` with
/// `extra` arguments.
fn push(ws: &Workspace, prefix: &str, extra: &[&str]) -> Output {
    let mut cmd = ws.command(&["push", "multiarch", "--registry", prefix]);
    cmd.args(extra);
    cmd.output().unwrap()
}

#[test]
fn push_platform_sends_only_those_platforms_one_as_its_own_manifest_and_locks_what_it_sent() {
    let registry = TestRegistry::start();
    let base = two_platform_base(&registry);
    let ws = workspace("[linux/amd64, linux/arm64]");
    let built = build(&ws, &base, &[]);
    clean_engine_after(&base);
    succeeded(&built);
    let built_lock = lock(&ws)["images"]["multiarch"].clone();
    let index_digest = built_lock["digest"].as_str().unwrap().to_owned();
    let arm64 = &built_lock["platforms"]["linux/arm64"];
    let prefix = format!("{}/broker", registry.host());
    let lock_path = ws.path("images.lock");
    let lock_arg = lock_path.to_str().unwrap();

    // Both platforms named: the built index itself, byte for byte, and
    // its lock entry stands but for where it went.
    let both = ["--platform", "linux/arm64", "--platform", "linux/amd64"];
    let out = push(
        &ws,
        &prefix,
        &[&both[..], &["--tag", "both", "--lock", lock_arg]].concat(),
    );
    succeeded(&out);
    let mut expected = built_lock.clone();
    expected["reference"] = format!("{prefix}/multiarch@{index_digest}").into();
    expected["tag"] = "both".into();
    assert_eq!(lock(&ws)["images"]["multiarch"], expected);
    let pushed = raw_manifest(&format!("{prefix}/multiarch:both"));
    assert_eq!(
        pushed["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&index_digest),
        "{}",
        describe(&out)
    );

    // One platform: its own manifest (the digest the index lists), and
    // the lock records that image alone.
    let out = push(
        &ws,
        &prefix,
        &[
            "--platform",
            "linux/arm64",
            "--tag",
            "arm",
            "--lock",
            lock_arg,
        ],
    );
    let stderr = succeeded(&out);
    assert!(
        stderr.contains("multiarch: linux/arm64 (its own manifest)"),
        "{stderr}"
    );
    let pushed = raw_manifest(&format!("{prefix}/multiarch:arm"));
    assert_eq!(
        pushed["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let config = run_ok(
        Command::new(require_tool("skopeo", "apt-get install -y skopeo"))
            .args(["inspect", "--config", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{prefix}/multiarch:arm")),
    );
    assert!(config.contains(r#""architecture":"arm64""#), "{config}");
    let locked = &lock(&ws)["images"]["multiarch"];
    let arm64_digest = arm64["digest"].as_str().unwrap();
    assert_eq!(locked["digest"], arm64_digest, "{locked}");
    assert_eq!(
        locked["reference"],
        format!("{prefix}/multiarch@{arm64_digest}").as_str()
    );
    assert_eq!(locked["tag"], "arm");
    assert_eq!(locked["deps_key"], arm64["deps_key"]);
    assert_eq!(locked["deps_digest"], arm64["deps_digest"]);
    assert!(locked.get("platforms").is_none(), "{locked}");
    assert_eq!(locked["platform"], "linux/arm64", "{locked}");
    assert_eq!(locked["sources"], built_lock["sources"]);

    // The lock says which platform it holds: verify rebuilds that one
    // alone, without --platform.
    let out = verify(&ws, &base);
    let stderr = succeeded(&out);
    assert!(!stderr.contains("linux/amd64"), "{stderr}");
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains(&format!("multiarch {arm64_digest} reproduced")),
        "{}",
        describe(&out)
    );
}

#[test]
fn push_of_a_platform_not_built_is_one_line_and_sends_nothing() {
    let registry = TestRegistry::start();
    let base = two_platform_base(&registry);
    let ws = workspace("[linux/amd64, linux/arm64]");
    let built = build(&ws, &base, &[]);
    clean_engine_after(&base);
    succeeded(&built);
    let before = std::fs::read(ws.path("images.lock")).unwrap();
    let requests = registry.requests().len();
    let prefix = format!("{}/broker", registry.host());
    let lock_path = ws.path("images.lock");
    let out = push(
        &ws,
        &prefix,
        &[
            "--platform",
            "linux/amd64",
            "--platform",
            "linux/s390x",
            "--lock",
            lock_path.to_str().unwrap(),
        ],
    );
    let line = one_error_line(&out);
    assert_eq!(
        line,
        "error: multiarch has no linux/s390x image in the store (it was built for linux/amd64, linux/arm64): run `broker-images build` with --platform linux/s390x among its platforms first"
    );
    assert_eq!(
        registry.requests().len(),
        requests,
        "nothing was asked of the registry"
    );
    assert_eq!(std::fs::read(ws.path("images.lock")).unwrap(), before);
}

#[test]
fn offline_builds_each_platform_on_its_manifest_of_the_base_the_store_kept_and_a_store_without_it_is_one_line()
 {
    let registry = TestRegistry::start();
    let base = two_platform_base(&registry);
    let ws = workspace("[linux/amd64, linux/arm64]");
    let online = build(&ws, &base, &[]);
    clean_engine_after(&base);
    succeeded(&online);
    let base_digest = lock(&ws)["images"]["multiarch"]["base_digest"]
        .as_str()
        .unwrap()
        .to_owned();

    // Another store, the same lock: it never read the base's index.
    let elsewhere = workspace("[linux/amd64, linux/arm64]");
    std::fs::copy(ws.path("images.lock"), elsewhere.path("images.lock")).unwrap();
    let before = std::fs::read(elsewhere.path("images.lock")).unwrap();
    let line = one_error_line(&build(&elsewhere, &base, &["--offline"]));
    assert!(
        line.contains(&format!(
            "multiarch (linux/amd64): base {base} ({base_digest}) is not in this store, so --offline cannot tell which of its manifests is linux/amd64's: build once without --offline"
        )),
        "{line}"
    );
    assert_eq!(
        std::fs::read(elsewhere.path("images.lock")).unwrap(),
        before,
        "nothing half-written"
    );

    // New deps inputs, offline: the engine builds each platform on its own
    // manifest of the base, taken from the store, asking the registry
    // nothing (before, arm64 was built on the host's and refused).
    std::fs::write(
        ws.path("images/multiarch/Dockerfile"),
        format!("{DOCKERFILE}RUN echo offline > /offline\n"),
    )
    .unwrap();
    let requests = registry.requests().len();
    let offline = build(&ws, &base, &["--offline"]);
    let asked: Vec<String> = registry.requests()[requests..]
        .iter()
        .map(|r| format!("{} {} {}", r.method, r.path, r.status))
        .collect();
    clean_engine_after(&base);
    let stderr = succeeded(&offline);
    assert!(asked.is_empty(), "offline asks nothing: {asked:?}");
    for (platform, machine) in [("linux/amd64", "x86_64"), ("linux/arm64", "aarch64")] {
        assert!(
            stderr.contains(&format!(
                "[multiarch ({platform})] base {base}: {platform} manifest sha256:"
            )),
            "{stderr}"
        );
        assert!(
            stderr.contains(&format!(
                "[multiarch ({platform})] deps image is {platform} (its /bin/sh is {machine} code)"
            )),
            "{stderr}"
        );
    }
    assert!(
        stderr.contains("building with the Docker engine"),
        "{stderr}"
    );
}
