//! The apply and stop plans as data, for the example rendered directory:
//! no cluster, no HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;

use broker_cluster::applyset::ParentRecord;
use broker_cluster::objects::read_objects;
use broker_cluster::plan::{self, prepare, stale_config};
use broker_cluster::{
    ApplySet, ClusterError, Kind, ObjectKey, RenderedSet, StartOptions, StartPlan, StartStep,
    StopOptions, StopStep, stop_plan,
};
use kube::api::DynamicObject;
use serde_json::{Value, json};
use support::{fixture, fixture_dir};

fn text(plan: &StartPlan) -> String {
    plan.steps.iter().map(|s| format!("{s}\n")).collect()
}

fn key(kind: Kind, name: &str) -> ObjectKey {
    ObjectKey {
        kind,
        namespace: kind.namespaced().then(|| "broker".to_owned()),
        name: name.to_owned(),
    }
}

/// What the parent records after a start of `prepared`.
fn parent_of(prepared: &RenderedSet) -> ParentRecord {
    ParentRecord {
        kinds: prepared.kinds(),
        workloads: prepared
            .objects
            .keys()
            .filter(|k| k.kind.is_workload())
            .map(|k| k.name.clone())
            .collect(),
    }
}

/// Plans `prepared` over `live` where the parent records a start of the
/// whole example.
fn after_full_start(
    prepared: &RenderedSet,
    live: &BTreeMap<ObjectKey, DynamicObject>,
    options: StartOptions,
) -> StartPlan {
    let full = prepare(&fixture(), &ApplySet::new("broker"));
    StartPlan::new(prepared, live, Some(&parent_of(&full)), options)
}

/// What the cluster would hold after applying `prepared`: the same
/// objects with our field manager recorded.
fn as_live(prepared: &RenderedSet) -> BTreeMap<ObjectKey, DynamicObject> {
    prepared
        .objects
        .iter()
        .map(|(k, o)| {
            let mut value = serde_json::to_value(o).unwrap();
            value["metadata"]["managedFields"] =
                json!([{"manager": "broker-images", "operation": "Apply", "apiVersion": "v1"}]);
            value["metadata"]["resourceVersion"] = json!("7");
            (k.clone(), serde_json::from_value(value).unwrap())
        })
        .collect()
}

fn member(set: &ApplySet, kind: Kind, name: &str) -> (ObjectKey, DynamicObject) {
    let value = json!({
        "apiVersion": kind.api_version(), "kind": kind.name(),
        "metadata": {"name": name, "namespace": "broker", "labels": {
            "app.kubernetes.io/part-of": "broker",
            "app.kubernetes.io/managed-by": "broker-images",
            "applyset.kubernetes.io/part-of": set.id}}
    });
    (key(kind, name), serde_json::from_value(value).unwrap())
}

#[test]
fn first_start_of_the_example() {
    let set = ApplySet::new("broker");
    let prepared = prepare(&fixture(), &set);
    let plan = StartPlan::new(&prepared, &BTreeMap::new(), None, StartOptions::default());
    insta::assert_snapshot!(text(&plan));
}

#[test]
fn unchanged_start_plans_no_write() {
    let set = ApplySet::new("broker");
    let prepared = prepare(&fixture(), &set);
    let live = as_live(&prepared);
    let kinds = parent_of(&prepared);
    let plan = StartPlan::new(&prepared, &live, Some(&kinds), StartOptions::default());
    assert!(!plan.writes(), "{}", text(&plan));
    assert!(
        plan.steps
            .iter()
            .all(|s| matches!(s, StartStep::Unchanged(_) | StartStep::Wait(_)))
    );
}

