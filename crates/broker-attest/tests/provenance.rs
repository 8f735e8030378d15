//! Provenance statements and DSSE envelopes: deterministic, verifiable
//! with openssl over the pre-authentication encoding; the referrers index
//! keeps other tools' entries.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::process::Command;

use base64::Engine as _;
use broker_attest::oci::{self, Descriptor};
use broker_attest::provenance::{self, IN_TOTO_PAYLOAD};
use broker_attest::{PublicKey, SigningKey};
use broker_pins::Digest;
use broker_pins::lock::{LockedImage, SourceRecord};
use broker_test_support::{require_tool, run_ok};

fn locked() -> LockedImage {
    let mut sources = BTreeMap::new();
    sources.insert(
        "python".to_owned(),
        SourceRecord {
            target: "/home/broker/python".into(),
            source: Some("https://example.invalid/broker.git".into()),
            revision: Some("0123456789abcdef0123456789abcdef01234567".into()),
            layer: Digest::of(b"layer"),
        },
    );
    LockedImage {
        reference: format!("r.example/broker/python-base@{}", Digest::of(b"image")),
        tag: Some("v1".into()),
        digest: Digest::of(b"image"),
        deps_key: "k".repeat(64),
        base: "python:3.10".into(),
        base_digest: Some(Digest::of(b"base")),
        base_local: false,
        build_args: BTreeMap::from([("PIP_PACKAGES".into(), "flask".into())]),
        deps_digest: Digest::of(b"deps"),
        sources,
        signature: None,
        provenance: None,
        sbom: None,
        platforms: BTreeMap::new(),
        platform: None,
    }
}

fn key() -> SigningKey {
    SigningKey::from_pem(
        include_str!("data/example-p256.key"),
        None,
        "example-p256.key",
    )
    .unwrap()
}

#[test]
fn the_statement_names_the_image_its_base_deps_and_trees_and_is_deterministic() {
    let image = locked();
    let statement = provenance::statement("python-base", "r.example/broker/python-base", &image);
    assert_eq!(
        statement,
        provenance::statement("python-base", "r.example/broker/python-base", &image)
    );
    let value: serde_json::Value = serde_json::from_slice(&statement).unwrap();
    assert_eq!(value["subject"][0]["digest"]["sha256"], image.digest.hex());
    let definition = &value["predicate"]["buildDefinition"];
    assert_eq!(
        definition["externalParameters"]["buildArgs"]["PIP_PACKAGES"],
        "flask"
    );
    let deps = definition["resolvedDependencies"].as_array().unwrap();
    let names: Vec<&str> = deps.iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["base", "deps", "tree:python"]);
    assert_eq!(deps[0]["digest"]["sha256"], Digest::of(b"base").hex());
    assert_eq!(
        deps[2]["digest"]["gitCommit"],
        "0123456789abcdef0123456789abcdef01234567"
    );
    assert!(!String::from_utf8(statement).unwrap().contains("startedOn"));
}

#[test]
fn openssl_verifies_the_envelope_over_the_pae_and_tampering_is_caught() {
    let key = key();
    let statement = provenance::statement("python-base", "r.example/broker/python-base", &locked());
    let envelope = provenance::envelope(&key, IN_TOTO_PAYLOAD, &statement);
    assert_eq!(
        envelope,
        provenance::envelope(&key, IN_TOTO_PAYLOAD, &statement)
    );
    let value: serde_json::Value = serde_json::from_slice(&envelope).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let sig = b64
        .decode(value["signatures"][0]["sig"].as_str().unwrap())
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pub.pem"), key.public_key().to_pem()).unwrap();
    std::fs::write(
        dir.path().join("pae"),
        provenance::pae(IN_TOTO_PAYLOAD, &statement),
    )
    .unwrap();
    std::fs::write(dir.path().join("sig.der"), sig).unwrap();
    let openssl = require_tool("openssl", "apt-get install -y openssl");
    run_ok(Command::new(openssl).current_dir(dir.path()).args([
        "dgst",
        "-sha256",
        "-verify",
        "pub.pem",
        "-signature",
        "sig.der",
        "pae",
    ]));

    let public = key.public_key();
    let image = locked().digest;
    assert!(provenance::is_signed_provenance_of(
        &envelope, &public, &image
    ));
    assert!(!provenance::is_signed_provenance_of(
        &envelope,
        &public,
        &Digest::of(b"other")
    ));
    let mut tampered = value.clone();
    tampered["payload"] = b64.encode(b"{\"_type\":\"x\"}").into();
    let tampered = serde_json::to_vec(&tampered).unwrap();
    assert!(provenance::open_envelope(&tampered, &public).is_none());
    let other = PublicKey::from_pem(
        &SigningKey::from_pem(&other_key_pem(), None, "other")
            .unwrap()
            .public_key()
            .to_pem(),
        "other",
    )
    .unwrap();
    assert!(provenance::open_envelope(&envelope, &other).is_none());
}

