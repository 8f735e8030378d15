//! What `start` and `stop` will do, as data: computed from the rendered
//! set and what the cluster holds, before any write. The executor in
//! [`crate::cluster`] only walks these steps.

use std::collections::{BTreeMap, BTreeSet};

use kube::api::DynamicObject;
use serde_json::Value;

use crate::applyset::{ApplySet, ParentRecord};
use crate::compare;
use crate::labels;
use crate::objects::{Kind, ObjectKey, RenderedSet};

/// One step of a start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartStep {
    /// Server-side apply the ApplySet parent naming these kinds and
    /// workloads: before the members with old and new kinds, so an
    /// interrupted start still leaves every member findable; after
    /// pruning, the rendered kinds plus those of members still kept.
    ApplyParent(ParentRecord),
    /// Server-side apply (create or update).
    Apply(ObjectKey),
    /// Already as rendered: no request.
    Unchanged(ObjectKey),
    /// Wait until these workloads have rolled out.
    Wait(Vec<ObjectKey>),
    /// Delete a member that left the rendered set.
    Prune(ObjectKey),
    /// A member that left the set but is kept: a PVC without
    /// `--delete-data`, or the namespace.
    Keep(ObjectKey, &'static str),
    /// After the rollout, delete ConfigMaps/Secrets of ours that left the
    /// set and that no current or previous ReplicaSet or Pod refers to.
    CollectOldConfig(Vec<ObjectKey>),
}

impl std::fmt::Display for StartStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |keys: &[ObjectKey]| {
            keys.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            StartStep::ApplyParent(record) => write!(
                f,
                "apply   ApplySet parent ({})",
                ApplySet::group_kinds(&record.kinds)
            ),
            StartStep::Apply(key) => write!(f, "apply   {key}"),
            StartStep::Unchanged(key) => write!(f, "same    {key}"),
            StartStep::Wait(keys) => write!(f, "wait    {}", list(keys)),
            StartStep::Prune(key) => write!(f, "prune   {key}"),
            StartStep::Keep(key, why) => write!(f, "keep    {key} ({why})"),
            StartStep::CollectOldConfig(keys) => {
                write!(f, "collect old config among {}", list(keys))
            }
        }
    }
}

/// Options that change a start's plan.
#[derive(Clone, Copy, Debug, Default)]
pub struct StartOptions {
    /// Prune PVCs that left the set (their data goes with them).
    pub delete_data: bool,
    /// Prune nothing (`--no-prune`): every member that left the set is
    /// kept, and its kind stays on the parent.
    pub no_prune: bool,
}

/// The ordered steps of a start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartPlan {
    /// In execution order.
    pub steps: Vec<StartStep>,
}

