//! Credentials a server reads only when it initialises its data
//! (`broker-images.io/read-once-credentials` on a workload): which Secret
//! key feeds each, and whether a start changes one under data that was
//! initialised with the old value. Pure; the Secret reads are in
//! [`crate::cluster`].

use base64::Engine;
use serde_json::Value;

use crate::labels;

/// Where a read-once variable of a workload comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialSource {
    /// The environment variable (`POSTGRES_PASSWORD`).
    pub variable: String,
    /// The Secret and key its `secretKeyRef` names.
    pub secret: String,
    /// The key in that Secret.
    pub key: String,
}

/// The read-once variables the workload's annotation lists, with the
/// Secret keys its containers take them from (variables set another way
/// are left out: nothing to compare).
pub fn read_once_sources(workload: &Value) -> Vec<CredentialSource> {
    let Some(listed) = workload
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(labels::READ_ONCE_CREDENTIALS))
        .and_then(Value::as_str)
    else {
        return Vec::new();
    };
    let wanted: Vec<&str> = listed
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    let containers = workload
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut found = Vec::new();
    for container in &containers {
        for env in container["env"].as_array().cloned().unwrap_or_default() {
            let Some(variable) = env["name"].as_str() else {
                continue;
            };
            if !wanted.contains(&variable) {
                continue;
            }
            let reference = &env["valueFrom"]["secretKeyRef"];
            if let (Some(secret), Some(key)) =
                (reference["name"].as_str(), reference["key"].as_str())
            {
                found.push(CredentialSource {
                    variable: variable.to_owned(),
                    secret: secret.to_owned(),
                    key: key.to_owned(),
                });
            }
        }
    }
    found
}

/// A read-once credential a start changes under data initialised with
/// the old value.
#[derive(Clone, PartialEq, Eq)]
pub struct CredentialChange {
    /// The workload whose server holds the credential (`Deployment/db`).
    pub workload: crate::objects::ObjectKey,
    /// The variable (`POSTGRES_PASSWORD`).
    pub variable: String,
    /// Where the initialised data is (`claim db-data`, `node directory
    /// /var/lib/broker/db`).
    pub claims: Vec<String>,
    /// The new value.
    pub new_value: Vec<u8>,
}

impl std::fmt::Debug for CredentialChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The value never reaches a log line, even a debug one.
        f.debug_struct("CredentialChange")
            .field("workload", &self.workload)
            .field("variable", &self.variable)
            .field("claims", &self.claims)
            .finish_non_exhaustive()
    }
}

/// What start does about a changed read-once credential.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CredentialPolicy {
    /// Refuse before any write (the default).
    #[default]
    Refuse,
    /// The operator changed it inside the server already
    /// (`--credentials-changed-in-place`): apply.
    ChangedInPlace,
    /// Change it inside the running server with the workload's
    /// [`labels::ROTATE_CREDENTIALS`] script, then apply
    /// (`--rotate-credentials`).
    Rotate,
}

/// The workload's rotation script, when the catalogue gives one.
pub fn rotate_script(workload: &Value) -> Option<String> {
    workload
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(labels::ROTATE_CREDENTIALS))
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// A Secret's value for `key` (`stringData` first, as the server merges
/// it over `data`), `None` when it has none.
pub fn secret_value(secret: &Value, key: &str) -> Option<Vec<u8>> {
    if let Some(text) = secret["stringData"][key].as_str() {
        return Some(text.as_bytes().to_vec());
    }
    secret["data"][key]
        .as_str()
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
}

/// The node directories (hostPath volumes) a workload's pods mount,
/// where single-node keeps data.
pub fn node_directories(workload: &Value) -> Vec<String> {
    workload
        .pointer("/spec/template/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v["hostPath"]["path"].as_str())
        .map(str::to_owned)
        .collect()
}

/// The claims a workload's pods mount.
pub fn claims(workload: &Value) -> Vec<String> {
    workload
        .pointer("/spec/template/spec/volumes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v["persistentVolumeClaim"]["claimName"].as_str())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_listed_variables_from_secret_keys_are_sources() {
        let workload = json!({
            "metadata": {"annotations": {labels::READ_ONCE_CREDENTIALS: "POSTGRES_PASSWORD"}},
            "spec": {"template": {"spec": {
                "containers": [{"name": "db", "env": [
                    {"name": "POSTGRES_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds-abc", "key": "POSTGRES_PASSWORD"}}},
                    {"name": "PGPASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds-abc", "key": "PGPASSWORD"}}}
                ]}],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "db-data"}}]
            }}}
        });
        assert_eq!(
            read_once_sources(&workload),
            [CredentialSource {
                variable: "POSTGRES_PASSWORD".into(),
                secret: "creds-abc".into(),
                key: "POSTGRES_PASSWORD".into()
            }]
        );
        assert_eq!(claims(&workload), ["db-data"]);
        assert!(read_once_sources(&json!({"metadata": {}})).is_empty());
    }

    #[test]
    fn string_data_wins_over_data() {
        let secret = json!({"data": {"K": "b2xk"}, "stringData": {"K": "new"}});
        assert_eq!(secret_value(&secret, "K"), Some(b"new".to_vec()));
        assert_eq!(
            secret_value(&json!({"data": {"K": "b2xk"}}), "K"),
            Some(b"old".to_vec())
        );
    }
}
