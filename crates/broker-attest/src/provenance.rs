//! SLSA v1.0 provenance in an in-toto Statement v1, signed as a DSSE
//! envelope with the same key as the image signature.
//!
//! Everything in it comes from what the lock records for the image (bases
//! by digest, the deps image, each tree with its revision, the build
//! args), and nothing in it depends on the clock or the machine: two
//! builds of the same inputs give byte-identical statements, and with
//! deterministic signatures byte-identical envelopes.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use broker_pins::Digest;
use broker_pins::lock::LockedImage;
use serde::Serialize;
use serde_json::{Value, json};

use crate::key::{PublicKey, SigningKey};

/// The in-toto Statement v1 type.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// The SLSA provenance v1 predicate type.
pub const SLSA_PROVENANCE: &str = "https://slsa.dev/provenance/v1";
/// The DSSE payload type of an in-toto statement.
pub const IN_TOTO_PAYLOAD: &str = "application/vnd.in-toto+json";
/// The media type of a DSSE envelope blob.
pub const DSSE_ENVELOPE: &str = "application/vnd.dsse.envelope.v1+json";
/// The build type this tool's provenance declares; what its parameters
/// mean is documented in the repository's `docs/provenance.md`.
pub const BUILD_TYPE: &str = concat!(
    env!("CARGO_PKG_REPOSITORY"),
    "/blob/main/docs/provenance.md#build-type-v1"
);
/// The builder: this tool at this version.
pub const BUILDER_ID: &str = concat!(
    env!("CARGO_PKG_REPOSITORY"),
    "/releases/tag/v",
    env!("CARGO_PKG_VERSION")
);

/// The provenance statement (compact JSON bytes) of the image `name`
/// recorded as `locked`, pushed as `repository` (`registry/repository`).
#[must_use]
pub fn statement(name: &str, repository: &str, locked: &LockedImage) -> Vec<u8> {
    let sha256 = |digest: &Digest| json!({ "sha256": digest.hex() });
    let mut dependencies = Vec::new();
    if let Some(base) = &locked.base_digest {
        dependencies.push(json!({
            "name": "base",
            "uri": format!("pkg:docker/{}", locked.base),
            "digest": sha256(base),
        }));
    }
    // A multi-platform image is one statement about its index (what the
    // lock pins and the signature covers), naming each platform's own base
    // manifest and deps image; `deps_digest` alone is only the first's.
    if locked.platforms.is_empty() {
        dependencies.push(json!({
            "name": "deps",
            "uri": format!("{repository}:deps-{}", locked.deps_key),
            "digest": sha256(&locked.deps_digest),
        }));
    }
    for (platform, entry) in &locked.platforms {
        if let Some(base) = &entry.base_digest {
            dependencies.push(json!({
                "name": format!("base:{platform}"),
                "uri": format!("pkg:docker/{}", locked.base),
                "digest": sha256(base),
                "annotations": { "platform": platform.to_string() },
            }));
        }
        dependencies.push(json!({
            "name": format!("deps:{platform}"),
            "uri": format!("{repository}:deps-{}", entry.deps_key),
            "digest": sha256(&entry.deps_digest),
            "annotations": {
                "platform": platform.to_string(),
                "manifest": entry.digest.to_string(),
            },
        }));
    }
    let mut sources = BTreeMap::new();
    for (layer, record) in &locked.sources {
        let mut dependency = json!({ "name": format!("tree:{layer}") });
        if let Some(source) = &record.source {
            dependency["uri"] = Value::from(source.as_str());
        }
        if let Some(revision) = &record.revision {
            dependency["digest"] = json!({ "gitCommit": revision });
        }
        dependency["annotations"] =
            json!({ "layer": record.layer.to_string(), "target": record.target });
        dependencies.push(dependency);
        sources.insert(layer.clone(), record.target.clone());
    }
    let mut internal = json!({ "depsKey": locked.deps_key });
    if !locked.platforms.is_empty() {
        let keys: BTreeMap<String, &str> = locked
            .platforms
            .iter()
            .map(|(p, e)| (p.to_string(), e.deps_key.as_str()))
            .collect();
        internal = json!({ "depsKeys": keys });
    }
    let statement = json!({
        "_type": STATEMENT_TYPE,
        "subject": [{ "name": repository, "digest": sha256(&locked.digest) }],
        "predicateType": SLSA_PROVENANCE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "image": name,
                    "spec": format!("images/{name}/image.yaml"),
                    "base": locked.base,
                    "buildArgs": locked.build_args,
                    "sources": sources,
                },
                "internalParameters": internal,
                "resolvedDependencies": dependencies,
            },
            "runDetails": { "builder": { "id": BUILDER_ID } },
        },
    });
    serde_json::to_vec(&statement).unwrap_or_default()
}

/// The DSSE pre-authentication encoding of `payload`: what is signed.
#[must_use]
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

#[derive(Serialize, serde::Deserialize)]
struct Envelope {
    payload: String,
    #[serde(rename = "payloadType")]
    payload_type: String,
    signatures: Vec<EnvelopeSignature>,
}

#[derive(Serialize, serde::Deserialize)]
struct EnvelopeSignature {
    keyid: String,
    sig: String,
}

/// `payload` (of `payload_type`) in a DSSE envelope signed by `key`.
#[must_use]
pub fn envelope(key: &SigningKey, payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let envelope = Envelope {
        payload: STANDARD.encode(payload),
        payload_type: payload_type.to_owned(),
        signatures: vec![EnvelopeSignature {
            keyid: String::new(),
            sig: STANDARD.encode(key.sign_der(&pae(payload_type, payload))),
        }],
    };
    serde_json::to_vec(&envelope).unwrap_or_default()
}

/// The payload of the DSSE envelope `bytes` when one of its signatures
/// is by `key`; `None` otherwise.
#[must_use]
pub fn open_envelope(bytes: &[u8], key: &PublicKey) -> Option<Vec<u8>> {
    let envelope: Envelope = serde_json::from_slice(bytes).ok()?;
    let payload = STANDARD.decode(&envelope.payload).ok()?;
    let signed = pae(&envelope.payload_type, &payload);
    envelope
        .signatures
        .iter()
        .filter_map(|s| STANDARD.decode(&s.sig).ok())
        .any(|sig| key.verifies(&signed, &sig))
        .then_some(payload)
}

/// The statement in the DSSE envelope `bytes`, its signatures NOT checked:
/// for saying what an attestation claims to be when it fails to verify.
#[must_use]
pub fn unverified_statement(bytes: &[u8]) -> Option<Value> {
    let envelope: Envelope = serde_json::from_slice(bytes).ok()?;
    let payload = STANDARD.decode(&envelope.payload).ok()?;
    serde_json::from_slice(&payload).ok()
}

/// Whether the DSSE envelope `bytes` is a provenance statement signed by
/// `key` whose subject is the image `digest`.
#[must_use]
pub fn is_signed_provenance_of(bytes: &[u8], key: &PublicKey, digest: &Digest) -> bool {
    let Some(payload) = open_envelope(bytes, key) else {
        return false;
    };
    let Ok(statement) = serde_json::from_slice::<Value>(&payload) else {
        return false;
    };
    statement["_type"] == STATEMENT_TYPE
        && statement["predicateType"] == SLSA_PROVENANCE
        && statement["subject"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["digest"]["sha256"] == digest.hex()))
}
