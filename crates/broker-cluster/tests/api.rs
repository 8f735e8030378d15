//! Request shapes against a scripted HTTP endpoint (see `support`): what
//! the crate sends for server-side apply, dry runs, conflicts, missing
//! permissions, an unreachable server and bad input. No Kubernetes API
//! server is involved; the e2e workflow covers a real one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use broker_cluster::{ClusterError, ConnectOptions, Quiet, StartRun, StopOptions};
use serde_json::json;
use support::{Recorded, fixture, forbidden, run, serve, url_params};

#[tokio::test]
async fn first_start_applies_server_side_in_dependency_order() {
    let server = serve(None).await;
    let cluster = server.cluster("broker");
    let outcome = cluster.start(&fixture(), run(), &Quiet).await.unwrap();
    assert!(outcome.wrote);
    let patches: Vec<Recorded> = server
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH" && !r.query.contains("dryRun"))
        .collect();
    for patch in &patches {
        assert_eq!(
            patch.content_type, "application/apply-patch+yaml",
            "{patch:?}"
        );
        let params = url_params(&patch.query);
        assert_eq!(
            params.get("fieldManager").map(String::as_str),
            Some("broker-images"),
            "{patch:?}"
        );
        assert!(!params.contains_key("force"), "{patch:?}");
        assert!(!params.contains_key("dryRun"), "{patch:?}");
        let body: serde_json::Value = serde_json::from_str(&patch.body).unwrap();
        assert!(
            body["apiVersion"].is_string() && body["kind"].is_string(),
            "{body}"
        );
    }
    let order: Vec<String> = patches
        .iter()
        .map(|p| {
            p.path
                .rsplit('/')
                .take(2)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("/")
        })
        .collect();
    let position = |needle: &str| {
        order
            .iter()
            .position(|o| o == needle)
            .unwrap_or_else(|| panic!("{needle} not in {order:?}"))
    };
    assert_eq!(position("namespaces/broker"), 0, "{order:?}");
    assert!(position("secrets/broker") < position("configmaps/env-configmap-7f9k2m8b6c"));
    assert!(position("persistentvolumeclaims/db-data") < position("deployments/db"));
    assert!(position("services/mq") < position("deployments/mq"));
    assert!(position("deployments/mq") < position("deployments/restapi"));
    // db and mq waited for before the rest is applied: lists in between.
    let all: Vec<Recorded> = server
        .requests()
        .into_iter()
        .filter(|r| !r.query.contains("dryRun"))
        .collect();
    let db_patch = all
        .iter()
        .position(|r| r.method == "PATCH" && r.path.ends_with("deployments/mq"))
        .unwrap();
    let rest_patch = all
        .iter()
        .position(|r| r.method == "PATCH" && r.path.ends_with("deployments/restapi"))
        .unwrap();
    assert!(
        all[db_patch..rest_patch]
            .iter()
            .any(|r| r.method == "GET" && r.path.ends_with("/deployments")),
        "no wait between db/mq and the rest"
    );
    // Members carry the ApplySet label; the parent its id and kinds.
    let parent = all
        .iter()
        .find(|r| r.method == "PATCH" && r.path.ends_with("secrets/broker"))
        .unwrap();
    let parent: serde_json::Value = serde_json::from_str(&parent.body).unwrap();
    let id = cluster.applyset().id.clone();
    assert_eq!(
        parent["metadata"]["labels"]["applyset.kubernetes.io/id"],
        json!(id)
    );
    assert_eq!(
        parent["metadata"]["annotations"]["applyset.kubernetes.io/contains-group-kinds"],
        json!("ConfigMap,Deployment.apps,Namespace,PersistentVolumeClaim,Secret,Service")
    );
    assert!(
        parent["metadata"]["annotations"]["applyset.kubernetes.io/tooling"]
            .as_str()
            .unwrap()
            .starts_with("broker-images/v")
    );
    for patch in patches.iter().filter(|p| {
        !p.path.ends_with("secrets/broker") && !p.path.contains("broker-images-revision-")
    }) {
        let body: serde_json::Value = serde_json::from_str(&patch.body).unwrap();
        assert_eq!(
            body["metadata"]["labels"]["applyset.kubernetes.io/part-of"],
            json!(id),
            "{}",
            patch.path
        );
    }
}

