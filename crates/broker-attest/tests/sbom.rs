//! Issue 25, the SBOM: what each metadata file says (a table), purl
//! encoding, layers stacked with whiteouts, the document deterministic and
//! valid CycloneDX 1.5 as CycloneDX's own validator sees it, and signed
//! statements recognised only with the right key and subject.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use broker_attest::SigningKey;
use broker_attest::provenance::{self, IN_TOTO_PAYLOAD};
use broker_attest::sbom::packages::{
    self, FileKind, deb_purl, npm_purl, oci_purl, pypi_purl, python_metadata,
};
use broker_attest::sbom::{self, Base, Ecosystem, Filesystem, ImageFacts, License, Tree};
use broker_pins::Digest;
use broker_test_support::cyclonedx::schema_errors;

fn key(name: &str) -> SigningKey {
    SigningKey::from_pem(include_str!("data/example-p256.key"), None, name).unwrap()
}

/// What a row expects: the name, version and licence read, or nothing.
type Expected<L> = Option<(&'static str, &'static str, Option<L>)>;

#[test]
fn python_metadata_table() {
    let table: &[(&str, Expected<License>)] = &[
        (
            "Metadata-Version: 2.1\nName: PyYAML\nVersion: 6.0.1\nLicense: MIT\n\nLicense: not a header\n",
            Some(("PyYAML", "6.0.1", Some(License::Names(vec!["MIT".into()])))),
        ),
        (
            "Metadata-Version: 2.4\nName: six\nVersion: 1.17.0\nLicense-Expression: MIT OR Apache-2.0\nLicense: MIT\n",
            Some((
                "six",
                "1.17.0",
                Some(License::Expression("MIT OR Apache-2.0".into())),
            )),
        ),
        (
            "Name: idna\nVersion: 3.7\nLicense: UNKNOWN\nClassifier: License :: OSI Approved :: BSD License\nClassifier: Programming Language :: Python\n",
            Some((
                "idna",
                "3.7",
                Some(License::Names(vec!["BSD License".into()])),
            )),
        ),
        (
            &format!(
                "Name: long\nVersion: 1\nLicense: {}\nClassifier: License :: OSI Approved\n",
                "x".repeat(300)
            ),
            Some(("long", "1", None)),
        ),
        ("Name: noversion\n", None),
        ("Version: 1.0\n", None),
        ("", None),
    ];
    for (text, expected) in table {
        let got = python_metadata(text).map(|p| (p.name, p.version, p.license));
        let expected = expected
            .clone()
            .map(|(n, v, l)| (n.to_owned(), v.to_owned(), l));
        assert_eq!(got, expected, "{text}");
    }
}

