//! Any kind through API discovery, and the workload kinds start waits on
//! besides Deployments. The rollout classifications read what a real API
//! server and kubelet reported (tests/fixtures/recorded/workloads, made by
//! scripts/record-workload-statuses); the discovery runs go to the
//! scripted endpoint (tests/support), which answers with the discovery
//! documents recorded from the same server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;

use broker_cluster::plan::prepare;
use broker_cluster::rollout::{
    Failure, Readiness, classify_daemon_set, classify_job, classify_stateful_set,
};
use broker_cluster::{ApplySet, Kind, ObjectKey, Quiet, RenderedSet, StopOptions, StopStep};
use k8s_openapi::api::core::v1::Pod;
use kube::api::DynamicObject;
use serde_json::{Value, json};
use support::{fixture_dir, recorded, run, serve};

/// A recorded workload and the namespace's pods at that moment.
fn workload<K: serde::de::DeserializeOwned>(name: &str) -> (K, Vec<Pod>) {
    let file = recorded(&format!("workloads/{name}"));
    (
        serde_json::from_value(file["object"].clone()).unwrap(),
        serde_json::from_value(file["pods"].clone()).unwrap(),
    )
}

#[test]
fn a_stateful_set_is_ready_once_every_replica_is_ready_on_the_update_revision() {
    let (set, pods) = workload("statefulset-just-applied.json");
    assert!(matches!(
        classify_stateful_set(&set, &pods, &[]),
        Readiness::Progressing { ready: 0, .. }
    ));
    let (set, pods) = workload("statefulset-ready.json");
    assert_eq!(classify_stateful_set(&set, &pods, &[]), Readiness::Ready);
}

#[test]
fn a_daemon_set_is_ready_once_every_scheduled_pod_is_updated_and_available() {
    let (set, pods) = workload("daemonset-just-applied.json");
    assert!(matches!(
        classify_daemon_set(&set, &pods, &[]),
        Readiness::Progressing { ready: 0, .. }
    ));
    let (set, pods) = workload("daemonset-ready.json");
    assert_eq!(classify_daemon_set(&set, &pods, &[]), Readiness::Ready);
}

#[test]
fn a_job_is_waited_on_until_it_completes_and_its_failures_are_final() {
    let (job, pods) = workload("job-running.json");
    assert_eq!(
        classify_job(&job, &pods, &[]),
        Readiness::Progressing {
            ready: 0,
            desired: 1,
            updated: 1
        }
    );
    let (job, pods) = workload("job-complete.json");
    assert_eq!(classify_job(&job, &pods, &[]), Readiness::Ready);

    let (job, pods) = workload("job-failed.json");
    let Readiness::Failed(Failure::Stalled { reason, message }) = classify_job(&job, &pods, &[])
    else {
        panic!("a Job past its backoff limit is not final");
    };
    assert_eq!(reason, "BackoffLimitExceeded", "{message}");

    let (job, pods) = workload("job-image-pull.json");
    let Readiness::Failed(Failure::ImagePull { image, .. }) = classify_job(&job, &pods, &[]) else {
        panic!("a Job whose image cannot be pulled is not final");
    };
    assert!(image.ends_with(":no-such-tag"), "{image}");
}

