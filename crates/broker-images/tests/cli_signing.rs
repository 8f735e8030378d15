//! Issue 25: `sign` and `build --push --sign-key` against a real registry,
//! every signature checked by independent tools — the registry's HTTP API
//! read with curl, the signature verified with `openssl dgst -verify`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine as _;
use broker_oci::Digest;
use broker_test_support::{
    TestRegistry, Workspace, busybox, docker_cli, git, require_tool, run_ok, synthetic,
    unique_suffix,
};

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

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "{}", describe(out));
    text(&out.stdout)
}

fn openssl(dir: &Path, args: &[&str]) -> String {
    let openssl = require_tool("openssl", "apt-get install -y openssl");
    run_ok(Command::new(openssl).current_dir(dir).args(args))
}

/// A P-256 key pair in `dir`: `NAME.key` (PKCS#8) and `NAME.pub`.
fn key_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (key, public) = (format!("{name}.key"), format!("{name}.pub"));
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            &key,
        ],
    );
    openssl(dir, &["pkey", "-in", &key, "-pubout", "-out", &public]);
    (dir.join(key), dir.join(public))
}

/// GETs `path` below the registry's `/v2/` with curl: the bytes.
fn curl(registry: &TestRegistry, path: &str, accept: &str) -> Option<Vec<u8>> {
    let curl = require_tool("curl", "apt-get install -y curl");
    let out = Command::new(curl)
        .args(["-sf", "-H", &format!("Accept: {accept}")])
        .arg(format!("{}/v2/{path}", registry.url()))
        .output()
        .unwrap();
    out.status.success().then_some(out.stdout)
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// The signature manifest of `digest` in `repository`, as the registry
/// serves it.
fn signature_manifest(
    registry: &TestRegistry,
    repository: &str,
    digest: &Digest,
) -> Option<(Digest, serde_json::Value)> {
    let tag = format!("sha256-{}.sig", digest.hex());
    let bytes = curl(
        registry,
        &format!("{repository}/manifests/{tag}"),
        OCI_MANIFEST,
    )?;
    Some((Digest::of(&bytes), serde_json::from_slice(&bytes).unwrap()))
}

/// For every simple signing layer of `manifest`: whether openssl verifies
/// its signature with `public`, and the payload.
fn verified_layers(
    registry: &TestRegistry,
    repository: &str,
    manifest: &serde_json::Value,
    public: &Path,
    dir: &Path,
) -> Vec<(bool, serde_json::Value)> {
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|layer| {
            assert_eq!(
                layer["mediaType"],
                "application/vnd.dev.cosign.simplesigning.v1+json"
            );
            let digest = layer["digest"].as_str().unwrap();
            let payload = curl(registry, &format!("{repository}/blobs/{digest}"), "*/*").unwrap();
            let signature = layer["annotations"]["dev.cosignproject.cosign/signature"]
                .as_str()
                .unwrap();
            let der = base64::engine::general_purpose::STANDARD
                .decode(signature)
                .unwrap();
            std::fs::write(dir.join("payload"), &payload).unwrap();
            std::fs::write(dir.join("sig.der"), der).unwrap();
            let openssl = require_tool("openssl", "apt-get install -y openssl");
            let verified = Command::new(openssl)
                .current_dir(dir)
                .args(["dgst", "-sha256", "-verify"])
                .arg(public)
                .args(["-signature", "sig.der", "payload"])
                .output()
                .unwrap()
                .status
                .success();
            (verified, serde_json::from_slice(&payload).unwrap())
        })
        .collect()
}

fn names_image(payload: &serde_json::Value, repository: &str, digest: &Digest) -> bool {
    payload["critical"]["identity"]["docker-reference"] == repository
        && payload["critical"]["image"]["docker-manifest-digest"] == digest.to_string()
        && payload["critical"]["type"] == "cosign container image signature"
}

/// A lock recording the image `digest` pushed as `prefix/name`.
fn write_lock(path: &Path, prefix: &str, name: &str, digest: &Digest) {
    let lock = serde_json::json!({
        "version": 1,
        "images": { name: {
            "reference": format!("{prefix}/{name}@{digest}"),
            "tag": "latest",
            "digest": digest.to_string(),
            "deps_key": "k",
            "base": "b",
            "deps_digest": digest.to_string(),
        }},
    });
    std::fs::write(path, serde_json::to_vec_pretty(&lock).unwrap()).unwrap();
}

#[test]
fn sign_pushes_a_signature_openssl_verifies_and_signing_again_pushes_nothing() {
    let registry = TestRegistry::start();
    let ws = workspace();
    let image = synthetic::tar_image(&ws.store(), "app", 25, 1, 4096);
    let prefix = format!("{}/sign-{}", registry.host(), unique_suffix());
    ok(&ws.run(&["push", "app", "--registry", &prefix]));
    let (key, public) = key_pair(ws.dir(), "cosign");
    let lock = ws.path("images.lock");
    write_lock(&lock, &prefix, "app", &image.digest);
    let repository = format!("{}/app", prefix.split_once('/').unwrap().1);
    assert!(signature_manifest(&registry, &repository, &image.digest).is_none());

    let out = ok(&ws.run(&["sign", "app", "--key", key.to_str().unwrap()]));
    let (sig_digest, manifest) =
        signature_manifest(&registry, &repository, &image.digest).expect("a .sig tag");
    let tag = format!("{prefix}/app:sha256-{}.sig", image.digest.hex());
    assert_eq!(out, format!("{tag}@{sig_digest}\n"));
    let layers = verified_layers(&registry, &repository, &manifest, &public, ws.dir());
    assert_eq!(layers.len(), 1);
    assert!(layers[0].0, "openssl does not verify the signature");
    assert!(names_image(
        &layers[0].1,
        &format!("{prefix}/app"),
        &image.digest
    ));
    // The lock records it.
    let locked: serde_json::Value = serde_json::from_slice(&std::fs::read(&lock).unwrap()).unwrap();
    assert_eq!(locked["images"]["app"]["signature"], sig_digest.to_string());

    // Again: deterministic signatures, nothing pushed, the same manifest.
    let uploads = registry.blob_upload_count();
    let again = ws.run(&["sign", "app", "--key", key.to_str().unwrap()]);
    assert_eq!(ok(&again), out);
    assert!(
        text(&again.stderr).contains("already there"),
        "{}",
        describe(&again)
    );
    assert_eq!(registry.blob_upload_count(), uploads);
    assert_eq!(
        signature_manifest(&registry, &repository, &image.digest)
            .unwrap()
            .0,
        sig_digest
    );

    // A reference, by tag, works without the lock and names the same image.
    let by_tag = ok(&ws.run(&[
        "sign",
        &format!("{prefix}/app:latest"),
        "--key",
        key.to_str().unwrap(),
        "--lock",
        "absent.lock",
    ]));
    assert_eq!(by_tag, out);
}

