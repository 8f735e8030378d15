//! `restart`: a new pod template annotation, as `kubectl rollout restart`
//! sets it, then the same wait as start.

use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use serde_json::json;

use super::connect::Cluster;
use super::reporter::Reporter;
use super::requests::{NamespaceState, minimal};
use crate::error::ClusterError;
use crate::labels;
use crate::objects::{Kind, ObjectKey};

/// The field manager `restart` sets the restart annotation with.
pub const RESTART_MANAGER: &str = "broker-images-restart";

impl Cluster {
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
        let lease = self
            .hold_lease("restart", self.lease_wait, reporter)
            .await?;
        let result = self.restart_held(workloads, timeout, reporter).await;
        lease.release().await;
        result
    }

    async fn restart_held(
        &self,
        workloads: &[String],
        timeout: Duration,
        reporter: &dyn Reporter,
    ) -> Result<Vec<String>, ClusterError> {
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
        let stopped: Vec<String> = deployments
            .iter()
            .filter(|d| d.spec.as_ref().and_then(|s| s.replicas) == Some(0))
            .filter_map(|d| d.metadata.name.clone())
            .collect();
        let chosen: Vec<String> = if workloads.is_empty() {
            if !names.is_empty() && stopped.len() == names.len() {
                return Err(ClusterError::Stopped(format!(
                    "the broker in namespace {} is stopped (every workload at 0 replicas): nothing to restart; run broker-images start",
                    self.namespace
                )));
            }
            for name in &stopped {
                reporter.line(&format!("skip Deployment/{name}: stopped (0 replicas)"));
            }
            names.into_iter().filter(|n| !stopped.contains(n)).collect()
        } else {
            let asked_stopped: Vec<&String> =
                workloads.iter().filter(|w| stopped.contains(w)).collect();
            if !asked_stopped.is_empty() {
                return Err(ClusterError::Stopped(format!(
                    "{} stopped (0 replicas) in namespace {}: restart runs only running workloads; run broker-images start",
                    asked_stopped
                        .iter()
                        .map(|n| format!("Deployment/{n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                        + if asked_stopped.len() == 1 {
                            " is"
                        } else {
                            " are"
                        },
                    self.namespace
                )));
            }
            workloads.to_vec()
        };
        if chosen.is_empty() {
            return Err(ClusterError::Object {
                object: format!("Namespace/{}", self.namespace),
                why: "has no broker workloads: nothing to restart; run broker-images start first"
                    .into(),
            });
        }
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
}
