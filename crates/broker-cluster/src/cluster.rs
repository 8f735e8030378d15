//! The I/O half: a kube client for one namespace, and the start, stop,
//! restart and status runs that walk the plans of [`crate::plan`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, LogParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::{Value, json};

use crate::applyset::ApplySet;
use crate::compare::{self, FIELD_MANAGER};
use crate::error::ClusterError;
use crate::labels;
use crate::objects::{Kind, ObjectKey, RenderedSet};
use crate::plan::{self, StartOptions, StartPlan, StartStep, StopOptions, StopStep};
use crate::status::StatusReport;
use crate::wait::{self, Failure, Readiness};

/// The field manager `stop` scales with. Separate from `start`'s so the
/// rendered replica count stays what start owns; start releases it.
pub const STOP_MANAGER: &str = "broker-images-stop";
/// The field manager `restart` sets the restart annotation with.
pub const RESTART_MANAGER: &str = "broker-images-restart";

/// How long a failure that may clear up by itself (scheduling, volume
/// provisioning) must last before a wait gives up on it.
const GRACE: Duration = Duration::from_secs(30);

/// Where the cluster is and which namespace is ours.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// A kubeconfig file; without it `KUBECONFIG` or `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// A context of the kubeconfig; without it the current context.
    pub context: Option<String>,
    /// The namespace of the broker (and of the ApplySet parent).
    pub namespace: String,
    /// How long to wait for a TCP/TLS connection to the API server.
    pub connect_timeout: Duration,
}