#[test]
fn another_keys_signature_is_kept_beside_ours() {
    let registry = TestRegistry::start();
    let ws = workspace();
    let image = synthetic::tar_image(&ws.store(), "app", 26, 1, 4096);
    let prefix = format!("{}/keep-{}", registry.host(), unique_suffix());
    ok(&ws.run(&["push", "app", "--registry", &prefix]));
    let (theirs, their_public) = key_pair(ws.dir(), "theirs");
    let (ours, our_public) = key_pair(ws.dir(), "ours");
    let reference = format!("{prefix}/app@{}", image.digest);
    let repository = format!("{}/app", prefix.split_once('/').unwrap().1);

    ok(&ws.run(&["sign", &reference, "--key", theirs.to_str().unwrap()]));
    ok(&ws.run(&["sign", &reference, "--key", ours.to_str().unwrap()]));
    let (_, manifest) = signature_manifest(&registry, &repository, &image.digest).unwrap();
    let by_them = verified_layers(&registry, &repository, &manifest, &their_public, ws.dir());
    let by_us = verified_layers(&registry, &repository, &manifest, &our_public, ws.dir());
    let flags =
        |layers: &[(bool, serde_json::Value)]| layers.iter().map(|l| l.0).collect::<Vec<_>>();
    assert_eq!(flags(&by_them), [true, false]);
    assert_eq!(flags(&by_us), [false, true]);
}

