//! A scripted API endpoint: an in-process HTTP/1 server on 127.0.0.1 that
//! records every request and answers from a small in-memory object store
//! or from a per-test override. It is not a Kubernetes API server: it
//! checks nothing a real one would (schemas, SSA merging, conflicts); it
//! exists to see the exact requests the crate sends and to inject answers
//! (409, 403) a real server gives only in set-ups CI cannot have.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use broker_cluster::{Cluster, RenderedSet, StartRun};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use serde_json::{Value, json};

/// One request as received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub user_agent: String,
    pub body: String,
}

impl Recorded {
    pub fn is_write(&self) -> bool {
        !matches!(self.method.as_str(), "GET" | "HEAD")
    }
}

/// An answer override: `Some((status, body))` to answer, `None` to fall
/// through to the store.
pub type Override = Arc<dyn Fn(&Recorded) -> Option<(u16, Value)> + Send + Sync>;

#[derive(Default)]
pub struct State {
    pub requests: Vec<Recorded>,
    /// Objects by URL path of the object (`/api/v1/namespaces/broker/secrets/x`).
    pub objects: BTreeMap<String, Value>,
    /// The last resourceVersion handed out.
    pub version: u64,
}

impl State {
    fn next_version(&mut self) -> String {
        self.version += 1;
        self.version.to_string()
    }
}

pub struct Scripted {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<State>>,
}

impl Scripted {
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }
    pub fn clear(&self) {
        self.state.lock().unwrap().requests.clear();
    }
    pub fn cluster(&self, namespace: &str) -> Cluster {
        let url = format!("http://{}", self.addr);
        let mut config = kube::Config::new(url.parse::<hyper::Uri>().unwrap());
        config.default_namespace = namespace.to_owned();
        let client = kube::Client::try_from(config).unwrap();
        Cluster::from_client(client, &url, namespace)
    }
    /// Puts an answer at a path (a discovery document).
    pub fn put_at(&self, path: &str, answer: Value) {
        self.state
            .lock()
            .unwrap()
            .objects
            .insert(path.to_owned(), answer);
    }
    /// Puts an object at its URL path, as a server would hold it.
    pub fn put(&self, object: Value) {
        let path = object_path(&object);
        self.state.lock().unwrap().objects.insert(path, object);
    }
}

/// The URL path of an object.
pub fn object_path(object: &Value) -> String {
    let api_version = object["apiVersion"].as_str().unwrap();
    let kind = object["kind"].as_str().unwrap();
    let name = object["metadata"]["name"].as_str().unwrap();
    let prefix = if api_version == "v1" {
        "/api/v1".to_owned()
    } else {
        format!("/apis/{api_version}")
    };
    let plural = match kind {
        "Namespace" => return format!("{prefix}/namespaces/{name}"),
        "PersistentVolumeClaim" => "persistentvolumeclaims".to_owned(),
        other => format!("{}s", other.to_lowercase()),
    };
    let ns = object["metadata"]["namespace"].as_str().unwrap_or("broker");
    format!("{prefix}/namespaces/{ns}/{plural}/{name}")
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

/// Whether `object`'s labels match a `k=v,k2=v2` selector (a bare `k`
/// asks only that the label exist).
fn matches(object: &Value, selector: &str) -> bool {
    selector
        .split(',')
        .filter(|s| !s.is_empty())
        .all(|term| match term.split_once('=') {
            Some((k, v)) => object["metadata"]["labels"][k].as_str() == Some(v),
            None => object["metadata"]["labels"][term].is_string(),
        })
}

fn answer(state: &mut State, request: &Recorded) -> (u16, Value) {
    let params: BTreeMap<String, String> = url_params(&request.query);
    match request.method.as_str() {
        "GET" => {
            if let Some(object) = state.objects.get(&request.path) {
                return (200, object.clone());
            }
            // A list: the path is a collection prefix.
            let prefix = format!("{}/", request.path);
            let is_collection =
                request.path.ends_with('s') && state.objects.keys().all(|k| k != &request.path);
            let selector = params.get("labelSelector").cloned().unwrap_or_default();
            let items: Vec<Value> = state
                .objects
                .iter()
                .filter(|(k, _)| k.starts_with(&prefix) && !k[prefix.len()..].contains('/'))
                .map(|(_, v)| v.clone())
                .filter(|v| matches(v, &selector))
                .collect();
            let last = request.path.rsplit('/').next().unwrap_or("");
            let known_collections = [
                "configmaps",
                "secrets",
                "persistentvolumeclaims",
                "services",
                "deployments",
                "statefulsets",
                "pods",
                "replicasets",
                "serviceaccounts",
                "leases",
                "ingresses",
                "networkpolicies",
                "poddisruptionbudgets",
                "horizontalpodautoscalers",
                "cronjobs",
                "daemonsets",
                "jobs",
                "servicemonitors",
            ];
            if is_collection && known_collections.contains(&last) {
                (
                    200,
                    json!({"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items}),
                )
            } else {
                (
                    404,
                    status(404, "NotFound", &format!("{} not found", request.path)),
                )
            }
        }
        "PATCH" => {
            let mut body: Value = serde_json::from_str(&request.body).unwrap_or(Value::Null);
            let dry = params.get("dryRun").map(String::as_str) == Some("All");
            let manager = params.get("fieldManager").cloned().unwrap_or_default();
            let existing = state.objects.get(&request.path).cloned();
            if let Some(mut live) = existing.clone() {
                merge(&mut live, &body);
                body = live;
            }
            let fields = body["metadata"]["managedFields"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut fields: Vec<Value> = fields
                .into_iter()
                .filter(|f| f["manager"].as_str() != Some(manager.as_str()))
                .collect();
            fields.push(
                json!({"manager": manager, "operation": "Apply", "apiVersion": body["apiVersion"]}),
            );
            body["metadata"]["managedFields"] = Value::Array(fields);
            if body["kind"] == "Deployment" {
                // As the controller would have it at once: revision 1 and
                // its ReplicaSet, every replica available.
                let replicas = body["spec"]["replicas"].as_i64().unwrap_or(1);
                let name = body["metadata"]["name"].as_str().unwrap_or("").to_owned();
                body["metadata"]["generation"] = json!(1);
                body["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = json!("1");
                body["status"] = json!({"observedGeneration": 1, "replicas": replicas,
                    "updatedReplicas": replicas, "availableReplicas": replicas, "readyReplicas": replicas});
                if !dry {
                    let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                        "metadata": {"name": format!("{name}-7d4b9c"), "namespace": "broker",
                            "labels": {"app.kubernetes.io/name": name, "pod-template-hash": "7d4b9c"},
                            "annotations": {"deployment.kubernetes.io/revision": "1"},
                            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                "name": name, "uid": format!("uid-{name}")}]},
                        "spec": {"selector": {}, "template": body["spec"]["template"].clone()},
                        "status": {"replicas": replicas}});
                    let path = object_path(&rs);
                    state.objects.insert(path, rs);
                }
            }
            if !dry {
                body["metadata"]["resourceVersion"] = json!(state.next_version());
                state.objects.insert(request.path.clone(), body.clone());
            }
            (if existing.is_some() { 200 } else { 201 }, body)
        }
        "POST" => {
            let mut body: Value = serde_json::from_str(&request.body).unwrap_or(Value::Null);
            let name = body["metadata"]["name"].as_str().unwrap_or("").to_owned();
            let path = format!("{}/{name}", request.path);
            if state.objects.contains_key(&path) {
                return (
                    409,
                    status(409, "AlreadyExists", &format!("{name} already exists")),
                );
            }
            body["metadata"]["resourceVersion"] = json!(state.next_version());
            state.objects.insert(path, body.clone());
            (201, body)
        }
        "PUT" => {
            let mut body: Value = serde_json::from_str(&request.body).unwrap_or(Value::Null);
            let Some(live) = state.objects.get(&request.path) else {
                return (404, status(404, "NotFound", "not found"));
            };
            if body["metadata"]["resourceVersion"] != live["metadata"]["resourceVersion"] {
                return (
                    409,
                    status(
                        409,
                        "Conflict",
                        "the object has been modified; please apply your changes to the latest version and try again",
                    ),
                );
            }
            body["metadata"]["resourceVersion"] = json!(state.next_version());
            state.objects.insert(request.path.clone(), body.clone());
            (200, body)
        }
        "DELETE" => match state.objects.remove(&request.path) {
            Some(object) => (200, object),
            None => (404, status(404, "NotFound", "not found")),
        },
        _ => (405, status(405, "MethodNotAllowed", "no")),
    }
}

/// Recursive JSON merge (objects merge, everything else replaces): close
/// enough to an apply for these tests.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (t, p) => *t = p.clone(),
    }
}

