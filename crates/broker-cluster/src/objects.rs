//! The rendered manifests as dynamic objects: reading a `render --out`
//! directory, checking every object is ours, and the few kinds we apply.

use std::collections::BTreeMap;
use std::path::Path;

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};

use crate::error::ClusterError;
use crate::labels;

/// A kind the cluster commands know how to apply, list and order. Kinds
/// order as [`broker_pins::ownership::apply_rank`] says, the order render
/// writes them in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `v1/Namespace`, cluster-scoped.
    Namespace,
    /// `v1/ServiceAccount`.
    ServiceAccount,
    /// `v1/ConfigMap`.
    ConfigMap,
    /// `v1/Secret`.
    Secret,
    /// `v1/PersistentVolumeClaim`.
    PersistentVolumeClaim,
    /// `v1/Service`.
    Service,
    /// `apps/v1/Deployment`.
    Deployment,
    /// `apps/v1/StatefulSet`.
    StatefulSet,
    /// `networking.k8s.io/v1/Ingress` (the environment's `ingress`).
    Ingress,
    /// `networking.k8s.io/v1/NetworkPolicy`.
    NetworkPolicy,
    /// `policy/v1/PodDisruptionBudget`.
    PodDisruptionBudget,
    /// `autoscaling/v2/HorizontalPodAutoscaler`.
    HorizontalPodAutoscaler,
    /// `batch/v1/CronJob` (e.g. a nightly `pg_dump` to a claim).
    CronJob,
}

impl Ord for Kind {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let rank = |k: &Kind| (broker_pins::ownership::apply_rank(k.name()), k.name());
        rank(self).cmp(&rank(other))
    }
}

impl PartialOrd for Kind {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Kind {
    /// Every kind, in apply order.
    pub const ALL: [Kind; 13] = [
        Kind::Namespace,
        Kind::ServiceAccount,
        Kind::ConfigMap,
        Kind::Secret,
        Kind::PersistentVolumeClaim,
        Kind::Service,
        Kind::Deployment,
        Kind::StatefulSet,
        Kind::Ingress,
        Kind::NetworkPolicy,
        Kind::PodDisruptionBudget,
        Kind::HorizontalPodAutoscaler,
        Kind::CronJob,
    ];

    /// The kind from `apiVersion` and `kind`; `None` for kinds we do not
    /// apply (render produces none of them).
    pub fn from_type(api_version: &str, kind: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.api_version() == api_version && k.name() == kind)
    }

    /// The kind from its `Kind.group` name as the ApplySet annotation
    /// writes it.
    pub fn from_group_kind(group_kind: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.group_kind() == group_kind)
    }

    /// `Deployment`, `Secret`, …
    pub fn name(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::ServiceAccount => "ServiceAccount",
            Kind::ConfigMap => "ConfigMap",
            Kind::Secret => "Secret",
            Kind::PersistentVolumeClaim => "PersistentVolumeClaim",
            Kind::Service => "Service",
            Kind::Deployment => "Deployment",
            Kind::StatefulSet => "StatefulSet",
            Kind::Ingress => "Ingress",
            Kind::NetworkPolicy => "NetworkPolicy",
            Kind::PodDisruptionBudget => "PodDisruptionBudget",
            Kind::HorizontalPodAutoscaler => "HorizontalPodAutoscaler",
            Kind::CronJob => "CronJob",
        }
    }

    /// The API group, empty for the core group.
    pub fn group(self) -> &'static str {
        match self {
            Kind::Deployment | Kind::StatefulSet => "apps",
            Kind::Ingress | Kind::NetworkPolicy => "networking.k8s.io",
            Kind::PodDisruptionBudget => "policy",
            Kind::HorizontalPodAutoscaler => "autoscaling",
            Kind::CronJob => "batch",
            _ => "",
        }
    }

    /// `v1` or `apps/v1`.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Deployment | Kind::StatefulSet => "apps/v1",
            Kind::Ingress | Kind::NetworkPolicy => "networking.k8s.io/v1",
            Kind::PodDisruptionBudget => "policy/v1",
            Kind::HorizontalPodAutoscaler => "autoscaling/v2",
            Kind::CronJob => "batch/v1",
            _ => "v1",
        }
    }

    /// The URL resource name.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Namespace => "namespaces",
            Kind::ServiceAccount => "serviceaccounts",
            Kind::ConfigMap => "configmaps",
            Kind::Secret => "secrets",
            Kind::PersistentVolumeClaim => "persistentvolumeclaims",
            Kind::Service => "services",
            Kind::Deployment => "deployments",
            Kind::StatefulSet => "statefulsets",
            Kind::Ingress => "ingresses",
            Kind::NetworkPolicy => "networkpolicies",
            Kind::PodDisruptionBudget => "poddisruptionbudgets",
            Kind::HorizontalPodAutoscaler => "horizontalpodautoscalers",
            Kind::CronJob => "cronjobs",
        }
    }

    /// `Kind.group`, or `Kind` for the core group: kubectl's format in
    /// `applyset.kubernetes.io/contains-group-kinds`.
    pub fn group_kind(self) -> String {
        match self.group() {
            "" => self.name().to_owned(),
            group => format!("{}.{group}", self.name()),
        }
    }

    /// Whether objects of this kind live in a namespace.
    pub fn namespaced(self) -> bool {
        self != Kind::Namespace
    }

    /// Whether this kind runs pods that start and stop scale.
    pub fn is_workload(self) -> bool {
        matches!(self, Kind::Deployment | Kind::StatefulSet)
    }

    /// The kube-rs description used to build a dynamic `Api`.
    pub fn api_resource(self) -> ApiResource {
        let (group, version) = match self.api_version().split_once('/') {
            Some((group, version)) => (group, version),
            None => ("", self.api_version()),
        };
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(group, version, self.name()),
            self.plural(),
        )
    }
}

