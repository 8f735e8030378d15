//! The rendered manifests as dynamic objects: reading a `render --out`
//! directory, checking every object is ours, and the kinds we apply: a
//! fixed table of the ones we order, wait on and stop, and any other kind
//! the cluster serves, resolved through API discovery once connected.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Mutex;

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
    /// `apps/v1/DaemonSet`.
    DaemonSet,
    /// `batch/v1/Job`, waited on until it completes.
    Job,
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
    /// Any other kind, as the cluster's API discovery describes it (a
    /// CRD's kind such as `ServiceMonitor`).
    Served(&'static ServedKind),
}

/// A kind outside [`Kind`]'s fixed table, as API discovery answered for
/// it. Interned ([`ServedKind::intern`]) so that [`Kind`] stays `Copy`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServedKind {
    /// `group/version` (`monitoring.coreos.com/v1`).
    pub api_version: String,
    /// The API group, empty for the core group.
    pub group: String,
    /// `ServiceMonitor`.
    pub kind: String,
    /// The URL resource name (`servicemonitors`).
    pub plural: String,
    /// Whether its objects live in a namespace.
    pub namespaced: bool,
}

/// Every served kind this process has met: a handful per run, each kept
/// for the life of the process (a CLI run or a dev session).
static SERVED: Mutex<BTreeSet<&'static ServedKind>> = Mutex::new(BTreeSet::new());

impl ServedKind {
    /// The [`Kind`] for this description, one allocation per distinct
    /// description per process.
    pub fn intern(self) -> Kind {
        let mut served = SERVED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(known) = served.get(&self) {
            return Kind::Served(known);
        }
        let leaked: &'static ServedKind = Box::leak(Box::new(self));
        served.insert(leaked);
        Kind::Served(leaked)
    }
}

impl Ord for Kind {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let rank = |k: &Kind| {
            (
                broker_pins::ownership::apply_rank(k.name()),
                k.name(),
                k.group(),
            )
        };
        rank(self).cmp(&rank(other))
    }
}

impl PartialOrd for Kind {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Kind {
    /// Every kind of the fixed table, in apply order.
    pub const ALL: [Kind; 15] = [
        Kind::Namespace,
        Kind::ServiceAccount,
        Kind::ConfigMap,
        Kind::Secret,
        Kind::PersistentVolumeClaim,
        Kind::Service,
        Kind::Deployment,
        Kind::StatefulSet,
        Kind::DaemonSet,
        Kind::Job,
        Kind::Ingress,
        Kind::NetworkPolicy,
        Kind::PodDisruptionBudget,
        Kind::HorizontalPodAutoscaler,
        Kind::CronJob,
    ];

    /// The kind of the fixed table with this `apiVersion` and `kind`;
    /// `None` for any other (API discovery may still know it).
    pub fn from_type(api_version: &str, kind: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.api_version() == api_version && k.name() == kind)
    }