#[test]
fn bad_keys_fail_in_one_line_and_push_nothing() {
    let registry = TestRegistry::start();
    let ws = workspace();
    let image = synthetic::tar_image(&ws.store(), "app", 27, 1, 4096);
    let prefix = format!("{}/bad-{}", registry.host(), unique_suffix());
    ok(&ws.run(&["push", "app", "--registry", &prefix]));
    let reference = format!("{prefix}/app@{}", image.digest);
    let repository = format!("{}/app", prefix.split_once('/').unwrap().1);
    openssl(
        ws.dir(),
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-aes-256-cbc",
            "-pass",
            "pass:right-phrase-9",
            "-out",
            "enc.key",
        ],
    );
    openssl(
        ws.dir(),
        &["genpkey", "-algorithm", "RSA", "-out", "rsa.key"],
    );

    let cases: [(&[&str], Option<&str>, &str); 4] = [
        (&["--key", "enc.key"], None, "enc.key is encrypted"),
        (
            &["--key", "enc.key"],
            Some("wrong-phrase-1"),
            "wrong passphrase",
        ),
        (&["--key", "rsa.key"], None, "not an ECDSA P-256 key"),
        (
            &["--key", "missing.key"],
            None,
            "cannot read the key missing.key",
        ),
    ];
    for (args, passphrase, says) in cases {
        let mut cmd = ws.command(&["sign", reference.as_str()]);
        cmd.args(args);
        if let Some(p) = passphrase {
            cmd.env("BROKER_IMAGES_SIGN_PASSPHRASE", p);
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        let stderr = text(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {}", describe(&out));
        assert_eq!(stderr.trim_end().lines().count(), 1, "{}", describe(&out));
        assert!(!stderr.contains("wrong-phrase-1") && !stderr.contains("right-phrase-9"));
        assert!(signature_manifest(&registry, &repository, &image.digest).is_none());
    }

    // The right passphrase, from stdin.
    let out = ws.run_with_stdin(
        &["sign", &reference, "--key", "enc.key", "--passphrase-stdin"],
        "right-phrase-9\n",
    );
    ok(&out);
    assert!(signature_manifest(&registry, &repository, &image.digest).is_some());

    // --sign-key without --push is a usage error.
    let out = ws.run(&["build", "--sign-key", "enc.key"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
}

/// `build --push --sign-key` on a tiny image over busybox: the image and
/// its signature pushed, the lock records both, and a rebuild that
/// changes nothing pushes nothing.
/// The artifact manifest `digest` of `repository` holding a DSSE envelope,
/// and the in-toto statement in it, after openssl verified the envelope's
/// signature over its pre-authentication encoding with `public`.
fn verified_attestation(
    registry: &TestRegistry,
    repository: &str,
    digest: &str,
    public: &Path,
    dir: &Path,
) -> (serde_json::Value, serde_json::Value) {
    let artifact: serde_json::Value = serde_json::from_slice(
        &curl(
            registry,
            &format!("{repository}/manifests/{digest}"),
            OCI_MANIFEST,
        )
        .unwrap(),
    )
    .unwrap();
    let layer = &artifact["layers"][0];
    assert_eq!(layer["mediaType"], "application/vnd.dsse.envelope.v1+json");
    let envelope: serde_json::Value = serde_json::from_slice(
        &curl(
            registry,
            &format!("{repository}/blobs/{}", layer["digest"].as_str().unwrap()),
            "*/*",
        )
        .unwrap(),
    )
    .unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let statement = b64.decode(envelope["payload"].as_str().unwrap()).unwrap();
    let payload_type = envelope["payloadType"].as_str().unwrap();
    assert_eq!(payload_type, "application/vnd.in-toto+json");
    let mut pae = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        statement.len()
    )
    .into_bytes();
    pae.extend_from_slice(&statement);
    let sig = b64
        .decode(envelope["signatures"][0]["sig"].as_str().unwrap())
        .unwrap();
    std::fs::write(dir.join("pae"), &pae).unwrap();
    std::fs::write(dir.join("pae.sig"), sig).unwrap();
    openssl(
        dir,
        &[
            "dgst",
            "-sha256",
            "-verify",
            public.to_str().unwrap(),
            "-signature",
            "pae.sig",
            "pae",
        ],
    );
    (artifact, serde_json::from_slice(&statement).unwrap())
}

/// The SBOM in the statement `statement`, checked: an in-toto statement
/// of predicate type CycloneDX about `digest`, valid CycloneDX 1.5.
fn checked_sbom(statement: &serde_json::Value, digest: &Digest) -> serde_json::Value {
    assert_eq!(statement["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(statement["predicateType"], "https://cyclonedx.org/bom");
    assert_eq!(statement["subject"][0]["digest"]["sha256"], digest.hex());
    let bom = &statement["predicate"];
    if let Some(error) =
        broker_test_support::cyclonedx::schema_errors(&serde_json::to_vec(bom).unwrap())
    {
        panic!("the SBOM is not valid CycloneDX 1.5: {error}\n{bom:#}");
    }
    bom.clone()
}

#[test]
fn build_push_sign_key_signs_every_pushed_image_and_a_rebuild_pushes_nothing() {
    let base = busybox();
    let registry = TestRegistry::start();
    let ws = workspace();
    let app = ws.path("broker/app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(app.join("main.sh"), "echo signed\n").unwrap();
    git(&ws.path("broker"), &["init", "--quiet", "-b", "main"]);
    git(&ws.path("broker"), &["add", "."]);
    git(&ws.path("broker"), &["commit", "--quiet", "-m", "app"]);
    let tiny = ws.path("images/tiny");
    std::fs::create_dir_all(&tiny).unwrap();
    std::fs::write(tiny.join("Dockerfile"), "ARG BASE\nFROM ${BASE}\n").unwrap();
    std::fs::write(
        tiny.join("image.yaml"),
        "deps:\n  base: unused/base:1\nlayers:\n  - name: app\n    from: app\n    to: /app\nconfig:\n  cmd: [\"sh\", \"/app/main.sh\"]\n",
    )
    .unwrap();
    let (key, public) = key_pair(ws.dir(), "cosign");
    let prefix = format!("{}/build-{}", registry.host(), unique_suffix());
    let build = || {
        let mut cmd = ws.command(&["build", "--source", "broker", "--images", "images"]);
        cmd.args(["--base", &format!("tiny={}", base.docker_ref)])
            .args(["--push", "--registry", &prefix, "--sign-key"])
            .arg(&key);
        cmd.output().unwrap()
    };
    ok(&build());
    let lock: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ws.path("images.lock")).unwrap()).unwrap();
    let locked = &lock["images"]["tiny"];
    let digest: Digest = locked["digest"].as_str().unwrap().parse().unwrap();
    let repository = format!("{}/tiny", prefix.split_once('/').unwrap().1);
    let (sig_digest, manifest) =
        signature_manifest(&registry, &repository, &digest).expect("a .sig tag");
    assert_eq!(locked["signature"], sig_digest.to_string());
    let layers = verified_layers(&registry, &repository, &manifest, &public, ws.dir());
    assert_eq!(layers.len(), 1);
    assert!(layers[0].0);
    assert!(names_image(
        &layers[0].1,
        &format!("{prefix}/tiny"),
        &digest
    ));

    // The provenance: listed in the referrers tag-schema index, an
    // artifact about the image, a DSSE envelope openssl verifies over its
    // pre-authentication encoding, naming the image, its deps and trees.
    let provenance = locked["provenance"].as_str().expect("a provenance digest");
    let referrers_tag = format!("sha256-{}", digest.hex());
    let index_path = format!("{repository}/manifests/{referrers_tag}");
    let index: serde_json::Value = serde_json::from_slice(
        &curl(
            &registry,
            &index_path,
            "application/vnd.oci.image.index.v1+json",
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(index["manifests"][0]["digest"], provenance, "{index}");
    assert_eq!(
        index["manifests"][0]["artifactType"],
        "application/vnd.in-toto+json"
    );
    let (artifact, statement) =
        verified_attestation(&registry, &repository, provenance, &public, ws.dir());
    assert_eq!(artifact["subject"]["digest"], digest.to_string());
    assert_eq!(statement["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(statement["predicateType"], "https://slsa.dev/provenance/v1");
    assert_eq!(statement["subject"][0]["digest"]["sha256"], digest.hex());
    let dependencies = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .unwrap();
    let deps = dependencies.iter().find(|d| d["name"] == "deps").unwrap();
    let deps_digest: Digest = locked["deps_digest"].as_str().unwrap().parse().unwrap();
    assert_eq!(deps["digest"]["sha256"], deps_digest.hex());
    let tree = dependencies
        .iter()
        .find(|d| d["name"] == "tree:app")
        .unwrap();
    assert_eq!(
        tree["digest"]["gitCommit"],
        locked["sources"]["app"]["revision"]
    );

    // The SBOM: listed after the provenance, signed the same way, valid
    // CycloneDX 1.5 naming the base and the tree with its revision.
    let sbom = locked["sbom"].as_str().expect("an SBOM digest");
    assert_eq!(index["manifests"][1]["digest"], sbom, "{index}");
    assert_eq!(
        index["manifests"][1]["annotations"]["in-toto.io/predicate-type"],
        "https://cyclonedx.org/bom"
    );
    let (artifact, statement) =
        verified_attestation(&registry, &repository, sbom, &public, ws.dir());
    assert_eq!(artifact["subject"]["digest"], digest.to_string());
    let bom = checked_sbom(&statement, &digest);
    let tree = bom["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "app")
        .unwrap();
    assert_eq!(tree["version"], locked["sources"]["app"]["revision"]);
    assert_eq!(bom["components"][0]["name"], base.docker_ref);

    // Another tool's referrer, listed in the index before the rebuild,
    // stays listed beside ours.
    let empty = Digest::of(b"{}");
    let foreign = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.other",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty.to_string(), "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty.to_string(), "size": 2}],
        "subject": artifact["subject"],
    }))
    .unwrap();
    let foreign_digest = Digest::of(&foreign);
    curl_put_manifest(
        &registry,
        &repository,
        &foreign_digest.to_string(),
        &foreign,
    );
    let foreign_entry = serde_json::json!({
        "mediaType": OCI_MANIFEST,
        "digest": foreign_digest.to_string(),
        "size": foreign.len(),
        "artifactType": "application/vnd.example.other",
        "annotations": {"org.example.tool": "kept"},
    });
    let only_foreign = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [foreign_entry],
    });
    curl_put_manifest_as(
        &registry,
        &repository,
        &referrers_tag,
        &serde_json::to_vec(&only_foreign).unwrap(),
        "application/vnd.oci.image.index.v1+json",
    );

    let uploads = registry.blob_upload_count();
    let again = build();
    ok(&again);
    assert_eq!(
        registry.blob_upload_count(),
        uploads,
        "{}",
        describe(&again)
    );
    let relock: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ws.path("images.lock")).unwrap()).unwrap();
    assert_eq!(relock, lock);
    let index: serde_json::Value = serde_json::from_slice(
        &curl(
            &registry,
            &index_path,
            "application/vnd.oci.image.index.v1+json",
        )
        .unwrap(),
    )
    .unwrap();
    let listed = index["manifests"].as_array().unwrap();
    assert_eq!(listed.len(), 3, "{index}");
    assert_eq!(listed[0], foreign_entry);
    assert_eq!(listed[1]["digest"], provenance);
    assert_eq!(listed[2]["digest"], sbom);
}