#[test]
fn package_json_table() {
    let table: &[(&str, Expected<Vec<&str>>)] = &[
        (
            r#"{"name":"express","version":"4.19.2","license":"MIT"}"#,
            Some(("express", "4.19.2", Some(vec!["MIT"]))),
        ),
        (
            r#"{"name":"@types/ms","version":"0.7.34","license":"MIT"}"#,
            Some(("@types/ms", "0.7.34", Some(vec!["MIT"]))),
        ),
        (
            r#"{"name":"old","version":"0.1.0","licenses":[{"type":"BSD","url":"x"}]}"#,
            Some(("old", "0.1.0", Some(vec!["BSD"]))),
        ),
        (
            r#"{"name":"objlic","version":"1.0.0","license":{"type":"ISC"}}"#,
            Some(("objlic", "1.0.0", Some(vec!["ISC"]))),
        ),
        (
            r#"{"name":"nolicense","version":"1.0.0"}"#,
            Some(("nolicense", "1.0.0", None)),
        ),
        (r#"{"version":"1.0.0"}"#, None),
        (r#"{"name":"x"}"#, None),
        ("not json", None),
    ];
    for (text, expected) in table {
        let got = packages::npm_package(text.as_bytes()).map(|p| {
            let license = p.license.map(|l| match l {
                License::Names(n) => n,
                License::Expression(e) => vec![e],
            });
            (p.name, p.version, license)
        });
        let expected = expected.clone().map(|(n, v, l)| {
            (
                n.to_owned(),
                v.to_owned(),
                l.map(|l| l.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()),
            )
        });
        assert_eq!(got, expected, "{text}");
    }
}

#[test]
fn dpkg_status_lists_only_installed_packages() {
    let status = "Package: bash\nStatus: install ok installed\nArchitecture: amd64\nVersion: 5.2.15-2+b7\nDescription: shell\n multi-line\n\n\
Package: removed\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 1.0\n\n\
Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nSource: glibc\nVersion: 2.36-9+deb12u7\n\n\
Package: half\nStatus: install reinstreq half-installed\nVersion: 1\n\n\
Package: tzdata\nStatus: install ok installed\nArchitecture: all\nVersion: 1:2024a-0+deb12u1\n";
    let got: Vec<(String, String, String)> = packages::dpkg_status(status)
        .into_iter()
        .map(|p| {
            assert_eq!(p.ecosystem, Ecosystem::Deb);
            let purl = p.purl();
            (p.name, p.version, purl)
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                "bash".into(),
                "5.2.15-2+b7".into(),
                "pkg:deb/debian/bash@5.2.15-2%2Bb7?arch=amd64".into()
            ),
            (
                "libc6".into(),
                "2.36-9+deb12u7".into(),
                "pkg:deb/debian/libc6@2.36-9%2Bdeb12u7?arch=amd64".into()
            ),
            (
                "tzdata".into(),
                "1:2024a-0+deb12u1".into(),
                "pkg:deb/debian/tzdata@1%3A2024a-0%2Bdeb12u1?arch=all".into()
            ),
        ]
    );
}

#[test]
fn purls_are_encoded_as_the_purl_spec_says() {
    let table = [
        (pypi_purl("PyYAML", "6.0.1"), "pkg:pypi/pyyaml@6.0.1"),
        (
            pypi_purl("zope.interface", "6.0"),
            "pkg:pypi/zope-interface@6.0",
        ),
        (
            pypi_purl("typing__Extensions", "4.12.2"),
            "pkg:pypi/typing-extensions@4.12.2",
        ),
        (
            pypi_purl("torch", "2.1.0+cpu"),
            "pkg:pypi/torch@2.1.0%2Bcpu",
        ),
        (npm_purl("express", "4.19.2"), "pkg:npm/express@4.19.2"),
        (
            npm_purl("@types/ms", "0.7.34"),
            "pkg:npm/%40types/ms@0.7.34",
        ),
        (
            deb_purl("libc6", "2.36-9", Some("amd64")),
            "pkg:deb/debian/libc6@2.36-9?arch=amd64",
        ),
        (
            oci_purl("127.0.0.1:5000/base/debian", &Digest::of(b"x")),
            &format!(
                "pkg:oci/debian@sha256%3A{}?repository_url=127.0.0.1:5000/base/debian",
                Digest::of(b"x").hex()
            ),
        ),
    ];
    for (got, expected) in table {
        assert_eq!(got, expected);
    }
}

#[test]
fn which_files_are_read() {
    let table = [
        (
            "usr/lib/python3/dist-packages/pip-23.0.1.dist-info/METADATA",
            Some(FileKind::PythonMetadata),
        ),
        (
            "usr/lib/python3/dist-packages/six-1.16.0.egg-info/PKG-INFO",
            Some(FileKind::PythonMetadata),
        ),
        (
            "usr/lib/python3/dist-packages/distro_info-1.5.egg-info",
            Some(FileKind::PythonMetadata),
        ),
        ("x.dist-info/RECORD", None),
        (
            "app/node_modules/ms/package.json",
            Some(FileKind::PackageJson),
        ),
        (
            "app/node_modules/@types/ms/package.json",
            Some(FileKind::PackageJson),
        ),
        (
            "app/node_modules/a/node_modules/b/package.json",
            Some(FileKind::PackageJson),
        ),
        ("app/node_modules/a/lib/package.json", None),
        ("app/node_modules/.package-lock.json", None),
        ("app/node_modules/@types/package.json", None),
        ("app/package.json", None),
        ("var/lib/dpkg/status", Some(FileKind::DpkgStatus)),
        ("var/lib/dpkg/status-old", None),
    ];
    for (path, kind) in table {
        assert_eq!(packages::kind_of(path), kind, "{path}");
    }
}

/// A gzip tar layer of `(path, contents)` files (directories implied).
fn layer(files: &[(&str, &str)]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for (path, contents) in files {
        let mut header = tar::Header::new_ustar();
        header.set_size(contents.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, path, contents.as_bytes())
            .unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

fn metadata(name: &str, version: &str) -> String {
    format!("Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nLicense: MIT\n")
}

fn npm(name: &str, version: &str) -> String {
    format!(r#"{{"name":"{name}","version":"{version}","license":"MIT"}}"#)
}

const SITE: &str = "usr/local/lib/python3.11/dist-packages";

/// Three layers: a base with dpkg and pip, packages installed over it,
/// then an upgrade (old dist-info whited out) and a removed tree.
fn stacked() -> Filesystem {
    let status = "Package: bash\nStatus: install ok installed\nArchitecture: amd64\nVersion: 5.2\n";
    let mut fs = Filesystem::new();
    let pip = metadata("pip", "23.0.1");
    let six = metadata("six", "1.16.0");
    let gone = metadata("gone", "1.0");
    fs.apply(
        layer(&[
            ("var/lib/dpkg/status", status),
            (
                "usr/lib/python3/dist-packages/pip-23.0.1.dist-info/METADATA",
                &pip,
            ),
            (&format!("{SITE}/six-1.16.0.dist-info/METADATA"), &six),
            ("opt/old/gone-1.0.dist-info/METADATA", &gone),
        ])
        .as_slice(),
    )
    .unwrap();
    let express = npm("express", "4.19.2");
    let ms = npm("@types/ms", "0.7.34");
    let nested = npm("debug", "2.6.9");
    fs.apply(
        layer(&[
            ("app/node_modules/express/package.json", &express),
            ("app/node_modules/express/lib/package.json", "{}"),
            ("app/node_modules/@types/ms/package.json", &ms),
            (
                "app/node_modules/express/node_modules/debug/package.json",
                &nested,
            ),
        ])
        .as_slice(),
    )
    .unwrap();
    let six_new = metadata("six", "1.17.0");
    fs.apply(
        layer(&[
            (&format!("{SITE}/.wh.six-1.16.0.dist-info"), ""),
            (&format!("{SITE}/six-1.17.0.dist-info/METADATA"), &six_new),
            ("opt/.wh.old", ""),
        ])
        .as_slice(),
    )
    .unwrap();
    fs
}

#[test]
fn layers_stack_with_whiteouts_and_every_package_is_found() {
    let fs = stacked();
    let purls: Vec<String> = sbom::installed(&fs)
        .iter()
        .map(|i| i.package.purl())
        .collect();
    assert_eq!(
        purls,
        [
            "pkg:deb/debian/bash@5.2?arch=amd64",
            "pkg:npm/%40types/ms@0.7.34",
            "pkg:npm/debug@2.6.9",
            "pkg:npm/express@4.19.2",
            "pkg:pypi/pip@23.0.1",
            "pkg:pypi/six@1.17.0",
        ]
    );
    // An opaque directory hides what lower layers had there, not what its
    // own layer adds.
    let mut fs = stacked();
    let fresh = npm("fresh", "1.0.0");
    fs.apply(
        layer(&[
            ("app/node_modules/fresh/package.json", &fresh),
            ("app/node_modules/.wh..wh..opq", ""),
        ])
        .as_slice(),
    )
    .unwrap();
    let npm: Vec<String> = sbom::installed(&fs)
        .iter()
        .filter(|i| i.package.ecosystem == Ecosystem::Npm)
        .map(|i| i.package.purl())
        .collect();
    assert_eq!(npm, ["pkg:npm/fresh@1.0.0"]);
}

#[test]
fn a_hard_link_counts_as_its_target_and_a_symlink_is_not_followed() {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let six = metadata("six", "1.17.0");
    let mut header = tar::Header::new_ustar();
    header.set_size(six.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(
        &mut header,
        "a/six-1.17.0.dist-info/METADATA",
        six.as_bytes(),
    )
    .unwrap();
    for (kind, path) in [
        (tar::EntryType::Link, "b/six-1.17.0.dist-info/METADATA"),
        (tar::EntryType::Symlink, "c/other-1.0.dist-info/METADATA"),
    ] {
        let mut link = tar::Header::new_ustar();
        link.set_size(0);
        link.set_entry_type(kind);
        tar.append_link(&mut link, path, "a/six-1.17.0.dist-info/METADATA")
            .unwrap();
    }
    let blob = tar.into_inner().unwrap().finish().unwrap();
    let mut fs = Filesystem::new();
    fs.apply(blob.as_slice()).unwrap();
    let installed = sbom::installed(&fs);
    assert_eq!(installed.len(), 1, "{installed:?}");
    assert_eq!(
        installed[0].locations,
        [
            "/a/six-1.17.0.dist-info/METADATA",
            "/b/six-1.17.0.dist-info/METADATA"
        ]
    );
}

#[test]
fn a_layer_that_is_not_a_tar_is_named() {
    let mut fs = Filesystem::new();
    fs.apply(layer(&[]).as_slice()).unwrap();
    let err = fs
        .apply(&b"noise that is no archive at all"[..])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "layer 2 is not a tar archive (gzip-compressed or plain)"
    );
}

fn facts() -> ImageFacts {
    ImageFacts {
        repository: "r.example/broker/python-base".into(),
        digest: Digest::of(b"image"),
        created: "2024-02-29T23:59:59Z".into(),
        base: Some(Base {
            reference: "r.example/base/debian:12".into(),
            digest: Some(Digest::of(b"base")),
            local: false,
        }),
        trees: vec![Tree {
            name: "python".into(),
            target: "/home/broker/python".into(),
            source: Some("https://example.invalid/broker.git".into()),
            revision: Some("0123456789abcdef0123456789abcdef01234567".into()),
            layer: Digest::of(b"layer"),
        }],
    }
}

#[test]
fn the_document_is_deterministic_and_valid_cyclonedx_1_5() {
    let fs = stacked();
    let bom = sbom::document(&facts(), &fs);
    assert_eq!(bom, sbom::document(&facts(), &stacked()));
    if let Some(error) = schema_errors(&bom) {
        panic!(
            "not valid CycloneDX 1.5: {error}\n{}",
            String::from_utf8_lossy(&bom)
        );
    }
    let value: serde_json::Value = serde_json::from_slice(&bom).unwrap();
    assert_eq!(value["specVersion"], "1.5");
    assert_eq!(
        value["serialNumber"],
        sbom::serial_number(&Digest::of(b"image"))
    );
    assert_ne!(
        sbom::serial_number(&Digest::of(b"image")),
        sbom::serial_number(&Digest::of(b"other"))
    );
    assert_eq!(value["metadata"]["timestamp"], "2024-02-29T23:59:59Z");
    let components = value["components"].as_array().unwrap();
    let base = &components[0];
    assert_eq!(base["type"], "container");
    assert_eq!(
        base["purl"],
        format!(
            "pkg:oci/debian@sha256%3A{}?repository_url=r.example/base/debian",
            Digest::of(b"base").hex()
        )
    );
    let tree = &components[1];
    assert_eq!(tree["name"], "python");
    assert_eq!(tree["version"], "0123456789abcdef0123456789abcdef01234567");
    assert_eq!(
        tree["externalReferences"][0]["url"],
        "https://example.invalid/broker.git"
    );
    let six = components.iter().find(|c| c["name"] == "six").unwrap();
    assert_eq!(six["purl"], "pkg:pypi/six@1.17.0");
    assert_eq!(six["licenses"][0]["license"]["name"], "MIT");
    assert_eq!(
        six["evidence"]["occurrences"][0]["location"],
        format!("/{SITE}/six-1.17.0.dist-info/METADATA")
    );
    // A base only the engine knew has no purl (its ID pins nothing
    // elsewhere) and is still valid.
    let mut local = facts();
    local.base = Some(Base {
        reference: "broker-test/busybox:1".into(),
        digest: Some(Digest::of(b"id")),
        local: true,
    });
    local.trees[0].source = None;
    local.trees[0].revision = None;
    let bom = sbom::document(&local, &Filesystem::new());
    assert_eq!(schema_errors(&bom), None);
    let value: serde_json::Value = serde_json::from_slice(&bom).unwrap();
    assert!(value["components"][0].get("purl").is_none());
}

#[test]
fn a_signed_statement_is_recognised_only_with_its_key_and_subject() {
    let bom = sbom::document(&facts(), &stacked());
    let digest = Digest::of(b"image");
    let statement = sbom::statement("r.example/broker/python-base", &digest, &bom);
    let envelope = provenance::envelope(&key("k"), IN_TOTO_PAYLOAD, &statement);
    let public = key("k").public_key();
    let predicate = sbom::signed_sbom_of(&envelope, &public, &digest).expect("an SBOM");
    assert_eq!(
        predicate,
        serde_json::from_slice::<serde_json::Value>(&bom).unwrap()
    );
    assert!(sbom::signed_sbom_of(&envelope, &public, &Digest::of(b"other")).is_none());
    // A throwaway second key, for tests only.
    let other =
        SigningKey::from_pem(include_str!("data/other-p256.key"), None, "other-p256.key").unwrap();
    assert!(sbom::signed_sbom_of(&envelope, &other.public_key(), &digest).is_none());
    // A provenance is not an SBOM.
    let not_sbom = provenance::envelope(&key("k"), IN_TOTO_PAYLOAD, br#"{"_type":"https://in-toto.io/Statement/v1","predicateType":"https://slsa.dev/provenance/v1","subject":[]}"#);
    assert!(sbom::signed_sbom_of(&not_sbom, &public, &digest).is_none());
}
