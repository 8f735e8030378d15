//! The ApplySet of KEP-3659 as kubectl implements it: a parent Secret in
//! the namespace whose id label every member carries as its part-of label.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use kube::api::{DynamicObject, ObjectMeta, TypeMeta};
use sha2::{Digest as _, Sha256};

use crate::labels;
use crate::objects::Kind;

/// The name of the parent Secret (`kubectl apply --applyset=broker`).
pub const PARENT_NAME: &str = "broker";

/// The ApplySet id of a parent: `applyset-` + base64url, unpadded, of
/// sha256 over `<name>.<namespace>.<kind>.<group>` + `-v1`.
pub fn applyset_id(name: &str, namespace: &str, kind: &str, group: &str) -> String {
    let hash = Sha256::digest(format!("{name}.{namespace}.{kind}.{group}"));
    format!(
        "applyset-{}-v1",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hash)
    )
}

/// A kind in a parent's `contains-group-kinds` that neither the fixed
/// table nor the cluster's API discovery knows.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the ApplySet parent names kind {0}, which neither this broker-images nor the cluster's API discovery knows (was its CustomResourceDefinition removed?); install it again so start can prune or keep those objects"
)]
pub struct UnknownGroupKind(pub String);

/// What a live parent records: its member kinds and the set's workloads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParentRecord {
    /// `contains-group-kinds`, parsed.
    pub kinds: BTreeSet<Kind>,
    /// [`labels::WORKLOADS`], parsed (empty when absent).
    pub workloads: Vec<String>,
}

/// Our ApplySet in one namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplySet {
    /// The namespace of the parent and of every namespaced member.
    pub namespace: String,
    /// The parent Secret's name.
    pub name: String,
    /// The id, derived from name and namespace.
    pub id: String,
}

impl ApplySet {
    /// broker-images' set in `namespace`.
    pub fn new(namespace: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: PARENT_NAME.to_owned(),
            id: applyset_id(PARENT_NAME, namespace, "Secret", ""),
        }
    }

    /// `applyset.kubernetes.io/part-of=<id>`.
    pub fn member_selector(&self) -> String {
        format!("{}={}", labels::APPLYSET_PART_OF, self.id)
    }

    /// The tooling value we write: `broker-images/<version>`.
    pub fn tooling() -> String {
        format!("broker-images/v{}", env!("CARGO_PKG_VERSION"))
    }

    /// The annotation value for a set of member kinds: sorted, comma-joined.
    pub fn group_kinds(kinds: &BTreeSet<Kind>) -> String {
        let names: BTreeSet<String> = kinds.iter().map(|k| k.group_kind()).collect();
        names.into_iter().collect::<Vec<_>>().join(",")
    }

    /// The kinds of the fixed table named by a parent's annotation. A
    /// name outside it is an error, never skipped: its members could
    /// neither be pruned nor kept on the parent, and would be orphaned
    /// (a connected run asks API discovery first: [`Self::group_kind_names`]).
    pub fn parse_group_kinds(value: &str) -> Result<BTreeSet<Kind>, UnknownGroupKind> {
        Self::group_kind_names(value)
            .map(|gk| Kind::from_group_kind(gk).ok_or_else(|| UnknownGroupKind(gk.to_owned())))
            .collect()
    }

    /// The `Kind.group` names of a parent's annotation, as written.
    pub fn group_kind_names(value: &str) -> impl Iterator<Item = &str> {
        value.split(',').map(str::trim).filter(|gk| !gk.is_empty())
    }

    /// The workloads named by a parent's [`labels::WORKLOADS`] annotation.
    pub fn parse_workloads(value: &str) -> Vec<String> {
        value
            .split(',')
            .map(str::trim)
            .filter(|w| !w.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The parent object to server-side apply, naming `kinds` and the
    /// set's `workloads`.
    pub fn parent(&self, kinds: &BTreeSet<Kind>, workloads: &[String]) -> DynamicObject {
        let mut annotations = BTreeMap::new();
        annotations.insert(labels::APPLYSET_TOOLING.to_owned(), Self::tooling());
        annotations.insert(
            labels::APPLYSET_GROUP_KINDS.to_owned(),
            Self::group_kinds(kinds),
        );
        annotations.insert(
            labels::APPLYSET_ADDITIONAL_NAMESPACES.to_owned(),
            String::new(),
        );
        annotations.insert(labels::WORKLOADS.to_owned(), workloads.join(","));
        let mut object_labels = BTreeMap::new();
        object_labels.insert(labels::APPLYSET_ID.to_owned(), self.id.clone());
        for (key, value) in labels::OURS {
            object_labels.insert((*key).to_owned(), (*value).to_owned());
        }
        DynamicObject {
            types: Some(TypeMeta {
                api_version: "v1".into(),
                kind: "Secret".into(),
            }),
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                labels: Some(object_labels),
                annotations: Some(annotations),
                ..ObjectMeta::default()
            },
            data: serde_json::json!({ "type": "Opaque" }),
        }
    }

    /// Adds the part-of label to a member.
    pub fn label_member(&self, object: &mut DynamicObject) {
        object
            .metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(labels::APPLYSET_PART_OF.to_owned(), self.id.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example in kubectl's own apply tests (parent Secret `my-set` in
    /// namespace `test`), which the KEP's formula must reproduce.
    #[test]
    fn id_matches_kubectls_example() {
        assert_eq!(
            applyset_id("my-set", "test", "Secret", ""),
            "applyset-0eFHV8ySqp7XoShsGvyWFQD3s96yqwHmzc4e0HR1dsY-v1"
        );
    }

    /// The id is URL-safe base64 without padding of a 32-byte hash: 43
    /// characters from `[A-Za-z0-9_-]`, within the 63 of a label value.
    #[test]
    fn id_is_a_valid_label_value() {
        let id = ApplySet::new("broker").id;
        assert!(id.len() <= 63, "{id}");
        let middle = &id["applyset-".len()..id.len() - "-v1".len()];
        assert_eq!(middle.len(), 43);
        assert!(
            middle
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_ne!(id, ApplySet::new("other").id);
    }

    #[test]
    fn group_kinds_sorted_like_kubectl() {
        let kinds = BTreeSet::from([Kind::Service, Kind::Deployment, Kind::ConfigMap]);
        let value = ApplySet::group_kinds(&kinds);
        assert_eq!(value, "ConfigMap,Deployment.apps,Service");
        assert_eq!(ApplySet::parse_group_kinds(&value), Ok(kinds));
        assert_eq!(ApplySet::parse_group_kinds(""), Ok(BTreeSet::new()));
    }

    /// Dropping an unknown kind would leave its members outside every
    /// later start, stop and prune.
    #[test]
    fn an_unknown_kind_on_the_parent_is_an_error() {
        assert_eq!(
            ApplySet::parse_group_kinds("Foo.example.com,Secret"),
            Err(UnknownGroupKind("Foo.example.com".into()))
        );
    }
}
