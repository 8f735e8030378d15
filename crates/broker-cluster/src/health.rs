//! `status` as data: built from a handful of lists (Deployments, Pods,
//! Services, claims) and, optionally, the lock the images should match.

use std::collections::BTreeMap;

use broker_pins::{Lock, PinnedRef, Reference};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, PodTemplateSpec, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use crate::rollout::{self, Readiness};

/// Where the broker as a whole stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BrokerState {
    /// No broker-images ApplySet and no workload of ours in the namespace.
    Absent,
    /// Every workload is scaled to zero (`broker-images stop`).
    Stopped,
    /// Workloads are meant to run (some may not be ready).
    Running,
}

/// The whole report; `--json` prints it as is.
#[derive(Clone, Debug, Serialize)]
pub struct StatusReport {
    /// The namespace shown.
    pub namespace: String,
    /// Absent, stopped or running.
    pub state: BrokerState,
    /// One entry per workload of the set.
    pub workloads: Vec<WorkloadStatus>,
    /// Workloads the last start meant to run (the ApplySet parent names
    /// them) that the cluster does not have.
    pub missing: Vec<String>,
    /// One entry per claim of the set.
    pub claims: Vec<ClaimStatus>,
    /// Whether every workload is ready and every image matches the lock
    /// (when one was given) and every claim is bound: the exit status.
    pub healthy: bool,
}

/// One workload.
#[derive(Clone, Debug, Serialize)]
pub struct WorkloadStatus {
    /// `metadata.name`.
    pub name: String,
    /// Available replicas.
    pub ready: i32,
    /// Desired replicas.
    pub desired: i32,
    /// Rolled out and available.
    pub is_ready: bool,
    /// Why not, when a failure is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// Container restarts summed over its pods.
    pub restarts: i32,
    /// Seconds since the Deployment was created.
    pub age_seconds: Option<i64>,
    /// Per container image.
    pub images: Vec<ImageStatus>,
    /// How it is reachable: Services selecting its pods.
    pub exposure: Vec<Exposure>,
}

/// One container's image.
#[derive(Clone, Debug, Serialize)]
pub struct ImageStatus {
    /// The container.
    pub container: String,
    /// The reference in the pod template.
    pub image: String,
    /// The digest the running pods report (`imageID`), if any pod runs.
    pub running: Option<String>,
    /// The digest the lock records for this repository, when a lock was
    /// given and names it.
    pub locked: Option<String>,
    /// The running (or, with no pod, the specified) digest differs from
    /// the lock.
    pub drift: bool,
}

/// One Service in front of a workload.
#[derive(Clone, Debug, Serialize)]
pub struct Exposure {
    /// The Service.
    pub service: String,
    /// `ClusterIP`, `NodePort`, `LoadBalancer`.
    pub kind: String,
    /// `port[/nodePort]` entries.
    pub ports: Vec<String>,
    /// Load-balancer ingress addresses.
    pub addresses: Vec<String>,
}

/// One PersistentVolumeClaim.
#[derive(Clone, Debug, Serialize)]
pub struct ClaimStatus {
    /// The claim.
    pub name: String,
    /// `Bound`, `Pending`, `Lost`.
    pub phase: String,
    /// Its storage class.
    pub storage_class: Option<String>,
}

/// The digest part of a kubelet `imageID` (`…@sha256:…`).
pub fn digest_of_image_id(image_id: &str) -> Option<String> {
    image_id
        .rsplit_once('@')
        .map(|(_, d)| d.to_owned())
        .or_else(|| image_id.starts_with("sha256:").then(|| image_id.to_owned()))
}

/// The locked digest for an image reference (pinned or by tag): the lock
/// entry (built or mirrored) with the same registry and repository, or,
/// when none has that registry, the one entry with the same repository —
/// an environment's `registry:` relocates the images nodes pull without
/// changing what they are.
pub fn locked_digest(lock: &Lock, image: &str) -> Option<String> {
    let wanted: Reference = image.parse().ok()?;
    let entries: Vec<PinnedRef> = lock
        .images
        .values()
        .filter_map(|i| i.pinned().ok())
        .chain(lock.mirrors.values().filter_map(|m| m.pinned().ok()))
        .collect();
    let same_repository = |r: &&PinnedRef| r.repository() == wanted.repository();
    let exact = entries
        .iter()
        .filter(same_repository)
        .find(|r| r.registry() == wanted.registry());
    let relocated = || {
        let mut candidates = entries.iter().filter(same_repository);
        match (candidates.next(), candidates.next()) {
            (Some(only), None) => Some(only),
            _ => None,
        }
    };
    exact.or_else(relocated).map(|r| r.digest().to_string())
}