    /// The kind of the fixed table with this `Kind.group` name, as the
    /// ApplySet annotation writes it.
    pub fn from_group_kind(group_kind: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.group_kind() == group_kind)
    }

    /// `Deployment`, `Secret`, …
    pub fn name(self) -> &'static str {
        match self {
            Kind::Served(served) => &served.kind,
            Kind::Namespace => "Namespace",
            Kind::ServiceAccount => "ServiceAccount",
            Kind::ConfigMap => "ConfigMap",
            Kind::Secret => "Secret",
            Kind::PersistentVolumeClaim => "PersistentVolumeClaim",
            Kind::Service => "Service",
            Kind::Deployment => "Deployment",
            Kind::StatefulSet => "StatefulSet",
            Kind::DaemonSet => "DaemonSet",
            Kind::Job => "Job",
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
            Kind::Served(served) => &served.group,
            Kind::Deployment | Kind::StatefulSet | Kind::DaemonSet => "apps",
            Kind::Ingress | Kind::NetworkPolicy => "networking.k8s.io",
            Kind::PodDisruptionBudget => "policy",
            Kind::HorizontalPodAutoscaler => "autoscaling",
            Kind::CronJob | Kind::Job => "batch",
            _ => "",
        }
    }

    /// `v1` or `apps/v1`.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Served(served) => &served.api_version,
            Kind::Deployment | Kind::StatefulSet | Kind::DaemonSet => "apps/v1",
            Kind::Ingress | Kind::NetworkPolicy => "networking.k8s.io/v1",
            Kind::PodDisruptionBudget => "policy/v1",
            Kind::HorizontalPodAutoscaler => "autoscaling/v2",
            Kind::CronJob | Kind::Job => "batch/v1",
            _ => "v1",
        }
    }

    /// The URL resource name.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Served(served) => &served.plural,
            Kind::Namespace => "namespaces",
            Kind::ServiceAccount => "serviceaccounts",
            Kind::ConfigMap => "configmaps",
            Kind::Secret => "secrets",
            Kind::PersistentVolumeClaim => "persistentvolumeclaims",
            Kind::Service => "services",
            Kind::Deployment => "deployments",
            Kind::StatefulSet => "statefulsets",
            Kind::DaemonSet => "daemonsets",
            Kind::Job => "jobs",
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
        match self {
            Kind::Served(served) => served.namespaced,
            kind => kind != Kind::Namespace,
        }
    }

    /// Whether this kind runs pods that start waits for, wave by wave,
    /// and stop takes down.
    pub fn is_workload(self) -> bool {
        matches!(
            self,
            Kind::Deployment | Kind::StatefulSet | Kind::DaemonSet | Kind::Job
        )
    }

    /// Whether stop scales it to zero: a replica count of 0, or for a
    /// DaemonSet (which has no count) a node selector no node matches.
    pub fn scales(self) -> bool {
        matches!(self, Kind::Deployment | Kind::StatefulSet | Kind::DaemonSet)
    }

    /// Whether stop suspends it (`spec.suspend`): a Job's pods go, a
    /// CronJob makes no more Jobs; start takes the field back.
    pub fn suspends(self) -> bool {
        matches!(self, Kind::Job | Kind::CronJob)
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
    /// The key of a dynamic object whose kind is in [`Kind`]'s fixed
    /// table; an error naming it when it has no type or name, or its kind
    /// needs API discovery (see [`RenderedSet::resolve`]).
    pub fn of(object: &DynamicObject) -> Result<Self, ClusterError> {
        let (api_version, kind, name) = type_and_name(object)?;
        let kind = Kind::from_type(&api_version, &kind).ok_or_else(|| ClusterError::Object {
            object: format!("{kind}/{name}"),
            why: format!(
                "{api_version} {kind} is resolved through the cluster's API discovery; start resolves it once connected"
            ),
        })?;
        Ok(Self {
            kind,
            namespace: object.metadata.namespace.clone(),
            name,
        })
    }
}

/// `apiVersion`, `kind` and `metadata.name`, or an error naming what is
/// missing.
fn type_and_name(object: &DynamicObject) -> Result<(String, String, String), ClusterError> {
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
    Ok((types.api_version.clone(), types.kind.clone(), name))
}

/// An object whose kind is outside [`Kind`]'s fixed table, waiting for
/// API discovery to say what it is.
#[derive(Clone, Debug)]
pub struct Unresolved {
    /// `apiVersion`.
    pub api_version: String,
    /// `kind`.
    pub kind: String,
    /// The file it was read from, when it came from a directory.
    pub source: Option<String>,
    /// The object, our labels checked.
    pub object: DynamicObject,
}

impl Unresolved {
    /// `Kind/name`.
    pub fn describe(&self) -> String {
        format!(
            "{}/{}",
            self.kind,
            self.object.metadata.name.as_deref().unwrap_or("")
        )
    }
}

/// What `render` produced, checked: every object ours, in one namespace.
#[derive(Clone, Debug)]
pub struct RenderedSet {
    /// The namespace every namespaced object is in.
    pub namespace: String,
    /// The objects by key (so in apply order).
    pub objects: BTreeMap<ObjectKey, DynamicObject>,
    /// Objects of kinds only the cluster can describe, until
    /// [`RenderedSet::resolve`] moves them into `objects`.
    pub unresolved: Vec<Unresolved>,
}

impl RenderedSet {
    /// Checks parsed objects: our labels on every one, all in `namespace`,
    /// no duplicates. Objects without a namespace get it. Objects of kinds
    /// outside the fixed table wait in `unresolved`.
    pub fn new(namespace: &str, objects: Vec<DynamicObject>) -> Result<Self, ClusterError> {
        Self::from_sourced(namespace, objects.into_iter().map(|o| (o, None)).collect())
    }