impl StartPlan {
    /// Plans a start of `desired` (objects already labelled and stamped by
    /// [`prepare`]) over `live` (the set's members as listed, plus the
    /// namespace), where the parent currently records `parent` (`None`
    /// when there is no parent yet).
    pub fn new(
        desired: &RenderedSet,
        live: &BTreeMap<ObjectKey, DynamicObject>,
        parent: Option<&ParentRecord>,
        options: StartOptions,
    ) -> Self {
        let mut steps = Vec::new();
        let step = |key: &ObjectKey| match live.get(key) {
            Some(l) if compare::unchanged(&desired.objects[key], l) => {
                StartStep::Unchanged(key.clone())
            }
            _ => StartStep::Apply(key.clone()),
        };
        let new_kinds = desired.kinds();
        let old_kinds = parent.map(|p| p.kinds.clone()).unwrap_or_default();
        let union: BTreeSet<Kind> = new_kinds.union(&old_kinds).copied().collect();
        let workload_names: Vec<String> = desired
            .objects
            .keys()
            .filter(|k| k.kind.is_workload())
            .map(|k| k.name.clone())
            .collect();
        let first_parent = ParentRecord {
            kinds: union.clone(),
            workloads: workload_names.clone(),
        };

        let (workloads, others): (Vec<&ObjectKey>, Vec<&ObjectKey>) =
            desired.objects.keys().partition(|k| k.kind.is_workload());
        let (namespace, config): (Vec<&ObjectKey>, Vec<&ObjectKey>) =
            others.into_iter().partition(|k| k.kind == Kind::Namespace);

        steps.extend(namespace.into_iter().map(step));
        if parent != Some(&first_parent) {
            steps.push(StartStep::ApplyParent(first_parent.clone()));
        }
        steps.extend(config.into_iter().map(step));
        // Wave by wave, as the catalogue annotates them (db and mq before
        // their clients), each waited for before the next is applied.
        for group in waves(workloads, |k| &desired.objects[k]).into_values() {
            steps.extend(group.iter().map(|k| step(k)));
            steps.push(StartStep::Wait(group.into_iter().cloned().collect()));
        }

        let mut old_config = Vec::new();
        // Members that stay although they left the set keep their kind on
        // the parent, or no later start, stop or collection would find
        // them. Old config may stay too (a previous ReplicaSet uses it).
        let mut final_kinds = new_kinds.clone();
        // Reverse apply order: workloads go before the Services and claims
        // they use.
        for (key, object) in live.iter().rev() {
            if desired.objects.contains_key(key) || !is_ours(object) {
                continue;
            }
            match key.kind {
                Kind::Namespace => steps.push(StartStep::Keep(key.clone(), "never pruned")),
                _ if options.no_prune => {
                    final_kinds.insert(key.kind);
                    steps.push(StartStep::Keep(key.clone(), "--no-prune"));
                }
                Kind::PersistentVolumeClaim if !options.delete_data => {
                    final_kinds.insert(key.kind);
                    steps.push(StartStep::Keep(
                        key.clone(),
                        "holds data; --delete-data prunes it",
                    ));
                }
                Kind::ConfigMap | Kind::Secret => {
                    final_kinds.insert(key.kind);
                    old_config.insert(0, key.clone());
                }
                _ => steps.push(StartStep::Prune(key.clone())),
            }
        }
        if !old_config.is_empty() {
            steps.push(StartStep::CollectOldConfig(old_config));
        }
        if final_kinds != union {
            steps.push(StartStep::ApplyParent(ParentRecord {
                kinds: final_kinds,
                workloads: workload_names,
            }));
        }
        Self { steps }
    }

    /// Whether the plan writes anything.
    pub fn writes(&self) -> bool {
        self.steps.iter().any(|s| {
            matches!(
                s,
                StartStep::Apply(_) | StartStep::ApplyParent(_) | StartStep::Prune(_)
            )
        })
    }
}

/// Labels every object as a member of `set` and stamps its applied hash,
/// so what is compared is exactly what would be applied.
pub fn prepare(rendered: &RenderedSet, set: &ApplySet) -> RenderedSet {
    let mut prepared = rendered.clone();
    for object in prepared.objects.values_mut() {
        set.label_member(object);
        compare::stamp(object);
    }
    prepared
}

/// Workloads grouped by start wave, lowest first; names in key order
/// within a wave. A wave that does not parse counts as 0 (render and
/// [`RenderedSet::new`] refuse it before a plan is made).
fn waves<'a>(
    workloads: impl IntoIterator<Item = &'a ObjectKey>,
    object: impl Fn(&ObjectKey) -> &'a DynamicObject,
) -> BTreeMap<i64, Vec<&'a ObjectKey>> {
    let mut by_wave: BTreeMap<i64, Vec<&ObjectKey>> = BTreeMap::new();
    for key in workloads {
        let wave = crate::objects::start_wave(object(key)).unwrap_or(0);
        by_wave.entry(wave).or_default().push(key);
    }
    by_wave
}

