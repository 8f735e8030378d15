//! The preflight of `start`, against the scripted endpoint (see `support`;
//! not a Kubernetes API server): every object the plan applies is sent as
//! a `dryRun=All` apply before the first real write, and a refusal, as a
//! real API server words it (answers recorded on the real-node rig, in
//! `fixtures/recorded/preflight`), stops the start in one line with
//! nothing of the set written.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;

use broker_cluster::{ClusterError, Quiet, StartRun};
use serde_json::Value;
use support::{Recorded, fixture, run, serve, url_params};

fn recorded(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/recorded/preflight")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn is_dry_run(r: &Recorded) -> bool {
    url_params(&r.query).get("dryRun").map(String::as_str) == Some("All")
}

/// Answers the dry run of the object at `path_end` with a recorded refusal.
fn refuse(path_end: &'static str, answer: Value) -> support::Override {
    Arc::new(move |r: &Recorded| {
        (r.method == "PATCH" && r.path.ends_with(path_end) && is_dry_run(r)).then(|| {
            let code = answer["code"].as_u64().unwrap_or(500) as u16;
            (code, answer.clone())
        })
    })
}

/// The real writes of a run (dry runs, reads and the Lease left out).
fn member_writes(server: &support::Scripted) -> Vec<String> {
    server
        .requests()
        .into_iter()
        .filter(|r| r.is_write() && !is_dry_run(r) && !r.path.contains("/leases"))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

#[tokio::test]
async fn every_applied_object_is_dry_run_before_the_first_write() {
    let server = serve(None).await;
    server
        .cluster("broker")
        .start(&fixture(), run(), &Quiet)
        .await
        .unwrap();
    let requests = server.requests();
    let first_member_write = requests
        .iter()
        .position(|r| {
            r.is_write()
                && !is_dry_run(r)
                && !r.path.contains("/leases")
                && !r.path.ends_with("/namespaces/broker")
        })
        .unwrap();
    let dry: Vec<&Recorded> = requests
        .iter()
        .filter(|r| r.method == "PATCH" && is_dry_run(r))
        .collect();
    let applied: Vec<&Recorded> = requests
        .iter()
        .filter(|r| {
            r.method == "PATCH"
                && !is_dry_run(r)
                && !r.path.ends_with("/namespaces/broker")
                && !r.path.ends_with("/secrets/broker")
                // Written after the rollout: what the start applied.
                && !r.path.contains("/configmaps/broker-images-revision-")
        })
        .collect();
    assert!(!applied.is_empty());
    for write in &applied {
        assert!(
            dry.iter()
                .any(|d| d.path == write.path && d.body == write.body),
            "{} applied without a dry run of the same body",
            write.path
        );
    }
    let last_dry = requests
        .iter()
        .rposition(|r| r.method == "PATCH" && is_dry_run(r))
        .unwrap();
    assert!(
        last_dry < first_member_write,
        "a dry run came after the first write"
    );
}

#[tokio::test]
async fn an_immutable_selector_stops_the_start_naming_object_and_field() {
    let server = serve(Some(refuse(
        "/deployments/restapi",
        recorded("deployment-selector-immutable.json"),
    )))
    .await;
    let error = server
        .cluster("broker")
        .start(&fixture(), run(), &Quiet)
        .await
        .unwrap_err();
    assert!(matches!(error, ClusterError::Preflight { .. }), "{error:?}");
    let text = error.to_string();
    assert_eq!(
        text,
        "Deployment/restapi field spec.selector: field is immutable; this field cannot change on a live object: keep it as on the cluster, or delete Deployment/restapi (kubectl delete deployment restapi) and start again (preflight: only the empty namespace was created)"
    );
    // A first start: the namespace (so the dry runs can run) and nothing else.
    assert_eq!(member_writes(&server), ["PATCH /api/v1/namespaces/broker"]);
}

#[tokio::test]
async fn a_claims_storage_class_names_the_field_and_the_data_at_stake() {
    let server = serve(Some(refuse(
        "/persistentvolumeclaims/db-data",
        recorded("claim-storage-class-immutable.json"),
    )))
    .await;
    // The namespace exists already: then nothing at all is written.
    server.put(serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "broker"}, "status": {"phase": "Active"}}));
    let error = server
        .cluster("broker")
        .start(&fixture(), run(), &Quiet)
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(!text.contains('\n'), "{text}");
    assert!(
        text.starts_with(
            "PersistentVolumeClaim/db-data field spec.storageClassName: spec is immutable after creation except resources.requests for bound claims; "
        ),
        "{text}"
    );
    assert!(text.contains("back up the data"), "{text}");
    assert!(text.ends_with("(preflight: nothing was written)"), "{text}");
    assert_eq!(member_writes(&server), Vec::<String>::new());
}

