//! `status`: the few lists [`StatusReport`] is built from; the report
//! itself, and what counts as healthy, is [`crate::status`]'s.

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};

use super::connect::Cluster;
use crate::error::ClusterError;
use crate::objects::Kind;
use crate::status::StatusReport;

impl Cluster {
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