#[tokio::test]
async fn second_start_writes_nothing_and_status_lists_a_handful() {
    let server = serve(None).await;
    let cluster = server.cluster("broker");
    cluster.start(&fixture(), run(), &Quiet).await.unwrap();
    server.clear();
    let outcome = cluster.start(&fixture(), run(), &Quiet).await.unwrap();
    let requests = server.requests();
    assert!(!outcome.wrote, "{outcome:?}");
    assert!(outcome.applied.is_empty(), "{outcome:?}");
    let writes: Vec<&Recorded> = requests.iter().filter(|r| r.is_write()).collect();
    assert!(writes.is_empty(), "a no-change start wrote: {writes:?}");
    // Namespace, parent, one list per member kind (5 namespaced kinds),
    // and the revisions' list (the newest holds these objects already).
    assert_eq!(requests.len(), 8, "{requests:#?}");
    println!(
        "no-change start: {} requests, {} writes",
        requests.len(),
        writes.len()
    );

    server.clear();
    let report = cluster.status(None).await.unwrap();
    let requests = server.requests();
    assert_eq!(report.workloads.len(), 5);
    assert!(requests.iter().all(|r| r.method == "GET"));
    // Namespace, parent (which workloads the set should have), and one
    // list each of Deployments, ReplicaSets, Pods, Services and claims.
    assert_eq!(requests.len(), 7, "{requests:#?}");
    println!("status: {} requests", requests.len());
}

#[tokio::test]
async fn dry_run_asks_the_server_with_dry_run_all_and_writes_nothing() {
    let server = serve(None).await;
    let cluster = server.cluster("broker");
    // The namespace exists (so the server can dry-run namespaced objects).
    server.put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "broker"}, "status": {"phase": "Active"}}));
    let outcome = cluster
        .start(
            &fixture(),
            StartRun {
                dry_run: true,
                force_conflicts: true,
                ..run()
            },
            &Quiet,
        )
        .await
        .unwrap();
    let patches: Vec<Recorded> = server
        .requests()
        .into_iter()
        .filter(|r| r.is_write())
        .collect();
    assert!(!patches.is_empty());
    for patch in &patches {
        let params = url_params(&patch.query);
        assert_eq!(patch.method, "PATCH");
        assert_eq!(
            params.get("dryRun").map(String::as_str),
            Some("All"),
            "{patch:?}"
        );
        assert_eq!(
            params.get("force").map(String::as_str),
            Some("true"),
            "{patch:?}"
        );
    }
    let secret = &outcome.diffs["Secret/credentials-g6tb48ckm2"];
    let text = secret.join("\n");
    assert!(
        text.contains("+ data.POSTGRES_PASSWORD: (secret value)"),
        "{text}"
    );
    assert!(
        !text.contains("Q0hBTkdFTUU"),
        "a Secret value leaked: {text}"
    );
    // Nothing was stored.
    assert_eq!(server.state.lock().unwrap().objects.len(), 1);
}

#[tokio::test]
async fn a_conflict_is_one_line_naming_manager_and_field() {
    let conflict: support::Override = Arc::new(|r: &Recorded| {
        (r.method == "PATCH" && r.path.ends_with("deployments/db")).then(|| {
            (409, json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "Apply failed with 1 conflict: conflict with \"kubectl-edit\" using apps/v1: .spec.replicas",
                "reason": "Conflict",
                "details": {"name": "db", "group": "apps", "kind": "deployments", "causes": [
                    {"reason": "FieldManagerConflict", "message": "conflict with \"kubectl-edit\" using apps/v1", "field": ".spec.replicas"}]},
                "code": 409}))
        })
    });
    let server = serve(Some(conflict)).await;
    let error = server
        .cluster("broker")
        .start(&fixture(), run(), &Quiet)
        .await
        .unwrap_err();
    assert!(matches!(error, ClusterError::Conflict { .. }), "{error:?}");
    let text = error.to_string();
    assert_eq!(
        text,
        "Deployment/db: field .spec.replicas is owned by field manager kubectl-edit; rerun with --force-conflicts to take it over"
    );
    assert!(!text.contains('\n'));
}