/// Whether `running` is a platform's manifest of the multi-platform image
/// the lock pins as `locked` (issue 26): a runtime reports the index it
/// pulled or the manifest it picked from it.
fn runs_platform_of(lock: &Lock, locked: &str, running: &str) -> bool {
    let Ok(running) = running.parse::<broker_pins::Digest>() else {
        return false;
    };
    lock.images
        .values()
        .any(|i| i.digest.to_string() == locked && i.runs_as(&running))
}

/// The lists a status report is built from, as the API server returned
/// them.
#[derive(Clone, Copy, Debug, Default)]
pub struct StatusInputs<'a> {
    /// Whether the namespace has our ApplySet parent.
    pub has_parent: bool,
    /// The workloads the parent says the set holds (empty for a parent
    /// written before it recorded them).
    pub expected_workloads: &'a [String],
    /// The set's Deployments.
    pub deployments: &'a [Deployment],
    /// The set's StatefulSets.
    pub stateful_sets: &'a [StatefulSet],
    /// The set's DaemonSets.
    pub daemon_sets: &'a [DaemonSet],
    /// The set's Jobs.
    pub jobs: &'a [Job],
    /// The namespace's ReplicaSets.
    pub replica_sets: &'a [ReplicaSet],
    /// The namespace's pods.
    pub pods: &'a [Pod],
    /// The set's Services.
    pub services: &'a [Service],
    /// The set's claims.
    pub claims: &'a [PersistentVolumeClaim],
}

/// A workload of any kind start waits on, reduced to what status shows.
struct WorkloadView<'a> {
    name: String,
    readiness: Readiness,
    /// Available replicas (a Job: succeeded pods).
    ready: i32,
    /// Desired replicas (a DaemonSet: scheduled pods; a Job: completions,
    /// 0 while suspended).
    desired: i32,
    selector: Option<&'a LabelSelector>,
    template: Option<&'a PodTemplateSpec>,
    created: Option<&'a Time>,
}

impl<'a> WorkloadView<'a> {
    /// Every workload of the inputs, Deployments first, then by kind.
    fn all(inputs: &StatusInputs<'a>) -> Vec<Self> {
        let pods = inputs.pods;
        let claims = inputs.claims;
        let mut views = Vec::new();
        for d in inputs.deployments {
            let owned: Vec<Pod> = pods
                .iter()
                .filter(|p| rollout::selects(d, p))
                .cloned()
                .collect();
            let spec = d.spec.as_ref();
            views.push(Self {
                name: d.metadata.name.clone().unwrap_or_default(),
                readiness: rollout::classify(d, inputs.replica_sets, &owned, claims),
                ready: d
                    .status
                    .as_ref()
                    .and_then(|s| s.available_replicas)
                    .unwrap_or(0),
                desired: spec.and_then(|s| s.replicas).unwrap_or(1),
                selector: spec.map(|s| &s.selector),
                template: spec.map(|s| &s.template),
                created: d.metadata.creation_timestamp.as_ref(),
            });
        }
        for s in inputs.stateful_sets {
            let spec = s.spec.as_ref();
            views.push(Self {
                name: s.metadata.name.clone().unwrap_or_default(),
                readiness: rollout::classify_stateful_set(s, pods, claims),
                ready: s
                    .status
                    .as_ref()
                    .and_then(|s| s.ready_replicas)
                    .unwrap_or(0),
                desired: spec.and_then(|s| s.replicas).unwrap_or(1),
                selector: spec.map(|s| &s.selector),
                template: spec.map(|s| &s.template),
                created: s.metadata.creation_timestamp.as_ref(),
            });
        }
        for d in inputs.daemon_sets {
            let spec = d.spec.as_ref();
            let status = d.status.as_ref();
            views.push(Self {
                name: d.metadata.name.clone().unwrap_or_default(),
                readiness: rollout::classify_daemon_set(d, pods, claims),
                ready: status.and_then(|s| s.number_available).unwrap_or(0),
                desired: status.map_or(0, |s| s.desired_number_scheduled),
                selector: spec.map(|s| &s.selector),
                template: spec.map(|s| &s.template),
                created: d.metadata.creation_timestamp.as_ref(),
            });
        }
        for j in inputs.jobs {
            let spec = j.spec.as_ref();
            let suspended = spec.and_then(|s| s.suspend) == Some(true);
            views.push(Self {
                name: j.metadata.name.clone().unwrap_or_default(),
                readiness: rollout::classify_job(j, pods, claims),
                ready: j.status.as_ref().and_then(|s| s.succeeded).unwrap_or(0),
                desired: if suspended {
                    0
                } else {
                    spec.and_then(|s| s.completions).unwrap_or(1)
                },
                selector: spec.and_then(|s| s.selector.as_ref()),
                template: spec.map(|s| &s.template),
                created: j.metadata.creation_timestamp.as_ref(),
            });
        }
        views
    }
}

