//! Rollout classification over statuses recorded from a real API server
//! and kubelet (`tests/fixtures/recorded/`, written by
//! `scripts/record-rollout-statuses` on a real single-node cluster):
//! what the wait sees at each moment of a rollout, a crash loop, the crash
//! loop fixed by a second apply, and a deadline passed then re-applied.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use broker_cluster::rollout::{Failure, Readiness, classify, selects};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Recorded {
    deployment: Deployment,
    replica_sets: Vec<ReplicaSet>,
    pods: Vec<Pod>,
}

/// Classifies the recorded moment as the wait loop does (the pods the
/// Deployment selects, the namespace's ReplicaSets).
fn classify_recorded(name: &str) -> Readiness {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/recorded")
        .join(name);
    let recorded: Recorded = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let own: Vec<Pod> = recorded
        .pods
        .iter()
        .filter(|p| selects(&recorded.deployment, p))
        .cloned()
        .collect();
    classify(&recorded.deployment, &recorded.replica_sets, &own, &[])
}

#[test]
fn a_rollout_progresses_then_is_ready() {
    assert!(matches!(
        classify_recorded("rollout-just-applied.json"),
        Readiness::Progressing {
            ready: 0,
            desired: 1,
            ..
        }
    ));
    assert_eq!(classify_recorded("rollout-ready.json"), Readiness::Ready);
}

#[test]
fn a_crash_loop_fails_with_its_exit_code() {
    let Readiness::Failed(Failure::CrashLoop {
        container,
        exit_code,
        ..
    }) = classify_recorded("crashloop.json")
    else {
        panic!("{:?}", classify_recorded("crashloop.json"));
    };
    assert_eq!((container.as_str(), exit_code), ("crash", Some(3)));
}

/// Issue 19 item 2: the old ReplicaSet's pod is still in CrashLoopBackOff
/// while the fixed one starts: a re-run of start must not fail on it.
#[test]
fn the_crash_loop_fixed_by_a_second_apply_is_not_failed_by_the_old_pod() {
    for moment in [
        "crashloop-fixed-just-applied.json",
        "crashloop-fixed-rolling.json",
    ] {
        assert!(
            !matches!(classify_recorded(moment), Readiness::Failed(_)),
            "{moment}: {:?}",
            classify_recorded(moment)
        );
    }
    assert_eq!(
        classify_recorded("crashloop-fixed-ready.json"),
        Readiness::Ready
    );
}

/// Issue 19 item 2: a deadline passed is final; once re-applied, the old
/// ReplicaSet's ErrImagePull pod and the old condition no longer count.
#[test]
fn a_deadline_passed_is_final_and_a_reapply_starts_afresh() {
    assert!(matches!(
        classify_recorded("deadline-exceeded.json"),
        Readiness::Failed(Failure::Stalled { ref reason, .. }) if reason == "ProgressDeadlineExceeded"
    ));
    assert!(!matches!(
        classify_recorded("deadline-reapplied-just-applied.json"),
        Readiness::Failed(_)
    ));
    assert_eq!(
        classify_recorded("deadline-reapplied-ready.json"),
        Readiness::Ready
    );
}