#[tokio::test]
async fn forbidden_names_verb_and_resource() {
    let deny: support::Override = Arc::new(|r: &Recorded| {
        (r.method == "GET" && r.path.ends_with("/deployments"))
            .then(|| (403, forbidden("list", "deployments", "apps")))
    });
    let server = serve(Some(deny)).await;
    server.put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "broker"}, "status": {"phase": "Active"}}));
    let error = server.cluster("broker").status(None).await.unwrap_err();
    let text = error.to_string();
    assert!(
        text.starts_with("forbidden: cannot list deployments.apps in namespace broker;"),
        "{text}"
    );
}

#[tokio::test]
async fn a_terminating_namespace_is_refused_before_any_write() {
    let server = serve(None).await;
    server.put(json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "broker", "deletionTimestamp": "2026-01-01T00:00:00Z"},
        "status": {"phase": "Terminating"}}));
    let error = server
        .cluster("broker")
        .start(&fixture(), run(), &Quiet)
        .await
        .unwrap_err();
    assert!(
        matches!(error, ClusterError::NamespaceTerminating(_)),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("namespace broker is terminating")
    );
    assert!(server.requests().iter().all(|r| !r.is_write()));
}

#[tokio::test]
async fn an_unreachable_server_is_reported_within_ten_seconds() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("config");
    std::fs::write(
        &kubeconfig,
        kubeconfig_text(&format!("http://127.0.0.1:{port}"), "test"),
    )
    .unwrap();
    let mut options = ConnectOptions::new("broker");
    options.kubeconfig = Some(kubeconfig);
    let started = Instant::now();
    let cluster = broker_cluster::Cluster::connect(&options).await.unwrap();
    let error = cluster.status(None).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(error, ClusterError::Unreachable { .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains(&format!("127.0.0.1:{port}")),
        "{error}"
    );
}

#[tokio::test]
async fn a_missing_context_names_the_ones_there_are() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("config");
    std::fs::write(
        &kubeconfig,
        kubeconfig_text("http://127.0.0.1:1", "kind-broker"),
    )
    .unwrap();
    let mut options = ConnectOptions::new("broker");
    options.kubeconfig = Some(kubeconfig);
    options.context = Some("prod".into());
    let error = broker_cluster::Cluster::connect(&options)
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "kubeconfig: context prod is not in the kubeconfig (have: kind-broker); pass --context with one of them"
    );
}

#[tokio::test]
async fn stop_scales_with_its_own_manager_and_start_takes_the_count_back() {
    let server = serve(None).await;
    let cluster = server.cluster("broker");
    cluster.start(&fixture(), run(), &Quiet).await.unwrap();
    server.clear();
    let steps = cluster
        .stop(
            StopOptions::default(),
            false,
            Duration::from_secs(5),
            &Quiet,
        )
        .await
        .unwrap();
    assert_eq!(
        steps
            .iter()
            .filter(|s| matches!(s, broker_cluster::StopStep::Scale(_)))
            .count(),
        5
    );
    let (lease, writes): (Vec<Recorded>, Vec<Recorded>) = server
        .requests()
        .into_iter()
        .filter(|r| r.is_write())
        .partition(|r| r.path.contains("/leases"));
    assert_eq!(writes.len(), 5, "{writes:#?}");
    // Taken before the first scale, released after: one run at a time.
    let methods: Vec<&str> = lease.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(methods, ["POST", "DELETE"], "{lease:#?}");
    for w in &writes {
        assert!(w.path.contains("/deployments/"), "stop touched {}", w.path);
        let params = url_params(&w.query);
        assert_eq!(
            params.get("fieldManager").map(String::as_str),
            Some("broker-images-stop")
        );
        assert_eq!(params.get("force").map(String::as_str), Some("true"));
        let body: serde_json::Value = serde_json::from_str(&w.body).unwrap();
        assert_eq!(body["spec"], json!({"replicas": 0}));
    }
    // --delete-data without confirmation: refused before any request.
    server.clear();
    let refused = cluster
        .stop(
            StopOptions {
                remove: false,
                delete_data: true,
            },
            false,
            Duration::from_secs(5),
            &Quiet,
        )
        .await
        .unwrap_err();
    assert!(matches!(refused, ClusterError::Refused(_)));
    assert!(server.requests().is_empty());
    // The next start releases stop's ownership, then applies.
    server.clear();
    let outcome = cluster.start(&fixture(), run(), &Quiet).await.unwrap();
    assert_eq!(outcome.applied.len(), 5, "{outcome:?}");
    let releases = server
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH" && r.query.contains("broker-images-stop"))
        .count();
    assert_eq!(releases, 5);
}

