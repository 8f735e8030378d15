//! Whether a workload has rolled out, and if it cannot, why — in words a
//! person can act on. Pure functions over recorded objects; the polling
//! loop is in [`crate::cluster`].

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// The annotation the Deployment controller numbers each revision with,
/// on the Deployment and on the ReplicaSet of that revision.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// The label the Deployment controller gives a ReplicaSet and its pods.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// Where a workload stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// Every desired replica is updated and available, no old ones left.
    Ready,
    /// Still rolling out.
    Progressing {
        /// Available replicas.
        ready: i32,
        /// Desired replicas.
        desired: i32,
        /// Replicas on the newest template.
        updated: i32,
    },
    /// It will not get there by waiting.
    Failed(Failure),
}

/// Why a workload cannot become ready.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The image cannot be pulled.
    ImagePull {
        /// The pod.
        pod: String,
        /// The image reference in the pod spec.
        image: String,
        /// The registry host the node pulls from.
        registry: String,
        /// Whether the pod has an image pull secret.
        pull_secret: bool,
        /// The kubelet's reason and message.
        message: String,
    },
    /// A container keeps exiting.
    CrashLoop {
        /// The pod.
        pod: String,
        /// The container.
        container: String,
        /// Its last exit code.
        exit_code: Option<i32>,
        /// Its last log lines, filled in by the waiter.
        logs: Vec<String>,
    },
    /// The container cannot be created (a missing ConfigMap or Secret key).
    Config {
        /// The pod.
        pod: String,
        /// The kubelet's message.
        message: String,
    },
    /// No node can take the pod.
    Unschedulable {
        /// The pod.
        pod: String,
        /// The scheduler's message.
        message: String,
    },
    /// A claim the pod needs has no volume.
    PvcPending {
        /// The claim.
        claim: String,
        /// Its storage class, if any.
        storage_class: Option<String>,
    },
    /// The Deployment gave up (`progressDeadlineSeconds` passed) or its
    /// ReplicaSet cannot create pods (quota, admission).
    Stalled {
        /// The condition's reason.
        reason: String,
        /// The condition's message.
        message: String,
    },
}

impl Failure {
    /// Failures that can clear up by themselves within seconds (a volume
    /// being provisioned, a node joining): reported only when they last.
    pub fn may_pass(&self) -> bool {
        matches!(
            self,
            Failure::Unschedulable { .. } | Failure::PvcPending { .. }
        )
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::ImagePull {
                pod,
                image,
                registry,
                pull_secret,
                message,
            } => {
                let secret = if *pull_secret {
                    "the pod has an image pull secret; check its credentials"
                } else {
                    "no image pull secret is set; a private registry needs one"
                };
                write!(
                    f,
                    "pod {pod} cannot pull {image} from {registry} ({message}); {secret}"
                )
            }
            Failure::CrashLoop {
                pod,
                container,
                exit_code,
                logs,
            } => {
                let code = exit_code.map_or("unknown".to_owned(), |c| c.to_string());
                write!(
                    f,
                    "pod {pod} container {container} keeps crashing (exit code {code})"
                )?;
                if !logs.is_empty() {
                    write!(f, "; last log lines: {}", logs.join(" | "))?;
                }
                Ok(())
            }
            Failure::Config { pod, message } => {
                write!(f, "pod {pod} cannot create its container: {message}")
            }
            Failure::Unschedulable { pod, message } => {
                write!(f, "pod {pod} cannot be scheduled: {message}")
            }
            Failure::PvcPending {
                claim,
                storage_class,
            } => write!(
                f,
                "PersistentVolumeClaim {claim} is Pending (storage class {}): no volume provisioned; check the class exists and has a provisioner",
                storage_class.as_deref().unwrap_or("none, cluster default")
            ),
            Failure::Stalled { reason, message } => write!(f, "{reason}: {message}"),
        }
    }
}

/// The registry host of an image reference, as a node resolves it.
pub fn registry_of(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first.to_owned()
        }
        _ => "docker.io".to_owned(),
    }
}

/// Whether `pod` belongs to `deployment` (its selector's labels match).
pub fn selects(deployment: &Deployment, pod: &Pod) -> bool {
    matches_selector(deployment.spec.as_ref().map(|s| &s.selector), pod)
}