    fn from_sourced(
        namespace: &str,
        objects: Vec<(DynamicObject, Option<String>)>,
    ) -> Result<Self, ClusterError> {
        let mut set = Self {
            namespace: namespace.to_owned(),
            objects: BTreeMap::new(),
            unresolved: Vec::new(),
        };
        for (object, source) in objects {
            let (api_version, kind, name) = type_and_name(&object)?;
            check_ours(&object, &format!("{kind}/{name}"))?;
            match Kind::from_type(&api_version, &kind) {
                Some(kind) => {
                    let key = ObjectKey {
                        kind,
                        namespace: object.metadata.namespace.clone(),
                        name,
                    };
                    set.insert(key, object)?;
                }
                None => set.unresolved.push(Unresolved {
                    api_version,
                    kind,
                    source,
                    object,
                }),
            }
        }
        if set.objects.is_empty() && set.unresolved.is_empty() {
            return Err(ClusterError::Object {
                object: "manifests".into(),
                why: "hold no objects".into(),
            });
        }
        Ok(set)
    }

    /// Places one object of a known kind: its namespace checked (or
    /// given), its start wave parsed, no duplicate.
    fn insert(
        &mut self,
        mut key: ObjectKey,
        mut object: DynamicObject,
    ) -> Result<(), ClusterError> {
        let namespace = self.namespace.as_str();
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
        } else if key.kind != Kind::Namespace {
            return Err(ClusterError::Object {
                object: key.to_string(),
                why: "is cluster-scoped; start applies namespaced objects and the Namespace only: apply it with the cluster's administrators' tooling".into(),
            });
        }
        if key.kind.is_workload() {
            start_wave(&object).map_err(|why| ClusterError::Object {
                object: key.to_string(),
                why,
            })?;
        }
        if self.objects.insert(key.clone(), object).is_some() {
            return Err(ClusterError::Object {
                object: key.to_string(),
                why: "appears twice in the manifests".into(),
            });
        }
        Ok(())
    }

    /// Moves every unresolved object into `objects` with the kind
    /// `served(apiVersion, kind)` gives (API discovery's answer); a kind
    /// the cluster does not serve is an error naming it and its file.
    pub fn resolve(
        mut self,
        served: impl Fn(&str, &str) -> Option<Kind>,
    ) -> Result<Self, ClusterError> {
        for unresolved in std::mem::take(&mut self.unresolved) {
            let Some(kind) = served(&unresolved.api_version, &unresolved.kind) else {
                let from = unresolved
                    .source
                    .as_deref()
                    .map(|file| format!(" (in {file})"))
                    .unwrap_or_default();
                return Err(ClusterError::Object {
                    object: format!("{}{from}", unresolved.describe()),
                    why: format!(
                        "the cluster serves no kind {} in {}; install the CustomResourceDefinition (or operator) that defines it first, or take the object out of the manifests",
                        unresolved.kind, unresolved.api_version
                    ),
                });
            };
            let key = ObjectKey {
                kind,
                namespace: unresolved.object.metadata.namespace.clone(),
                name: unresolved.object.metadata.name.clone().unwrap_or_default(),
            };
            self.insert(key, unresolved.object)?;
        }
        Ok(self)
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
        let sourced = read_sourced(dir)?;
        let objects: Vec<DynamicObject> = sourced.iter().map(|(o, _)| o.clone()).collect();
        let target = resolve(namespace, &objects, default);
        Self::from_sourced(&target, sourced)
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
        Self::from_sourced(namespace, read_sourced(dir)?)
    }

    /// The kinds present.
    pub fn kinds(&self) -> std::collections::BTreeSet<Kind> {
        self.objects.keys().map(|k| k.kind).collect()
    }
}

/// Our labels are on the object and the ApplySet's is not (start sets it).
fn check_ours(object: &DynamicObject, described: &str) -> Result<(), ClusterError> {
    let labels = object.metadata.labels.clone().unwrap_or_default();
    for (label, value) in labels::OURS {
        if labels.get(*label).map(String::as_str) != Some(*value) {
            return Err(ClusterError::Object {
                object: described.to_owned(),
                why: format!(
                    "lacks label {label}={value}: not rendered by broker-images render, refusing to apply it"
                ),
            });
        }
    }
    if labels.contains_key(labels::APPLYSET_PART_OF) {
        return Err(ClusterError::Object {
            object: described.to_owned(),
            why: format!(
                "already carries {}; the ApplySet label is set by start, not by the manifests",
                labels::APPLYSET_PART_OF
            ),
        });
    }
    Ok(())
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
    Ok(read_sourced(dir)?.into_iter().map(|(o, _)| o).collect())
}

/// [`read_objects`], each object with the path of its file.
fn read_sourced(dir: &Path) -> Result<Vec<(DynamicObject, Option<String>)>, ClusterError> {
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
            objects.push((object, Some(path.display().to_string())));
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
