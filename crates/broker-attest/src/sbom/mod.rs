//! A CycloneDX 1.5 SBOM of an image, made from its layers (no engine, no
//! network) and what the lock knows about how it was built:
//!
//! - every Python distribution (`*.dist-info/METADATA`, `*.egg-info`),
//!   npm package (`node_modules/**/package.json`) and installed Debian
//!   package (`/var/lib/dpkg/status`) the final filesystem holds — layers
//!   stacked with their whiteouts, see [`Filesystem`];
//! - the base image, with a `pkg:oci` purl pinned by digest;
//! - each source tree baked in, with where it came from and its revision.
//!
//! Deterministic: the serial number is a name-based UUID of the image
//! manifest digest, the timestamp is the image's own `created` (itself
//! `SOURCE_DATE_EPOCH` or the tree's commit time), components are sorted,
//! and nothing else varies — two builds of the same inputs give the same
//! bytes. It is signed as the provenance is: an in-toto statement (predicate
//! type [`CYCLONEDX_PREDICATE`]) in a DSSE envelope, cosign's attestation
//! shape.
//!
//! The document is written with serde types of this module rather than a
//! CycloneDX crate: the few fields used are fixed here, and so are their
//! bytes, which the artifact digests depend on.

mod layers;
pub mod packages;

use std::collections::BTreeMap;

use broker_pins::Digest;
use serde::Serialize;
use serde_json::Value;

pub use layers::{Filesystem, LayerError};
pub use packages::{Ecosystem, License, Package};

use crate::key::PublicKey;
use crate::provenance::{STATEMENT_TYPE, open_envelope};

/// The in-toto predicate type of a CycloneDX SBOM (what cosign writes for
/// `--type cyclonedx`).
pub const CYCLONEDX_PREDICATE: &str = "https://cyclonedx.org/bom";
/// The CycloneDX version written.
pub const SPEC_VERSION: &str = "1.5";
/// The annotation naming an attestation artifact's predicate type, on its
/// manifest and its referrers entry (so a reader finds the SBOM without
/// opening every envelope).
pub const PREDICATE_TYPE_ANNOTATION: &str = "in-toto.io/predicate-type";

/// The base image an image was built on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Base {
    /// The reference the deps stage started from (`python:3.10`).
    pub reference: String,
    /// What it resolved to; `None` when the lock does not know.
    pub digest: Option<Digest>,
    /// `digest` is a Docker engine image ID, not a registry digest: no
    /// `pkg:oci` purl can name it.
    pub local: bool,
}

/// A source tree baked into the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tree {
    /// Its layer's name in `image.yaml`.
    pub name: String,
    /// Where it sits in the image.
    pub target: String,
    /// Where it came from (its git URL), when known.
    pub source: Option<String>,
    /// Its git commit (or the revision given for it), when known.
    pub revision: Option<String>,
    /// Its layer's digest.
    pub layer: Digest,
}

/// What the SBOM says about the image besides its packages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageFacts {
    /// `registry/repository` it is pushed as.
    pub repository: String,
    /// Its manifest digest: the subject.
    pub digest: Digest,
    /// Its config's `created` (RFC 3339).
    pub created: String,
    /// Its base.
    pub base: Option<Base>,
    /// Its trees.
    pub trees: Vec<Tree>,
}

/// One installed package and where its metadata sits.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Installed {
    /// The package.
    pub package: Package,
    /// The metadata files naming it (`/usr/lib/…/METADATA`).
    pub locations: Vec<String>,
}

