//! `start`: plans against the live set, applies in dependency order, waits,
//! prunes members that left the set and deletes old generated config no
//! rollout uses any more; with `--dry-run`, the diffs instead.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use kube::api::DynamicObject;
use serde_json::{Value, json};

use super::connect::Cluster;
use super::reporter::Reporter;
use super::requests::{NamespaceState, STOP_MANAGER, minimal, typed};
use crate::compare::{self, FIELD_MANAGER};
use crate::credentials::CredentialPolicy;
use crate::error::ClusterError;
use crate::objects::{Kind, ObjectKey, RenderedSet};
use crate::plan::{self, StartOptions, StartPlan, StartStep};
use crate::rollout::{self, Readiness};

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
    /// The revision this start recorded (`None`: it applied what the
    /// newest revision holds, or it was a dry run).
    pub revision: Option<u64>,
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
    /// Prune nothing: members that left the set, old config included,
    /// stay (and stay on the parent).
    pub no_prune: bool,
    /// A read-once credential (a database password) was changed inside
    /// its server already: apply the new value without refusing.
    pub credentials_changed_in_place: bool,
    /// Change a read-once credential inside its running server (the
    /// catalogue's script) before applying the new value.
    pub rotate_credentials: bool,
    /// Give up waiting after this long.
    pub timeout: Duration,
}

