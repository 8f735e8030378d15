//! The rollout wait: polls the lists [`crate::rollout`] classifies until the
//! workloads are ready, fails fast on what waiting cannot fix. The
//! classification stays in [`crate::rollout`] so it is tested without a
//! server; this is the loop around it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ListParams, LogParams};

use super::connect::Cluster;
use super::reporter::Reporter;
use crate::error::ClusterError;
use crate::objects::{Kind, ObjectKey};
use crate::rollout::{self, Failure, Readiness};

/// How long a failure that may clear up by itself (scheduling, volume
/// provisioning) must last before a wait gives up on it.
const GRACE: Duration = Duration::from_secs(30);

impl Cluster {
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
            let replica_sets = self.replica_sets().await?;
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
                    .filter(|p| rollout::selects(deployment, p))
                    .cloned()
                    .collect();
                match rollout::classify(deployment, &replica_sets, &own, &claims) {
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

    /// Every value of the set's Secrets, to mask in log lines shown (a
    /// crashing service may print its connection string). Unreadable
    /// Secrets mean no logs are shown at all rather than unmasked ones.
    async fn secret_values(&self) -> Option<Vec<String>> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let list = api
            .list(&ListParams::default().labels(&self.set.member_selector()))
            .await
            .ok()?;
        Some(
            list.items
                .iter()
                .flat_map(|s| s.data.iter().flatten())
                .filter_map(|(_, v)| String::from_utf8(v.0.clone()).ok())
                .collect(),
        )
    }

    /// Adds the last log lines of a crashing container, our Secrets'
    /// values masked.
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
        let secrets = self.secret_values().await;
        let logs = api
            .logs(&pod, &params)
            .await
            .map(|text| {
                text.lines()
                    .map(|line| crate::rollout::mask(line, &secrets))
                    .collect()
            })
            .unwrap_or_default();
        Failure::CrashLoop {
            pod,
            container,
            exit_code,
            logs,
        }
    }
}
