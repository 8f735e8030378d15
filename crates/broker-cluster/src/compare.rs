//! Deciding "unchanged" without a write, and showing what a dry run would
//! change with Secret values masked.

use kube::api::DynamicObject;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::labels;

/// The field manager of every apply `start` makes.
pub const FIELD_MANAGER: &str = "broker-images";

/// The field manager `stop` scales with. Separate from `start`'s so the
/// rendered replica count stays what start owns; start releases it.
pub const STOP_MANAGER: &str = "broker-images-stop";

/// Whether `stop` scaled this workload to zero and no start has taken the
/// replica count back since.
pub fn stopped(live: &DynamicObject) -> bool {
    live.metadata
        .managed_fields
        .iter()
        .flatten()
        .any(|m| m.manager.as_deref() == Some(STOP_MANAGER))
}

/// The hash stored in [`labels::APPLIED_HASH`]: sha256 over the object as
/// we apply it, without the hash annotation itself. serde_json's map is
/// ordered, so the same object always hashes the same.
pub fn applied_hash(object: &DynamicObject) -> String {
    let mut copy = object.clone();
    if let Some(annotations) = copy.metadata.annotations.as_mut() {
        annotations.remove(labels::APPLIED_HASH);
    }
    let bytes = serde_json::to_vec(&copy).unwrap_or_default();
    hex::encode(Sha256::digest(bytes))
}

/// Stamps the hash annotation onto an object about to be applied.
pub fn stamp(object: &mut DynamicObject) {
    let hash = applied_hash(object);
    object
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(labels::APPLIED_HASH.to_owned(), hash);
}

/// Whether applying `desired` (stamped) would change nothing on `live`:
/// the same hash was applied before by our field manager, and every field
/// we set still has our value (nobody edited it since). Server defaults
/// only add fields, so a subset test is enough; a false "changed" merely
/// costs one idempotent apply.
pub fn unchanged(desired: &DynamicObject, live: &DynamicObject) -> bool {
    // Objects applied before the annotation took our domain prefix carry
    // the old name. Read either for the hash; the subset test below then
    // misses the new name, so the next start applies once, writing the
    // new name and (ours alone) dropping the old.
    let hash = |o: &DynamicObject| {
        o.metadata.annotations.as_ref().and_then(|a| {
            a.get(labels::APPLIED_HASH)
                .or_else(|| a.get(labels::LEGACY_APPLIED_HASH))
                .cloned()
        })
    };
    if hash(desired).is_none() || hash(desired) != hash(live) {
        return false;
    }
    // A workload without `replicas` in the manifests looks the same
    // stopped or running: only the stop's ownership tells.
    if stopped(live) {
        return false;
    }
    let ours = live.metadata.managed_fields.iter().flatten().any(|entry| {
        entry.manager.as_deref() == Some(FIELD_MANAGER)
            && entry.operation.as_deref() == Some("Apply")
    });
    if !ours {
        return false;
    }
    let (Ok(desired), Ok(live)) = (serde_json::to_value(desired), serde_json::to_value(live))
    else {
        return false;
    };
    is_subset(&desired, &live)
}

/// Every field of `small` is in `big` with the same value; arrays must
/// have the same length (a list we set is ours as a whole).
pub fn is_subset(small: &Value, big: &Value) -> bool {
    match (small, big) {
        (Value::Object(s), Value::Object(b)) => s
            .iter()
            .all(|(k, v)| b.get(k).is_some_and(|bv| is_subset(v, bv)) || v.is_null()),
        (Value::Array(s), Value::Array(b)) => {
            s.len() == b.len() && s.iter().zip(b).all(|(x, y)| is_subset(x, y))
        }
        (Value::Number(s), Value::Number(b)) => s.as_f64() == b.as_f64(),
        _ => small == big,
    }
}

/// One changed field in a diff.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Present only after.
    Added(String, String),
    /// Present only before.
    Removed(String, String),
    /// Different value.
    Changed(String, String, String),
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Added(path, value) => write!(f, "+ {path}: {value}"),
            Change::Removed(path, value) => write!(f, "- {path}: {value}"),
            Change::Changed(path, before, after) => write!(f, "~ {path}: {before} -> {after}"),
        }
    }
}

/// Fields the server owns or that change on every write: left out of diffs.
const VOLATILE: &[&str] = &[
    "metadata.managedFields",
    "metadata.resourceVersion",
    "metadata.generation",
    "metadata.creationTimestamp",
    "metadata.uid",
    "status",
];

/// The changes from `before` (the live object, or none) to `after` (what
/// a server-side dry run returned), by field path. Values under a
/// Secret's `data`/`stringData` are never shown, only that they changed.
pub fn diff(before: Option<&Value>, after: &Value) -> Vec<Change> {
    // Our bookkeeping annotation changes with every change: not news.
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(annotations) = v
            .pointer_mut("/metadata/annotations")
            .and_then(Value::as_object_mut)
        {
            annotations.remove(labels::APPLIED_HASH);
            if annotations.is_empty()
                && let Some(metadata) = v.get_mut("metadata").and_then(Value::as_object_mut)
            {
                metadata.remove("annotations");
            }
        }
        v
    };
    let before = before.map(strip);
    let after = &strip(after);
    let before = before.as_ref();
    let secret = after.get("kind").and_then(Value::as_str) == Some("Secret");
    let mut changes = Vec::new();
    // A new object is shown field by field against an empty skeleton, so
    // server-set metadata stays out and Secret data is masked per key.
    let skeleton = Value::Object(
        after
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(_, v)| v.is_object())
                    .map(|(k, _)| (k.clone(), Value::Object(Default::default())))
                    .collect()
            })
            .unwrap_or_default(),
    );
    walk("", before.unwrap_or(&skeleton), after, secret, &mut changes);
    changes
}