/// Whether a live object carries our labels (checked again before any
/// delete, whatever the list selector said).
pub fn is_ours(object: &DynamicObject) -> bool {
    let object_labels = object.metadata.labels.clone().unwrap_or_default();
    labels::OURS
        .iter()
        .all(|(k, v)| object_labels.get(*k).map(String::as_str) == Some(*v))
        && object_labels.contains_key(labels::APPLYSET_PART_OF)
}

/// How far `stop` goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StopOptions {
    /// Delete workloads and Services instead of scaling to zero.
    pub remove: bool,
    /// Also delete PersistentVolumeClaims (implies `remove`).
    pub delete_data: bool,
}

/// One step of a stop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopStep {
    /// Scale a workload to zero replicas.
    Scale(ObjectKey),
    /// Suspend a CronJob (no new Jobs) or a Job (its pods go): start
    /// takes `spec.suspend` back.
    Suspend(ObjectKey),
    /// Delete an object.
    Delete(ObjectKey),
    /// Wait until the pods of these workloads are gone.
    WaitPodsGone(Vec<ObjectKey>),
    /// With `--delete-data` on a single-node install: the node directories
    /// (hostPath volumes) holding data, which broker-images never deletes
    /// — they are on the node, outside the API — listed so the operator
    /// knows what is left.
    KeepNodeDirectories(Vec<String>),
}

impl std::fmt::Display for StopStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopStep::Scale(key) => write!(f, "scale   {key} to 0"),
            StopStep::Suspend(key) => write!(f, "suspend {key}"),
            StopStep::Delete(key) => write!(f, "delete  {key}"),
            StopStep::WaitPodsGone(keys) => write!(
                f,
                "wait    until the pods of {} are gone",
                keys.iter()
                    .map(|k| k.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            StopStep::KeepNodeDirectories(paths) => write!(
                f,
                "keep    node directories {} (hostPath data is not deleted through the API; remove them on the node to delete it)",
                paths.join(", ")
            ),
        }
    }
}

/// Plans a stop over the set's live members. Secrets, ConfigMaps and the
/// namespace are never in it; PVCs only with `delete_data`; nothing
/// without our labels.
pub fn stop_plan(live: &BTreeMap<ObjectKey, DynamicObject>, options: StopOptions) -> Vec<StopStep> {
    let remove = options.remove || options.delete_data;
    let mut steps = Vec::new();
    let ours: Vec<&ObjectKey> = live
        .iter()
        .filter(|(_, o)| is_ours(o))
        .map(|(k, _)| k)
        .collect();
    // CronJobs first: no new Job starts while the set goes down.
    for key in ours.iter().filter(|k| k.kind == Kind::CronJob) {
        steps.push(if remove {
            StopStep::Delete((*key).clone())
        } else {
            StopStep::Suspend((*key).clone())
        });
    }
    // Start's waves in reverse: the clients go before mq, mq before db,
    // each wave's pods gone before the next is scaled.
    let workloads = ours.iter().copied().filter(|k| k.kind.is_workload());
    for group in waves(workloads, |k| &live[k]).into_values().rev() {
        for key in &group {
            let key = (*key).clone();
            steps.push(if remove {
                StopStep::Delete(key)
            } else if key.kind.scales() {
                StopStep::Scale(key)
            } else if key.kind.suspends() {
                StopStep::Suspend(key)
            } else {
                StopStep::Delete(key)
            });
        }
        steps.push(StopStep::WaitPodsGone(group.into_iter().cloned().collect()));
    }
    // Services after the workloads that serve through them; PVCs last:
    // their protection finalizer holds them while pods use them.
    for key in ours.iter().rev() {
        match key.kind {
            Kind::Service if remove => steps.push(StopStep::Delete((*key).clone())),
            Kind::PersistentVolumeClaim if options.delete_data => {
                steps.push(StopStep::Delete((*key).clone()));
            }
            _ => {}
        }
    }
    steps.sort_by_key(|s| match s {
        StopStep::Delete(k) if k.kind == Kind::PersistentVolumeClaim => 1,
        _ => 0,
    });
    if options.delete_data {
        let paths: BTreeSet<String> = live
            .iter()
            .filter(|(k, o)| k.kind.is_workload() && is_ours(o))
            .flat_map(|(_, o)| {
                o.data
                    .pointer("/spec/template/spec/volumes")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            })
            .filter_map(|v| {
                v.pointer("/hostPath/path")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .collect();
        if !paths.is_empty() {
            steps.push(StopStep::KeepNodeDirectories(paths.into_iter().collect()));
        }
    }
    steps
}

/// The ConfigMaps and Secrets a pod spec refers to: volumes (also
/// projected), `envFrom`, `env[].valueFrom`, image pull secrets.
pub fn config_references(pod_spec: &Value) -> BTreeSet<(Kind, String)> {
    let mut found = BTreeSet::new();
    collect_refs(pod_spec, &mut found);
    if let Some(secrets) = pod_spec.get("imagePullSecrets").and_then(Value::as_array) {
        for s in secrets {
            if let Some(name) = s.get("name").and_then(Value::as_str) {
                found.insert((Kind::Secret, name.to_owned()));
            }
        }
    }
    found
}

fn collect_refs(value: &Value, found: &mut BTreeSet<(Kind, String)>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                let name =
                    |field: &str| inner.get(field).and_then(Value::as_str).map(str::to_owned);
                match key.as_str() {
                    "configMap" | "configMapRef" | "configMapKeyRef" => {
                        if let Some(n) = name("name") {
                            found.insert((Kind::ConfigMap, n));
                        }
                    }
                    "secret" => {
                        if let Some(n) = name("secretName").or_else(|| name("name")) {
                            found.insert((Kind::Secret, n));
                        }
                    }
                    "secretRef" | "secretKeyRef" => {
                        if let Some(n) = name("name") {
                            found.insert((Kind::Secret, n));
                        }
                    }
                    _ => {}
                }
                collect_refs(inner, found);
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_refs(i, found)),
        _ => {}
    }
}