fn kubeconfig_text(server: &str, context: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\ncontexts:\n- name: {context}\n  context:\n    cluster: c\n    user: u\ncurrent-context: {context}\nusers:\n- name: u\n  user:\n    token: t\n"
    )
}

#[tokio::test]
async fn credentials_limited_to_the_namespace_leave_the_namespace_alone() {
    let deny: support::Override = Arc::new(|r: &Recorded| {
        r.path
            .starts_with("/api/v1/namespaces/broker")
            .then_some(())
            .filter(|_| r.path == "/api/v1/namespaces/broker")
            .map(|_| (403, forbidden("get", "namespaces", "")))
    });
    let server = serve(Some(deny)).await;
    let outcome = server
        .cluster("broker")
        .start(&fixture(), run(), &Quiet)
        .await
        .unwrap();
    assert!(
        !outcome.applied.iter().any(|a| a.starts_with("Namespace/")),
        "{outcome:?}"
    );
    assert_eq!(outcome.applied.len(), 13);
}

/// Answers the pods list with `pods`; everything else from the store.
fn stuck(pods: serde_json::Value) -> support::Override {
    Arc::new(move |r: &Recorded| {
        if r.method != "GET" {
            return None;
        }
        if r.path.ends_with("/pods") {
            return Some((
                200,
                json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": pods.clone()}),
            ));
        }
        None
    })
}

#[tokio::test]
async fn a_crash_loop_fails_fast_with_exit_code_and_last_log_lines() {
    let pod = json!({"metadata": {"name": "db-1", "labels": {"app.kubernetes.io/name": "db", "pod-template-hash": "7d4b9c"}},
        "spec": {"containers": [{"name": "db", "image": "x"}]},
        "status": {"phase": "Running", "containerStatuses": [{"name": "db", "image": "x", "imageID": "",
            "ready": false, "restartCount": 5,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 1}}}]}});
    let base = stuck(json!([pod]));
    let logs: support::Override = Arc::new(move |r: &Recorded| {
        if r.method == "GET" && r.path.ends_with("/pods/db-1/log") {
            return Some((
                200,
                json!("line one\nFATAL: data directory has wrong ownership"),
            ));
        }
        base(r)
    });
    let server = serve(Some(logs)).await;
    let started = Instant::now();
    let error = server
        .cluster("broker")
        .start(&fixture(), run(), &Quiet)
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "not fast: {:?}",
        started.elapsed()
    );
    let text = error.to_string();
    assert!(
        text.starts_with(
            "Deployment/db: pod db-1 container db keeps crashing (exit code 1); last log lines: "
        ),
        "{text}"
    );
    assert!(
        text.contains("FATAL: data directory has wrong ownership"),
        "{text}"
    );
    let log_request = server
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/log"))
        .unwrap();
    let params = url_params(&log_request.query);
    assert_eq!(params.get("container").map(String::as_str), Some("db"));
    assert_eq!(params.get("previous").map(String::as_str), Some("true"));
    assert_eq!(params.get("tailLines").map(String::as_str), Some("5"));
}

