//! Wait classification from recorded Deployment and Pod statuses
//! (`tests/fixtures/status/*.json`, shaped as the API server returns them).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use broker_cluster::rollout::{Failure, Readiness, classify, registry_of};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};

#[path = "support/status_fixture.rs"]
mod status_fixture;
use status_fixture::load;

fn case(deployment: &str, pods: &[&str], claims: &[&str]) -> Readiness {
    let deployment: Deployment = load(deployment);
    let pods: Vec<Pod> = pods.iter().map(|p| load(p)).collect();
    let claims: Vec<PersistentVolumeClaim> = claims.iter().map(|c| load(c)).collect();
    let replica_sets: Vec<ReplicaSet> = [
        "replicaset-restapi-revision-2.json",
        "replicaset-db-revision-2.json",
    ]
    .iter()
    .map(|r| load(r))
    .collect();
    classify(&deployment, &replica_sets, &pods, &claims)
}

fn message(readiness: Readiness) -> String {
    match readiness {
        Readiness::Failed(f) => f.to_string(),
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn rolled_out() {
    assert_eq!(
        case("deployment-ready.json", &["pod-running.json"], &[]),
        Readiness::Ready
    );
}

#[test]
fn progressing_counts_replicas() {
    assert_eq!(
        case(
            "deployment-progressing.json",
            &["pod-pending-scheduled.json"],
            &[]
        ),
        Readiness::Progressing {
            ready: 0,
            desired: 1,
            updated: 1
        }
    );
}

#[test]
fn image_pull_backoff_names_image_registry_and_pull_secret() {
    assert_eq!(
        message(case(
            "deployment-progressing.json",
            &["pod-imagepullbackoff.json"],
            &[]
        )),
        "pod restapi-7d4b9c-x2x9q cannot pull registry.internal:5000/broker/python-base@sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc from registry.internal:5000 (ImagePullBackOff: Back-off pulling image \"registry.internal:5000/broker/python-base@sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc\"); no image pull secret is set; a private registry needs one"
    );
}

#[test]
fn err_image_pull_with_a_pull_secret_says_check_it() {
    let text = message(case(
        "deployment-progressing.json",
        &["pod-errimagepull-secret.json"],
        &[],
    ));
    assert!(text.contains("(ErrImagePull: "), "{text}");
    assert!(
        text.ends_with("the pod has an image pull secret; check its credentials"),
        "{text}"
    );
}

#[test]
fn crash_loop_gives_exit_code() {
    let readiness = case("deployment-progressing.json", &["pod-crashloop.json"], &[]);
    assert_eq!(
        readiness,
        Readiness::Failed(Failure::CrashLoop {
            pod: "restapi-7d4b9c-x2x9q".into(),
            container: "restapi".into(),
            exit_code: Some(3),
            logs: vec![],
        })
    );
    let with_logs = Failure::CrashLoop {
        pod: "p".into(),
        container: "c".into(),
        exit_code: Some(3),
        logs: vec![
            "Traceback".into(),
            "ModuleNotFoundError: No module named 'Wombat'".into(),
        ],
    };
    assert_eq!(
        with_logs.to_string(),
        "pod p container c keeps crashing (exit code 3); last log lines: Traceback | ModuleNotFoundError: No module named 'Wombat'"
    );
}

#[test]
fn unschedulable_quotes_the_scheduler() {
    let readiness = case(
        "deployment-progressing.json",
        &["pod-unschedulable.json"],
        &[],
    );
    let Readiness::Failed(failure) = readiness else {
        panic!()
    };
    assert!(
        failure.may_pass(),
        "scheduling can clear up: waited for a grace period"
    );
    assert_eq!(
        failure.to_string(),
        "pod restapi-7d4b9c-x2x9q cannot be scheduled: 0/1 nodes are available: 1 Insufficient memory."
    );
}

#[test]
fn pending_claim_names_its_storage_class() {
    assert_eq!(
        message(case(
            "deployment-db-progressing.json",
            &["pod-db-unschedulable-pvc.json"],
            &["pvc-pending.json"]
        )),
        "PersistentVolumeClaim db-data is Pending (storage class fast-ssd): no volume provisioned; check the class exists and has a provisioner"
    );
}

#[test]
fn missing_config_is_reported() {
    assert_eq!(
        message(case(
            "deployment-progressing.json",
            &["pod-configerror.json"],
            &[]
        )),
        "pod restapi-7d4b9c-x2x9q cannot create its container: secret \"credentials-g6tb48ckm2\" not found"
    );
}

#[test]
fn progress_deadline_exceeded_is_final() {
    assert_eq!(
        message(case("deployment-deadline.json", &[], &[])),
        "ProgressDeadlineExceeded: ReplicaSet \"restapi-7d4b9c\" has timed out progressing."
    );
}

#[test]
fn pods_of_other_workloads_do_not_count() {
    // A crashing pod with other labels must not fail this Deployment.
    let readiness = case(
        "deployment-ready.json",
        &["pod-running.json", "pod-db-unschedulable-pvc.json"],
        &["pvc-pending.json"],
    );
    assert_eq!(readiness, Readiness::Ready);
}

#[test]
fn registries_as_a_node_resolves_them() {
    assert_eq!(registry_of("postgres:14.2"), "docker.io");
    assert_eq!(registry_of("library/postgres"), "docker.io");
    assert_eq!(registry_of("localhost/x"), "localhost");
    assert_eq!(
        registry_of("127.0.0.1:5000/broker/x@sha256:aa"),
        "127.0.0.1:5000"
    );
}

/// Issue 19 item 2: right after an apply the Deployment still carries the
/// previous rollout's conditions until the controller observes the new
/// generation; a stale ProgressDeadlineExceeded must not fail the wait.
#[test]
fn a_stale_deadline_before_the_new_generation_is_observed_is_progress() {
    let mut deployment: Deployment = load("deployment-deadline.json");
    deployment.metadata.generation = Some(3);
    let replica_sets: Vec<ReplicaSet> = vec![load("replicaset-restapi-revision-2.json")];
    assert_eq!(
        classify(&deployment, &replica_sets, &[], &[]),
        Readiness::Progressing {
            ready: 0,
            desired: 1,
            updated: 0
        }
    );
}

/// Issue 19 item 2: re-running start to fix a crash loop makes a new
/// ReplicaSet; the old one's crashing pod is not the new rollout's
/// failure.
#[test]
fn a_crashing_pod_of_the_previous_replica_set_does_not_fail_the_rollout() {
    let mut deployment: Deployment = load("deployment-progressing.json");
    deployment
        .metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert("deployment.kubernetes.io/revision".into(), "3".into());
    let mut new_rs: ReplicaSet = load("replicaset-restapi-revision-2.json");
    new_rs.metadata.name = Some("restapi-99fbd5".into());
    new_rs
        .metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert("deployment.kubernetes.io/revision".into(), "3".into());
    new_rs
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("pod-template-hash".into(), "99fbd5".into());
    let old_rs: ReplicaSet = load("replicaset-restapi-revision-2.json");
    let crashing_old: Pod = load("pod-crashloop.json");
    assert!(matches!(
        classify(
            &deployment,
            &[old_rs.clone(), new_rs.clone()],
            std::slice::from_ref(&crashing_old),
            &[]
        ),
        Readiness::Progressing { .. }
    ));
    // The same pod under the new ReplicaSet's hash is the new rollout's.
    let mut crashing_new = crashing_old;
    crashing_new
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("pod-template-hash".into(), "99fbd5".into());
    assert!(matches!(
        classify(&deployment, &[old_rs, new_rs], &[crashing_new], &[]),
        Readiness::Failed(Failure::CrashLoop { .. })
    ));
}

/// Issue 19 item 13: crash-loop log lines never show a Secret's value.
#[test]
fn log_lines_have_every_secret_value_masked() {
    let secrets = Some(vec![
        "s3cr3t-pw".to_owned(),
        "tok-123456\n".to_owned(),
        "ab".to_owned(),
    ]);
    assert_eq!(
        broker_cluster::rollout::mask(
            "connect postgres://broker:s3cr3t-pw@db/broker failed; token tok-123456 ab",
            &secrets
        ),
        "connect postgres://broker:***@db/broker failed; token *** ab"
    );
    assert!(broker_cluster::rollout::mask("s3cr3t-pw", &None).contains("hidden"));
}
