//! The requests every run is made of: the namespace and ApplySet parent
//! checks, member and pod lists, server-side apply and delete. Kept apart
//! from the runs so start, stop, restart and status share one way of
//! asking and of naming what failed.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod, Secret};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

use super::connect::{Cluster, Target, classify_error, explain_transport};
use crate::applyset::{ApplySet, ParentRecord, UnknownGroupKind};
use crate::error::ClusterError;
use crate::labels;
use crate::objects::{Kind, ObjectKey};

pub use crate::compare::STOP_MANAGER;

impl Cluster {
    pub(super) fn api(&self, kind: Kind) -> Api<DynamicObject> {
        let resource = kind.api_resource();
        if kind.namespaced() {
            Api::namespaced_with(self.client.clone(), &self.namespace, &resource)
        } else {
            Api::all_with(self.client.clone(), &resource)
        }
    }

    pub(super) fn error(
        &self,
        e: kube::Error,
        verb: &str,
        kind: Kind,
        name: Option<&str>,
    ) -> ClusterError {
        classify_error(e, verb, Target::of(kind, name, &self.namespace))
    }

    /// The namespace, `None` when absent; an error when it is terminating
    /// or the server cannot be reached (the first request of every run).
    /// Credentials limited to the namespace may not read Namespace
    /// objects: then it is taken as present, and left alone.
    pub(super) async fn namespace_state(&self) -> Result<NamespaceState, ClusterError> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let found = match api.get_opt(&self.namespace).await {
            Err(kube::Error::Api(status)) if status.code == 403 => {
                return Ok(NamespaceState::Unreadable);
            }
            other => other,
        };
        let found = found.map_err(|e| match e {
            kube::Error::Api(_) => self.error(e, "get", Kind::Namespace, Some(&self.namespace)),
            other => ClusterError::Unreachable {
                server: self.server.clone(),
                why: explain_transport(&other),
            },
        })?;
        if let Some(ns) = &found {
            let phase = ns.status.as_ref().and_then(|s| s.phase.as_deref());
            if phase == Some("Terminating") || ns.metadata.deletion_timestamp.is_some() {
                return Err(ClusterError::NamespaceTerminating(self.namespace.clone()));
            }
        }
        Ok(match found {
            Some(ns) => NamespaceState::Present(Box::new(ns)),
            None => NamespaceState::Missing,
        })
    }

    /// What the parent records, `None` without a parent; an error when
    /// the parent is another tool's, its id is not ours, or it names a
    /// kind we do not know.
    pub(super) async fn parent_record(&self) -> Result<Option<ParentRecord>, ClusterError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let Some(parent) = api
            .get_opt(&self.set.name)
            .await
            .map_err(|e| self.error(e, "get", Kind::Secret, Some(&self.set.name)))?
        else {
            return Ok(None);
        };
        let annotations = parent.metadata.annotations.clone().unwrap_or_default();
        let tooling = annotations
            .get(labels::APPLYSET_TOOLING)
            .cloned()
            .unwrap_or_default();
        let id = parent
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(labels::APPLYSET_ID).cloned());
        if !tooling.starts_with("broker-images/") || id.as_deref() != Some(self.set.id.as_str()) {
            return Err(ClusterError::ForeignApplySet {
                namespace: self.namespace.clone(),
                name: self.set.name.clone(),
                tooling: if tooling.is_empty() {
                    "an unknown tool (no tooling annotation)".into()
                } else {
                    tooling
                },
            });
        }
        let text = |key: &str| annotations.get(key).map_or("", String::as_str);
        let mut kinds = BTreeSet::new();
        for group_kind in ApplySet::group_kind_names(text(labels::APPLYSET_GROUP_KINDS)) {
            let kind = match Kind::from_group_kind(group_kind) {
                Some(kind) => Some(kind),
                None => self.served_group_kind(group_kind).await?,
            };
            kinds.insert(kind.ok_or_else(|| UnknownGroupKind(group_kind.to_owned()))?);
        }
        Ok(Some(ParentRecord {
            kinds,
            workloads: ApplySet::parse_workloads(text(labels::WORKLOADS)),
        }))
    }

    /// The set's members of `kinds`: one list call per kind, by label.
    pub(super) async fn members(
        &self,
        kinds: &BTreeSet<Kind>,
    ) -> Result<BTreeMap<ObjectKey, DynamicObject>, ClusterError> {
        let params = ListParams::default().labels(&self.set.member_selector());
        let mut live = BTreeMap::new();
        for kind in kinds.iter().filter(|k| k.namespaced()) {
            let list = self
                .api(*kind)
                .list(&params)
                .await
                .map_err(|e| self.error(e, "list", *kind, None))?;
            for object in list.items {
                let object = typed(*kind, object);
                let key = ObjectKey {
                    kind: *kind,
                    namespace: Some(self.namespace.clone()),
                    name: object.metadata.name.clone().unwrap_or_default(),
                };
                live.insert(key, object);
            }
        }
        Ok(live)
    }

    /// Server-side apply of one object.
    pub(super) async fn apply(
        &self,
        key: &ObjectKey,
        object: &DynamicObject,
        manager: &str,
        force: bool,
        dry_run: bool,
    ) -> Result<DynamicObject, ClusterError> {
        let mut params = PatchParams::apply(manager);
        if force {
            params = params.force();
        }
        if dry_run {
            params = params.dry_run();
        }
        self.api(key.kind)
            .patch(&key.name, &params, &Patch::Apply(object))
            .await
            .map_err(|e| self.error(e, "patch", key.kind, Some(&key.name)))
    }

    pub(super) async fn delete(&self, key: &ObjectKey) -> Result<(), ClusterError> {
        match self
            .api(key.kind)
            .delete(&key.name, &DeleteParams::background())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(self.error(e, "delete", key.kind, Some(&key.name))),
        }
    }

    /// Every object of a kind we do not apply in the namespace, unfiltered
    /// (a Deployment's pods and ReplicaSets carry the pod template's
    /// labels, not ours); `resource` names it in errors as RBAC does.
    async fn list_namespaced<K>(&self, resource: &str, plural: &str) -> Result<Vec<K>, ClusterError>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), &self.namespace);
        Ok(api
            .list(&ListParams::default())
            .await
            .map_err(|e| {
                classify_error(
                    e,
                    "list",
                    Target::new(resource, plural, Some(&self.namespace)),
                )
            })?
            .items)
    }

    pub(super) async fn pods(&self) -> Result<Vec<Pod>, ClusterError> {
        self.list_namespaced("pods", "pods").await
    }

    pub(super) async fn deployments(&self) -> Result<Vec<Deployment>, ClusterError> {
        self.typed_members(Kind::Deployment).await
    }

    /// The set's members of a workload kind, typed (for their status).
    pub(super) async fn typed_members<K>(&self, kind: Kind) -> Result<Vec<K>, ClusterError>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), &self.namespace);
        Ok(api
            .list(&ListParams::default().labels(&self.set.member_selector()))
            .await
            .map_err(|e| self.error(e, "list", kind, None))?
            .items)
    }

    /// The namespace's ReplicaSets: which one is a Deployment's current
    /// revision, and which revisions still need old config.
    pub(super) async fn replica_sets(&self) -> Result<Vec<ReplicaSet>, ClusterError> {
        self.list_namespaced("replicasets.apps", "replicasets")
            .await
    }

    pub(super) async fn claims(&self) -> Result<Vec<PersistentVolumeClaim>, ClusterError> {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &self.namespace);
        Ok(api
            .list(&ListParams::default())
            .await
            .map_err(|e| self.error(e, "list", Kind::PersistentVolumeClaim, None))?
            .items)
    }
}

/// What the first request learned about the namespace.
pub(super) enum NamespaceState {
    /// It exists and is not terminating.
    Present(Box<Namespace>),
    /// It does not exist yet.
    Missing,
    /// These credentials may not read it; taken as present.
    Unreadable,
}

pub(super) fn typed(kind: Kind, mut object: DynamicObject) -> DynamicObject {
    // List items come without apiVersion/kind; compare needs them.
    object.types = Some(kube::api::TypeMeta {
        api_version: kind.api_version().to_owned(),
        kind: kind.name().to_owned(),
    });
    object
}

/// The smallest apply body for `key`: type, name, namespace, plus `extra`.
pub(super) fn minimal(key: &ObjectKey, namespace: &str, extra: Value) -> DynamicObject {
    let mut body = json!({
        "apiVersion": key.kind.api_version(),
        "kind": key.kind.name(),
        "metadata": {"name": key.name, "namespace": namespace},
    });
    if let (Some(target), Value::Object(more)) = (body.as_object_mut(), extra) {
        target.extend(more);
    }
    serde_json::from_value(body).unwrap_or_else(|_| DynamicObject {
        types: None,
        metadata: Default::default(),
        data: Value::Null,
    })
}
