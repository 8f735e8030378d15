//! `stop`: scales the set's workloads to zero (or deletes them) under its
//! own field manager, so a later start can take the replica count back.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kube::api::DynamicObject;
use serde_json::{Value, json};

use super::connect::Cluster;
use super::reporter::Reporter;
use super::requests::{NamespaceState, STOP_MANAGER, minimal};
use crate::error::ClusterError;
use crate::labels;
use crate::objects::{Kind, ObjectKey};
use crate::plan::{self, StopOptions, StopStep};

impl Cluster {
    /// The set's live members for stop and restart (parent kinds only).
    async fn live_members(
        &self,
    ) -> Result<Option<BTreeMap<ObjectKey, DynamicObject>>, ClusterError> {
        if matches!(self.namespace_state().await?, NamespaceState::Missing) {
            return Ok(None);
        }
        let Some(parent) = self.parent_record().await? else {
            return Ok(None);
        };
        Ok(Some(self.members(&parent.kinds).await?))
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
        let writes = plan::stop_plan(&live, options)
            .iter()
            .any(|step| match step {
                StopStep::Scale(key) => !scaled_down(&live[key]),
                StopStep::Suspend(key) => !suspended(&live[key]),
                StopStep::Delete(_) => true,
                StopStep::WaitPodsGone(_) | StopStep::KeepNodeDirectories(_) => false,
            });
        if !writes {
            // Already stopped: wait for stragglers, write nothing.
            return self.stop_held(&live, options, timeout, reporter).await;
        }
        let lease = self.hold_lease("stop", self.lease_wait, reporter).await?;
        // Read again under the Lease: a start may have changed the set
        // while this run waited.
        let result = match self.live_members().await {
            Ok(Some(live)) => self.stop_held(&live, options, timeout, reporter).await,
            Ok(None) => Ok(Vec::new()),
            Err(e) => Err(e),
        };
        lease.release().await;
        result
    }

    async fn stop_held(
        &self,
        live: &BTreeMap<ObjectKey, DynamicObject>,
        options: StopOptions,
        timeout: Duration,
        reporter: &dyn Reporter,
    ) -> Result<Vec<StopStep>, ClusterError> {
        let steps = plan::stop_plan(live, options);
        let deadline = Instant::now() + timeout;
        let selectors = |keys: &[ObjectKey]| -> Vec<BTreeMap<String, String>> {
            keys.iter()
                .filter_map(|k| live.get(k))
                .filter_map(|o| {
                    o.data
                        .pointer("/spec/selector/matchLabels")
                        .and_then(|m| serde_json::from_value(m.clone()).ok())
                })
                .collect()
        };
        for step in &steps {
            match step {
                StopStep::Scale(key) => {
                    if scaled_down(&live[key]) {
                        continue;
                    }
                    reporter.line(&format!("scale {key} to 0"));
                    let spec = if key.kind == Kind::DaemonSet {
                        json!({"template": {"spec": {"nodeSelector": {
                            labels::STOPPED_NODE_SELECTOR: "true"}}}})
                    } else {
                        json!({"replicas": 0})
                    };
                    let body = minimal(key, &self.namespace, json!({ "spec": spec }));
                    self.apply(key, &body, STOP_MANAGER, true, false).await?;
                }
                StopStep::Suspend(key) => {
                    if suspended(&live[key]) {
                        continue;
                    }
                    reporter.line(&format!("suspend {key}"));
                    let body = minimal(key, &self.namespace, json!({"spec": {"suspend": true}}));
                    self.apply(key, &body, STOP_MANAGER, true, false).await?;
                }
                StopStep::Delete(key) => {
                    reporter.line(&format!("delete {key}"));
                    self.delete(key).await?;
                }
                StopStep::KeepNodeDirectories(_) => reporter.line(&step.to_string()),
                StopStep::WaitPodsGone(keys) => loop {
                    let selectors = selectors(keys);
                    let remaining = self
                        .pods()
                        .await?
                        .into_iter()
                        // A finished pod (a completed Job's) runs nothing.
                        .filter(|p| {
                            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
                            !matches!(phase, Some("Succeeded" | "Failed"))
                        })
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
}

/// Whether stop's scale-down is already in place: no replicas, or for a
/// DaemonSet the node selector no node matches.
fn scaled_down(workload: &DynamicObject) -> bool {
    let spec = &workload.data["spec"];
    spec["replicas"].as_i64() == Some(0)
        || spec["template"]["spec"]["nodeSelector"][labels::STOPPED_NODE_SELECTOR].as_str()
            == Some("true")
}

fn suspended(object: &DynamicObject) -> bool {
    object
        .data
        .pointer("/spec/suspend")
        .and_then(Value::as_bool)
        == Some(true)
}