/// PUTs `bytes` as manifest `tag` of `repository` with curl: what an
/// attacker with push access can do.
fn curl_put_manifest(registry: &TestRegistry, repository: &str, tag: &str, bytes: &[u8]) {
    curl_put_manifest_as(registry, repository, tag, bytes, OCI_MANIFEST);
}

/// [`curl_put_manifest`] with the media type `media_type`.
fn curl_put_manifest_as(
    registry: &TestRegistry,
    repository: &str,
    tag: &str,
    bytes: &[u8],
    media_type: &str,
) {
    let curl = require_tool("curl", "apt-get install -y curl");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), bytes).unwrap();
    run_ok(
        Command::new(curl)
            .args(["-sf", "-X", "PUT", "-H"])
            .arg(format!("Content-Type: {media_type}"))
            .arg("--data-binary")
            .arg(format!("@{}", file.path().display()))
            .arg(format!(
                "{}/v2/{repository}/manifests/{tag}",
                registry.url()
            )),
    );
}

/// `verify --key` and `render --require-signed` accept the images signed
/// by the key and refuse, naming the image, one unsigned, one signed by
/// another key and one whose `.sig` tag holds a signature re-pointed from
/// another image.
#[test]
fn verify_key_and_render_require_signed_refuse_unsigned_foreign_and_repointed_signatures_and_sboms()
{
    let registry = TestRegistry::start();
    let ws = workspace();
    let prefix = format!("{}/verify-{}", registry.host(), unique_suffix());
    let path_of = |name: &str| format!("{}/{name}", prefix.split_once('/').unwrap().1);
    let (ours, our_public) = key_pair(ws.dir(), "ours");
    let (theirs, _) = key_pair(ws.dir(), "theirs");
    let sign = |reference: &str, key: &Path| {
        ok(&ws.run(&[
            "sign",
            reference,
            "--key",
            key.to_str().unwrap(),
            "--lock",
            "none.lock",
        ]));
    };

    // The render fixture's lock, its three broker images pushed here.
    let root = broker_test_support::repo_root();
    let fixture = root.join("crates/broker-render/tests/fixtures/images.lock");
    let mut lock: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture).unwrap()).unwrap();
    let names = ["mgmt-app", "python-base", "ttn_decoder"];
    let mut digests = Vec::new();
    for (seed, name) in names.iter().enumerate() {
        let image = synthetic::tar_image(&ws.store(), name, 40 + seed as u64, 1, 2048);
        ok(&ws.run(&["push", name, "--registry", &prefix, "--tag", "v1"]));
        let entry = &mut lock["images"][name];
        entry["reference"] = format!("{prefix}/{name}@{}", image.digest).into();
        entry["digest"] = image.digest.to_string().into();
        digests.push(image.digest);
    }
    let lock_path = ws.path("images.lock");
    std::fs::write(&lock_path, serde_json::to_vec_pretty(&lock).unwrap()).unwrap();
    // Every image of the lock: signature and provenance.
    ok(&ws.run(&["sign", "--key", ours.to_str().unwrap()]));
    let signed_lock: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&lock_path).unwrap()).unwrap();
    for name in names {
        let entry = &signed_lock["images"][name];
        assert!(
            entry["signature"].is_string() && entry["provenance"].is_string(),
            "{entry}"
        );
    }
    let verify = |public: &Path| {
        let public = public.to_str().unwrap();
        ws.run(&[
            "verify",
            "--key",
            public,
            "--no-rebuild",
            "--lock",
            "images.lock",
        ])
    };
    let render_inputs = ws.path("render");
    for dir in ["manifests", "environments"] {
        broker_test_support::copy_dir(&root.join(dir), &render_inputs.join(dir));
    }
    broker_test_support::copy_dir(&root.join("examples/broker"), &render_inputs.join("broker"));
    let render = |public: &Path| {
        let mut cmd = ws.command(&["render", "--lock", "images.lock"]);
        cmd.arg("--source")
            .arg(render_inputs.join("broker"))
            .arg("--catalogue")
            .arg(render_inputs.join("manifests"))
            .arg("--environment")
            .arg(render_inputs.join("environments/single-node.yaml"))
            .arg("--env-file")
            .arg(root.join("crates/broker-render/tests/fixtures/cluster.env"))
            .args(["--out", "rendered", "--require-signed", "--key"])
            .arg(public);
        cmd.output().unwrap()
    };

    let out = verify(&our_public);
    let stdout = ok(&out);
    for name in names {
        assert!(
            stdout.contains(&format!("{name} signed by")),
            "{}",
            describe(&out)
        );
    }
    ok(&render(&our_public));
    assert!(ws.path("rendered/kustomization.yaml").is_file());
    std::fs::remove_dir_all(ws.path("rendered")).unwrap();

    // The provenance unlisted (an empty referrers index): named as missing;
    // signing again lists it again.
    let python_index = format!("sha256-{}", digests[1].hex());
    let empty_index = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
    curl_put_manifest_as(
        &registry,
        &path_of("python-base"),
        &python_index,
        empty_index,
        "application/vnd.oci.image.index.v1+json",
    );
    let out = verify(&our_public);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("python-base: no provenance signed by the key"),
        "{}",
        describe(&out)
    );
    ok(&ws.run(&["sign", "python-base", "--key", ours.to_str().unwrap()]));
    ok(&verify(&our_public));

    // The SBOM deleted from the list, listed for another image, re-pointed
    // (a manifest about ours holding another image's statement), signed by
    // another key: each named, verify fails and render refuses; signing
    // again lists ours again.
    let python = path_of("python-base");
    let index_type = "application/vnd.oci.image.index.v1+json";
    let provenance_entry = || {
        let index: serde_json::Value = serde_json::from_slice(
            &curl(
                &registry,
                &format!("{python}/manifests/{python_index}"),
                index_type,
            )
            .unwrap(),
        )
        .unwrap();
        let provenance = &signed_lock["images"]["python-base"]["provenance"];
        index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["digest"] == *provenance)
            .unwrap()
            .clone()
    };
    let list = |entries: Vec<serde_json::Value>| {
        let index = serde_json::json!({
            "schemaVersion": 2, "mediaType": index_type, "manifests": entries,
        });
        curl_put_manifest_as(
            &registry,
            &python,
            &python_index,
            &serde_json::to_vec(&index).unwrap(),
            index_type,
        );
    };
    let refused = |expected: &str| {
        for out in [verify(&our_public), render(&our_public)] {
            assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
            let stderr = text(&out.stderr);
            assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
            assert!(stderr.contains("1 of 3 images not signed by"), "{stderr}");
            assert!(
                stderr.contains(&format!("python-base: {expected}")),
                "{stderr}"
            );
        }
        assert!(!ws.path("rendered").exists(), "render wrote output");
    };
    let restore = || {
        ok(&ws.run(&["sign", "python-base", "--key", ours.to_str().unwrap()]));
        ok(&verify(&our_public));
    };
    list(vec![provenance_entry()]);
    refused(&format!(
        "no SBOM signed by the key (none listed in {python_index})"
    ));
    restore();

    // Another image of the repository, signed through a lock of its own:
    // its SBOM is ours by key, but about it.
    let other = synthetic::tar_image(&ws.store(), "python-base", 77, 1, 2048);
    ok(&ws.run(&[
        "push",
        "python-base",
        "--registry",
        &prefix,
        "--tag",
        "sbom-other",
    ]));
    write_lock(
        &ws.path("other.lock"),
        &prefix,
        "python-base",
        &other.digest,
    );
    ok(&ws.run(&[
        "sign",
        "python-base",
        "--key",
        ours.to_str().unwrap(),
        "--lock",
        "other.lock",
    ]));
    let other_lock: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ws.path("other.lock")).unwrap()).unwrap();
    let other_sbom = other_lock["images"]["python-base"]["sbom"]
        .as_str()
        .unwrap()
        .to_owned();
    let other_bytes = curl(
        &registry,
        &format!("{python}/manifests/{other_sbom}"),
        OCI_MANIFEST,
    )
    .unwrap();
    let entry_of = |bytes: &[u8]| {
        serde_json::json!({
            "mediaType": OCI_MANIFEST,
            "digest": Digest::of(bytes).to_string(),
            "size": bytes.len(),
            "artifactType": "application/vnd.in-toto+json",
        })
    };
    list(vec![provenance_entry(), entry_of(&other_bytes)]);
    refused(&format!(
        "no SBOM signed by the key: {other_sbom}, listed in {python_index}, is about {}",
        other.digest
    ));
    let mut repointed: serde_json::Value = serde_json::from_slice(&other_bytes).unwrap();
    let ours_sbom = signed_lock["images"]["python-base"]["sbom"]
        .as_str()
        .unwrap();
    let ours_manifest: serde_json::Value = serde_json::from_slice(
        &curl(
            &registry,
            &format!("{python}/manifests/{ours_sbom}"),
            OCI_MANIFEST,
        )
        .unwrap(),
    )
    .unwrap();
    repointed["subject"] = ours_manifest["subject"].clone();
    let repointed = serde_json::to_vec(&repointed).unwrap();
    curl_put_manifest(
        &registry,
        &python,
        &Digest::of(&repointed).to_string(),
        &repointed,
    );
    list(vec![provenance_entry(), entry_of(&repointed)]);
    refused(&format!(
        "no SBOM signed by the key: {}, listed in {python_index}, is about {}",
        Digest::of(&repointed),
        other.digest
    ));

    // Their key, over our image: listed instead of ours.
    std::fs::copy(&lock_path, ws.path("theirs.lock")).unwrap();
    ok(&ws.run(&[
        "sign",
        "python-base",
        "--key",
        theirs.to_str().unwrap(),
        "--lock",
        "theirs.lock",
    ]));
    let theirs_lock: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ws.path("theirs.lock")).unwrap()).unwrap();
    let their_sbom = theirs_lock["images"]["python-base"]["sbom"]
        .as_str()
        .unwrap();
    assert_ne!(their_sbom, ours_sbom);
    let their_bytes = curl(
        &registry,
        &format!("{python}/manifests/{their_sbom}"),
        OCI_MANIFEST,
    )
    .unwrap();
    list(vec![provenance_entry(), entry_of(&their_bytes)]);
    refused(&format!(
        "no SBOM signed by the key: {their_sbom}, listed in {python_index}, is signed by another key"
    ));
    restore();

    // Another key: every image named, nothing rendered.
    let (_, other_public) = key_pair(ws.dir(), "other");
    let out = verify(&other_public);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("3 of 3 images not signed by"), "{stderr}");
    assert!(stderr.contains("no signature by the key given"), "{stderr}");

    let mgmt = path_of("mgmt-app");
    let mgmt_tag = format!("sha256-{}.sig", digests[0].hex());
    // python-base: its `.sig` tag re-pointed to the (valid, ours) signature
    // of another image in the same repository.
    let python = path_of("python-base");
    let elsewhere = synthetic::tar_image(&ws.store(), "python-base", 99, 1, 2048);
    ok(&ws.run(&[
        "push",
        "python-base",
        "--registry",
        &prefix,
        "--tag",
        "other",
    ]));
    sign(&format!("{prefix}/python-base@{}", elsewhere.digest), &ours);
    let elsewhere_sig = curl(
        &registry,
        &format!("{python}/manifests/sha256-{}.sig", elsewhere.digest.hex()),
        OCI_MANIFEST,
    )
    .unwrap();
    curl_put_manifest(
        &registry,
        &python,
        &format!("sha256-{}.sig", digests[1].hex()),
        &elsewhere_sig,
    );
    // mgmt-app: only another key's signature under its tag.
    let their_image = synthetic::tar_image(&ws.store(), "mgmt-app", 98, 1, 2048);
    ok(&ws.run(&["push", "mgmt-app", "--registry", &prefix, "--tag", "theirs"]));
    sign(
        &format!("{prefix}/mgmt-app@{}", their_image.digest),
        &theirs,
    );
    let theirs_sig = curl(
        &registry,
        &format!("{mgmt}/manifests/sha256-{}.sig", their_image.digest.hex()),
        OCI_MANIFEST,
    )
    .unwrap();
    curl_put_manifest(&registry, &mgmt, &mgmt_tag, &theirs_sig);
    // ttn_decoder: a lock digest that was never signed.
    let unsigned = synthetic::tar_image(&ws.store(), "ttn_decoder", 97, 1, 2048);
    ok(&ws.run(&[
        "push",
        "ttn_decoder",
        "--registry",
        &prefix,
        "--tag",
        "unsigned",
    ]));
    lock["images"]["ttn_decoder"]["reference"] =
        format!("{prefix}/ttn_decoder@{}", unsigned.digest).into();
    lock["images"]["ttn_decoder"]["digest"] = unsigned.digest.to_string().into();
    std::fs::write(&lock_path, serde_json::to_vec_pretty(&lock).unwrap()).unwrap();

    for out in [verify(&our_public), render(&our_public)] {
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        let stderr = text(&out.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(stderr.contains("3 of 3 images not signed by"), "{stderr}");
        assert!(
            stderr.contains("mgmt-app: no signature by the key given"),
            "{stderr}"
        );
        assert!(
            stderr.contains(&format!(
                "python-base: the signed payload names {}",
                elsewhere.digest
            )),
            "{stderr}"
        );
        assert!(
            stderr.contains("ttn_decoder: not signed (no sha256-"),
            "{stderr}"
        );
    }
    assert!(!ws.path("rendered").exists(), "render wrote output");
}