pub fn url_params(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 3 <= bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Starts the endpoint; `overrides` answers first.
pub async fn serve(overrides: Option<Override>) -> Scripted {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = Arc::new(Mutex::new(State::default()));
    let shared = state.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let state = shared.clone();
            let overrides = overrides.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let state = state.clone();
                        let overrides = overrides.clone();
                        async move {
                            let method = req.method().to_string();
                            let path = req.uri().path().to_owned();
                            let query = req.uri().query().unwrap_or("").to_owned();
                            let content_type = req
                                .headers()
                                .get("content-type")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_owned();
                            let user_agent = req
                                .headers()
                                .get("user-agent")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_owned();
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let recorded = Recorded {
                                method,
                                path,
                                query,
                                content_type,
                                user_agent,
                                body: String::from_utf8_lossy(&body).into_owned(),
                            };
                            let (code, value) = {
                                let mut state = state.lock().unwrap();
                                state.requests.push(recorded.clone());
                                match overrides.as_ref().and_then(|o| o(&recorded)) {
                                    Some(answer) => answer,
                                    None => answer(&mut state, &recorded),
                                }
                            };
                            let response = Response::builder()
                                .status(code)
                                .header("content-type", "application/json")
                                // A JSON string is sent as plain text (pod logs).
                                .body(Full::new(Bytes::from(match value {
                                    Value::String(text) => text,
                                    other => other.to_string(),
                                })))
                                .unwrap();
                            Ok::<_, Infallible>(response)
                        }
                    });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    Scripted { addr, state }
}

/// The example rendered directory.
pub fn fixture_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rendered")
}

/// A recorded real-server answer from `tests/fixtures/recorded/`.
pub fn recorded(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/recorded")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

pub fn fixture() -> RenderedSet {
    RenderedSet::read_dir(&fixture_dir(), "broker").unwrap()
}

pub fn forbidden(verb: &str, resource: &str, group: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("{resource}.{group} is forbidden: User \"dev\" cannot {verb} resource \"{resource}\" in API group \"{group}\" in the namespace \"broker\""),
        "reason": "Forbidden", "details": {"kind": resource}, "code": 403})
}

/// A plain start: no dry run, no flags, 20 s to become ready.
pub fn run() -> StartRun {
    StartRun {
        dry_run: false,
        force_conflicts: false,
        delete_data: false,
        no_prune: false,
        credentials_changed_in_place: false,
        rotate_credentials: false,
        timeout: std::time::Duration::from_secs(20),
    }
}