#[tokio::test]
async fn not_ready_within_the_timeout_is_an_error_naming_the_laggards() {
    let never_ready: support::Override = Arc::new(|r: &Recorded| {
        (r.method == "GET" && r.path.ends_with("/deployments")).then(|| {
            (200, json!({"kind": "DeploymentList", "apiVersion": "apps/v1", "metadata": {}, "items": [
                {"metadata": {"name": "db", "generation": 1},
                 "spec": {"replicas": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": "db"}},
                          "template": {"metadata": {}, "spec": {"containers": []}}},
                 "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1}}]}))
        })
    });
    let server = serve(Some(never_ready)).await;
    let error = server
        .cluster("broker")
        .start(
            &fixture(),
            StartRun {
                timeout: Duration::from_secs(3),
                ..run()
            },
            &Quiet,
        )
        .await
        .unwrap_err();
    assert!(matches!(error, ClusterError::NotReady(_)), "{error:?}");
    assert_eq!(
        error.to_string(),
        "timed out (--timeout) with workloads not ready: db 0/1 ready, 1 updated; mq (not created yet)"
    );
}

#[tokio::test]
async fn manifests_without_a_namespace_into_a_missing_one_are_refused() {
    let server = serve(None).await;
    let mut rendered = fixture();
    rendered
        .objects
        .retain(|k, _| k.kind != broker_cluster::Kind::Namespace);
    let error = server
        .cluster("broker")
        .start(&rendered, run(), &Quiet)
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("Namespace/broker: does not exist"),
        "{error}"
    );
    assert!(server.requests().iter().all(|r| !r.is_write()));
}

fn lease(holder: &str, renewed_secs_ago: i64) -> serde_json::Value {
    let renewed = k8s_openapi::jiff::Timestamp::now()
        - k8s_openapi::jiff::SignedDuration::from_secs(renewed_secs_ago);
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "broker-images", "namespace": "broker", "resourceVersion": "1"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
            "renewTime": renewed.to_string(), "acquireTime": renewed.to_string()}})
}

/// Issue 19 item 11: two starts with different inputs no longer
/// interleave; the second waits a bounded time, then fails in one line
/// naming the holder, having written nothing.
#[tokio::test]
async fn a_second_run_fails_in_one_line_naming_the_holder_and_writes_nothing() {
    let server = serve(None).await;
    server.put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "broker"}, "status": {"phase": "Active"}}));
    // Renewed by its holder all along (the scripted server does not age it).
    server.put(lease("broker-images start on ci-7 (pid 4242)", 0));
    let cluster = server
        .cluster("broker")
        .with_lease_wait(Duration::from_secs(2));
    let started = Instant::now();
    let error = cluster.start(&fixture(), run(), &Quiet).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(matches!(error, ClusterError::Busy(_)), "{error:?}");
    let text = error.to_string();
    assert!(
        text.starts_with("namespace broker is being changed by broker-images start on ci-7 (pid 4242) (Lease broker-images, last renewed "),
        "{text}"
    );
    assert!(!text.contains('\n'));
    let writes: Vec<Recorded> = server
        .requests()
        .into_iter()
        .filter(|r| r.is_write())
        .collect();
    assert!(writes.is_empty(), "{writes:#?}");
}

/// A holder killed with -9 never releases; once its claim lapses the next
/// run takes the Lease over (guarded by the resourceVersion it read) and
/// gives it back at the end.
#[tokio::test]
async fn a_lapsed_lease_of_a_killed_run_is_taken_over() {
    let server = serve(None).await;
    server.put(lease("broker-images stop on ci-7 (pid 1)", 60));
    let cluster = server
        .cluster("broker")
        .with_lease_wait(Duration::from_secs(2));
    cluster.start(&fixture(), run(), &Quiet).await.unwrap();
    let lease_requests: Vec<(String, String)> = server
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/leases"))
        .map(|r| (r.method, r.body))
        .collect();
    let methods: Vec<&str> = lease_requests.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(methods[..2], ["GET", "PUT"], "{lease_requests:#?}");
    let taken: serde_json::Value = serde_json::from_str(&lease_requests[1].1).unwrap();
    assert_eq!(taken["metadata"]["resourceVersion"], "1");
    assert!(
        taken["spec"]["holderIdentity"]
            .as_str()
            .unwrap()
            .starts_with("broker-images start on ")
    );
    assert_eq!(taken["spec"]["leaseTransitions"], 1);
    assert_eq!(methods.last(), Some(&"DELETE"));
}