/// An object's identity: kind, namespace (none for cluster-scoped) and
/// name. Orders by kind in apply order, then name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// The kind.
    pub kind: Kind,
    /// The namespace, `None` for cluster-scoped kinds.
    pub namespace: Option<String>,
    /// `metadata.name`.
    pub name: String,
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.kind.name(), self.name)
    }
}

impl ObjectKey {
    /// The key of a dynamic object; an error naming it when its type is
    /// not one we apply or it has no name.
    pub fn of(object: &DynamicObject) -> Result<Self, ClusterError> {
        let types = object.types.as_ref().ok_or_else(|| ClusterError::Object {
            object: object.metadata.name.clone().unwrap_or_default(),
            why: "no apiVersion/kind".into(),
        })?;
        let name = object
            .metadata
            .name
            .clone()
            .ok_or_else(|| ClusterError::Object {
                object: types.kind.clone(),
                why: "no metadata.name".into(),
            })?;
        let kind = Kind::from_type(&types.api_version, &types.kind).ok_or_else(|| {
            ClusterError::Object {
                object: format!("{}/{name}", types.kind),
                why: format!(
                    "{} {} is not a kind broker-images applies",
                    types.api_version, types.kind
                ),
            }
        })?;
        Ok(Self {
            kind,
            namespace: object.metadata.namespace.clone(),
            name,
        })
    }
}

/// What `render` produced, checked: every object ours, in one namespace.
#[derive(Clone, Debug)]
pub struct RenderedSet {
    /// The namespace every namespaced object is in.
    pub namespace: String,
    /// The objects by key (so in apply order).
    pub objects: BTreeMap<ObjectKey, DynamicObject>,
}

impl RenderedSet {
    /// Checks parsed objects: known kinds, our labels on every one, all in
    /// `namespace`, no duplicates. Objects without a namespace get it.
    pub fn new(namespace: &str, objects: Vec<DynamicObject>) -> Result<Self, ClusterError> {
        let mut by_key = BTreeMap::new();
        for mut object in objects {
            let mut key = ObjectKey::of(&object)?;
            let labels = object.metadata.labels.clone().unwrap_or_default();
            for (label, value) in labels::OURS {
                if labels.get(*label).map(String::as_str) != Some(*value) {
                    return Err(ClusterError::Object {
                        object: key.to_string(),
                        why: format!(
                            "lacks label {label}={value}: not rendered by broker-images render, refusing to apply it"
                        ),
                    });
                }
            }
            if labels.contains_key(labels::APPLYSET_PART_OF) {
                return Err(ClusterError::Object {
                    object: key.to_string(),
                    why: format!(
                        "already carries {}; the ApplySet label is set by start, not by the manifests",
                        labels::APPLYSET_PART_OF
                    ),
                });
            }
            if key.kind.namespaced() {
                match &key.namespace {
                    None => {
                        key.namespace = Some(namespace.to_owned());
                        object.metadata.namespace = Some(namespace.to_owned());
                    }
                    Some(ns) if ns != namespace => {
                        return Err(ClusterError::Object {
                            object: key.to_string(),
                            why: format!(
                                "is in namespace {ns}, not {namespace}; pass --namespace {ns}, or set `namespace: {namespace}` in the environment file and render again"
                            ),
                        });
                    }
                    Some(_) => {}
                }
            } else if key.kind == Kind::Namespace && key.name != namespace {
                return Err(ClusterError::Object {
                    object: key.to_string(),
                    why: format!("is not the target namespace {namespace}"),
                });
            }
            if key.kind.is_workload() {
                start_wave(&object).map_err(|why| ClusterError::Object {
                    object: key.to_string(),
                    why,
                })?;
            }
            if by_key.insert(key.clone(), object).is_some() {
                return Err(ClusterError::Object {
                    object: key.to_string(),
                    why: "appears twice in the manifests".into(),
                });
            }
        }
        if by_key.is_empty() {
            return Err(ClusterError::Object {
                object: "manifests".into(),
                why: "hold no objects".into(),
            });
        }
        Ok(Self {
            namespace: namespace.to_owned(),
            objects: by_key,
        })
    }