#[test]
fn an_edited_or_rerendered_object_is_applied_again() {
    let set = ApplySet::new("broker");
    let prepared = prepare(&fixture(), &set);
    let mut live = as_live(&prepared);
    // Someone scaled db by hand.
    let db = live.get_mut(&key(Kind::Deployment, "db")).unwrap();
    db.data["spec"]["replicas"] = json!(3);
    // And render dropped a field from mq (its hash changes).
    let mut rendered = fixture();
    let mq = rendered
        .objects
        .get_mut(&key(Kind::Deployment, "mq"))
        .unwrap();
    mq.data["spec"].as_object_mut().unwrap().remove("strategy");
    let prepared_again = prepare(&rendered, &set);
    let kinds = parent_of(&prepared);
    let plan = StartPlan::new(
        &prepared_again,
        &live,
        Some(&kinds),
        StartOptions::default(),
    );
    let applied: Vec<String> = plan
        .steps
        .iter()
        .filter_map(|s| match s {
            StartStep::Apply(k) => Some(k.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(applied, ["Deployment/db", "Deployment/mq"]);
}

#[test]
fn prune_selection_spares_data_config_and_foreign_objects() {
    let set = ApplySet::new("broker");
    let prepared = prepare(&fixture(), &set);
    let mut live = as_live(&prepared);
    live.extend([
        member(&set, Kind::Deployment, "old-worker"),
        member(&set, Kind::Service, "old-worker"),
        member(&set, Kind::PersistentVolumeClaim, "old-data"),
        member(&set, Kind::ConfigMap, "env-configmap-oldhash12"),
        member(&set, Kind::Secret, "credentials-oldhash12"),
    ]);
    // Listed by mistake (a selector bug must not delete it): no our labels.
    let (foreign_key, mut foreign) = member(&set, Kind::Deployment, "someone-elses");
    foreign
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .remove("app.kubernetes.io/managed-by");
    live.insert(foreign_key, foreign);

    let kinds = parent_of(&prepared);
    let plan = StartPlan::new(&prepared, &live, Some(&kinds), StartOptions::default());
    insta::assert_snapshot!("prune_without_delete_data", text(&plan));
    let with_data = StartPlan::new(
        &prepared,
        &live,
        Some(&kinds),
        StartOptions {
            delete_data: true,
            ..StartOptions::default()
        },
    );
    assert!(with_data.steps.contains(&StartStep::Prune(key(
        Kind::PersistentVolumeClaim,
        "old-data"
    ))));
    for plan in [&plan, &with_data] {
        assert!(
            !plan
                .steps
                .contains(&StartStep::Prune(key(Kind::Deployment, "someone-elses")))
        );
        assert!(!plan.steps.iter().any(|s| matches!(s, StartStep::Prune(k) if k.kind == Kind::ConfigMap || k.kind == Kind::Secret)));
    }
}

#[test]
fn no_prune_keeps_every_member_that_left_the_set_on_the_parent() {
    let set = ApplySet::new("broker");
    let prepared = prepare(&fixture(), &set);
    let mut live = as_live(&prepared);
    live.extend([
        member(&set, Kind::Deployment, "old-worker"),
        member(&set, Kind::PersistentVolumeClaim, "old-data"),
        member(&set, Kind::ConfigMap, "env-configmap-oldhash12"),
    ]);
    let kinds = parent_of(&prepared);
    let plan = StartPlan::new(
        &prepared,
        &live,
        Some(&kinds),
        StartOptions {
            no_prune: true,
            ..StartOptions::default()
        },
    );
    assert!(
        !plan
            .steps
            .iter()
            .any(|s| matches!(s, StartStep::Prune(_) | StartStep::CollectOldConfig(_))),
        "{}",
        text(&plan)
    );
    for name in ["old-worker", "old-data", "env-configmap-oldhash12"] {
        assert!(
            plan.steps
                .iter()
                .any(|s| matches!(s, StartStep::Keep(k, "--no-prune") if k.name == name)),
            "{name}: {}",
            text(&plan)
        );
    }
    // Nothing changed in the set and nothing left it for good: the
    // parent stays as it is.
    assert!(
        !plan
            .steps
            .iter()
            .any(|s| matches!(s, StartStep::ApplyParent(_))),
        "{}",
        text(&plan)
    );
}

#[test]
fn a_kind_that_left_the_set_keeps_the_parent_wide_until_pruned() {
    let set = ApplySet::new("broker");
    let prepared = prepare(&fixture(), &set);
    let live = as_live(&prepared);
    let mut old = parent_of(&prepared);
    old.kinds = ApplySet::parse_group_kinds(
        "ConfigMap,Deployment.apps,Namespace,PersistentVolumeClaim,Secret,Service,StatefulSet.apps",
    )
    .unwrap();
    let plan = StartPlan::new(&prepared, &live, Some(&old), StartOptions::default());
    let parents: Vec<&StartStep> = plan
        .steps
        .iter()
        .filter(|s| matches!(s, StartStep::ApplyParent(_)))
        .collect();
    // Unchanged union: no first parent write; the narrowing comes last.
    assert_eq!(parents.len(), 1);
    let Some(StartStep::ApplyParent(last)) = plan.steps.last() else {
        panic!("{}", text(&plan));
    };
    assert_eq!(
        ApplySet::group_kinds(&last.kinds),
        "ConfigMap,Deployment.apps,Namespace,PersistentVolumeClaim,Secret,Service"
    );
}

fn live_members() -> BTreeMap<ObjectKey, DynamicObject> {
    let set = ApplySet::new("broker");
    let prepared = prepare(&fixture(), &set);
    as_live(&prepared)
}

#[test]
fn stop_never_touches_pvcs_secrets_or_the_namespace_without_flags() {
    let live = live_members();
    let touched = |steps: &[StopStep]| -> Vec<ObjectKey> {
        steps
            .iter()
            .filter_map(|s| match s {
                StopStep::Scale(k) | StopStep::Suspend(k) | StopStep::Delete(k) => Some(k.clone()),
                StopStep::WaitPodsGone(_) | StopStep::KeepNodeDirectories(_) => None,
            })
            .collect()
    };
    let plain = stop_plan(&live, StopOptions::default());
    assert!(
        plain.iter().all(|s| !matches!(s, StopStep::Delete(_))),
        "{plain:?}"
    );
    assert!(touched(&plain).iter().all(|k| k.kind == Kind::Deployment));
    assert!(
        matches!(plain.last(), Some(StopStep::WaitPodsGone(_))),
        "{plain:?}"
    );

    let remove = stop_plan(
        &live,
        StopOptions {
            remove: true,
            delete_data: false,
        },
    );
    for k in touched(&remove) {
        assert!(
            matches!(k.kind, Kind::Deployment | Kind::Service),
            "--remove touched {k}"
        );
    }
    let data = stop_plan(
        &live,
        StopOptions {
            remove: false,
            delete_data: true,
        },
    );
    let lines: String = data.iter().map(|s| format!("{s}\n")).collect();
    insta::assert_snapshot!("stop_delete_data", lines);
    for plan in [&plain, &remove, &data] {
        assert!(
            touched(plan)
                .iter()
                .all(|k| !matches!(k.kind, Kind::Secret | Kind::Namespace | Kind::ConfigMap))
        );
    }
}

#[test]
fn old_config_kept_while_the_previous_replicaset_needs_it() {
    let candidates = vec![
        key(Kind::ConfigMap, "env-configmap-aaaa"),
        key(Kind::ConfigMap, "env-configmap-bbbb"),
        key(Kind::ConfigMap, "env-configmap-cccc"),
        key(Kind::Secret, "credentials-aaaa"),
    ];
    let rs = |revision: &str, cm: &str, replicas: u64| -> Value {
        json!({"metadata": {"name": format!("db-{revision}"),
                "annotations": {"deployment.kubernetes.io/revision": revision},
                "ownerReferences": [{"name": "db", "kind": "Deployment"}]},
               "spec": {"template": {"spec": {"containers": [{"name": "db",
                   "envFrom": [{"configMapRef": {"name": cm}}]}]}}},
               "status": {"replicas": replicas}})
    };
    // Revision 3 current, 2 previous (kept for rollout undo), 1 old.
    let replica_sets = vec![
        rs("1", "env-configmap-aaaa", 0),
        rs("3", "env-configmap-cccc", 1),
        rs("2", "env-configmap-bbbb", 0),
    ];
    let pods = vec![
        json!({"spec": {"volumes": [{"name": "s", "secret": {"secretName": "credentials-aaaa"}}], "containers": []}}),
    ];
    let stale = stale_config(&candidates, &replica_sets, &pods);
    assert_eq!(stale, vec![key(Kind::ConfigMap, "env-configmap-aaaa")]);
}

#[test]
fn references_cover_every_way_a_pod_uses_config() {
    let spec = json!({
        "imagePullSecrets": [{"name": "pull"}],
        "volumes": [{"name": "a", "configMap": {"name": "cm-vol"}},
                    {"name": "b", "projected": {"sources": [{"secret": {"name": "sec-proj"}}, {"configMap": {"name": "cm-proj"}}]}}],
        "containers": [{"name": "c", "envFrom": [{"secretRef": {"name": "sec-env"}}],
            "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cm-key", "key": "k"}}},
                    {"name": "Y", "valueFrom": {"secretKeyRef": {"name": "sec-key", "key": "k"}}}]}]
    });
    let refs: Vec<String> = plan::config_references(&spec)
        .into_iter()
        .map(|(k, n)| format!("{}/{n}", k.name()))
        .collect();
    assert_eq!(
        refs,
        [
            "ConfigMap/cm-key",
            "ConfigMap/cm-proj",
            "ConfigMap/cm-vol",
            "Secret/pull",
            "Secret/sec-env",
            "Secret/sec-key",
            "Secret/sec-proj"
        ]
    );
}