impl ConnectOptions {
    /// Options for `namespace` with the kubeconfig found as kubectl finds it.
    pub fn new(namespace: &str) -> Self {
        Self {
            kubeconfig: None,
            context: None,
            namespace: namespace.to_owned(),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Progress a run reports; only the binary prints.
pub trait Reporter: Send + Sync {
    /// One line of progress.
    fn line(&self, text: &str);
}

/// A reporter that drops everything (tests, `--json`).
#[derive(Debug, Default)]
pub struct Quiet;

impl Reporter for Quiet {
    fn line(&self, _text: &str) {}
}

/// What a start did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct StartOutcome {
    /// Objects applied (created or changed).
    pub applied: Vec<String>,
    /// Objects already as rendered.
    pub unchanged: Vec<String>,
    /// Members deleted because they left the set.
    pub pruned: Vec<String>,
    /// Old generated ConfigMaps/Secrets deleted after the rollout.
    pub collected: Vec<String>,
    /// Members kept although they left the set.
    pub kept: Vec<String>,
    /// Whether anything was written.
    pub wrote: bool,
    /// With `--dry-run`: the per-object diffs, Secret values masked.
    pub diffs: BTreeMap<String, Vec<String>>,
}

/// Options of a start run.
#[derive(Clone, Copy, Debug)]
pub struct StartRun {
    /// Server-side dry run: no writes, diffs returned.
    pub dry_run: bool,
    /// Take fields owned by other managers.
    pub force_conflicts: bool,
    /// Prune PVCs that left the set.
    pub delete_data: bool,
    /// Give up waiting after this long.
    pub timeout: Duration,
}

/// A start planned against the cluster, before any write.
#[derive(Clone, Debug)]
pub struct PlannedStart {
    /// The rendered objects as they will be applied (ApplySet label and
    /// applied-hash annotation added).
    pub prepared: RenderedSet,
    /// The set's members as listed, and the namespace.
    pub live: BTreeMap<ObjectKey, DynamicObject>,
    /// The steps.
    pub plan: StartPlan,
    /// Whether the namespace exists (or cannot be read, then assumed).
    pub namespace_exists: bool,
}

/// A client bound to the broker's namespace and ApplySet.
#[derive(Clone)]
pub struct Cluster {
    client: Client,
    server: String,
    namespace: String,
    set: ApplySet,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("server", &self.server)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// Reads the kubeconfig as kubectl would (`--kubeconfig`, else
/// `KUBECONFIG`, else `~/.kube/config`) and checks the context exists.
pub fn load_kubeconfig(options: &ConnectOptions) -> Result<Kubeconfig, ClusterError> {
    let kubeconfig = match &options.kubeconfig {
        Some(path) => Kubeconfig::read_from(path).map_err(|e| {
            ClusterError::Kubeconfig(format!("cannot read {}: {e}", path.display()))
        })?,
        None => Kubeconfig::read().map_err(|e| {
            ClusterError::Kubeconfig(format!(
                "cannot read KUBECONFIG or ~/.kube/config ({e}); pass --kubeconfig"
            ))
        })?,
    };
    let names: Vec<&str> = kubeconfig
        .contexts
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    let wanted = options
        .context
        .clone()
        .or_else(|| kubeconfig.current_context.clone());
    match wanted {
        None => Err(ClusterError::Kubeconfig(format!(
            "no current context; pass --context (have: {})",
            names.join(", ")
        ))),
        Some(name) if !names.contains(&name.as_str()) => Err(ClusterError::Kubeconfig(format!(
            "context {name} is not in the kubeconfig (have: {}); pass --context with one of them",
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        ))),
        Some(_) => Ok(kubeconfig),
    }
}

/// What a failed request was about, for its error message.
#[derive(Clone, Debug)]
pub struct Target {
    /// `plural[.group]`, as RBAC names it (`deployments.apps`).
    pub resource: String,
    /// `Kind/name`, or the plural for a list.
    pub object: String,
    /// `in namespace NAME` or `cluster-wide`.
    pub scope: String,
}

impl Target {
    /// A request on `kind` (an object when `name` is given, else a list).
    pub fn of(kind: Kind, name: Option<&str>, namespace: &str) -> Self {
        let resource = match kind.group() {
            "" => kind.plural().to_owned(),
            g => format!("{}.{g}", kind.plural()),
        };
        Self::new(
            &resource,
            &match name {
                Some(n) => format!("{}/{n}", kind.name()),
                None => kind.plural().to_owned(),
            },
            kind.namespaced().then_some(namespace),
        )
    }

    /// A request on a resource that is not one of the applied kinds
    /// (pods, replicasets).
    pub fn new(resource: &str, object: &str, namespace: Option<&str>) -> Self {
        Self {
            resource: resource.to_owned(),
            object: object.to_owned(),
            scope: match namespace {
                Some(ns) => format!("in namespace {ns}"),
                None => "cluster-wide".to_owned(),
            },
        }
    }
}

/// Maps a kube error of `verb` on `target` to one of ours.
pub fn classify_error(error: kube::Error, verb: &str, target: Target) -> ClusterError {
    let Target {
        resource,
        object,
        scope,
    } = target;
    match error {
        kube::Error::Api(status) if status.code == 403 => ClusterError::Forbidden {
            verb: verb.to_owned(),
            resource,
            scope,
            message: status.message.clone(),
        },
        kube::Error::Api(status) if status.code == 409 => {
            let causes: Vec<_> = status
                .details
                .as_ref()
                .map(|d| d.causes.clone())
                .unwrap_or_default()
                .into_iter()
                .filter(|c| c.reason == "FieldManagerConflict")
                .collect();
            if causes.is_empty() {
                return ClusterError::Api {
                    verb: verb.to_owned(),
                    object,
                    code: status.code,
                    reason: status.reason.clone(),
                    message: status.message.clone(),
                };
            }
            // `conflict with "kubectl-edit" using apps/v1`: the quoted part.
            let managers: BTreeSet<String> = causes
                .iter()
                .map(|c| {
                    c.message
                        .split('"')
                        .nth(1)
                        .unwrap_or(c.message.as_str())
                        .to_owned()
                })
                .collect();
            let fields: Vec<String> = causes.iter().map(|c| c.field.clone()).collect();
            ClusterError::Conflict {
                object,
                manager: managers.into_iter().collect::<Vec<_>>().join(", "),
                field: fields.join(", "),
            }
        }
        kube::Error::Api(status) => ClusterError::Api {
            verb: verb.to_owned(),
            object,
            code: status.code,
            reason: status.reason.clone(),
            message: status.message.clone(),
        },
        other => ClusterError::Transport {
            verb: verb.to_owned(),
            object,
            why: chain(&other),
        },
    }
}

/// An error and its causes on one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

fn typed(kind: Kind, mut object: DynamicObject) -> DynamicObject {
    // List items come without apiVersion/kind; compare needs them.
    object.types = Some(kube::api::TypeMeta {
        api_version: kind.api_version().to_owned(),
        kind: kind.name().to_owned(),
    });
    object
}

impl Cluster {
    /// Connects as the kubeconfig says. Makes no request yet.
    pub async fn connect(options: &ConnectOptions) -> Result<Self, ClusterError> {
        let kubeconfig = load_kubeconfig(options)?;
        let kube_options = KubeConfigOptions {
            context: options.context.clone(),
            ..KubeConfigOptions::default()
        };
        let mut config = Config::from_custom_kubeconfig(kubeconfig, &kube_options)
            .await
            .map_err(|e| ClusterError::Kubeconfig(chain(&e)))?;
        config.connect_timeout = Some(options.connect_timeout);
        config.read_timeout = Some(Duration::from_secs(60));
        config.default_namespace = options.namespace.clone();
        let server = config.cluster_url.to_string();
        let client = Client::try_from(config).map_err(|e| ClusterError::Kubeconfig(chain(&e)))?;
        Ok(Self::from_client(client, &server, &options.namespace))
    }

    /// Wraps an existing client (tests point one at a scripted server).
    pub fn from_client(client: Client, server: &str, namespace: &str) -> Self {
        Self {
            client,
            server: server.to_owned(),
            namespace: namespace.to_owned(),
            set: ApplySet::new(namespace),
        }
    }

    /// The ApplySet this cluster handle works on.
    pub fn applyset(&self) -> &ApplySet {
        &self.set
    }

    fn api(&self, kind: Kind) -> Api<DynamicObject> {
        let resource = kind.api_resource();
        if kind.namespaced() {
            Api::namespaced_with(self.client.clone(), &self.namespace, &resource)
        } else {
            Api::all_with(self.client.clone(), &resource)
        }
    }

    fn error(&self, e: kube::Error, verb: &str, kind: Kind, name: Option<&str>) -> ClusterError {
        classify_error(e, verb, Target::of(kind, name, &self.namespace))
    }

    /// The namespace, `None` when absent; an error when it is terminating
    /// or the server cannot be reached (the first request of every run).
    /// Credentials limited to the namespace may not read Namespace
    /// objects: then it is taken as present, and left alone.
    async fn namespace_state(&self) -> Result<NamespaceState, ClusterError> {
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
                why: chain(&other),
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

    /// The parent's member kinds annotation, `None` without a parent; an
    /// error when the parent is another tool's or its id is not ours.
    async fn parent_kinds(&self) -> Result<Option<String>, ClusterError> {
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
        Ok(Some(
            annotations
                .get(labels::APPLYSET_GROUP_KINDS)
                .cloned()
                .unwrap_or_default(),
        ))
    }

    /// The set's members of `kinds`: one list call per kind, by label.
    async fn members(
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
    async fn apply(
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

    async fn delete(&self, key: &ObjectKey) -> Result<(), ClusterError> {
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

    /// Plans a start of `rendered` against what the cluster holds: a
    /// namespace get, a parent get and one list per member kind.
    pub async fn plan_start(
        &self,
        rendered: &RenderedSet,
        options: StartOptions,
    ) -> Result<PlannedStart, ClusterError> {
        if rendered.namespace != self.namespace {
            return Err(ClusterError::Object {
                object: format!("Namespace/{}", rendered.namespace),
                why: format!(
                    "manifests are for namespace {}, not {}",
                    rendered.namespace, self.namespace
                ),
            });
        }
        let mut prepared = plan::prepare(rendered, &self.set);
        let state = self.namespace_state().await?;
        let mut live = BTreeMap::new();
        let mut parent = None;
        let namespace_key = ObjectKey {
            kind: Kind::Namespace,
            namespace: None,
            name: self.namespace.clone(),
        };
        if matches!(state, NamespaceState::Missing)
            && !prepared.objects.contains_key(&namespace_key)
        {
            return Err(ClusterError::Object {
                object: format!("Namespace/{}", self.namespace),
                why: "does not exist and the manifests do not create it; render with the namespace or create it first".into(),
            });
        }
        if matches!(state, NamespaceState::Unreadable) {
            // Not ours to manage with these credentials.
            prepared.objects.remove(&namespace_key);
        }
        if let NamespaceState::Present(ns) = &state {
            let object: DynamicObject = serde_json::to_value(ns)
                .and_then(serde_json::from_value)
                .map_err(|e| ClusterError::Object {
                object: format!("Namespace/{}", self.namespace),
                why: e.to_string(),
            })?;
            live.insert(namespace_key, typed(Kind::Namespace, object));
        }
        if !matches!(state, NamespaceState::Missing) {
            parent = self.parent_kinds().await?;
            let mut kinds = prepared.kinds();
            if let Some(p) = &parent {
                kinds.extend(ApplySet::parse_group_kinds(p));
            }
            live.extend(self.members(&kinds).await?);
        }
        let plan = StartPlan::new(&prepared, &live, parent.as_deref(), options);
        Ok(PlannedStart {
            prepared,
            live,
            plan,
            namespace_exists: !matches!(state, NamespaceState::Missing),
        })
    }

    /// `start`: applies `rendered` in dependency order, waits, prunes,
    /// collects old config. Nothing is written when nothing changed.
    pub async fn start(
        &self,
        rendered: &RenderedSet,
        run: StartRun,
        reporter: &dyn Reporter,
    ) -> Result<StartOutcome, ClusterError> {
        let options = StartOptions {
            delete_data: run.delete_data,
        };
        let PlannedStart {
            prepared,
            live,
            plan,
            namespace_exists,
        } = self.plan_start(rendered, options).await?;
        let mut outcome = StartOutcome::default();
        if run.dry_run {
            return self
                .dry_run(&prepared, &live, &plan, namespace_exists, run, reporter)
                .await;
        }
        let deadline = Instant::now() + run.timeout;
        let any_change = plan.writes();
        for step in &plan.steps {
            match step {
                StartStep::ApplyParent(kinds) => {
                    let parent = self.set.parent(&ApplySet::parse_group_kinds(kinds));
                    let key = ObjectKey {
                        kind: Kind::Secret,
                        namespace: Some(self.namespace.clone()),
                        name: self.set.name.clone(),
                    };
                    self.apply(&key, &parent, FIELD_MANAGER, run.force_conflicts, false)
                        .await?;
                    outcome.wrote = true;
                }
                StartStep::Apply(key) => {
                    if let Some(current) = live.get(key) {
                        self.release_stop_owner(key, current).await?;
                    }
                    reporter.line(&format!("apply {key}"));
                    self.apply(
                        key,
                        &prepared.objects[key],
                        FIELD_MANAGER,
                        run.force_conflicts,
                        false,
                    )
                    .await?;
                    outcome.applied.push(key.to_string());
                    outcome.wrote = true;
                }
                StartStep::Unchanged(key) => outcome.unchanged.push(key.to_string()),
                StartStep::Wait(keys) => {
                    // Nothing applied and nothing to wait for: no request.
                    if !any_change && keys.iter().all(|k| live.get(k).is_some_and(rolled_out)) {
                        continue;
                    }
                    self.wait_ready(keys, deadline, reporter).await?;
                }
                StartStep::Prune(key) => {
                    if live.get(key).is_some_and(plan::is_ours) {
                        reporter.line(&format!("prune {key} (left the rendered set)"));
                        self.delete(key).await?;
                        outcome.pruned.push(key.to_string());
                        outcome.wrote = true;
                    }
                }
                StartStep::Keep(key, why) => {
                    reporter.line(&format!("keep {key}: {why}"));
                    outcome.kept.push(key.to_string());
                }
                StartStep::CollectOldConfig(candidates) => {
                    let candidates: Vec<ObjectKey> = candidates
                        .iter()
                        .filter(|k| live.get(*k).is_some_and(plan::is_ours))
                        .cloned()
                        .collect();
                    for key in self.stale(&candidates).await? {
                        reporter.line(&format!("delete old {key} (no ReplicaSet or Pod uses it)"));
                        self.delete(&key).await?;
                        outcome.collected.push(key.to_string());
                        outcome.wrote = true;
                    }
                }
            }
        }
        Ok(outcome)
    }

    async fn dry_run(
        &self,
        prepared: &RenderedSet,
        live: &BTreeMap<ObjectKey, DynamicObject>,
        plan: &StartPlan,
        namespace_exists: bool,
        run: StartRun,
        reporter: &dyn Reporter,
    ) -> Result<StartOutcome, ClusterError> {
        let mut outcome = StartOutcome::default();
        for step in &plan.steps {
            match step {
                StartStep::Apply(key) => {
                    let desired = &prepared.objects[key];
                    // Into a namespace that does not exist yet the server
                    // cannot dry-run: show the object as it would be sent.
                    let after = if key.kind.namespaced() && !namespace_exists {
                        serde_json::to_value(desired).unwrap_or_default()
                    } else {
                        let result = self
                            .apply(key, desired, FIELD_MANAGER, run.force_conflicts, true)
                            .await?;
                        serde_json::to_value(result).unwrap_or_default()
                    };
                    let before = live.get(key).and_then(|l| serde_json::to_value(l).ok());
                    let lines: Vec<String> = compare::diff(before.as_ref(), &after)
                        .iter()
                        .map(ToString::to_string)
                        .collect();
                    reporter.line(&format!(
                        "{} {key}",
                        if before.is_some() {
                            "would change"
                        } else {
                            "would create"
                        }
                    ));
                    for line in &lines {
                        reporter.line(&format!("    {line}"));
                    }
                    outcome.applied.push(key.to_string());
                    outcome.diffs.insert(key.to_string(), lines);
                }
                StartStep::Unchanged(key) => outcome.unchanged.push(key.to_string()),
                StartStep::Prune(key) => {
                    reporter.line(&format!("would prune {key}"));
                    outcome.pruned.push(key.to_string());
                }
                StartStep::Keep(key, why) => outcome.kept.push(format!("{key} ({why})")),
                StartStep::CollectOldConfig(keys) => {
                    for key in keys {
                        reporter.line(&format!(
                            "would delete {key} after the rollout unless a ReplicaSet still uses it"
                        ));
                    }
                }
                StartStep::ApplyParent(_) | StartStep::Wait(_) => {}
            }
        }
        Ok(outcome)
    }

    /// A workload `stop` scaled to zero has `spec.replicas` owned by
    /// [`STOP_MANAGER`]; an empty apply by that manager gives it up, so
    /// start's apply sets the rendered count without a conflict.
    async fn release_stop_owner(
        &self,
        key: &ObjectKey,
        live: &DynamicObject,
    ) -> Result<(), ClusterError> {
        let stopped = live
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .any(|m| m.manager.as_deref() == Some(STOP_MANAGER));
        if !stopped {
            return Ok(());
        }
        let empty = minimal(key, &self.namespace, json!({}));
        self.apply(key, &empty, STOP_MANAGER, true, false).await?;
        Ok(())
    }

    /// Old config no current/previous ReplicaSet or Pod refers to.
    async fn stale(&self, candidates: &[ObjectKey]) -> Result<Vec<ObjectKey>, ClusterError> {
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let rs_resource = kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("apps", "v1", "ReplicaSet"),
            "replicasets",
        );
        let rs_api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &self.namespace, &rs_resource);
        let replica_sets: Vec<Value> = rs_api
            .list(&ListParams::default())
            .await
            .map_err(|e| {
                let target = Target::new("replicasets.apps", "replicasets", Some(&self.namespace));
                classify_error(e, "list", target)
            })?
            .items
            .into_iter()
            .filter_map(|o| serde_json::to_value(o).ok())
            .collect();
        let pods: Vec<Value> = self
            .pods()
            .await?
            .into_iter()
            .filter_map(|p| serde_json::to_value(p).ok())
            .collect();
        Ok(plan::stale_config(candidates, &replica_sets, &pods))
    }

    async fn pods(&self) -> Result<Vec<Pod>, ClusterError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        Ok(api
            .list(&ListParams::default())
            .await
            .map_err(|e| {
                classify_error(
                    e,
                    "list",
                    Target::new("pods", "pods", Some(&self.namespace)),
                )
            })?
            .items)
    }

    async fn deployments(&self) -> Result<Vec<Deployment>, ClusterError> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &self.namespace);
        Ok(api
            .list(&ListParams::default().labels(&self.set.member_selector()))
            .await
            .map_err(|e| self.error(e, "list", Kind::Deployment, None))?
            .items)
    }

    async fn claims(&self) -> Result<Vec<PersistentVolumeClaim>, ClusterError> {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &self.namespace);
        Ok(api
            .list(&ListParams::default())
            .await
            .map_err(|e| self.error(e, "list", Kind::PersistentVolumeClaim, None))?
            .items)
    }

    /// Polls until every Deployment in `keys` has rolled out; fails fast
    /// on a failure that waiting cannot fix. Other kinds in `keys` are not
    /// waited for: render makes Deployments only (a StatefulSet would need
    /// its own rollout test here).
    pub async fn wait_ready(
        &self,
        keys: &[ObjectKey],
        deadline: Instant,
        reporter: &dyn Reporter,
    ) -> Result<(), ClusterError> {
        let mut first_seen: BTreeMap<String, Instant> = BTreeMap::new();
        let mut last_line = String::new();
        loop {
            let deployments = self.deployments().await?;
            let pods = self.pods().await?;
            let claims = self.claims().await?;
            let mut waiting = Vec::new();
            for key in keys.iter().filter(|k| k.kind == Kind::Deployment) {
                let Some(deployment) = deployments
                    .iter()
                    .find(|d| d.metadata.name.as_deref() == Some(key.name.as_str()))
                else {
                    waiting.push(format!("{} (not created yet)", key.name));
                    continue;
                };
                let own: Vec<Pod> = pods
                    .iter()
                    .filter(|p| wait::selects(deployment, p))
                    .cloned()
                    .collect();
                match wait::classify(deployment, &own, &claims) {
                    Readiness::Ready => {}
                    Readiness::Progressing {
                        ready,
                        desired,
                        updated,
                    } => {
                        waiting.push(format!(
                            "{} {ready}/{desired} ready, {updated} updated",
                            key.name
                        ));
                    }
                    Readiness::Failed(failure) => {
                        let seen = *first_seen
                            .entry(failure.to_string())
                            .or_insert_with(Instant::now);
                        if failure.may_pass() && seen.elapsed() < GRACE {
                            waiting.push(format!("{} ({failure})", key.name));
                            continue;
                        }
                        let failure = self.with_logs(failure).await;
                        return Err(ClusterError::NotReady(format!("{key}: {failure}")));
                    }
                }
            }
            if waiting.is_empty() {
                let names: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
                reporter.line(&format!("ready: {}", names.join(", ")));
                return Ok(());
            }
            let line = format!("waiting: {}", waiting.join("; "));
            if line != last_line {
                reporter.line(&line);
                last_line = line;
            }
            if Instant::now() >= deadline {
                return Err(ClusterError::NotReady(format!(
                    "timed out (--timeout) with workloads not ready: {}",
                    waiting.join("; ")
                )));
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    /// Adds the last log lines of a crashing container.
    async fn with_logs(&self, failure: Failure) -> Failure {
        let Failure::CrashLoop {
            pod,
            container,
            exit_code,
            ..
        } = failure
        else {
            return failure;
        };
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let params = LogParams {
            container: Some(container.clone()),
            previous: true,
            tail_lines: Some(5),
            ..LogParams::default()
        };
        let logs = api
            .logs(&pod, &params)
            .await
            .map(|text| text.lines().map(str::to_owned).collect())
            .unwrap_or_default();
        Failure::CrashLoop {
            pod,
            container,
            exit_code,
            logs,
        }
    }

    /// The set's live members for stop and restart (parent kinds only).
    async fn live_members(
        &self,
    ) -> Result<Option<BTreeMap<ObjectKey, DynamicObject>>, ClusterError> {
        if matches!(self.namespace_state().await?, NamespaceState::Missing) {
            return Ok(None);
        }
        let Some(kinds) = self.parent_kinds().await? else {
            return Ok(None);
        };
        let kinds = ApplySet::parse_group_kinds(&kinds);
        Ok(Some(self.members(&kinds).await?))
    }

    /// `stop`: scales (or with `remove` deletes) the set's workloads, waits
    /// for their pods to go; PVCs only with `delete_data`. Returns the
    /// steps done. `confirmed` must be true when `delete_data` is set.
    pub async fn stop(
        &self,
        options: StopOptions,
        confirmed: bool,
        timeout: Duration,
        reporter: &dyn Reporter,
    ) -> Result<Vec<StopStep>, ClusterError> {
        if options.delete_data && !confirmed {
            return Err(ClusterError::Refused(
                "--delete-data deletes the broker's PersistentVolumeClaims and their data; confirm on a terminal or pass --yes".into(),
            ));
        }
        let Some(live) = self.live_members().await? else {
            reporter.line(&format!(
                "nothing to stop: no broker-images ApplySet in namespace {}",
                self.namespace
            ));
            return Ok(Vec::new());
        };
        let steps = plan::stop_plan(&live, options);
        let deadline = Instant::now() + timeout;
        let selectors: Vec<BTreeMap<String, String>> = live
            .iter()
            .filter(|(k, _)| k.kind.is_workload())
            .filter_map(|(_, o)| {
                o.data
                    .pointer("/spec/selector/matchLabels")
                    .and_then(|m| serde_json::from_value(m.clone()).ok())
            })
            .collect();
        for step in &steps {
            match step {
                StopStep::Scale(key) => {
                    let replicas = live[key]
                        .data
                        .pointer("/spec/replicas")
                        .and_then(Value::as_i64);
                    if replicas == Some(0) {
                        continue;
                    }
                    reporter.line(&format!("scale {key} to 0"));
                    let body = minimal(key, &self.namespace, json!({"spec": {"replicas": 0}}));
                    self.apply(key, &body, STOP_MANAGER, true, false).await?;
                }
                StopStep::Delete(key) => {
                    reporter.line(&format!("delete {key}"));
                    self.delete(key).await?;
                }
                StopStep::WaitPodsGone => loop {
                    let remaining = self
                        .pods()
                        .await?
                        .into_iter()
                        .filter(|p| {
                            let have = p.metadata.labels.clone().unwrap_or_default();
                            selectors.iter().any(|s| {
                                !s.is_empty() && s.iter().all(|(k, v)| have.get(k) == Some(v))
                            })
                        })
                        .filter_map(|p| p.metadata.name)
                        .collect::<Vec<_>>();
                    if remaining.is_empty() {
                        break;
                    }
                    if Instant::now() >= deadline {
                        return Err(ClusterError::NotReady(format!(
                            "timed out (--timeout) waiting for pods to go: {}",
                            remaining.join(", ")
                        )));
                    }
                    reporter.line(&format!("waiting for {} pod(s) to go", remaining.len()));
                    tokio::time::sleep(Duration::from_secs(2)).await;
                },
            }
        }
        Ok(steps)
    }

    /// `restart`: sets the restart annotation on the pod template of the
    /// named workloads (all when empty), then waits like start.
    pub async fn restart(
        &self,
        workloads: &[String],
        timeout: Duration,
        reporter: &dyn Reporter,
    ) -> Result<Vec<String>, ClusterError> {
        if matches!(self.namespace_state().await?, NamespaceState::Missing) {
            return Err(ClusterError::Object {
                object: format!("Namespace/{}", self.namespace),
                why: "does not exist: nothing to restart; run start first".into(),
            });
        }
        let deployments = self.deployments().await?;
        let names: Vec<String> = deployments
            .iter()
            .filter_map(|d| d.metadata.name.clone())
            .collect();
        for wanted in workloads {
            if !names.contains(wanted) {
                return Err(ClusterError::Object {
                    object: format!("Deployment/{wanted}"),
                    why: format!(
                        "is not a workload of the broker in namespace {} (have: {})",
                        self.namespace,
                        names.join(", ")
                    ),
                });
            }
        }
        let chosen: Vec<String> = if workloads.is_empty() {
            names
        } else {
            workloads.to_vec()
        };
        let now = Timestamp::now().to_string();
        let mut keys = Vec::new();
        for name in &chosen {
            let key = ObjectKey {
                kind: Kind::Deployment,
                namespace: Some(self.namespace.clone()),
                name: name.clone(),
            };
            let body = minimal(
                &key,
                &self.namespace,
                json!({"spec": {"template": {"metadata": {"annotations": {labels::RESTARTED_AT: now}}}}}),
            );
            reporter.line(&format!("restart {key}"));
            self.apply(&key, &body, RESTART_MANAGER, true, false)
                .await?;
            keys.push(key);
        }
        self.wait_ready(&keys, Instant::now() + timeout, reporter)
            .await?;
        Ok(chosen)
    }

    /// `status`: a handful of list calls, no per-object request.
    pub async fn status(
        &self,
        lock: Option<&broker_pins::Lock>,
    ) -> Result<StatusReport, ClusterError> {
        self.namespace_state().await?;
        let deployments = self.deployments().await?;
        let pods = self.pods().await?;
        let services: Vec<Service> =
            Api::<Service>::namespaced(self.client.clone(), &self.namespace)
                .list(&ListParams::default().labels(&self.set.member_selector()))
                .await
                .map_err(|e| self.error(e, "list", Kind::Service, None))?
                .items;
        let claims: Vec<PersistentVolumeClaim> =
            Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), &self.namespace)
                .list(&ListParams::default().labels(&self.set.member_selector()))
                .await
                .map_err(|e| self.error(e, "list", Kind::PersistentVolumeClaim, None))?
                .items;
        Ok(StatusReport::build(
            &self.namespace,
            &deployments,
            &pods,
            &services,
            &claims,
            lock,
            Timestamp::now(),
        ))
    }
}

/// What the first request learned about the namespace.
enum NamespaceState {
    /// It exists and is not terminating.
    Present(Box<Namespace>),
    /// It does not exist yet.
    Missing,
    /// These credentials may not read it; taken as present.
    Unreadable,
}

/// Whether a listed Deployment has rolled out (no request needed).
fn rolled_out(object: &DynamicObject) -> bool {
    let Ok(deployment) =
        serde_json::to_value(object).and_then(serde_json::from_value::<Deployment>)
    else {
        return false;
    };
    wait::classify(&deployment, &[], &[]) == Readiness::Ready
}

/// The smallest apply body for `key`: type, name, namespace, plus `extra`.
fn minimal(key: &ObjectKey, namespace: &str, extra: Value) -> DynamicObject {
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
