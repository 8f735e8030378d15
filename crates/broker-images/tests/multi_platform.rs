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
    TestRegistry, Workspace, busybox, busybox_arm64, push_multi_platform, require_tool, run_ok,
    unique_suffix,
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
    let mut cmd = ws.command(&["build"]);
    cmd.arg("--images")
        .arg(ws.path("images"))
        .arg("--source")
        .arg(ws.path("broker"))
        .arg("--cache")
        .arg(ws.path("cache"))
        .arg("--lock")
        .arg(ws.path("images.lock"))
        .args(["--source-revision", "r1"])
        .arg("--base")
        .arg(format!("multiarch={base}"))
        .args(extra);
    cmd.output().unwrap()
}

fn describe(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "{}", describe(out));
    String::from_utf8_lossy(&out.stderr).into_owned()
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
    let stderr = ok(&built);
    for platform in ["linux/amd64", "linux/arm64"] {
        assert!(
            stderr.contains(&format!("multiarch ({platform})")),
            "progress names the platform:\n{stderr}"
        );
    }
    assert!(stderr.contains("under emulation"), "{stderr}");
    // The source layer is built once: the second platform finds it cached.
    assert_eq!(
        stderr.matches("layer app → /app: built").count(),
        1,
        "{stderr}"
    );
    assert!(
        stderr.contains("[multiarch (linux/arm64)] layer app → /app: unchanged (cache)"),
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
    let stderr = ok(&build(&elsewhere, &base, &["--registry", &prefix]));
    assert!(
        !stderr.contains("building with the Docker engine"),
        "{stderr}"
    );
    assert_eq!(
        lock(&elsewhere)["images"]["multiarch"]["digest"],
        index_digest.as_str()
    );

    // `verify` checks every platform against the lock.
    let mut verify = ws.command(&["verify"]);
    verify
        .arg("--images")
        .arg(ws.path("images"))
        .arg("--source")
        .arg(ws.path("broker"))
        .arg("--cache")
        .arg(ws.path("cache"))
        .arg("--lock")
        .arg(ws.path("images.lock"))
        .arg("--base")
        .arg(format!("multiarch={base}"));
    let out = verify.output().unwrap();
    ok(&out);
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