#[test]
fn manifests_without_our_labels_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: stray\n  namespace: broker\n  labels:\n    app.kubernetes.io/part-of: broker\ndata: {}\n",
    )
    .unwrap();
    let error = RenderedSet::read_dir(dir.path(), "broker").unwrap_err();
    assert!(matches!(error, ClusterError::Object { .. }));
    assert_eq!(
        error.to_string(),
        "ConfigMap/stray: lacks label app.kubernetes.io/managed-by=broker-images: not rendered by broker-images render, refusing to apply it"
    );
}

#[test]
fn manifests_for_another_namespace_are_refused() {
    let error = RenderedSet::read_dir(&fixture_dir(), "staging").unwrap_err();
    assert!(
        error
            .to_string()
            .contains("is in namespace broker, not staging"),
        "{error}"
    );
}

#[test]
fn an_empty_or_kustomization_only_dir_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kustomization.yaml"), "resources: []\n").unwrap();
    let error = read_objects(dir.path()).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("run broker-images render --out DIR first"),
        "{error}"
    );
}

#[test]
fn the_example_reads_multi_document_files() {
    let objects = read_objects(&fixture_dir()).unwrap();
    // services.yaml holds three documents, pvc.yaml two.
    assert_eq!(objects.len(), 14);
    assert_eq!(fixture().objects.len(), 14);
}