/// The example's rendered directory plus `extra` files, copied.
fn rendered_with(extra: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture_dir()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    for (name, text) in extra {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

const SERVICE_MONITOR: &str = "apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: restapi
  labels:
    app.kubernetes.io/managed-by: broker-images
    app.kubernetes.io/part-of: broker
spec:
  selector:
    matchLabels:
      app.kubernetes.io/name: restapi
  endpoints:
    - port: http
";

const MONITORS: &str = "/apis/monitoring.coreos.com/v1";

#[tokio::test]
async fn a_crd_kind_is_resolved_by_discovery_applied_named_on_the_parent_then_pruned() {
    let server = serve(None).await;
    server.put_at(
        MONITORS,
        recorded("workloads/discovery-monitoring.coreos.com-v1.json"),
    );
    server.put_at("/apis", recorded("workloads/discovery-apis.json"));
    let dir = rendered_with(&[("servicemonitor-restapi.yaml", SERVICE_MONITOR)]);
    let set = RenderedSet::read_dir(dir.path(), "broker").unwrap();
    assert_eq!(set.unresolved.len(), 1, "a CRD kind waits for discovery");

    let cluster = server.cluster("broker");
    cluster.start(&set, run(), &Quiet).await.unwrap();
    let requests = server.requests();
    let asked = requests
        .iter()
        .filter(|r| r.method == "GET" && r.path == MONITORS)
        .count();
    assert_eq!(
        asked, 1,
        "discovery is asked once per run (start plans twice: before and under the Lease)"
    );
    let monitor = format!("{MONITORS}/namespaces/broker/servicemonitors/restapi");
    assert!(
        requests
            .iter()
            .any(|r| r.method == "PATCH" && r.path == monitor && !r.query.contains("dryRun")),
        "the ServiceMonitor is applied at the path discovery gave"
    );
    let parent: Value =
        server.state.lock().unwrap().objects["/api/v1/namespaces/broker/secrets/broker"].clone();
    let kinds = parent["metadata"]["annotations"]["applyset.kubernetes.io/contains-group-kinds"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        kinds
            .split(',')
            .any(|k| k == "ServiceMonitor.monitoring.coreos.com"),
        "{kinds}"
    );
    let member = server.state.lock().unwrap().objects[&monitor].clone();
    assert!(
        member["metadata"]["labels"]["applyset.kubernetes.io/part-of"].is_string(),
        "{member}"
    );

    // A later run without the ServiceMonitor finds it through the parent's
    // group-kind (discovery by group) and prunes it.
    server.clear();
    let without = RenderedSet::read_dir(&fixture_dir(), "broker").unwrap();
    let outcome = server
        .cluster("broker")
        .start(&without, run(), &Quiet)
        .await
        .unwrap();
    assert!(
        outcome
            .pruned
            .contains(&"ServiceMonitor/restapi".to_owned()),
        "{outcome:?}"
    );
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.method == "DELETE" && r.path == monitor)
    );
}

#[tokio::test]
async fn a_kind_the_cluster_does_not_serve_is_one_line_naming_it_and_its_file_and_nothing_is_written()
 {
    // What a real API server answers for a group-version it does not
    // serve: 404 with a plain-text body, not a Status.
    let recorded_404 = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/recorded/workloads/discovery-unknown-group-version.txt"),
    )
    .unwrap();
    let server = serve(Some(std::sync::Arc::new(move |r: &support::Recorded| {
        (r.path == MONITORS).then(|| (404, Value::String(recorded_404.clone())))
    })))
    .await;
    let dir = rendered_with(&[("servicemonitor-restapi.yaml", SERVICE_MONITOR)]);
    let set = RenderedSet::read_dir(dir.path(), "broker").unwrap();
    let error = server
        .cluster("broker")
        .start(&set, run(), &Quiet)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("ServiceMonitor/restapi")
            && error.contains("servicemonitor-restapi.yaml")
            && error.contains("serves no kind ServiceMonitor in monitoring.coreos.com/v1")
            && error.contains("CustomResourceDefinition"),
        "{error}"
    );
    assert!(!error.contains('\n'), "{error}");
    let writes: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.is_write())
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
}

