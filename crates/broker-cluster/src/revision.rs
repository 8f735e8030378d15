//! Revisions: what each `start` that ended ready applied, kept in the
//! namespace so `history` can list them and `rollback` can apply one
//! again. Pure: encoding, decoding and the choice of what to keep; the
//! requests are in [`crate::cluster`].
//!
//! A revision is a ConfigMap `broker-images-revision-N` (labelled ours but
//! not an ApplySet member, so no start prunes it) whose `binaryData`
//! holds the applied objects but the Secrets as gzip-compressed JSON: a
//! revision never holds a credential. Its annotations say
//! when, which images by digest, and the content hash that tells a start
//! which changed nothing from one that did.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use base64::Engine;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::labels;
use crate::objects::{Kind, RenderedSet};

/// How many revisions a namespace keeps; older ones are deleted.
pub const KEEP: usize = 10;
/// The label holding a revision's number (also the list selector).
pub const REVISION_LABEL: &str = "broker-images.io/revision";
/// When the revision's start ended ready (RFC 3339).
pub const CREATED: &str = "broker-images.io/revision-created";
/// The images the revision's workloads run, `name=reference`, one a line.
pub const IMAGES: &str = "broker-images.io/revision-images";
/// sha256 of the objects as stored: equal hashes, equal revisions.
pub const CONTENT_HASH: &str = "broker-images.io/revision-hash";
/// The key of the compressed objects in `binaryData`.
pub const OBJECTS_KEY: &str = "objects.json.gz";

/// The name of revision `number`.
pub fn name(number: u64) -> String {
    format!("broker-images-revision-{number}")
}

/// A revision as listed: everything but the objects.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RevisionSummary {
    /// Its number, counting from 1 per namespace.
    pub number: u64,
    /// When its start ended ready.
    pub created: String,
    /// Workload container → image reference (pinned by digest).
    pub images: BTreeMap<String, String>,
    /// sha256 of the stored objects.
    pub content_hash: String,
}

/// A revision in full: its summary and the objects applied.
#[derive(Clone, Debug)]
pub struct Revision {
    /// Number, time, images.
    pub summary: RevisionSummary,
    /// The applied objects, Secret values removed.
    pub objects: Vec<Value>,
}

/// Why a stored revision cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("revision ConfigMap {name}: {why}")]
pub struct RevisionError {
    /// The ConfigMap's name.
    pub name: String,
    /// What is wrong with it.
    pub why: String,
}

/// The objects of `set` as a revision stores them: every object but the
/// Secrets (a revision never holds a credential, not even a Secret's
/// name-only shell; a rollback uses the Secrets the namespace holds), the
/// ApplySet label and applied hash kept (they are what a start applies),
/// in key order.
pub fn stored_objects(set: &RenderedSet) -> Vec<Value> {
    set.objects
        .iter()
        .filter(|(key, _)| key.kind != Kind::Secret)
        .map(|(_, object)| serde_json::to_value(object).unwrap_or(Value::Null))
        .collect()
}

/// sha256 (hex) of stored objects, as [`CONTENT_HASH`] records it.
pub fn content_hash(objects: &[Value]) -> String {
    let bytes = serde_json::to_vec(objects).unwrap_or_default();
    hex::encode(Sha256::digest(&bytes))
}