/// Issue 19 item 3: switching cluster → single-node drops the claims from
/// the rendered set; they are kept (no --delete-data), so their kind must
/// stay on the parent or no later start, stop --delete-data or prune
/// would find them.
#[test]
fn kept_claims_keep_their_kind_on_the_parent() {
    let set = ApplySet::new("broker");
    let mut rendered = fixture();
    rendered
        .objects
        .retain(|k, _| k.kind != Kind::PersistentVolumeClaim);
    let prepared = prepare(&rendered, &set);
    let mut live = as_live(&prepare(&fixture(), &set));
    live.retain(|k, _| k.kind == Kind::PersistentVolumeClaim || prepared.objects.contains_key(k));
    let plan = after_full_start(&prepared, &live, StartOptions::default());
    assert!(
        plan.steps
            .iter()
            .any(|s| matches!(s, StartStep::Keep(k, _) if k.kind == Kind::PersistentVolumeClaim)),
        "{}",
        text(&plan)
    );
    let parents: Vec<&ParentRecord> = plan
        .steps
        .iter()
        .filter_map(|s| match s {
            StartStep::ApplyParent(p) => Some(p),
            _ => None,
        })
        .collect();
    assert!(
        parents
            .iter()
            .all(|p| p.kinds.contains(&Kind::PersistentVolumeClaim)),
        "{}",
        text(&plan)
    );

    // With --delete-data the claims go, and so may their kind.
    let with_data = after_full_start(
        &prepared,
        &live,
        StartOptions {
            delete_data: true,
            ..StartOptions::default()
        },
    );
    let Some(StartStep::ApplyParent(last)) = with_data.steps.last() else {
        panic!("{}", text(&with_data));
    };
    assert!(!last.kinds.contains(&Kind::PersistentVolumeClaim));
}

