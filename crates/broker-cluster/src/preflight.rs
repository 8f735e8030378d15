//! What the API server's dry run of an object says when it refuses it,
//! turned into one line naming the object, the field and what to do.
//! Pure: [`crate::cluster`] sends the dry runs (`dryRun=All`) before the
//! first write of a start.

use kube::core::Status;

use crate::objects::{Kind, ObjectKey};

/// Why the server would refuse an object, and what the operator can do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// `Kind/name`.
    pub object: String,
    /// The field the server names (`spec.selector`), when it names one.
    pub field: Option<String>,
    /// The server's reason, shortened to its cause.
    pub why: String,
    /// What to do about it.
    pub hint: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.object)?;
        if let Some(field) = &self.field {
            write!(f, " field {field}")?;
        }
        write!(f, ": {}; {}", self.why, self.hint)
    }
}

/// Reads a refused dry run. `None` when the answer is not about the object
/// (RBAC, a conflict, a server error): those keep their own errors.
pub fn refusal(key: &ObjectKey, status: &Status) -> Option<Refusal> {
    let message = status.message.as_str();
    let lower = message.to_lowercase();
    let causes = status
        .details
        .as_ref()
        .map(|d| d.causes.clone())
        .unwrap_or_default();
    let field = causes
        .iter()
        .find(|c| !c.field.is_empty())
        .map(|c| narrowed_field(&c.field, &c.message));
    let cause_text = causes
        .iter()
        .find(|c| !c.message.is_empty())
        .map(|c| c.message.clone());
    let object = format!("{}/{}", key.kind.name(), key.name);
    let quota = lower.contains("exceeded quota");
    let webhook = lower.contains("admission webhook");
    let policy =
        lower.contains("violates podsecurity") || lower.contains("validatingadmissionpolicy");
    let refused = match status.code {
        422 | 400 => true,
        403 => quota || webhook || policy,
        _ => false,
    };
    if !refused {
        return None;
    }
    // Immutable-field answers carry a multi-line diff of the spec: the
    // first line says it.
    let why = first_line(&cause_text.unwrap_or_else(|| short(message)));
    let hint = if lower.contains("immutable") {
        immutable_hint(key)
    } else if quota {
        "the namespace's ResourceQuota refuses it: raise the quota or lower the environment's resources".to_owned()
    } else if webhook || policy {
        "an admission policy of the cluster refuses it: change the environment to meet it, or ask the cluster's admins".to_owned()
    } else {
        "fix the catalogue or the environment, render again and start".to_owned()
    };
    Some(Refusal {
        object,
        field,
        why,
        hint,
    })
}

fn immutable_hint(key: &ObjectKey) -> String {
    let object = format!("{}/{}", key.kind.name(), key.name);
    match key.kind {
        Kind::PersistentVolumeClaim => format!(
            "a claim's storage class, access modes and size cannot shrink or change in place: keep them as on the cluster, or back up the data and delete {object} (kubectl delete pvc {}) before starting",
            key.name
        ),
        _ => format!(
            "this field cannot change on a live object: keep it as on the cluster, or delete {object} (kubectl delete {} {}) and start again",
            key.kind.name().to_lowercase(),
            key.name
        ),
    }
}

/// The cause's first line, without the Go rendering of the refused value
/// (`Invalid value: v1.LabelSelector{...}: field is immutable`).
fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or("").trim();
    let line = match line.strip_prefix("Invalid value: ") {
        Some(rest) => rest.rsplit(": ").next().unwrap_or(rest),
        None => line,
    };
    line.strip_prefix("Forbidden: ").unwrap_or(line).to_owned()
}

/// An immutable-spec answer names only `spec` but carries a diff whose
/// `-` lines are the fields that differ: `spec.storageClassName`.
fn narrowed_field(field: &str, message: &str) -> String {
    let changed: Vec<String> = message
        .lines()
        .filter_map(|l| l.strip_prefix('-'))
        .filter_map(|l| l.trim().split_once(':'))
        .map(|(name, _)| name.trim())
        .filter(|name| !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric()))
        .map(|name| {
            let mut chars = name.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_lowercase().chain(chars).collect::<String>()
            })
        })
        .collect();
    if changed.is_empty() {
        return field.to_owned();
    }
    changed
        .iter()
        .map(|name| format!("{field}.{name}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The server's message without the `Kind "name" is invalid: ` prefix
/// that repeats the object.
fn short(message: &str) -> String {
    match message.split_once(" is invalid: ") {
        Some((_, rest)) => rest.to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kind: Kind, name: &str) -> ObjectKey {
        ObjectKey {
            kind,
            namespace: Some("broker".into()),
            name: name.into(),
        }
    }

    fn status(value: serde_json::Value) -> Status {
        serde_json::from_value(value).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn rbac_and_conflicts_are_not_refusals_of_the_object() {
        let forbidden = status(serde_json::json!({
            "status": "Failure", "code": 403, "reason": "Forbidden",
            "message": "deployments.apps \"db\" is forbidden: User \"ci\" cannot patch resource \"deployments\""
        }));
        assert_eq!(refusal(&key(Kind::Deployment, "db"), &forbidden), None);
        let conflict = status(serde_json::json!({
            "status": "Failure", "code": 409, "reason": "Conflict", "message": "Apply failed with 1 conflict"
        }));
        assert_eq!(refusal(&key(Kind::Deployment, "db"), &conflict), None);
    }

    #[test]
    fn a_quota_refusal_says_to_raise_the_quota() {
        let quota = status(serde_json::json!({
            "status": "Failure", "code": 403, "reason": "Forbidden",
            "message": "persistentvolumeclaims \"db-data\" is forbidden: exceeded quota: storage, requested: requests.storage=10Gi, used: requests.storage=0, limited: requests.storage=1Gi"
        }));
        let refusal = refusal(&key(Kind::PersistentVolumeClaim, "db-data"), &quota).unwrap();
        let text = refusal.to_string();
        assert!(text.starts_with("PersistentVolumeClaim/db-data: persistentvolumeclaims \"db-data\" is forbidden: exceeded quota"), "{text}");
        assert!(text.contains("raise the quota"), "{text}");
    }
}