impl StatusReport {
    /// Builds the report from the namespace's lists.
    pub fn build(
        namespace: &str,
        inputs: StatusInputs<'_>,
        lock: Option<&Lock>,
        now: Timestamp,
    ) -> Self {
        let StatusInputs {
            pods,
            services,
            claims,
            ..
        } = inputs;
        let mut workloads = Vec::new();
        for view in WorkloadView::all(&inputs) {
            let WorkloadView {
                name,
                readiness,
                ready,
                desired,
                selector,
                template,
                created,
            } = view;
            let own_pods: Vec<&Pod> = pods
                .iter()
                .filter(|p| rollout::matches_selector(selector, p))
                .collect();
            let restarts = own_pods
                .iter()
                .flat_map(|p| {
                    p.status
                        .iter()
                        .flat_map(|s| s.container_statuses.iter().flatten())
                })
                .map(|c| c.restart_count)
                .sum();
            let mut running: BTreeMap<String, String> = BTreeMap::new();
            for pod in &own_pods {
                for c in pod
                    .status
                    .iter()
                    .flat_map(|s| s.container_statuses.iter().flatten())
                {
                    if let Some(d) = digest_of_image_id(&c.image_id) {
                        running.insert(c.name.clone(), d);
                    }
                }
            }
            let containers = template
                .and_then(|t| t.spec.as_ref())
                .map(|s| s.containers.clone())
                .unwrap_or_default();
            let images = containers
                .iter()
                .map(|c| {
                    let image = c.image.clone().unwrap_or_default();
                    let locked = lock.and_then(|l| locked_digest(l, &image));
                    let running = running.get(&c.name).cloned();
                    let specified = image.rsplit_once('@').map(|(_, d)| d.to_owned());
                    let compare = running.clone().or(specified);
                    let drift = match (&locked, lock) {
                        (Some(l), Some(lock)) => {
                            compare.as_deref() != Some(l.as_str())
                                && !compare
                                    .as_deref()
                                    .is_some_and(|c| runs_platform_of(lock, l, c))
                        }
                        (Some(l), None) => compare.as_deref() != Some(l.as_str()),
                        // A lock that does not know the image: drift too.
                        (None, Some(_)) => true,
                        (None, None) => false,
                    };
                    ImageStatus {
                        container: c.name.clone(),
                        image,
                        running,
                        locked,
                        drift,
                    }
                })
                .collect();
            let template_labels = template
                .and_then(|t| t.metadata.as_ref())
                .and_then(|m| m.labels.clone())
                .unwrap_or_default();
            let exposure = services
                .iter()
                .filter(|s| {
                    let selector = s
                        .spec
                        .as_ref()
                        .and_then(|s| s.selector.clone())
                        .unwrap_or_default();
                    !selector.is_empty()
                        && selector
                            .iter()
                            .all(|(k, v)| template_labels.get(k) == Some(v))
                })
                .map(exposure_of)
                .collect();
            let (is_ready, problem) = match &readiness {
                Readiness::Ready => (true, None),
                Readiness::Progressing { .. } => (false, None),
                Readiness::Failed(f) => (false, Some(f.to_string())),
            };
            workloads.push(WorkloadStatus {
                name,
                ready,
                desired,
                is_ready: is_ready && desired > 0,
                problem,
                restarts,
                age_seconds: created.map(|t| now.as_second() - t.0.as_second()),
                images,
                exposure,
            });
        }
        let claims: Vec<ClaimStatus> = claims
            .iter()
            .map(|c| ClaimStatus {
                name: c.metadata.name.clone().unwrap_or_default(),
                phase: c
                    .status
                    .as_ref()
                    .and_then(|s| s.phase.clone())
                    .unwrap_or_else(|| "Unknown".into()),
                storage_class: c.spec.as_ref().and_then(|s| s.storage_class_name.clone()),
            })
            .collect();
        let missing: Vec<String> = inputs
            .expected_workloads
            .iter()
            .filter(|name| !workloads.iter().any(|w| &&w.name == name))
            .cloned()
            .collect();
        let state = if workloads.is_empty() && !inputs.has_parent {
            BrokerState::Absent
        } else if !workloads.is_empty() && workloads.iter().all(|w| w.desired == 0) {
            BrokerState::Stopped
        } else {
            BrokerState::Running
        };
        let healthy = state == BrokerState::Running
            && !workloads.is_empty()
            && missing.is_empty()
            && workloads
                .iter()
                .all(|w| w.is_ready && w.images.iter().all(|i| !i.drift))
            && claims.iter().all(|c| c.phase == "Bound");
        Self {
            namespace: namespace.to_owned(),
            state,
            workloads,
            missing,
            claims,
            healthy,
        }
    }