/// Old config left behind (credentials moved to existingSecrets) is
/// collected only when no ReplicaSet uses it, so its kind stays listed.
#[test]
fn old_config_keeps_its_kind_on_the_parent_until_collected() {
    let set = ApplySet::new("broker");
    let mut rendered = fixture();
    rendered.objects.retain(|k, _| k.kind != Kind::Secret);
    let prepared = prepare(&rendered, &set);
    let live = as_live(&prepare(&fixture(), &set));
    let plan = after_full_start(&prepared, &live, StartOptions::default());
    assert!(
        plan.steps
            .iter()
            .any(|s| matches!(s, StartStep::CollectOldConfig(keys) if keys.iter().any(|k| k.kind == Kind::Secret)))
    );
    for step in &plan.steps {
        if let StartStep::ApplyParent(p) = step {
            assert!(p.kinds.contains(&Kind::Secret), "{}", text(&plan));
        }
    }
}

/// The parent records the workloads, so `status` can name those a start
/// that failed half-way never created.
#[test]
fn the_parent_records_the_sets_workloads_before_any_of_them() {
    let set = ApplySet::new("broker");
    let prepared = prepare(&fixture(), &set);
    let plan = StartPlan::new(&prepared, &BTreeMap::new(), None, StartOptions::default());
    let first_workload = plan
        .steps
        .iter()
        .position(|s| matches!(s, StartStep::Apply(k) if k.kind.is_workload()))
        .unwrap();
    let Some(StartStep::ApplyParent(parent)) = plan.steps[..first_workload]
        .iter()
        .find(|s| matches!(s, StartStep::ApplyParent(_)))
    else {
        panic!("{}", text(&plan));
    };
    assert_eq!(
        parent.workloads,
        ["db", "mq", "restapi", "ttn-decoder", "website"]
    );
}

/// Issue 19 item 5: a workload whose manifest has no `replicas` looks the
/// same stopped (0, owned by the stop's manager) and running; it must be
/// applied again so start takes the count back.
#[test]
fn a_stopped_workload_without_replicas_is_applied_again() {
    let set = ApplySet::new("broker");
    let mut rendered = fixture();
    let website = key(Kind::Deployment, "website");
    rendered.objects.get_mut(&website).unwrap().data["spec"]
        .as_object_mut()
        .unwrap()
        .remove("replicas");
    let prepared = prepare(&rendered, &set);
    let mut live = as_live(&prepared);
    let stopped = live.get_mut(&website).unwrap();
    stopped.data["spec"]["replicas"] = json!(0);
    stopped
        .metadata
        .managed_fields
        .get_or_insert_with(Vec::new)
        .push(
            serde_json::from_value(json!({"manager": "broker-images-stop", "operation": "Apply"}))
                .unwrap(),
        );
    let plan = StartPlan::new(
        &prepared,
        &live,
        Some(&parent_of(&prepared)),
        StartOptions::default(),
    );
    assert!(
        plan.steps.contains(&StartStep::Apply(website)),
        "{}",
        text(&plan)
    );
    assert!(plan.writes());
}

/// Issue 19 item 12: on single-node the data is in node directories, which
/// no API call deletes; `stop --delete-data` says which it kept.
#[test]
fn stop_delete_data_names_the_node_directories_it_keeps() {
    let set = ApplySet::new("broker");
    let prepared = prepare(&fixture(), &set);
    let mut live = as_live(&prepared);
    let db = live.get_mut(&key(Kind::Deployment, "db")).unwrap();
    db.data["spec"]["template"]["spec"]["volumes"] = json!([
        {"name": "data", "hostPath": {"path": "/opt/broker_data/db", "type": "DirectoryOrCreate"}},
        {"name": "init", "configMap": {"name": "db-init"}}
    ]);
    let steps = stop_plan(
        &live,
        StopOptions {
            remove: false,
            delete_data: true,
        },
    );
    assert_eq!(
        steps.last(),
        Some(&StopStep::KeepNodeDirectories(vec![
            "/opt/broker_data/db".into()
        ]))
    );
    assert!(
        steps.last().unwrap().to_string().starts_with(
            "keep    node directories /opt/broker_data/db (hostPath data is not deleted"
        )
    );
    assert!(
        !stop_plan(&live, StopOptions::default())
            .iter()
            .any(|s| matches!(s, StopStep::KeepNodeDirectories(_)))
    );
}

