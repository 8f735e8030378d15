//! The rollout wait: polls the lists [`crate::rollout`] classifies until the
//! workloads are ready, fails fast on what waiting cannot fix. The
//! classification stays in [`crate::rollout`] so it is tested without a
//! server; this is the loop around it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
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
    /// Polls until every workload in `keys` has rolled out (Deployments,
    /// StatefulSets, DaemonSets) or completed (Jobs); fails fast on a
    /// failure that waiting cannot fix. Only the kinds present are listed.
    pub async fn wait_ready(
        &self,
        keys: &[ObjectKey],
        deadline: Instant,
        reporter: &dyn Reporter,
    ) -> Result<(), ClusterError> {
        let mut first_seen: BTreeMap<String, Instant> = BTreeMap::new();
        let mut last_line = String::new();
        let has = |kind: Kind| keys.iter().any(|k| k.kind == kind);
        loop {
            let pods = self.pods().await?;
            let claims = self.claims().await?;
            let mut readiness: Vec<(&ObjectKey, Option<Readiness>)> = Vec::new();
            if has(Kind::Deployment) {
                let deployments: Vec<Deployment> = self.deployments().await?;
                let replica_sets = self.replica_sets().await?;
                for key in keys.iter().filter(|k| k.kind == Kind::Deployment) {
                    let found = named(&deployments, &key.name).map(|deployment| {
                        rollout::classify(deployment, &replica_sets, &pods, &claims)
                    });
                    readiness.push((key, found));
                }
            }
            if has(Kind::StatefulSet) {
                let sets: Vec<StatefulSet> = self.typed_members(Kind::StatefulSet).await?;
                for key in keys.iter().filter(|k| k.kind == Kind::StatefulSet) {
                    let found = named(&sets, &key.name)
                        .map(|set| rollout::classify_stateful_set(set, &pods, &claims));
                    readiness.push((key, found));
                }
            }
            if has(Kind::DaemonSet) {
                let sets: Vec<DaemonSet> = self.typed_members(Kind::DaemonSet).await?;
                for key in keys.iter().filter(|k| k.kind == Kind::DaemonSet) {
                    let found = named(&sets, &key.name)
                        .map(|set| rollout::classify_daemon_set(set, &pods, &claims));
                    readiness.push((key, found));
                }
            }
            if has(Kind::Job) {
                let jobs: Vec<Job> = self.typed_members(Kind::Job).await?;
                for key in keys.iter().filter(|k| k.kind == Kind::Job) {
                    let found = named(&jobs, &key.name)
                        .map(|job| rollout::classify_job(job, &pods, &claims));
                    readiness.push((key, found));
                }
            }
            let mut waiting = Vec::new();
            for (key, found) in readiness {
                match found {
                    None => waiting.push(format!("{} (not created yet)", key.name)),
                    Some(Readiness::Ready) => {}
                    Some(Readiness::Progressing {
                        ready,
                        desired,
                        updated,
                    }) => waiting.push(if key.kind == Kind::Job {
                        format!("{} {ready}/{desired} complete, {updated} running", key.name)
                    } else {
                        format!("{} {ready}/{desired} ready, {updated} updated", key.name)
                    }),
                    Some(Readiness::Failed(failure)) => {
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

/// The listed object called `name`.
fn named<'a, K: kube::Resource>(objects: &'a [K], name: &str) -> Option<&'a K> {
    objects
        .iter()
        .find(|o| o.meta().name.as_deref() == Some(name))
}