impl StartRun {
    /// What the run does about a changed read-once credential.
    pub fn credential_policy(&self) -> CredentialPolicy {
        if self.credentials_changed_in_place {
            CredentialPolicy::ChangedInPlace
        } else if self.rotate_credentials {
            CredentialPolicy::Rotate
        } else {
            CredentialPolicy::Refuse
        }
    }
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

impl Cluster {
    /// Plans a start of `rendered` against what the cluster holds: a
    /// namespace get, a parent get and one list per member kind.
    pub async fn plan_start(
        &self,
        rendered: &RenderedSet,
        options: StartOptions,
    ) -> Result<PlannedStart, ClusterError> {
        let rendered = &self.resolve_kinds(rendered).await?;
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
            parent = self.parent_record().await?;
            let mut kinds = prepared.kinds();
            if let Some(p) = &parent {
                kinds.extend(p.kinds.iter().copied());
            }
            live.extend(self.members(&kinds).await?);
        }
        let plan = StartPlan::new(&prepared, &live, parent.as_ref(), options);
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
            no_prune: run.no_prune,
        };
        // Planned (reads only) before anything is written: bad input and
        // a start with nothing to do never touch the Lease either.
        let planned = self.plan_start(rendered, options).await?;
        if run.dry_run {
            return self.dry_run(&planned, run, reporter).await;
        }
        if !planned.plan.writes() {
            let prepared = planned.prepared.clone();
            let mut outcome = self.execute(planned, run, reporter).await?;
            // A start from before revisions existed: the first one is
            // recorded once; afterwards an unchanged start writes nothing.
            outcome.revision = self.record_revision(&prepared).await?;
            return Ok(outcome);
        }
        // The Lease lives in the namespace: a first start creates that
        // first (an apply, so a race of two first starts is harmless).
        let namespace_created = !planned.namespace_exists;
        if namespace_created {
            self.ensure_namespace(&planned.prepared).await?;
        }
        let lease = self.hold_lease("start", self.lease_wait, reporter).await?;
        // Planned again under the Lease: another run may have changed the
        // set while this one waited.
        let result = match self.plan_start(rendered, options).await {
            Ok(planned) => match self
                .preflight(
                    &planned,
                    run.force_conflicts,
                    namespace_created,
                    run.credential_policy(),
                )
                .await
            {
                Ok(changes) => {
                    let prepared = planned.prepared.clone();
                    let rotated = self.rotate_credentials(&changes, &planned, reporter).await;
                    match async {
                        rotated?;
                        self.execute(planned, run, reporter).await
                    }
                    .await
                    {
                        Ok(mut outcome) => {
                            outcome.revision = self.record_revision(&prepared).await?;
                            Ok(outcome)
                        }
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        lease.release().await;
        result
    }

    /// Applies the rendered Namespace (the plan checked there is one).
    async fn ensure_namespace(&self, prepared: &RenderedSet) -> Result<(), ClusterError> {
        if let Some((key, namespace)) = prepared
            .objects
            .iter()
            .find(|(k, _)| k.kind == Kind::Namespace)
        {
            self.apply(key, namespace, FIELD_MANAGER, false, false)
                .await?;
        }
        Ok(())
    }

    /// Walks a plan: applies, waits, prunes, collects.
    async fn execute(
        &self,
        planned: PlannedStart,
        run: StartRun,
        reporter: &dyn Reporter,
    ) -> Result<StartOutcome, ClusterError> {
        let PlannedStart {
            prepared,
            live,
            plan,
            ..
        } = planned;
        let mut outcome = StartOutcome::default();
        let deadline = Instant::now() + run.timeout;
        let any_change = plan.writes();
        let prunes: Vec<String> = plan
            .steps
            .iter()
            .filter_map(|s| match s {
                StartStep::Prune(key) if live.get(key).is_some_and(plan::is_ours) => {
                    Some(key.to_string())
                }
                _ => None,
            })
            .collect();
        if !prunes.is_empty() {
            reporter.line(&format!(
                "will prune after the rollout what left the rendered set: {} (--no-prune keeps them)",
                prunes.join(", ")
            ));
        }
        for step in &plan.steps {
            match step {
                StartStep::ApplyParent(record) => {
                    let parent = self.set.parent(&record.kinds, &record.workloads);
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
                    if !any_change
                        && keys
                            .iter()
                            .all(|k| live.get(k).is_some_and(|o| rolled_out(k.kind, o)))
                    {
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
        planned: &PlannedStart,
        run: StartRun,
        reporter: &dyn Reporter,
    ) -> Result<StartOutcome, ClusterError> {
        let PlannedStart {
            prepared,
            live,
            plan,
            namespace_exists,
        } = planned;
        let namespace_exists = *namespace_exists;
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
                        let result = match self
                            .apply(key, desired, FIELD_MANAGER, run.force_conflicts, true)
                            .await
                        {
                            // The real start first releases what stop owns
                            // (the replica count); a dry run cannot write
                            // that release, so it takes those fields as the
                            // start will. Other managers' conflicts stand.
                            Err(ClusterError::Conflict { manager, .. })
                                if manager.split(", ").all(|m| m == STOP_MANAGER) =>
                            {
                                self.apply(key, desired, FIELD_MANAGER, true, true).await?
                            }
                            other => other?,
                        };
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
        if !compare::stopped(live) {
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
        let replica_sets: Vec<Value> = self
            .replica_sets()
            .await?
            .into_iter()
            .filter_map(|rs| serde_json::to_value(rs).ok())
            .collect();
        let pods: Vec<Value> = self
            .pods()
            .await?
            .into_iter()
            .filter_map(|p| serde_json::to_value(p).ok())
            .collect();
        Ok(plan::stale_config(candidates, &replica_sets, &pods))
    }
}

/// Whether a listed workload has rolled out (or a Job completed), by its
/// status alone: no request needed.
fn rolled_out(kind: Kind, object: &DynamicObject) -> bool {
    fn parsed<K: serde::de::DeserializeOwned>(object: &DynamicObject) -> Option<K> {
        serde_json::to_value(object)
            .and_then(serde_json::from_value)
            .ok()
    }
    let readiness = match kind {
        Kind::Deployment => {
            parsed::<Deployment>(object).map(|d| rollout::classify(&d, &[], &[], &[]))
        }
        Kind::StatefulSet => {
            parsed::<StatefulSet>(object).map(|s| rollout::classify_stateful_set(&s, &[], &[]))
        }
        Kind::DaemonSet => {
            parsed::<DaemonSet>(object).map(|d| rollout::classify_daemon_set(&d, &[], &[]))
        }
        Kind::Job => parsed::<Job>(object).map(|j| rollout::classify_job(&j, &[], &[])),
        _ => Some(Readiness::Ready),
    };
    readiness == Some(Readiness::Ready)
}