/// The directory of the host's npm (`…/node_modules/npm`), found from the
/// `npm` on PATH. The Debian minbase has nodejs but no npm: this npm is
/// handed to the deps stage (and to `docker run`) from outside.
fn host_npm() -> PathBuf {
    let npm = require_tool("npm", "apt-get install -y npm");
    let cli = std::fs::canonicalize(npm).unwrap();
    let dir = cli.parent().and_then(Path::parent).unwrap().to_path_buf();
    assert!(
        dir.join("bin/npm-cli.js").is_file(),
        "npm on PATH is not an npm package directory ({}): install npm from its package",
        dir.display()
    );
    dir
}

/// Every `(name, version)` of an `npm ls --all --json` tree.
fn npm_tree(node: &serde_json::Value, out: &mut std::collections::BTreeSet<(String, String)>) {
    for (name, dep) in node["dependencies"].as_object().into_iter().flatten() {
        out.insert((name.clone(), dep["version"].as_str().unwrap().to_owned()));
        npm_tree(dep, out);
    }
}

/// The `(name, version)` of every SBOM component whose purl is of `kind`.
fn components_of(
    bom: &serde_json::Value,
    kind: &str,
) -> std::collections::BTreeSet<(String, String)> {
    bom["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| {
            c["purl"]
                .as_str()
                .is_some_and(|p| p.starts_with(&format!("pkg:{kind}/")))
        })
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                c["version"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// An image on the Debian minbase (pushed to the registry, so the base is
/// pinned by a registry digest) whose deps stage pip-installs one package
/// and npm-installs three (one nested): the SBOM lists exactly the Python
/// and npm packages `pip list` and `npm ls --all` report inside the image
/// run by the engine, the base with a `pkg:oci` purl, every installed
/// Debian package, and the tree with its revision; it is valid CycloneDX
/// 1.5; a second build gives the same bytes and pushes nothing.
#[test]
fn the_sbom_lists_what_pip_and_npm_report_inside_the_image_and_is_reproducible() {
    let registry = TestRegistry::start();
    let ws = workspace();
    let minbase = broker_test_support::debian_minbase();
    let base = minbase.push_to(&registry, "base/debian", "12");
    let app = ws.path("broker/app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(app.join("main.py"), "print('sbom')\n").unwrap();
    git(&ws.path("broker"), &["init", "--quiet", "-b", "main"]);
    git(&ws.path("broker"), &["add", "."]);
    git(&ws.path("broker"), &["commit", "--quiet", "-m", "app"]);
    let spec = ws.path("images/inventory");
    std::fs::create_dir_all(&spec).unwrap();
    let npm = host_npm();
    run_ok(
        Command::new(require_tool("tar", "apt-get install -y tar"))
            .arg("-czf")
            .arg(ws.path("broker/tools-npm.tgz"))
            .arg("-C")
            .arg(npm.parent().unwrap())
            .arg("npm"),
    );
    // The deps stage gets it as a file of the broker tree (not committed:
    // no tree layer maps it). npm runs from the copied tarball and is removed in the same step: no
    // layer holds it, so the image's npm packages are the app's alone.
    std::fs::write(
        spec.join("Dockerfile"),
        "ARG BASE\nFROM ${BASE}\nCOPY tools-npm.tgz /tmp/npm.tgz\n\
         RUN python3 -m pip install --break-system-packages --no-cache-dir --root-user-action=ignore six==1.17.0 \\\n \
         && mkdir -p /opt/npm /srv/node && tar -xzf /tmp/npm.tgz -C /opt/npm \\\n \
         && cd /srv/node && node /opt/npm/npm/bin/npm-cli.js install --no-audit --no-fund --no-update-notifier \
         ms@2.1.3 debug@4.3.4 @types/ms@0.7.34 \\\n \
         && rm -rf /opt/npm /tmp/npm.tgz /root/.npm\n",
    )
    .unwrap();
    std::fs::write(
        spec.join("image.yaml"),
        "deps:\n  base: unused/base:1\n  files: [tools-npm.tgz]\nlayers:\n  - name: app\n    from: app\n    to: /srv/app\nconfig:\n  cmd: [\"python3\", \"/srv/app/main.py\"]\n",
    )
    .unwrap();
    let (key, public) = key_pair(ws.dir(), "cosign");
    let prefix = format!("{}/sbom-{}", registry.host(), unique_suffix());
    let build = || {
        let mut cmd = ws.command(&["build", "--source", "broker", "--images", "images"]);
        cmd.args(["--base", &format!("inventory={base}")])
            .args(["--push", "--registry", &prefix, "--sign-key"])
            .arg(&key)
            .args(["--platform", "linux/amd64"]);
        let bundle = Path::new("/etc/ssl/certs/ca-certificates.crt");
        if bundle.is_file() {
            cmd.arg("--deps-ca-file").arg(bundle);
        }
        cmd.output().unwrap()
    };
    ok(&build());
    let lock: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ws.path("images.lock")).unwrap()).unwrap();
    let locked = &lock["images"]["inventory"];
    let digest: Digest = locked["digest"].as_str().unwrap().parse().unwrap();
    let repository = format!("{}/inventory", prefix.split_once('/').unwrap().1);
    let sbom = locked["sbom"].as_str().expect("an SBOM digest").to_owned();
    let (artifact, statement) =
        verified_attestation(&registry, &repository, &sbom, &public, ws.dir());
    assert_eq!(artifact["subject"]["digest"], digest.to_string());
    let bom = checked_sbom(&statement, &digest);

    // What the tools inside the image say, run by the engine.
    let image = format!("{prefix}/inventory@{digest}");
    run_ok(docker_cli().args(["pull", "--quiet", &image]));
    broker_test_support::remove_from_engine_when_done(&image);
    let pip = run_ok(docker_cli().args([
        "run",
        "--rm",
        &image,
        "python3",
        "-m",
        "pip",
        "list",
        "--format=json",
        "--disable-pip-version-check",
    ]));
    let pip: std::collections::BTreeSet<(String, String)> =
        serde_json::from_str::<Vec<serde_json::Value>>(&pip)
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_owned(),
                    p["version"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
    assert!(
        pip.contains(&("six".to_owned(), "1.17.0".to_owned())),
        "{pip:?}"
    );
    assert_eq!(components_of(&bom, "pypi"), pip);
    let mut npm_ls = docker_cli();
    npm_ls
        .args(["run", "--rm", "-w", "/srv/node", "-v"])
        .arg(format!("{}:/opt/npm:ro", npm.display()))
        .args([
            &image,
            "node",
            "/opt/npm/bin/npm-cli.js",
            "ls",
            "--all",
            "--json",
        ]);
    let tree: serde_json::Value = serde_json::from_str(&run_ok(&mut npm_ls)).unwrap();
    let mut npm_packages = std::collections::BTreeSet::new();
    npm_tree(&tree, &mut npm_packages);
    assert!(
        npm_packages.contains(&("ms".to_owned(), "2.1.2".to_owned())),
        "debug's own ms is nested: {tree:#}"
    );
    assert_eq!(components_of(&bom, "npm"), npm_packages);
    let scoped = bom["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "@types/ms")
        .unwrap();
    assert_eq!(scoped["purl"], "pkg:npm/%40types/ms@0.7.34");

    // The base, pinned; the Debian packages dpkg lists as installed.
    let base_digest: Digest = locked["base_digest"].as_str().unwrap().parse().unwrap();
    let base_component = &bom["components"][0];
    assert_eq!(
        base_component["purl"],
        format!(
            "pkg:oci/debian@sha256%3A{}?repository_url={}/base/debian",
            base_digest.hex(),
            registry.host()
        )
    );
    let dpkg = run_ok(docker_cli().args([
        "run",
        "--rm",
        &image,
        "dpkg-query",
        "-W",
        "-f",
        "${db:Status-Status} ${Package} ${Version}\\n",
    ]));
    let installed: std::collections::BTreeSet<(String, String)> = dpkg
        .lines()
        .filter_map(|l| l.strip_prefix("installed "))
        .map(|l| {
            let (name, version) = l.split_once(' ').unwrap();
            (name.to_owned(), version.to_owned())
        })
        .collect();
    assert!(installed.len() > 50, "{dpkg}");
    assert_eq!(components_of(&bom, "deb"), installed);
    let tree = bom["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "app")
        .unwrap();
    assert_eq!(tree["version"], locked["sources"]["app"]["revision"]);

    // Again: the same SBOM bytes, the same artifacts, nothing uploaded.
    let uploads = registry.blob_upload_count();
    let again = build();
    ok(&again);
    assert_eq!(
        registry.blob_upload_count(),
        uploads,
        "{}",
        describe(&again)
    );
    let relock: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ws.path("images.lock")).unwrap()).unwrap();
    assert_eq!(relock, lock);
    let (_, restatement) = verified_attestation(&registry, &repository, &sbom, &public, ws.dir());
    assert_eq!(
        serde_json::to_vec(&restatement).unwrap(),
        serde_json::to_vec(&statement).unwrap()
    );
}

/// Where the registry has the OCI 1.1 referrers API — faked in front of
/// the real registry, which (Distribution 2.8) has none — provenance and
/// SBOM are listed by it, no tag-schema index is made, and `verify` finds
/// them through it; signing again uploads nothing.
#[test]
fn with_the_referrers_api_no_tag_schema_index_is_kept_and_verify_reads_the_api() {
    let registry = TestRegistry::start();
    let proxy = broker_test_support::FaultProxy::referrers_api_fake(&registry);
    let ws = workspace();
    let image = synthetic::tar_image(&ws.store(), "app", 26, 1, 4096);
    let prefix = format!("{}/referrers-{}", proxy.host(), unique_suffix());
    ok(&ws.run(&["push", "app", "--registry", &prefix]));
    let (key, public) = key_pair(ws.dir(), "cosign");
    let lock_path = ws.path("images.lock");
    write_lock(&lock_path, &prefix, "app", &image.digest);
    // As on a machine that did not build it: the layer is not in the store;
    // the SBOM is made from the registry's copy, fetched into the store.
    let store = ws.store();
    std::fs::remove_file(store.blob_path(&image.layers[0])).unwrap();
    let sign = || ws.run(&["sign", "app", "--key", key.to_str().unwrap()]);
    ok(&sign());
    assert!(store.has_blob(&image.layers[0]));
    let lock: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&lock_path).unwrap()).unwrap();
    let locked = &lock["images"]["app"];
    let repository = format!("{}/app", prefix.split_once('/').unwrap().1);
    let index_type = "application/vnd.oci.image.index.v1+json";
    let tag_schema = format!("{repository}/manifests/sha256-{}", image.digest.hex());
    assert!(
        curl(&registry, &tag_schema, index_type).is_none(),
        "a tag-schema index was made beside the referrers API"
    );
    let curl_tool = require_tool("curl", "apt-get install -y curl");
    let listed = run_ok(Command::new(curl_tool).args([
        "-sf",
        &format!(
            "http://{}/v2/{repository}/referrers/{}",
            proxy.host(),
            image.digest
        ),
    ]));
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let digests: std::collections::BTreeSet<&str> = listed["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["digest"].as_str().unwrap())
        .collect();
    let expected: std::collections::BTreeSet<&str> = [
        locked["provenance"].as_str().unwrap(),
        locked["sbom"].as_str().unwrap(),
    ]
    .into();
    assert_eq!(digests, expected, "{listed}");

    let served = proxy.referrers_served();
    let out = ws.run(&[
        "verify",
        "--key",
        public.to_str().unwrap(),
        "--no-rebuild",
        "--lock",
        "images.lock",
    ]);
    assert!(ok(&out).contains("app signed by"), "{}", describe(&out));
    assert!(
        proxy.referrers_served() > served,
        "verify did not ask the API"
    );

    let uploads = registry.blob_upload_count();
    let again = sign();
    ok(&again);
    assert_eq!(
        registry.blob_upload_count(),
        uploads,
        "{}",
        describe(&again)
    );
    assert!(curl(&registry, &tag_schema, index_type).is_none());
}