/// Whether `pod` has every label of `selector.matchLabels` (an empty or
/// absent selector selects nothing: never every pod of the namespace).
pub fn matches_selector(selector: Option<&LabelSelector>, pod: &Pod) -> bool {
    let Some(wanted) = selector.and_then(|s| s.match_labels.as_ref()) else {
        return false;
    };
    has_labels(wanted, pod)
}

fn has_labels(wanted: &BTreeMap<String, String>, pod: &Pod) -> bool {
    let have = pod.metadata.labels.as_ref();
    !wanted.is_empty()
        && wanted
            .iter()
            .all(|(k, v)| have.and_then(|h| h.get(k)) == Some(v))
}

/// The first final failure among `pods` that are not being deleted.
fn first_failure<'a>(
    pods: impl Iterator<Item = &'a Pod>,
    claims: &[PersistentVolumeClaim],
) -> Option<Failure> {
    pods.filter(|p| p.metadata.deletion_timestamp.is_none())
        .find_map(|p| pod_failure(p, claims))
}

/// The pods `selector` selects whose `label` is `value`: a workload's pods
/// of its current revision.
fn made_from<'a>(
    pods: &'a [Pod],
    selector: Option<&'a LabelSelector>,
    label: &'a str,
    value: &'a str,
) -> impl Iterator<Item = &'a Pod> {
    pods.iter().filter(move |p| {
        matches_selector(selector, p)
            && p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(label))
                .map(String::as_str)
                == Some(value)
    })
}

/// The label the StatefulSet and DaemonSet controllers give each pod: the
/// name of the revision it was made from.
pub const CONTROLLER_REVISION_HASH: &str = "controller-revision-hash";
/// The label the DaemonSet controller gives each pod: the generation of
/// the template it was made from.
pub const POD_TEMPLATE_GENERATION: &str = "pod-template-generation";

/// Classifies a StatefulSet as `kubectl rollout status` does: the current
/// generation observed, every replica ready and on the update revision.
/// Pods are diagnosed only when made from the update revision.
pub fn classify_stateful_set(
    set: &StatefulSet,
    pods: &[Pod],
    claims: &[PersistentVolumeClaim],
) -> Readiness {
    let desired = set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = set.status.clone().unwrap_or_default();
    if status.observed_generation.unwrap_or(0) < set.metadata.generation.unwrap_or(0) {
        return Readiness::Progressing {
            ready: 0,
            desired,
            updated: 0,
        };
    }
    let update_revision = status.update_revision.clone().unwrap_or_default();
    let selector = set.spec.as_ref().map(|s| &s.selector);
    let current = made_from(pods, selector, CONTROLLER_REVISION_HASH, &update_revision);
    if let Some(failure) = first_failure(current, claims) {
        return Readiness::Failed(failure);
    }
    let ready = status.ready_replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let on_update = status.current_revision.as_deref() == Some(update_revision.as_str());
    if ready == desired && updated == desired && on_update && status.replicas == desired {
        Readiness::Ready
    } else {
        Readiness::Progressing {
            ready,
            desired,
            updated,
        }
    }
}

/// Classifies a DaemonSet as `kubectl rollout status` does: the current
/// generation observed, every scheduled pod updated and available. Pods
/// are diagnosed only when made from the current template generation.
pub fn classify_daemon_set(
    set: &DaemonSet,
    pods: &[Pod],
    claims: &[PersistentVolumeClaim],
) -> Readiness {
    let generation = set.metadata.generation.unwrap_or(0);
    let status = set.status.clone().unwrap_or_default();
    let desired = status.desired_number_scheduled;
    if status.observed_generation.unwrap_or(0) < generation {
        return Readiness::Progressing {
            ready: 0,
            desired,
            updated: 0,
        };
    }
    let generation_label = generation.to_string();
    let selector = set.spec.as_ref().map(|s| &s.selector);
    let current = made_from(pods, selector, POD_TEMPLATE_GENERATION, &generation_label);
    if let Some(failure) = first_failure(current, claims) {
        return Readiness::Failed(failure);
    }
    let updated = status.updated_number_scheduled.unwrap_or(0);
    let available = status.number_available.unwrap_or(0);
    if updated == desired && available == desired {
        Readiness::Ready
    } else {
        Readiness::Progressing {
            ready: available,
            desired,
            updated,
        }
    }
}