    /// The report as lines for a terminal.
    pub fn lines(&self) -> Vec<String> {
        if self.state == BrokerState::Absent {
            return vec![format!(
                "no broker in namespace {}: nothing broker-images started is there (broker-images start deploys it)",
                self.namespace
            )];
        }
        let mut lines = vec![format!(
            "{:<14} {:>5} {:>8} {:>6}  {:<40} {}",
            "WORKLOAD", "READY", "RESTARTS", "AGE", "IMAGE", "EXPOSURE"
        )];
        for w in &self.workloads {
            let image = w
                .images
                .iter()
                .map(|i| {
                    let digest = i.running.clone().unwrap_or_else(|| "not running".into());
                    let short = digest.get(..19).unwrap_or(&digest).to_owned();
                    if i.drift {
                        match &i.locked {
                            Some(locked) => format!(
                                "{short} DRIFT (lock {}; should be {}@{locked})",
                                locked.get(..19).unwrap_or(locked),
                                repository_of(&i.image)
                            ),
                            None => format!("{short} DRIFT (lock has no entry for {})", i.image),
                        }
                    } else {
                        short
                    }
                })
                .collect::<Vec<_>>()
                .join(" ");
            let exposure = w
                .exposure
                .iter()
                .map(|e| {
                    let mut s = format!("{} {} {}", e.service, e.kind, e.ports.join(","));
                    if !e.addresses.is_empty() {
                        s.push_str(&format!(" at {}", e.addresses.join(",")));
                    }
                    s
                })
                .collect::<Vec<_>>()
                .join("; ");
            let age = w.age_seconds.map_or("-".into(), human_age);
            lines.push(format!(
                "{:<14} {:>5} {:>8} {:>6}  {:<40} {}",
                w.name,
                format!("{}/{}", w.ready, w.desired),
                w.restarts,
                age,
                image,
                exposure
            ));
            if let Some(problem) = &w.problem {
                lines.push(format!("  ! {problem}"));
            }
        }
        for name in &self.missing {
            lines.push(format!(
                "{name:<14} missing: the last start meant to run it but the cluster has no such workload (broker-images start creates it)"
            ));
        }
        for c in &self.claims {
            lines.push(format!(
                "claim {} {} (storage class {})",
                c.name,
                c.phase,
                c.storage_class.as_deref().unwrap_or("default")
            ));
        }
        lines.push(match (self.state, self.healthy) {
            (BrokerState::Stopped, _) => {
                "the broker is stopped: every workload is scaled to 0 (broker-images start brings it back)".into()
            }
            (_, true) => "all workloads ready, images as locked".into(),
            (_, false) => "NOT healthy: see above".into(),
        });
        lines
    }
}

/// `registry/repository` of a reference, without tag or digest.
fn repository_of(image: &str) -> String {
    image
        .parse::<Reference>()
        .map_or_else(|_| image.to_owned(), |r| r.name())
}

fn human_age(seconds: i64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn exposure_of(service: &Service) -> Exposure {
    let spec = service.spec.clone().unwrap_or_default();
    let ports = spec
        .ports
        .iter()
        .flatten()
        .map(|p| match p.node_port {
            Some(node) => format!("{}/{node}", p.port),
            None => p.port.to_string(),
        })
        .collect();
    let addresses = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.clone().or_else(|| i.hostname.clone()))
        .collect();
    Exposure {
        service: service.metadata.name.clone().unwrap_or_default(),
        kind: spec.type_.unwrap_or_else(|| "ClusterIP".into()),
        ports,
        addresses,
    }
}