/// Every container image of the workloads, by `workload/container`.
pub fn images(objects: &[Value]) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    for object in objects {
        if !matches!(object["kind"].as_str(), Some("Deployment" | "StatefulSet")) {
            continue;
        }
        let workload = object["metadata"]["name"].as_str().unwrap_or_default();
        for list in ["initContainers", "containers"] {
            let containers = object
                .pointer(&format!("/spec/template/spec/{list}"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for container in containers {
                if let (Some(name), Some(image)) =
                    (container["name"].as_str(), container["image"].as_str())
                {
                    found.insert(format!("{workload}/{name}"), image.to_owned());
                }
            }
        }
    }
    found
}

/// The ConfigMap that stores revision `number` of `objects` in
/// `namespace`, created at `created`.
pub fn to_config_map(namespace: &str, number: u64, created: &str, objects: &[Value]) -> Value {
    let json_bytes = serde_json::to_vec(objects).unwrap_or_default();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    // Writing into a Vec cannot fail.
    let _ = gz.write_all(&json_bytes);
    let compressed = gz.finish().unwrap_or_default();
    let images: Vec<String> = images(objects)
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let mut object_labels: serde_json::Map<String, Value> = labels::OURS
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    object_labels.insert(REVISION_LABEL.to_owned(), json!(number.to_string()));
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name(number),
            "namespace": namespace,
            "labels": object_labels,
            "annotations": {
                CREATED: created,
                IMAGES: images.join("\n"),
                CONTENT_HASH: content_hash(objects),
            },
        },
        "binaryData": {
            OBJECTS_KEY: base64::engine::general_purpose::STANDARD.encode(compressed),
        },
    })
}

/// The summary of a listed revision ConfigMap.
pub fn summary(config_map: &Value) -> Result<RevisionSummary, RevisionError> {
    let name = config_map["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let fail = |why: &str| RevisionError {
        name: name.clone(),
        why: why.to_owned(),
    };
    let number = config_map["metadata"]["labels"][REVISION_LABEL]
        .as_str()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| fail(&format!("label {REVISION_LABEL} is not a number")))?;
    let annotation = |key: &str| {
        config_map["metadata"]["annotations"][key]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let images = annotation(IMAGES)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    Ok(RevisionSummary {
        number,
        created: annotation(CREATED),
        images,
        content_hash: annotation(CONTENT_HASH),
    })
}

/// A listed revision ConfigMap in full.
pub fn decode(config_map: &Value) -> Result<Revision, RevisionError> {
    let summary = summary(config_map)?;
    let name = name(summary.number);
    let fail = |why: String| RevisionError {
        name: name.clone(),
        why,
    };
    let encoded = config_map["binaryData"][OBJECTS_KEY]
        .as_str()
        .ok_or_else(|| fail(format!("has no binaryData {OBJECTS_KEY}")))?;
    let compressed = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| fail(format!("{OBJECTS_KEY} is not base64: {e}")))?;
    let mut json_bytes = Vec::new();
    flate2::read::GzDecoder::new(compressed.as_slice())
        .read_to_end(&mut json_bytes)
        .map_err(|e| fail(format!("{OBJECTS_KEY} is not gzip: {e}")))?;
    let objects: Vec<Value> = serde_json::from_slice(&json_bytes)
        .map_err(|e| fail(format!("{OBJECTS_KEY} is not a JSON list of objects: {e}")))?;
    if content_hash(&objects) != summary.content_hash {
        return Err(fail(
            "its objects do not match its recorded hash (edited by hand?); roll back to another revision".into(),
        ));
    }
    Ok(Revision { summary, objects })
}

/// Which revisions to delete so that at most [`KEEP`] stay, oldest first.
pub fn beyond_keep(numbers: &[u64]) -> Vec<u64> {
    let mut sorted = numbers.to_vec();
    sorted.sort_unstable();
    let excess = sorted.len().saturating_sub(KEEP);
    sorted.into_iter().take(excess).collect()
}