/// The packages the filesystem `fs` holds, one per purl, sorted by purl.
#[must_use]
pub fn installed(fs: &Filesystem) -> Vec<Installed> {
    let mut by_purl: BTreeMap<String, Installed> = BTreeMap::new();
    let mut add = |package: Package, path: &str| {
        let entry = by_purl.entry(package.purl()).or_insert_with(|| Installed {
            package,
            locations: Vec::new(),
        });
        entry.locations.push(format!("/{path}"));
    };
    for (path, kind, bytes) in fs.files() {
        match kind {
            packages::FileKind::PythonMetadata => {
                if let Some(p) = packages::python_metadata(&String::from_utf8_lossy(bytes)) {
                    add(p, path);
                }
            }
            packages::FileKind::PackageJson => {
                if let Some(p) = packages::npm_package(bytes) {
                    add(p, path);
                }
            }
            packages::FileKind::DpkgStatus => {
                for p in packages::dpkg_status(&String::from_utf8_lossy(bytes)) {
                    add(p, path);
                }
            }
        }
    }
    by_purl.into_values().collect()
}

/// `urn:uuid:` of a name-based (SHA-1, version 5) UUID of the image
/// digest in this tool's namespace: the same image, the same serial.
#[must_use]
pub fn serial_number(digest: &Digest) -> String {
    // The URL namespace of RFC 9562 with the tool's own URL as the name
    // prefix: no other producer derives the same serial from a digest.
    let name = format!("{}#sbom/{digest}", env!("CARGO_PKG_REPOSITORY"));
    format!(
        "urn:uuid:{}",
        uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, name.as_bytes())
    )
}

#[derive(Serialize)]
struct Bom<'a> {
    #[serde(rename = "bomFormat")]
    bom_format: &'static str,
    #[serde(rename = "specVersion")]
    spec_version: &'static str,
    #[serde(rename = "serialNumber")]
    serial_number: String,
    version: u32,
    metadata: Metadata<'a>,
    components: Vec<Component>,
}

#[derive(Serialize)]
struct Metadata<'a> {
    timestamp: &'a str,
    tools: Tools,
    component: Component,
}

#[derive(Serialize)]
struct Tools {
    components: Vec<Component>,
}

#[derive(Serialize, Default)]
struct Component {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "bom-ref", skip_serializing_if = "Option::is_none")]
    bom_ref: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<String>,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hashes: Option<Vec<Hash>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    licenses: Option<Vec<Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    purl: Option<String>,
    #[serde(rename = "externalReferences", skip_serializing_if = "Option::is_none")]
    external_references: Option<Vec<ExternalReference>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    properties: Option<Vec<Property>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    evidence: Option<Value>,
}

#[derive(Serialize)]
struct Hash {
    alg: &'static str,
    content: String,
}

#[derive(Serialize)]
struct ExternalReference {
    #[serde(rename = "type")]
    kind: &'static str,
    url: String,
}

#[derive(Serialize)]
struct Property {
    name: &'static str,
    value: String,
}

fn sha256(digest: &Digest) -> Option<Vec<Hash>> {
    Some(vec![Hash {
        alg: "SHA-256",
        content: digest.hex().to_owned(),
    }])
}

fn licenses(license: Option<&License>) -> Option<Vec<Value>> {
    match license? {
        License::Expression(e) => Some(vec![serde_json::json!({ "expression": e })]),
        License::Names(names) => Some(
            names
                .iter()
                .map(|n| serde_json::json!({ "license": { "name": n } }))
                .collect(),
        ),
    }
}

fn package_component(installed: &Installed) -> Component {
    let p = &installed.package;
    let purl = p.purl();
    let occurrences: Vec<Value> = installed
        .locations
        .iter()
        .map(|l| serde_json::json!({ "location": l }))
        .collect();
    Component {
        kind: "library",
        bom_ref: Some(purl.clone()),
        name: p.name.clone(),
        version: Some(p.version.clone()),
        licenses: licenses(p.license.as_ref()),
        purl: Some(purl),
        evidence: Some(serde_json::json!({ "occurrences": occurrences })),
        ..Component::default()
    }
}

