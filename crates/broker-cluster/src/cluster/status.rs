//! `status`: the few lists [`StatusReport`] is built from; the report
//! itself, and what counts as healthy, is [`crate::health`]'s.

use k8s_openapi::api::apps::v1::{DaemonSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};

use super::connect::Cluster;
use super::requests::NamespaceState;
use crate::error::ClusterError;
use crate::health::{StatusInputs, StatusReport};
use crate::objects::Kind;

impl Cluster {
    /// `status`: the parent and a handful of list calls, no per-object
    /// request. Nothing is listed in a namespace that does not exist.
    pub async fn status(
        &self,
        lock: Option<&broker_pins::Lock>,
    ) -> Result<StatusReport, ClusterError> {
        let parent = match self.namespace_state().await? {
            NamespaceState::Missing => None,
            _ => self.parent_record().await?,
        };
        let deployments = self.deployments().await?;
        // Other workload kinds are listed only when the set has them (no
        // request, and no RBAC rule needed, for kinds it does not use).
        let has = |kind: Kind| parent.as_ref().is_some_and(|p| p.kinds.contains(&kind));
        let stateful_sets: Vec<StatefulSet> = if has(Kind::StatefulSet) {
            self.typed_members(Kind::StatefulSet).await?
        } else {
            Vec::new()
        };
        let daemon_sets: Vec<DaemonSet> = if has(Kind::DaemonSet) {
            self.typed_members(Kind::DaemonSet).await?
        } else {
            Vec::new()
        };
        let jobs: Vec<Job> = if has(Kind::Job) {
            self.typed_members(Kind::Job).await?
        } else {
            Vec::new()
        };
        let replica_sets = self.replica_sets().await?;
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
        let expected = parent
            .as_ref()
            .map(|p| p.workloads.clone())
            .unwrap_or_default();
        let inputs = StatusInputs {
            has_parent: parent.is_some(),
            expected_workloads: &expected,
            deployments: &deployments,
            stateful_sets: &stateful_sets,
            daemon_sets: &daemon_sets,
            jobs: &jobs,
            replica_sets: &replica_sets,
            pods: &pods,
            services: &services,
            claims: &claims,
        };
        Ok(StatusReport::build(
            &self.namespace,
            inputs,
            lock,
            Timestamp::now(),
        ))
    }
}