/// A second key, made by openssl.
fn other_key_pem() -> String {
    let dir = tempfile::tempdir().unwrap();
    let openssl = require_tool("openssl", "apt-get install -y openssl");
    run_ok(Command::new(openssl).current_dir(dir.path()).args([
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        "k.pem",
    ]));
    std::fs::read_to_string(dir.path().join("k.pem")).unwrap()
}

#[test]
fn the_referrers_index_keeps_other_entries_and_adds_ours_once() {
    let subject = Descriptor {
        media_type: oci::OCI_MANIFEST.into(),
        digest: Digest::of(b"image"),
        size: 5,
        annotations: BTreeMap::new(),
    };
    let ours = oci::artifact(
        IN_TOTO_PAYLOAD,
        provenance::DSSE_ENVELOPE,
        b"{}".to_vec(),
        subject,
    );
    let theirs = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": oci::OCI_MANIFEST,
            "digest": Digest::of(b"theirs").to_string(),
            "size": 10,
            "artifactType": "application/spdx+json",
            "annotations": {"org.example": "kept"},
        }],
        "annotations": {"org.example.index": "kept too"},
    });
    let theirs_bytes = serde_json::to_vec(&theirs).unwrap();
    let merged = oci::referrers_index(Some(&theirs_bytes), std::slice::from_ref(&ours.entry))
        .expect("ours is missing");
    let value: serde_json::Value = serde_json::from_slice(&merged).unwrap();
    assert_eq!(value["manifests"][0], theirs["manifests"][0]);
    assert_eq!(value["annotations"], theirs["annotations"]);
    assert_eq!(value["manifests"][1]["digest"], ours.digest.to_string());
    assert_eq!(value["manifests"][1]["artifactType"], IN_TOTO_PAYLOAD);
    // Listed already: nothing to push.
    assert!(oci::referrers_index(Some(&merged), std::slice::from_ref(&ours.entry)).is_none());
    // Nothing there yet: an index of ours alone.
    let fresh = oci::referrers_index(None, std::slice::from_ref(&ours.entry)).unwrap();
    let value: serde_json::Value = serde_json::from_slice(&fresh).unwrap();
    assert_eq!(value["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(
        oci::referrers_tag(&Digest::of(b"image")),
        format!("sha256-{}", Digest::of(b"image").hex())
    );
}

#[test]
fn a_multi_platform_statement_is_about_the_index_and_names_each_platforms_base_and_deps() {
    let mut image = locked();
    image.digest = Digest::of(b"index");
    for (platform, short) in [("linux/amd64", "amd"), ("linux/arm64", "arm")] {
        image.platforms.insert(
            platform.parse().unwrap(),
            broker_pins::LockedPlatform {
                digest: Digest::of(format!("manifest-{short}").as_bytes()),
                deps_key: format!("k-{short}"),
                deps_digest: Digest::of(format!("deps-{short}").as_bytes()),
                base_digest: Some(Digest::of(format!("base-{short}").as_bytes())),
                sbom: None,
            },
        );
    }
    let statement = provenance::statement("python-base", "r.example/broker/python-base", &image);
    let value: serde_json::Value = serde_json::from_slice(&statement).unwrap();
    assert_eq!(value["subject"][0]["digest"]["sha256"], image.digest.hex());
    let definition = &value["predicate"]["buildDefinition"];
    let deps = definition["resolvedDependencies"].as_array().unwrap();
    let names: Vec<&str> = deps.iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "base",
            "base:linux/amd64",
            "deps:linux/amd64",
            "base:linux/arm64",
            "deps:linux/arm64",
            "tree:python"
        ]
    );
    assert_eq!(deps[3]["digest"]["sha256"], Digest::of(b"base-arm").hex());
    assert_eq!(deps[4]["digest"]["sha256"], Digest::of(b"deps-arm").hex());
    assert_eq!(deps[4]["uri"], "r.example/broker/python-base:deps-k-arm");
    assert_eq!(
        deps[4]["annotations"]["manifest"],
        Digest::of(b"manifest-arm").to_string()
    );
    assert_eq!(
        definition["internalParameters"]["depsKeys"]["linux/arm64"],
        "k-arm"
    );
}