fn base_component(base: &Base) -> Component {
    // A registry digest pins the base for anyone; an engine image ID
    // names it only on the machine that built it.
    let purl = match (&base.digest, base.local) {
        (Some(digest), false) => {
            let repository = base.reference.split('@').next().unwrap_or(&base.reference);
            let repository = match repository.rsplit_once(':') {
                Some((r, tag)) if !tag.contains('/') => r,
                _ => repository,
            };
            Some(packages::oci_purl(repository, digest))
        }
        _ => None,
    };
    Component {
        kind: "container",
        bom_ref: Some("base".to_owned()),
        name: base.reference.clone(),
        version: base.digest.map(|d| d.to_string()),
        hashes: base.digest.as_ref().and_then(sha256),
        purl,
        properties: Some(vec![Property {
            name: "broker-images:role",
            value: "base".to_owned(),
        }]),
        ..Component::default()
    }
}

fn tree_component(tree: &Tree) -> Component {
    let mut properties = vec![
        Property {
            name: "broker-images:layer",
            value: tree.layer.to_string(),
        },
        Property {
            name: "broker-images:target",
            value: tree.target.clone(),
        },
    ];
    if let Some(revision) = &tree.revision {
        properties.push(Property {
            name: "broker-images:revision",
            value: revision.clone(),
        });
    }
    Component {
        kind: "application",
        bom_ref: Some(format!("tree:{}", tree.name)),
        name: tree.name.clone(),
        version: tree.revision.clone(),
        hashes: sha256(&tree.layer),
        external_references: tree.source.as_ref().map(|url| {
            vec![ExternalReference {
                kind: "vcs",
                url: url.clone(),
            }]
        }),
        properties: Some(properties),
        ..Component::default()
    }
}

/// The SBOM (compact JSON bytes) of the image `facts` describes, whose
/// filesystem is `fs`.
#[must_use]
pub fn document(facts: &ImageFacts, fs: &Filesystem) -> Vec<u8> {
    let mut components = Vec::new();
    components.extend(facts.base.iter().map(base_component));
    let mut trees = facts.trees.clone();
    trees.sort_by(|a, b| a.name.cmp(&b.name));
    components.extend(trees.iter().map(tree_component));
    components.extend(installed(fs).iter().map(package_component));
    let repository = &facts.repository;
    let bom = Bom {
        bom_format: "CycloneDX",
        spec_version: SPEC_VERSION,
        serial_number: serial_number(&facts.digest),
        version: 1,
        metadata: Metadata {
            timestamp: &facts.created,
            tools: Tools {
                components: vec![Component {
                    kind: "application",
                    name: "broker-images".to_owned(),
                    version: Some(env!("CARGO_PKG_VERSION").to_owned()),
                    ..Component::default()
                }],
            },
            component: Component {
                kind: "container",
                bom_ref: Some("image".to_owned()),
                name: repository.clone(),
                version: Some(facts.digest.to_string()),
                hashes: sha256(&facts.digest),
                purl: Some(packages::oci_purl(repository, &facts.digest)),
                ..Component::default()
            },
        },
        components,
    };
    serde_json::to_vec(&bom).unwrap_or_default()
}

/// The in-toto statement carrying the SBOM `bom` (its JSON bytes) about
/// the image `digest` of `repository`.
#[must_use]
pub fn statement(repository: &str, digest: &Digest, bom: &[u8]) -> Vec<u8> {
    let predicate: Value = serde_json::from_slice(bom).unwrap_or(Value::Null);
    let statement = serde_json::json!({
        "_type": STATEMENT_TYPE,
        "subject": [{ "name": repository, "digest": { "sha256": digest.hex() } }],
        "predicateType": CYCLONEDX_PREDICATE,
        "predicate": predicate,
    });
    serde_json::to_vec(&statement).unwrap_or_default()
}

/// The SBOM in the DSSE envelope `bytes` when the envelope is signed by
/// `key` and its statement is an SBOM about the image `digest`.
#[must_use]
pub fn signed_sbom_of(bytes: &[u8], key: &PublicKey, digest: &Digest) -> Option<Value> {
    let payload = open_envelope(bytes, key)?;
    let mut statement: Value = serde_json::from_slice(&payload).ok()?;
    let about = statement["_type"] == STATEMENT_TYPE
        && statement["predicateType"] == CYCLONEDX_PREDICATE
        && statement["subject"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["digest"]["sha256"] == digest.hex()));
    about.then(|| statement["predicate"].take())
}