#[tokio::test]
async fn a_quota_refusal_by_admission_is_one_line() {
    let server = serve(Some(refuse(
        "/deployments/mq",
        recorded("quota-exceeded-deployments.json"),
    )))
    .await;
    server.put(serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "broker"}, "status": {"phase": "Active"}}));
    let error = server
        .cluster("broker")
        .start(&fixture(), run(), &Quiet)
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(
        text.starts_with(
            "Deployment/mq: deployments.apps \"mq\" is forbidden: exceeded quota: few"
        ),
        "{text}"
    );
    assert!(text.contains("raise the quota"), "{text}");
    assert_eq!(member_writes(&server), Vec::<String>::new());
}

/// The example with restapi pulling through Secret `regcred`.
fn with_pull_secret() -> broker_cluster::RenderedSet {
    let values: Vec<Value> = fixture()
        .objects
        .values()
        .map(|o| {
            let mut v = serde_json::to_value(o).unwrap();
            if v["kind"] == "Deployment" && v["metadata"]["name"] == "restapi" {
                v["spec"]["template"]["spec"]["imagePullSecrets"] =
                    serde_json::json!([{"name": "regcred"}]);
            }
            v
        })
        .collect();
    broker_cluster::RenderedSet::from_values("broker", values).unwrap()
}

#[tokio::test]
async fn a_pull_secret_nobody_created_is_one_line_before_any_write() {
    let server = serve(None).await;
    server.put(serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "broker"}, "status": {"phase": "Active"}}));
    let error = server
        .cluster("broker")
        .start(&with_pull_secret(), run(), &Quiet)
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "Deployment/restapi field spec.template.spec.imagePullSecrets: names Secret regcred, which does not exist in namespace broker; create it (kubectl create secret docker-registry regcred -n broker ...) or let render generate one (the environment's pull secret) (preflight: nothing was written)"
    );
    assert_eq!(member_writes(&server), Vec::<String>::new());

    // Once it exists, the start goes ahead.
    server.put(serde_json::json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "regcred", "namespace": "broker"},
        "type": "kubernetes.io/dockerconfigjson"}));
    server
        .cluster("broker")
        .start(&with_pull_secret(), run(), &Quiet)
        .await
        .unwrap();
}

/// The example with db reading POSTGRES_PASSWORD from Secret `secret`
/// (holding `password`) and saying it reads it only on first start.
fn with_db_password(secret: &str, password: &str) -> broker_cluster::RenderedSet {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(password);
    let values: Vec<Value> = fixture()
        .objects
        .values()
        .map(|o| {
            let mut v = serde_json::to_value(o).unwrap();
            if v["kind"] == "Secret" {
                v["metadata"]["name"] = Value::from(secret);
                v["metadata"]["labels"]["app.kubernetes.io/name"] = Value::from(secret);
                v["data"]["POSTGRES_PASSWORD"] = Value::from(encoded.clone());
            }
            if v["kind"] == "Deployment" {
                let text = v.to_string().replace("credentials-g6tb48ckm2", secret);
                v = serde_json::from_str(&text).unwrap();
            }
            if v["kind"] == "Deployment" && v["metadata"]["name"] == "db" {
                v["metadata"]["annotations"]["broker-images.io/read-once-credentials"] =
                    Value::from("POSTGRES_PASSWORD");
                v["spec"]["template"]["spec"]["containers"][0]["env"] = serde_json::json!([
                    {"name": "POSTGRES_PASSWORD", "valueFrom": {"secretKeyRef": {"name": secret, "key": "POSTGRES_PASSWORD"}}}
                ]);
            }
            v
        })
        .collect();
    broker_cluster::RenderedSet::from_values("broker", values).unwrap()
}