/// Issue 19 item 13: API server audit logs name the tool.
#[tokio::test]
async fn every_request_carries_the_tools_user_agent() {
    let server = serve(None).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("config");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://{}\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\nusers:\n- name: u\n  user: {{}}\n",
            server.addr
        ),
    )
    .unwrap();
    let mut options = ConnectOptions::new("broker");
    options.kubeconfig = Some(kubeconfig);
    let cluster = broker_cluster::Cluster::connect(&options).await.unwrap();
    cluster.start(&fixture(), run(), &Quiet).await.unwrap();
    cluster.status(None).await.unwrap();
    let requests = server.requests();
    assert!(requests.len() > 10);
    let expected = format!("broker-images/{}", env!("CARGO_PKG_VERSION"));
    for r in &requests {
        assert_eq!(r.user_agent, expected, "{} {}", r.method, r.path);
    }
}

/// Issue 19 item 4: after stop, the replica count is the stop's field
/// manager's; a dry run cannot release it first, so it takes exactly
/// those fields — a conflict with another manager still stands.
#[tokio::test]
async fn a_dry_run_after_stop_takes_only_the_stops_fields() {
    let conflict_with = Arc::new(std::sync::Mutex::new("broker-images-stop".to_owned()));
    let shared = conflict_with.clone();
    let conflicts: support::Override = Arc::new(move |r: &Recorded| {
        let params = url_params(&r.query);
        let dry = params.get("dryRun").map(String::as_str) == Some("All");
        let forced = params.get("force").map(String::as_str) == Some("true");
        if r.method == "PATCH" && dry && !forced && r.path.ends_with("/deployments/db") {
            let manager = shared.lock().unwrap().clone();
            return Some((
                409,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 409,
                    "reason": "Conflict",
                    "message": format!("Apply failed with 1 conflict: conflict with \"{manager}\": .spec.replicas"),
                    "details": {"causes": [{"reason": "FieldManagerConflict",
                        "message": format!("conflict with \"{manager}\""), "field": ".spec.replicas"}]}}),
            ));
        }
        None
    });
    let server = serve(Some(conflicts)).await;
    let cluster = started_then_stopped(&server).await;
    let dry = StartRun {
        dry_run: true,
        ..run()
    };
    let outcome = cluster.start(&fixture(), dry, &Quiet).await.unwrap();
    assert!(
        outcome.applied.contains(&"Deployment/db".to_owned()),
        "{outcome:?}"
    );
    *conflict_with.lock().unwrap() = "kubectl-edit".into();
    let error = cluster.start(&fixture(), dry, &Quiet).await.unwrap_err();
    assert!(error.to_string().contains("kubectl-edit"), "{error}");
}

/// Issue 19 item 7: restarting a stopped broker is an error, not
/// "restarted" with 0 replicas.
#[tokio::test]
async fn restart_of_a_stopped_broker_says_it_is_stopped() {
    let server = serve(None).await;
    let cluster = started_then_stopped(&server).await;
    let error = cluster
        .restart(&[], Duration::from_secs(5), &Quiet)
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "the broker in namespace broker is stopped (every workload at 0 replicas): nothing to restart; run broker-images start"
    );
    let error = cluster
        .restart(&["mq".to_owned()], Duration::from_secs(5), &Quiet)
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "Deployment/mq is stopped (0 replicas) in namespace broker: restart runs only running workloads; run broker-images start"
    );
}

/// The example started, then stopped, on the scripted endpoint.
async fn started_then_stopped(server: &support::Scripted) -> broker_cluster::Cluster {
    let cluster = server.cluster("broker");
    cluster.start(&fixture(), run(), &Quiet).await.unwrap();
    cluster
        .stop(
            StopOptions::default(),
            false,
            Duration::from_secs(5),
            &Quiet,
        )
        .await
        .unwrap();
    cluster
}
