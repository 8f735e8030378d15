//! The status report from recorded objects and a lock: drift, exposure,
//! claims, and the healthy flag that decides the exit status.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use broker_cluster::StatusReport;
use broker_cluster::health::{BrokerState, StatusInputs};
use broker_pins::{Digest, Lock, LockedImage};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
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
            signature: None,
            provenance: None,
            sbom: None,
            platforms: Default::default(),
            platform: None,
        },
    );
    lock
}

fn report(lock: Option<&Lock>, claims: &[PersistentVolumeClaim]) -> StatusReport {
    report_of(load("deployment-ready.json"), lock, claims, &[])
}

fn report_of(
    deployment: Deployment,
    lock: Option<&Lock>,
    claims: &[PersistentVolumeClaim],
    expected: &[String],
) -> StatusReport {
    let pod: Pod = load("pod-running.json");
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "restapi"},
        "spec": {"type": "LoadBalancer", "selector": {"app.kubernetes.io/name": "restapi"},
                 "ports": [{"port": 5687, "nodePort": 30897}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}
    }))
    .unwrap();
    let replica_sets: Vec<ReplicaSet> = vec![load("replicaset-restapi-revision-2.json")];
    let inputs = StatusInputs {
        has_parent: true,
        expected_workloads: expected,
        deployments: &[deployment],
        replica_sets: &replica_sets,
        pods: &[pod],
        services: &[service],
        claims,
        ..StatusInputs::default()
    };
    StatusReport::build(
        "broker",
        inputs,
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
            .any(|l| l.contains("DRIFT (lock sha256:ffffffffffff; should be registry.internal:5000/broker/python-base@sha256:ffff")),
        "{:?}",
        report.lines()
    );
}

#[test]
fn a_pod_running_a_platform_manifest_of_the_locked_index_is_not_drift() {
    // Issue 26: the lock pins the index (f…); the node's runtime reports the
    // linux/arm64 manifest it picked from it (c…).
    let mut lock = lock_with('f');
    let image = lock.images.get_mut("python-base").unwrap();
    for (platform, hex) in [("linux/amd64", 'a'), ("linux/arm64", 'c')] {
        let digest: Digest = format!("sha256:{}", hex.to_string().repeat(64))
            .parse()
            .unwrap();
        image.platforms.insert(
            platform.parse().unwrap(),
            broker_pins::LockedPlatform {
                digest,
                deps_key: "k".into(),
                deps_digest: digest,
                base_digest: None,
                sbom: None,
            },
        );
    }
    let report = report(Some(&lock), &[]);
    assert!(!report.workloads[0].images[0].drift, "{report:#?}");
    assert!(report.healthy, "{report:#?}");

    // A manifest of no platform of it is still drift.
    lock.images
        .get_mut("python-base")
        .unwrap()
        .platforms
        .clear();
    assert!(report_of_lock(&lock).workloads[0].images[0].drift);
}

fn report_of_lock(lock: &Lock) -> StatusReport {
    report(Some(lock), &[])
}

#[test]
fn an_unbound_claim_is_unhealthy() {
    let claim: PersistentVolumeClaim = load("pvc-pending.json");
    let report = report(None, &[claim]);
    assert!(!report.healthy);
    assert_eq!(report.claims[0].phase, "Pending");
    assert_eq!(report.claims[0].storage_class.as_deref(), Some("fast-ssd"));
}

/// Issue 19 item 6: an environment's `registry:` makes nodes pull the
/// same digests from another host; that is not drift.
#[test]
fn a_relocated_registry_host_is_not_drift() {
    let mut lock = lock_with('c');
    let image = lock.images.get_mut("python-base").unwrap();
    image.reference = image
        .reference
        .replace("registry.internal:5000", "127.0.0.1:5000");
    let report = report(Some(&lock), &[]);
    assert!(!report.workloads[0].images[0].drift, "{:#?}", report);
    assert!(report.healthy);
}

/// A workload running a tag: the report names the digest it should be.
#[test]
fn a_tag_reference_names_the_locked_digest_it_should_be() {
    let lock = lock_with('f');
    let mut deployment: Deployment = load("deployment-ready.json");
    deployment
        .spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap()
        .containers[0]
        .image = Some("registry.internal:5000/broker/python-base:latest".into());
    let report = report_of(deployment, Some(&lock), &[], &[]);
    let image = &report.workloads[0].images[0];
    assert_eq!(
        image.locked.as_deref(),
        Some(format!("sha256:{}", "f".repeat(64)).as_str())
    );
    assert!(image.drift);
    let text = report.lines().join("\n");
    assert!(
        text.contains(&format!(
            "should be registry.internal:5000/broker/python-base@sha256:{}",
            "f".repeat(64)
        )),
        "{text}"
    );
}

#[test]
fn a_stopped_broker_says_so_and_is_not_healthy() {
    let mut deployment: Deployment = load("deployment-ready.json");
    deployment.spec.as_mut().unwrap().replicas = Some(0);
    let report = report_of(deployment, None, &[], &[]);
    assert_eq!(report.state, BrokerState::Stopped);
    assert!(!report.healthy);
    assert_eq!(
        report.lines().last().unwrap(),
        "the broker is stopped: every workload is scaled to 0 (broker-images start brings it back)"
    );
}

#[test]
fn a_namespace_without_a_broker_says_so() {
    let inputs = StatusInputs {
        has_parent: false,
        expected_workloads: &[],
        deployments: &[],
        replica_sets: &[],
        pods: &[],
        services: &[],
        claims: &[],
        ..StatusInputs::default()
    };
    let report = StatusReport::build("broker", inputs, None, Timestamp::now());
    assert_eq!(report.state, BrokerState::Absent);
    assert!(!report.healthy);
    assert_eq!(
        report.lines(),
        [
            "no broker in namespace broker: nothing broker-images started is there (broker-images start deploys it)"
        ]
    );
}

/// A start that timed out on db left ten workloads unapplied: status
/// lists them, and is not healthy.
#[test]
fn workloads_of_the_set_the_cluster_lacks_are_listed_as_missing() {
    let expected: Vec<String> = ["db", "restapi", "website"].map(String::from).to_vec();
    let report = report_of(load("deployment-ready.json"), None, &[], &expected);
    assert_eq!(report.missing, ["db", "website"]);
    assert!(!report.healthy);
    let text = report.lines().join("\n");
    assert!(
        text.contains("db             missing: the last start meant to run it"),
        "{text}"
    );
}