#[tokio::test]
async fn a_changed_database_password_over_existing_data_is_refused_unless_changed_in_place() {
    let server = serve(None).await;
    let cluster = server.cluster("broker");
    cluster
        .start(
            &with_db_password("credentials-aaaaaaaaaa", "first"),
            run(),
            &Quiet,
        )
        .await
        .unwrap();
    server.clear();
    let changed = with_db_password("credentials-bbbbbbbbbb", "second");
    let error = cluster.start(&changed, run(), &Quiet).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "Deployment/db: POSTGRES_PASSWORD changed, but its server read the old value only when claim db-data was first initialised and ignores it since; the new value would lock its clients out. Change the password inside the running db first, then start with --credentials-changed-in-place (or keep the old value)"
    );
    assert_eq!(member_writes(&server), Vec::<String>::new());

    // The same value under a new Secret name (another key changed) is fine.
    let same = with_db_password("credentials-cccccccccc", "first");
    cluster.start(&same, run(), &Quiet).await.unwrap();

    // Told the change was made inside postgres: applied.
    let told = StartRun {
        credentials_changed_in_place: true,
        rotate_credentials: false,
        ..run()
    };
    cluster.start(&changed, told, &Quiet).await.unwrap();
}

/// [`with_db_password`] as single-node renders it: db's data in a node
/// directory (hostPath), no claim.
fn on_a_node_directory(set: broker_cluster::RenderedSet) -> broker_cluster::RenderedSet {
    let values: Vec<Value> = set
        .objects
        .values()
        .filter(|o| o.types.as_ref().is_some_and(|t| t.kind != "PersistentVolumeClaim"))
        .map(|o| {
            let mut v = serde_json::to_value(o).unwrap();
            if v["kind"] == "Deployment" && v["metadata"]["name"] == "db" {
                v["spec"]["template"]["spec"]["volumes"] = serde_json::json!([
                    {"name": "data", "hostPath": {"path": "/var/lib/broker/db", "type": "DirectoryOrCreate"}}
                ]);
            }
            v
        })
        .collect();
    broker_cluster::RenderedSet::from_values("broker", values).unwrap()
}

#[tokio::test]
async fn a_changed_database_password_over_a_node_directory_is_refused_too() {
    let server = serve(None).await;
    let cluster = server.cluster("broker");
    let first = on_a_node_directory(with_db_password("credentials-aaaaaaaaaa", "first"));
    cluster.start(&first, run(), &Quiet).await.unwrap();
    server.clear();
    let changed = on_a_node_directory(with_db_password("credentials-bbbbbbbbbb", "second"));
    let error = cluster.start(&changed, run(), &Quiet).await.unwrap_err();
    assert!(
        error.to_string().contains(
            "read the old value only when node directory /var/lib/broker/db was first initialised"
        ),
        "{error}"
    );
    assert_eq!(member_writes(&server), Vec::<String>::new());
}

/// [`with_db_password`], db carrying a rotate-credentials script.
fn with_rotate_script(secret: &str, password: &str) -> broker_cluster::RenderedSet {
    let values: Vec<Value> = with_db_password(secret, password)
        .objects
        .values()
        .map(|o| {
            let mut v = serde_json::to_value(o).unwrap();
            if v["kind"] == "Deployment" && v["metadata"]["name"] == "db" {
                v["metadata"]["annotations"]["broker-images.io/rotate-credentials"] =
                    Value::from("IFS= read -r new; echo changed");
            }
            v
        })
        .collect();
    broker_cluster::RenderedSet::from_values("broker", values).unwrap()
}