#[tokio::test]
async fn a_parent_naming_a_kind_nobody_serves_any_more_is_refused_not_orphaned() {
    let server = serve(None).await;
    server.put_at("/apis", recorded("workloads/discovery-apis.json"));
    let set = RenderedSet::read_dir(&fixture_dir(), "broker").unwrap();
    server
        .cluster("broker")
        .start(&set, run(), &Quiet)
        .await
        .unwrap();
    {
        let mut state = server.state.lock().unwrap();
        let parent = state
            .objects
            .get_mut("/api/v1/namespaces/broker/secrets/broker")
            .unwrap();
        let annotation =
            &mut parent["metadata"]["annotations"]["applyset.kubernetes.io/contains-group-kinds"];
        *annotation = json!(format!(
            "{},Widget.example.com",
            annotation.as_str().unwrap()
        ));
    }
    let error = server
        .cluster("broker")
        .start(&set, run(), &Quiet)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("Widget.example.com") && error.contains("API discovery"),
        "{error}"
    );
}

fn live(objects: Vec<Value>) -> BTreeMap<ObjectKey, DynamicObject> {
    let set = RenderedSet::from_values("broker", objects).unwrap();
    let prepared = prepare(&set, &ApplySet::new("broker"));
    prepared.objects.into_iter().collect()
}

fn ours(api_version: &str, kind: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": api_version, "kind": kind,
        "metadata": {"name": name, "labels": {
            "app.kubernetes.io/managed-by": "broker-images",
            "app.kubernetes.io/part-of": "broker"}},
        "spec": spec})
}

#[test]
fn stop_suspends_cron_jobs_first_then_suspends_jobs_and_scales_the_rest_down() {
    let selector = json!({"selector": {"matchLabels": {"app": "x"}}});
    let objects = live(vec![
        ours("apps/v1", "Deployment", "restapi", selector.clone()),
        ours("apps/v1", "DaemonSet", "agent", selector.clone()),
        ours("batch/v1", "Job", "migrate", json!({})),
        ours(
            "batch/v1",
            "CronJob",
            "nightly-dump",
            json!({"schedule": "0 3 * * *"}),
        ),
    ]);
    let steps = broker_cluster::stop_plan(&objects, StopOptions::default());
    let lines: Vec<String> = steps.iter().map(ToString::to_string).collect();
    assert_eq!(
        steps.first(),
        Some(&StopStep::Suspend(ObjectKey {
            kind: Kind::CronJob,
            namespace: Some("broker".into()),
            name: "nightly-dump".into()
        })),
        "{lines:#?}"
    );
    for expected in [
        "suspend CronJob/nightly-dump",
        "suspend Job/migrate",
        "scale   DaemonSet/agent to 0",
        "scale   Deployment/restapi to 0",
    ] {
        assert!(
            lines.iter().any(|l| l == expected),
            "{expected}: {lines:#?}"
        );
    }
}

#[test]
fn status_shows_stateful_sets_daemon_sets_and_jobs_from_what_a_real_server_reported() {
    use broker_cluster::StatusReport;
    use broker_cluster::health::StatusInputs;
    let (store, mut pods): (k8s_openapi::api::apps::v1::StatefulSet, Vec<Pod>) =
        workload("statefulset-ready.json");
    let (agent, agent_pods): (k8s_openapi::api::apps::v1::DaemonSet, Vec<Pod>) =
        workload("daemonset-ready.json");
    let (migrate, job_pods): (k8s_openapi::api::batch::v1::Job, Vec<Pod>) =
        workload("job-complete.json");
    pods.extend(agent_pods);
    pods.extend(job_pods);
    let expected = ["store".to_owned(), "agent".to_owned(), "migrate".to_owned()];
    let inputs = StatusInputs {
        has_parent: true,
        expected_workloads: &expected,
        stateful_sets: &[store],
        daemon_sets: &[agent],
        jobs: &[migrate],
        pods: &pods,
        ..StatusInputs::default()
    };
    let report = StatusReport::build("broker", inputs, None, k8s_openapi::jiff::Timestamp::now());
    let names: Vec<&str> = report.workloads.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["store", "agent", "migrate"]);
    assert!(report.missing.is_empty(), "{:?}", report.missing);
    assert!(
        report.workloads.iter().all(|w| w.is_ready && w.ready == 1),
        "{:#?}",
        report.workloads
    );
    assert!(report.healthy);
}