/// Classifies a Job: ready once it completed; failed when the controller
/// gave up (`Failed` condition: backoff limit, deadline) or a pod of it
/// cannot run (an image that cannot be pulled, a crash loop). `ready`
/// counts succeeded pods, `desired` the completions, `updated` the active
/// pods.
pub fn classify_job(job: &Job, pods: &[Pod], claims: &[PersistentVolumeClaim]) -> Readiness {
    let status = job.status.clone().unwrap_or_default();
    for condition in status.conditions.iter().flatten() {
        if condition.status != "True" {
            continue;
        }
        match condition.type_.as_str() {
            "Complete" => return Readiness::Ready,
            "Failed" => {
                return Readiness::Failed(Failure::Stalled {
                    reason: condition
                        .reason
                        .clone()
                        .unwrap_or_else(|| "Failed".to_owned()),
                    message: condition.message.clone().unwrap_or_default(),
                });
            }
            _ => {}
        }
    }
    let own = pods
        .iter()
        .filter(|p| matches_selector(job.spec.as_ref().and_then(|s| s.selector.as_ref()), p));
    if let Some(failure) = first_failure(own, claims) {
        return Readiness::Failed(failure);
    }
    Readiness::Progressing {
        ready: status.succeeded.unwrap_or(0),
        desired: job.spec.as_ref().and_then(|s| s.completions).unwrap_or(1),
        updated: status.active.unwrap_or(0),
    }
}

/// The ReplicaSet of the Deployment's current revision, once the
/// controller has made it: owned by the Deployment and numbered with the
/// Deployment's `deployment.kubernetes.io/revision`.
pub fn new_replica_set<'a>(
    deployment: &Deployment,
    replica_sets: &'a [ReplicaSet],
) -> Option<&'a ReplicaSet> {
    let name = deployment.metadata.name.as_deref()?;
    let revision = deployment.metadata.annotations.as_ref()?.get(REVISION)?;
    replica_sets.iter().find(|rs| {
        let owned = rs
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.kind == "Deployment" && o.name == name);
        let same_revision = rs
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION))
            == Some(revision);
        owned && same_revision
    })
}

/// Whether `pod` was made from the ReplicaSet `rs` (same
/// `pod-template-hash`).
pub fn made_by(rs: &ReplicaSet, pod: &Pod) -> bool {
    let hash = |labels: Option<&std::collections::BTreeMap<String, String>>| {
        labels.and_then(|l| l.get(POD_TEMPLATE_HASH)).cloned()
    };
    let wanted = hash(rs.metadata.labels.as_ref());
    wanted.is_some() && hash(pod.metadata.labels.as_ref()) == wanted
}

/// Classifies a Deployment as `kubectl rollout status` does, from its
/// status, the namespace's ReplicaSets and pods and its claims.
///
/// Nothing in the status is read until the controller has observed the
/// current generation: before that, conditions and counts still describe
/// the previous rollout (a stale `ProgressDeadlineExceeded`, an old
/// ready count). Pods are diagnosed only when they belong to the
/// ReplicaSet of the current revision, so the crash-looping pod of the
/// rollout a re-run of `start` is replacing does not fail the new one.
pub fn classify(
    deployment: &Deployment,
    replica_sets: &[ReplicaSet],
    pods: &[Pod],
    claims: &[PersistentVolumeClaim],
) -> Readiness {
    let desired = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let generation = deployment.metadata.generation.unwrap_or(0);
    let status = deployment.status.clone().unwrap_or_default();
    let updated = status.updated_replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    if status.observed_generation.unwrap_or(0) < generation {
        return Readiness::Progressing {
            ready: 0,
            desired,
            updated: 0,
        };
    }
    for condition in status.conditions.iter().flatten() {
        let stalled = (condition.type_ == "Progressing"
            && condition.status == "False"
            && condition.reason.as_deref() == Some("ProgressDeadlineExceeded"))
            || (condition.type_ == "ReplicaFailure" && condition.status == "True");
        if stalled {
            return Readiness::Failed(Failure::Stalled {
                reason: condition
                    .reason
                    .clone()
                    .unwrap_or_else(|| condition.type_.clone()),
                message: condition.message.clone().unwrap_or_default(),
            });
        }
    }
    if let Some(rs) = new_replica_set(deployment, replica_sets) {
        let current = pods
            .iter()
            .filter(|p| selects(deployment, p) && made_by(rs, p));
        for pod in current {
            if pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            if let Some(failure) = pod_failure(pod, claims) {
                return Readiness::Failed(failure);
            }
        }
    }
    if updated == desired && available == desired && total == desired {
        Readiness::Ready
    } else {
        Readiness::Progressing {
            ready: available,
            desired,
            updated,
        }
    }
}