/// Which of `candidates` (ConfigMaps/Secrets of ours that left the set)
/// can go: those no ReplicaSet still needs — the current and the previous
/// revision of each Deployment, for `kubectl rollout undo` — and no Pod
/// uses. `replica_sets` and `pods` are the namespace's, as listed.
pub fn stale_config(
    candidates: &[ObjectKey],
    replica_sets: &[Value],
    pods: &[Value],
) -> Vec<ObjectKey> {
    let mut needed = BTreeSet::new();
    // The two newest revisions per owning Deployment.
    let mut by_owner: BTreeMap<String, Vec<(u64, &Value)>> = BTreeMap::new();
    for rs in replica_sets {
        let owner = rs
            .pointer("/metadata/ownerReferences/0/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let revision = rs
            .pointer("/metadata/annotations/deployment.kubernetes.io~1revision")
            .and_then(Value::as_str)
            .and_then(|r| r.parse().ok())
            .unwrap_or(0);
        by_owner.entry(owner).or_default().push((revision, rs));
    }
    for revisions in by_owner.values_mut() {
        revisions.sort_by_key(|r| std::cmp::Reverse(r.0));
        for (_, rs) in revisions.iter().take(2) {
            if let Some(spec) = rs.pointer("/spec/template/spec") {
                needed.extend(config_references(spec));
            }
        }
        // Any revision still running pods is needed too.
        for (_, rs) in revisions.iter().skip(2) {
            let running = rs
                .pointer("/status/replicas")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            if running > 0
                && let Some(spec) = rs.pointer("/spec/template/spec")
            {
                needed.extend(config_references(spec));
            }
        }
    }
    for pod in pods {
        if let Some(spec) = pod.get("spec") {
            needed.extend(config_references(spec));
        }
    }
    candidates
        .iter()
        .filter(|k| !needed.contains(&(k.kind, k.name.clone())))
        .cloned()
        .collect()
}
