//! `dev`'s apply: only the objects that differ from what the cluster
//! holds, with the same field manager as `start` (so a later `start` takes
//! the cluster back without conflicts), and no waiting, pruning or
//! collecting — the dev loop times the rollout itself with
//! [`Cluster::wait_ready`] and a later `start` prunes and collects. A dev
//! session holds the namespace's Lease ([`Cluster::hold_session_lease`])
//! from its first start to its end, so a `start` meanwhile waits for it
//! and each round is one plan and its applies.

use serde_json::json;

use super::connect::Cluster;
use super::lease::LeaseGuard;
use super::reporter::Reporter;
use super::requests::{STOP_MANAGER, minimal};
use crate::compare::{self, FIELD_MANAGER};
use crate::error::ClusterError;
use crate::objects::{Kind, ObjectKey, RenderedSet};
use crate::plan::{StartOptions, StartStep};

/// What [`Cluster::apply_changed`] wrote.
#[derive(Clone, Debug, Default)]
pub struct ChangedObjects {
    /// The objects applied, in apply order.
    pub applied: Vec<ObjectKey>,
    /// How many objects were already as rendered.
    pub unchanged: usize,
}

impl ChangedObjects {
    /// The applied workloads: what a rollout wait covers.
    pub fn workloads(&self) -> Vec<ObjectKey> {
        self.applied
            .iter()
            .filter(|k| k.kind.is_workload())
            .cloned()
            .collect()
    }
}

impl Cluster {
    /// Takes the namespace's Lease for a dev session (waiting as `start`
    /// does while another run holds it); kept and renewed until released.
    pub async fn hold_session_lease(
        &self,
        reporter: &dyn Reporter,
    ) -> Result<LeaseGuard, ClusterError> {
        self.hold_lease("dev", self.lease_wait, reporter).await
    }

    /// Applies the objects of `rendered` that differ from the cluster's,
    /// in `start`'s order; the caller holds the Lease (`_lease`).
    /// Everything is read, planned and dry-run before the first write, so
    /// bad input, a refused object or an unreachable server writes nothing;
    /// with nothing changed nothing is written.
    pub async fn apply_changed(
        &self,
        rendered: &RenderedSet,
        force_conflicts: bool,
        _lease: &LeaseGuard,
        reporter: &dyn Reporter,
    ) -> Result<ChangedObjects, ClusterError> {
        let planned = self.plan_start(rendered, StartOptions::default()).await?;
        // Kubernetes has no transaction: the next best is start's
        // preflight, every changed object dry-run first, so what the
        // server would refuse leaves the whole change unapplied.
        self.preflight(
            &planned,
            force_conflicts,
            false,
            crate::credentials::CredentialPolicy::Refuse,
        )
        .await?;
        let mut outcome = ChangedObjects::default();
        for step in &planned.plan.steps {
            match step {
                StartStep::ApplyParent(record) => {
                    let parent = self.set.parent(&record.kinds, &record.workloads);
                    let key = ObjectKey {
                        kind: Kind::Secret,
                        namespace: Some(self.namespace.clone()),
                        name: self.set.name.clone(),
                    };
                    self.apply(&key, &parent, FIELD_MANAGER, force_conflicts, false)
                        .await?;
                }
                StartStep::Apply(key) => {
                    // A stopped workload's replica count belongs to stop's
                    // manager: given up first, as start does.
                    if let Some(live) = planned.live.get(key)
                        && compare::stopped(live)
                    {
                        let empty = minimal(key, &self.namespace, json!({}));
                        self.apply(key, &empty, STOP_MANAGER, true, false).await?;
                    }
                    reporter.line(&format!("apply {key}"));
                    self.apply(
                        key,
                        &planned.prepared.objects[key],
                        FIELD_MANAGER,
                        force_conflicts,
                        false,
                    )
                    .await?;
                    outcome.applied.push(key.clone());
                }
                StartStep::Unchanged(_) => outcome.unchanged += 1,
                StartStep::Wait(_)
                | StartStep::Prune(_)
                | StartStep::Keep(..)
                | StartStep::CollectOldConfig(_) => {}
            }
        }
        Ok(outcome)
    }
}