/// What keeps one pod from running, if anything final.
pub fn pod_failure(pod: &Pod, claims: &[PersistentVolumeClaim]) -> Option<Failure> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref()?;
    let statuses = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    for container in statuses {
        let Some(waiting) = container.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
            continue;
        };
        let reason = waiting.reason.as_deref().unwrap_or("");
        let message = waiting.message.clone().unwrap_or_default();
        match reason {
            "ImagePullBackOff" | "ErrImagePull" | "InvalidImageName" => {
                let image = spec
                    .and_then(|s| {
                        s.containers
                            .iter()
                            .chain(s.init_containers.iter().flatten())
                            .find(|c| c.name == container.name)
                            .and_then(|c| c.image.clone())
                    })
                    .unwrap_or_else(|| container.image.clone());
                return Some(Failure::ImagePull {
                    pod: name,
                    registry: registry_of(&image),
                    image,
                    pull_secret: spec
                        .and_then(|s| s.image_pull_secrets.as_ref())
                        .is_some_and(|s| !s.is_empty()),
                    message: if message.is_empty() {
                        reason.to_owned()
                    } else {
                        format!("{reason}: {message}")
                    },
                });
            }
            "CrashLoopBackOff" => {
                return Some(Failure::CrashLoop {
                    pod: name,
                    container: container.name.clone(),
                    exit_code: container
                        .last_state
                        .as_ref()
                        .and_then(|s| s.terminated.as_ref())
                        .map(|t| t.exit_code),
                    logs: Vec::new(),
                });
            }
            "CreateContainerConfigError" | "CreateContainerError" => {
                return Some(Failure::Config { pod: name, message });
            }
            _ => {}
        }
    }
    let unschedulable = status.conditions.iter().flatten().find(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
    })?;
    // A pod waiting for a claim: name the claim, not the scheduler's words.
    let wanted_claims = spec
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|v| {
            v.persistent_volume_claim
                .as_ref()
                .map(|c| c.claim_name.clone())
        });
    for claim_name in wanted_claims {
        if let Some(claim) = claims
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(claim_name.as_str()))
        {
            let phase = claim.status.as_ref().and_then(|s| s.phase.as_deref());
            if phase == Some("Pending") {
                return Some(Failure::PvcPending {
                    claim: claim_name,
                    storage_class: claim
                        .spec
                        .as_ref()
                        .and_then(|s| s.storage_class_name.clone()),
                });
            }
        }
    }
    Some(Failure::Unschedulable {
        pod: name,
        message: unschedulable.message.clone().unwrap_or_default(),
    })
}

/// A log line with every secret value replaced by `***`; `None` (the
/// values could not be read) hides the line whole. Values shorter than
/// four characters are left: masking them would blank ordinary words.
pub fn mask(line: &str, secrets: &Option<Vec<String>>) -> String {
    let Some(secrets) = secrets else {
        return "(log line hidden: the broker's Secrets could not be read to mask it)".into();
    };
    let mut values: Vec<&str> = secrets
        .iter()
        .flat_map(|v| [v.as_str(), v.trim()])
        .filter(|v| v.len() >= 4)
        .collect();
    // Longest first, so a value containing another is masked whole.
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    let mut masked = line.to_owned();
    for value in values {
        masked = masked.replace(value, "***");
    }
    masked
}