/// A rollback's objects: the revision's, each Secret its workloads refer
/// to taken from the namespace as it is now. A Secret still there by name
/// is used as it is; one that is gone (replaced since by a Secret with
/// another content hash) is swapped for the live Secret of ours with the
/// same base name, and every reference rewritten. `live_secrets` are the
/// names of our Secrets in the namespace.
pub fn with_current_secrets(
    objects: &[Value],
    live_secrets: &[String],
) -> Result<Vec<Value>, String> {
    let mut referenced = std::collections::BTreeSet::new();
    for object in objects {
        if matches!(
            object["kind"].as_str(),
            Some("Deployment" | "StatefulSet" | "CronJob")
        ) && let Some(spec) = object.pointer("/spec/template/spec")
        {
            referenced.extend(
                crate::plan::config_references(spec)
                    .into_iter()
                    .filter(|(kind, _)| *kind == Kind::Secret)
                    .map(|(_, name)| name),
            );
        }
    }
    let mut renames: BTreeMap<String, String> = BTreeMap::new();
    for stored in &referenced {
        if live_secrets.iter().any(|s| s == stored) {
            continue;
        }
        let base = base_name(stored);
        let current: Vec<&String> = live_secrets
            .iter()
            .filter(|s| base_name(s) == base && s.as_str() != base)
            .collect();
        match current.as_slice() {
            [one] => {
                renames.insert(stored.clone(), (*one).clone());
            }
            [] => {
                return Err(format!(
                    "Secret {stored} of that revision is gone and no current Secret {base}-<hash> replaces it; start with the manifests of today's environment first"
                ));
            }
            many => {
                return Err(format!(
                    "Secret {stored} of that revision is gone and several current Secrets could replace it ({}); delete the ones no longer used",
                    many.iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
    }
    let mut kept: Vec<Value> = objects
        .iter()
        .filter(|o| o["kind"] != "Secret")
        .cloned()
        .collect();
    if renames.is_empty() {
        return Ok(kept);
    }
    for object in &mut kept {
        if matches!(
            object["kind"].as_str(),
            Some("Deployment" | "StatefulSet" | "CronJob")
        ) && let Some(spec) = object.pointer_mut("/spec/template/spec")
        {
            rename_secret_references(spec, &renames);
        }
    }
    Ok(kept)
}

/// `broker-credentials-7f9k2m8b6c` → `broker-credentials`: render's hash
/// suffix is ten characters of kustomize's alphabet.
fn base_name(name: &str) -> &str {
    match name.rsplit_once('-') {
        Some((base, hash))
            if hash.len() == 10 && hash.chars().all(|c| c.is_ascii_alphanumeric()) =>
        {
            base
        }
        _ => name,
    }
}

fn rename_secret_references(value: &mut Value, renames: &BTreeMap<String, String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                let names_a_secret =
                    matches!(key.as_str(), "secretRef" | "secretKeyRef" | "secret");
                if names_a_secret {
                    for field in ["name", "secretName"] {
                        if let Some(Value::String(name)) = child.get_mut(field)
                            && let Some(new) = renames.get(name.as_str())
                        {
                            *name = new.clone();
                        }
                    }
                }
                if key == "imagePullSecrets"
                    && let Value::Array(list) = child
                {
                    for entry in list {
                        if let Some(Value::String(name)) = entry.get_mut("name")
                            && let Some(new) = renames.get(name.as_str())
                        {
                            *name = new.clone();
                        }
                    }
                }
                rename_secret_references(child, renames);
            }
        }
        Value::Array(list) => {
            for child in list {
                rename_secret_references(child, renames);
            }
        }
        _ => {}
    }
}

/// A rollback's objects as a set `start` can apply: the namespace taken
/// from them, the ApplySet label removed again (start adds it).
pub fn to_rendered_set(namespace: &str, objects: Vec<Value>) -> Result<RenderedSet, String> {
    let objects = objects
        .into_iter()
        .map(|mut value| {
            if let Some(map) = value
                .pointer_mut("/metadata/labels")
                .and_then(Value::as_object_mut)
            {
                map.remove(labels::APPLYSET_PART_OF);
            }
            if let Some(metadata) = value.get_mut("metadata").and_then(Value::as_object_mut) {
                let now_empty = metadata
                    .get_mut("annotations")
                    .and_then(Value::as_object_mut)
                    .is_some_and(|map| {
                        map.remove(labels::APPLIED_HASH);
                        map.is_empty()
                    });
                // As rendered: an object without annotations of its own
                // had none before start stamped its hash.
                if now_empty {
                    metadata.remove("annotations");
                }
            }
            value
        })
        .collect();
    RenderedSet::from_values(namespace, objects).map_err(|e| e.to_string())
}