    /// Checks objects rendered in memory (`start --environment`), given as
    /// JSON values, as [`RenderedSet::new`] does.
    pub fn from_values(
        namespace: &str,
        values: Vec<serde_json::Value>,
    ) -> Result<Self, ClusterError> {
        let objects = values
            .into_iter()
            .map(|value| {
                serde_json::from_value::<DynamicObject>(value).map_err(|e| ClusterError::Object {
                    object: "rendered object".into(),
                    why: format!("is not a Kubernetes object: {e}"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(namespace, objects)
    }

    /// Reads `dir` as [`RenderedSet::read_dir`] does, into `namespace` when
    /// given, else the namespace the objects are rendered for
    /// ([`RenderedSet::namespace_of`]), else `default`.
    pub fn read_dir_into(
        dir: &Path,
        namespace: Option<&str>,
        default: &str,
    ) -> Result<Self, ClusterError> {
        let objects = read_objects(dir)?;
        let target = resolve(namespace, &objects, default);
        Self::new(&target, objects)
    }

    /// Checks objects rendered in memory as [`RenderedSet::read_dir_into`]
    /// picks their namespace.
    pub fn from_values_into(
        namespace: Option<&str>,
        default: &str,
        values: Vec<serde_json::Value>,
    ) -> Result<Self, ClusterError> {
        let parsed: Vec<DynamicObject> = values
            .iter()
            .filter_map(|v| serde_json::from_value(v.clone()).ok())
            .collect();
        let target = resolve(namespace, &parsed, default);
        Self::from_values(&target, values)
    }

    /// The namespace rendered objects are for: the Namespace object's
    /// name, else the one namespace the namespaced objects name.
    pub fn namespace_of(objects: &[DynamicObject]) -> Option<String> {
        let namespace_object = objects.iter().find(|o| {
            o.types
                .as_ref()
                .is_some_and(|t| t.kind == "Namespace" && t.api_version == "v1")
        });
        if let Some(name) = namespace_object.and_then(|o| o.metadata.name.clone()) {
            return Some(name);
        }
        let named: std::collections::BTreeSet<&str> = objects
            .iter()
            .filter_map(|o| o.metadata.namespace.as_deref())
            .collect();
        match named.len() {
            1 => named.into_iter().next().map(str::to_owned),
            _ => None,
        }
    }

    /// Reads every `*.yaml`/`*.yml` in `dir` except `kustomization.yaml`
    /// (multi-document files allowed) and checks them as [`RenderedSet::new`].
    pub fn read_dir(dir: &Path, namespace: &str) -> Result<Self, ClusterError> {
        Self::new(namespace, read_objects(dir)?)
    }

    /// The kinds present.
    pub fn kinds(&self) -> std::collections::BTreeSet<Kind> {
        self.objects.keys().map(|k| k.kind).collect()
    }
}

fn resolve(namespace: Option<&str>, objects: &[DynamicObject], default: &str) -> String {
    namespace
        .map(str::to_owned)
        .or_else(|| RenderedSet::namespace_of(objects))
        .unwrap_or_else(|| default.to_owned())
}

/// Parses the YAML files of a rendered directory into dynamic objects, in
/// file-name order.
pub fn read_objects(dir: &Path) -> Result<Vec<DynamicObject>, ClusterError> {
    let io = |path: &Path, e: std::io::Error| ClusterError::Manifests {
        path: path.to_owned(),
        why: e.to_string(),
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let path = entry.map_err(|e| io(dir, e))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let yaml = name.ends_with(".yaml") || name.ends_with(".yml");
        if yaml && !name.starts_with("kustomization.") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    let mut objects = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
        let documents: Vec<serde_json::Value> =
            serde_saphyr::from_multiple(&text).map_err(|e| ClusterError::Manifests {
                path: path.clone(),
                why: e.to_string(),
            })?;
        for document in documents {
            if document.is_null() {
                continue;
            }
            let object: DynamicObject =
                serde_json::from_value(document).map_err(|e| ClusterError::Manifests {
                    path: path.clone(),
                    why: format!("not a Kubernetes object: {e}"),
                })?;
            objects.push(object);
        }
    }
    if objects.is_empty() {
        return Err(ClusterError::Manifests {
            path: dir.to_owned(),
            why:
                "no Kubernetes objects in any *.yaml file; run broker-images render --out DIR first"
                    .into(),
        });
    }
    Ok(objects)
}

/// A workload's start wave ([`labels::START_WAVE`], default 0); an error
/// saying what is wrong when the annotation is not an integer.
pub fn start_wave(object: &DynamicObject) -> Result<i64, String> {
    let Some(text) = object
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(labels::START_WAVE))
    else {
        return Ok(0);
    };
    text.trim().parse().map_err(|_| {
        format!(
            "annotation {}: {text:?} is not an integer; write a whole number such as \"-1\" or \"1\" (lower starts first)",
            labels::START_WAVE
        )
    })
}