fn walk(path: &str, before: &Value, after: &Value, secret: bool, out: &mut Vec<Change>) {
    if VOLATILE.contains(&path) {
        return;
    }
    let masked = secret && (path.starts_with("data.") || path.starts_with("stringData."));
    let show = |v: &Value| {
        if masked {
            "(secret value)".to_owned()
        } else {
            let text = v.to_string();
            if text.len() > 120 {
                format!("{}…", text.chars().take(117).collect::<String>())
            } else {
                text
            }
        }
    };
    let join = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    match (before, after) {
        (Value::Object(b), Value::Object(a)) => {
            for (key, av) in a {
                match b.get(key) {
                    Some(bv) => walk(&join(key), bv, av, secret, out),
                    None if !VOLATILE.contains(&join(key).as_str()) => out.push(Change::Added(
                        join(key),
                        show_masked(&join(key), av, secret),
                    )),
                    None => {}
                }
            }
            for (key, bv) in b {
                if !a.contains_key(key) && !VOLATILE.contains(&join(key).as_str()) {
                    out.push(Change::Removed(
                        join(key),
                        show_masked(&join(key), bv, secret),
                    ));
                }
            }
        }
        (Value::Array(b), Value::Array(a)) if a.len() == b.len() => {
            for (i, (bv, av)) in b.iter().zip(a).enumerate() {
                walk(&format!("{path}[{i}]"), bv, av, secret, out);
            }
        }
        _ if before != after => {
            out.push(Change::Changed(path.to_owned(), show(before), show(after)))
        }
        _ => {}
    }
}

/// A whole subtree shown as one value, masked when it holds Secret data.
fn show_masked(path: &str, value: &Value, secret: bool) -> String {
    if secret && (path == "data" || path == "stringData") {
        let keys: Vec<&str> = value
            .as_object()
            .map(|m| m.keys().map(String::as_str).collect())
            .unwrap_or_default();
        return format!("(secret values for keys {})", keys.join(", "));
    }
    if secret && (path.starts_with("data.") || path.starts_with("stringData.")) {
        return "(secret value)".to_owned();
    }
    let text = value.to_string();
    if text.len() > 120 {
        format!("{}…", text.chars().take(117).collect::<String>())
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subset_ignores_server_defaults_but_not_edits() {
        let desired = json!({"spec": {"ports": [{"port": 80}], "replicas": 1}});
        let live =
            json!({"spec": {"ports": [{"port": 80, "protocol": "TCP"}], "replicas": 1.0, "x": 1}});
        assert!(is_subset(&desired, &live));
        let edited = json!({"spec": {"ports": [{"port": 81, "protocol": "TCP"}], "replicas": 1}});
        assert!(!is_subset(&desired, &edited));
        let extra_port = json!({"spec": {"ports": [{"port": 80}, {"port": 81}], "replicas": 1}});
        assert!(!is_subset(&desired, &extra_port));
    }

    #[test]
    fn secret_values_never_appear_in_a_diff() {
        let before = json!({"kind": "Secret", "data": {"PGPASSWORD": "b2xk"}});
        let after = json!({"kind": "Secret", "data": {"PGPASSWORD": "bmV3", "TOKEN": "dG9r"}});
        let text: Vec<String> = diff(Some(&before), &after)
            .iter()
            .map(ToString::to_string)
            .collect();
        let joined = text.join("\n");
        assert!(
            !joined.contains("bmV3") && !joined.contains("b2xk") && !joined.contains("dG9r"),
            "{joined}"
        );
        assert!(
            joined.contains("~ data.PGPASSWORD: (secret value) -> (secret value)"),
            "{joined}"
        );
        assert!(joined.contains("+ data.TOKEN: (secret value)"), "{joined}");
        let created: Vec<String> = diff(None, &after).iter().map(ToString::to_string).collect();
        assert!(
            created
                .iter()
                .any(|l| l == "+ data.PGPASSWORD: (secret value)"),
            "{created:?}"
        );
        assert!(!created.join("\n").contains("bmV3"), "{created:?}");
    }

    #[test]
    fn diff_skips_volatile_fields() {
        let before =
            json!({"metadata": {"resourceVersion": "1", "labels": {"a": "1"}}, "status": {"x": 1}});
        let after =
            json!({"metadata": {"resourceVersion": "2", "labels": {"a": "2"}}, "status": {"x": 2}});
        let changes = diff(Some(&before), &after);
        assert_eq!(
            changes,
            vec![Change::Changed(
                "metadata.labels.a".into(),
                "\"1\"".into(),
                "\"2\"".into()
            )]
        );
    }
}