/// Issue 21 item 2: our annotations take the `broker-images.io/` prefix;
/// an object applied under the old name is applied once more (writing
/// the new name), after which it is unchanged again.
#[test]
fn the_old_applied_hash_name_is_migrated_by_one_apply() {
    let set = ApplySet::new("broker");
    let prepared = prepare(&fixture(), &set);
    let mut live = as_live(&prepared);
    let db = key(Kind::Deployment, "db");
    let annotations = live
        .get_mut(&db)
        .unwrap()
        .metadata
        .annotations
        .as_mut()
        .unwrap();
    let hash = annotations.remove("broker-images.io/applied-hash").unwrap();
    annotations.insert("broker-images/applied-hash".into(), hash);
    let plan = StartPlan::new(
        &prepared,
        &live,
        Some(&parent_of(&prepared)),
        StartOptions::default(),
    );
    let applied: Vec<&ObjectKey> = plan
        .steps
        .iter()
        .filter_map(|s| match s {
            StartStep::Apply(k) => Some(k),
            _ => None,
        })
        .collect();
    assert_eq!(applied, [&db]);
    assert!(
        prepared.objects[&db]
            .metadata
            .annotations
            .as_ref()
            .unwrap()
            .contains_key("broker-images.io/applied-hash")
    );
}

/// Start order comes from the catalogue's `broker-images.io/start-wave`
/// annotations, not from names in the code: a new workload in wave 1
/// starts after everything in wave 0, and stops before it.
#[test]
fn start_waves_come_from_the_annotation_and_stop_reverses_them() {
    let set = ApplySet::new("broker");
    let mut rendered = fixture();
    let (_, reporter_key) = member(&set, Kind::Deployment, "reporter");
    let mut reporter: serde_json::Value = serde_json::to_value(&reporter_key).unwrap();
    reporter["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove("applyset.kubernetes.io/part-of");
    reporter["metadata"]["annotations"] = json!({"broker-images.io/start-wave": "1"});
    reporter["spec"] = json!({"selector": {"matchLabels": {"app.kubernetes.io/name": "reporter"}}});
    let mut values: Vec<serde_json::Value> = rendered
        .objects
        .values()
        .map(|o| serde_json::to_value(o).unwrap())
        .collect();
    values.push(reporter);
    rendered = RenderedSet::from_values("broker", values).unwrap();
    let prepared = prepare(&rendered, &set);
    let plan = StartPlan::new(&prepared, &BTreeMap::new(), None, StartOptions::default());
    let waits: Vec<Vec<String>> = plan
        .steps
        .iter()
        .filter_map(|s| match s {
            StartStep::Wait(keys) => Some(keys.iter().map(|k| k.name.clone()).collect()),
            _ => None,
        })
        .collect();
    assert_eq!(
        waits,
        [
            vec!["db", "mq"],
            vec!["restapi", "ttn-decoder", "website"],
            vec!["reporter"]
        ],
        "{}",
        text(&plan)
    );
    let stop = stop_plan(&as_live(&prepared), StopOptions::default());
    let stop_waits: Vec<Vec<String>> = stop
        .iter()
        .filter_map(|s| match s {
            StopStep::WaitPodsGone(keys) => Some(keys.iter().map(|k| k.name.clone()).collect()),
            _ => None,
        })
        .collect();
    assert_eq!(
        stop_waits,
        [
            vec!["reporter"],
            vec!["restapi", "ttn-decoder", "website"],
            vec!["db", "mq"]
        ]
    );
}

#[test]
fn a_start_wave_that_is_not_a_number_names_the_workload() {
    let mut values: Vec<serde_json::Value> = fixture()
        .objects
        .values()
        .map(|o| serde_json::to_value(o).unwrap())
        .collect();
    for value in &mut values {
        if value["kind"] == "Deployment" && value["metadata"]["name"] == "mq" {
            value["metadata"]["annotations"]["broker-images.io/start-wave"] = json!("first");
        }
    }
    let error = RenderedSet::from_values("broker", values).unwrap_err();
    assert_eq!(
        error.to_string(),
        "Deployment/mq: annotation broker-images.io/start-wave: \"first\" is not an integer; write a whole number such as \"-1\" or \"1\" (lower starts first)"
    );
}