#[tokio::test]
async fn rotate_credentials_needs_the_catalogues_script_and_a_ready_server_and_writes_nothing_without()
 {
    let server = serve(None).await;
    let cluster = server.cluster("broker");
    cluster
        .start(
            &with_db_password("credentials-aaaaaaaaaa", "first"),
            run(),
            &Quiet,
        )
        .await
        .unwrap();
    server.clear();
    let rotate = StartRun {
        rotate_credentials: true,
        ..run()
    };
    // No script in the catalogue: refused, saying why.
    let error = cluster
        .start(
            &with_db_password("credentials-bbbbbbbbbb", "second"),
            rotate,
            &Quiet,
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.ends_with(
            "; --rotate-credentials cannot: the catalogue gives Deployment/db no broker-images.io/rotate-credentials script"
        ),
        "{error}"
    );
    // With a script, a plain start offers it.
    let scripted = with_rotate_script("credentials-bbbbbbbbbb", "second");
    let error = cluster
        .start(&scripted, run(), &Quiet)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.ends_with(
            ", or pass --rotate-credentials to have start change it inside the running db first"
        ),
        "{error}"
    );
    // Rotating needs a ready db pod to run it in (the scripted endpoint
    // has no pods): refused before the first write.
    let error = cluster
        .start(&scripted, rotate, &Quiet)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(
            "--rotate-credentials changes POSTGRES_PASSWORD inside a running db, and none is ready"
        ),
        "{error}"
    );
    assert!(!error.contains("second"), "{error}");
    assert_eq!(member_writes(&server), Vec::<String>::new());
}

/// The example plus an Ingress for restapi of `class` (none when `None`).
fn with_ingress(class: Option<&str>) -> broker_cluster::RenderedSet {
    let mut values: Vec<Value> = fixture()
        .objects
        .values()
        .map(|o| serde_json::to_value(o).unwrap())
        .collect();
    let mut ingress = serde_json::json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "restapi", "namespace": "broker", "labels": {
            "app.kubernetes.io/name": "restapi",
            "app.kubernetes.io/part-of": "broker",
            "app.kubernetes.io/managed-by": "broker-images"}},
        "spec": {"rules": [{"host": "api.example.org", "http": {"paths": [{"path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": "restapi", "port": {"number": 5687}}}}]}}]}
    });
    if let Some(class) = class {
        ingress["spec"]["ingressClassName"] = Value::from(class);
    }
    values.push(ingress);
    broker_cluster::RenderedSet::from_values("broker", values).unwrap()
}

/// The cluster's IngressClasses, as the list answers them.
fn ingress_classes(classes: Value) -> support::Override {
    Arc::new(move |r: &Recorded| {
        (r.method == "GET" && r.path == "/apis/networking.k8s.io/v1/ingressclasses").then(|| {
            (
                200,
                serde_json::json!({"kind": "IngressClassList", "apiVersion": "networking.k8s.io/v1",
                    "metadata": {"resourceVersion": "1"}, "items": classes.clone()}),
            )
        })
    })
}

#[tokio::test]
async fn an_ingress_no_controller_would_serve_is_one_line_before_any_write() {
    let server = serve(Some(ingress_classes(serde_json::json!([])))).await;
    let error = server
        .cluster("broker")
        .start(&with_ingress(None), run(), &Quiet)
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "Ingress/restapi field spec.ingressClassName: has no class and no IngressClass is the default (the cluster has none); set the environment's ingress.className to a class the cluster has, or install an ingress controller first (preflight: only the empty namespace was created)"
    );
    assert_eq!(member_writes(&server), ["PATCH /api/v1/namespaces/broker"]);

    let nginx = serde_json::json!([{"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": "nginx"}, "spec": {"controller": "k8s.io/ingress-nginx"}}]);
    let server = serve(Some(ingress_classes(nginx))).await;
    let error = server
        .cluster("broker")
        .start(&with_ingress(Some("traefik")), run(), &Quiet)
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("Ingress/restapi field spec.ingressClassName: names IngressClass traefik, which does not exist (the cluster has nginx); "),
        "{error}"
    );
    server
        .cluster("broker")
        .start(&with_ingress(Some("nginx")), run(), &Quiet)
        .await
        .unwrap();
}
