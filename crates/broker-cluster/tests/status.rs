//! The status report from recorded objects and a lock: drift, exposure,
//! claims, and the healthy flag that decides the exit status.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use broker_cluster::StatusReport;
use broker_pins::{Digest, Lock, LockedImage};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service};
use k8s_openapi::jiff::Timestamp;
use serde_json::json;

#[path = "support/status_fixture.rs"]
mod status_fixture;
use status_fixture::load;

fn lock_with(digest_hex: char) -> Lock {
    let digest: Digest = format!("sha256:{}", digest_hex.to_string().repeat(64))
        .parse()
        .unwrap();
    let mut lock = Lock::new();
    lock.images.insert(
        "python-base".into(),
        LockedImage {
            reference: format!("registry.internal:5000/broker/python-base@{digest}"),
            tag: None,
            digest,
            deps_key: "k".into(),
            base: "python:3.10".into(),
            base_digest: None,
            base_local: false,
            build_args: Default::default(),
            deps_digest: digest,
            sources: Default::default(),
        },
    );
    lock
}

fn report(lock: Option<&Lock>, claims: &[PersistentVolumeClaim]) -> StatusReport {
    let deployment: Deployment = load("deployment-ready.json");
    let pod: Pod = load("pod-running.json");
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "restapi"},
        "spec": {"type": "LoadBalancer", "selector": {"app.kubernetes.io/name": "restapi"},
                 "ports": [{"port": 5687, "nodePort": 30897}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}
    }))
    .unwrap();
    StatusReport::build(
        "broker",
        &[deployment],
        &[pod],
        &[service],
        claims,
        lock,
        "2026-11-30T10:05:00Z".parse::<Timestamp>().unwrap(),
    )
}

#[test]
fn ready_and_as_locked_is_healthy() {
    let lock = lock_with('c');
    let report = report(Some(&lock), &[]);
    assert!(report.healthy, "{:#?}", report);
    let w = &report.workloads[0];
    assert_eq!(
        (w.ready, w.desired, w.restarts, w.age_seconds),
        (1, 1, 0, Some(300))
    );
    assert_eq!(
        w.images[0].running.as_deref(),
        Some(format!("sha256:{}", "c".repeat(64)).as_str())
    );
    assert!(!w.images[0].drift);
    assert_eq!(w.exposure[0].kind, "LoadBalancer");
    assert_eq!(w.exposure[0].ports, ["5687/30897"]);
    assert_eq!(w.exposure[0].addresses, ["192.0.2.10"]);
}

#[test]
fn a_digest_other_than_the_locks_is_drift_and_unhealthy() {
    let lock = lock_with('f');
    let report = report(Some(&lock), &[]);
    assert!(!report.healthy);
    assert!(report.workloads[0].images[0].drift);
    assert!(
        report
            .lines()
            .iter()
            .any(|l| l.contains("DRIFT (lock sha256:ffffffffffff)")),
        "{:?}",
        report.lines()
    );
}

#[test]
fn an_unbound_claim_is_unhealthy() {
    let claim: PersistentVolumeClaim = load("pvc-pending.json");
    let report = report(None, &[claim]);
    assert!(!report.healthy);
    assert_eq!(report.claims[0].phase, "Pending");
    assert_eq!(report.claims[0].storage_class.as_deref(), Some("fast-ssd"));
}
