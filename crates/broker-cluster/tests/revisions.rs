//! Revisions and rollback against the scripted endpoint (see `support`;
//! not a Kubernetes API server): what a ready start records, what it
//! never stores (Secret values), how many are kept, and what a rollback
//! applies.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use broker_cluster::revision::{self, KEEP};
use broker_cluster::{ClusterError, Quiet, RenderedSet};
use serde_json::Value;
use support::{fixture, run, serve, url_params};

/// The example with restapi running `image`.
fn with_restapi_image(image: &str) -> RenderedSet {
    let values: Vec<Value> = fixture()
        .objects
        .values()
        .map(|o| {
            let mut v = serde_json::to_value(o).unwrap();
            if v["kind"] == "Deployment" && v["metadata"]["name"] == "restapi" {
                v["spec"]["template"]["spec"]["containers"][0]["image"] = Value::from(image);
            }
            v
        })
        .collect();
    RenderedSet::from_values("broker", values).unwrap()
}

fn image(n: u32) -> String {
    format!("127.0.0.1:5000/broker/python-base@sha256:{:064x}", n)
}

#[tokio::test]
async fn a_ready_start_records_a_revision_without_secret_values() {
    let server = serve(None).await;
    let cluster = server.cluster("broker");
    let outcome = cluster.start(&fixture(), run(), &Quiet).await.unwrap();
    assert_eq!(outcome.revision, Some(1));
    let revisions = cluster.revisions().await.unwrap();
    assert_eq!(revisions.len(), 1);
    assert_eq!(
        revisions[0].images["restapi/restapi"],
        "127.0.0.1:5000/broker/python-base@sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
    );
    let full = cluster.revision(1).await.unwrap();
    assert!(
        !full.objects.iter().any(|o| o["kind"] == "Secret"),
        "a revision stored a Secret"
    );
    // Not a single credential anywhere in what was sent for it.
    let stored = server
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/configmaps/broker-images-revision-1"))
        .unwrap();
    let fixture_secret =
        std::fs::read_to_string(support::fixture_dir().join("secret-credentials.yaml")).unwrap();
    for line in fixture_secret.lines().filter(|l| l.contains("PASS")) {
        let value = line.split(':').nth(1).unwrap().trim().trim_matches('"');
        assert!(
            !stored.body.contains(value),
            "a Secret value in the revision"
        );
    }
    assert!(!url_params(&stored.query).contains_key("dryRun"));

    // The same objects again: no new revision, nothing written.
    server.clear();
    let again = cluster.start(&fixture(), run(), &Quiet).await.unwrap();
    assert_eq!(again.revision, None);
    assert!(server.requests().iter().all(|r| !r.is_write()));
}

#[tokio::test]
async fn only_the_newest_ten_revisions_are_kept() {
    let server = serve(None).await;
    let cluster = server.cluster("broker");
    for n in 1..=(KEEP as u32 + 2) {
        cluster
            .start(&with_restapi_image(&image(n)), run(), &Quiet)
            .await
            .unwrap();
    }
    let numbers: Vec<u64> = cluster
        .revisions()
        .await
        .unwrap()
        .iter()
        .map(|r| r.number)
        .collect();
    assert_eq!(numbers, (3..=12).collect::<Vec<u64>>());
}

#[tokio::test]
async fn rollback_applies_the_previous_revision_and_records_it_as_the_newest() {
    let server = serve(None).await;
    let cluster = server.cluster("broker");
    cluster
        .start(&with_restapi_image(&image(1)), run(), &Quiet)
        .await
        .unwrap();
    cluster
        .start(&with_restapi_image(&image(2)), run(), &Quiet)
        .await
        .unwrap();
    let previous = cluster.previous_revision().await.unwrap();
    assert_eq!(previous, 1);
    server.clear();
    let target = cluster.revision(previous).await.unwrap();
    let outcome = cluster.rollback(&target, run(), &Quiet).await.unwrap();
    assert_eq!(outcome.applied, ["Deployment/restapi"], "{outcome:?}");
    let patch = server
        .requests()
        .into_iter()
        .find(|r| {
            r.method == "PATCH"
                && r.path.ends_with("/deployments/restapi")
                && !r.query.contains("dryRun")
        })
        .unwrap();
    assert!(patch.body.contains(&image(1)), "{}", patch.body);
    // The Secret kept its values: a rollback never applies a value-less one.
    assert!(
        !server
            .requests()
            .iter()
            .any(|r| r.method == "PATCH" && r.path.contains("/secrets/credentials-")),
        "a rollback applied a Secret"
    );
    assert_eq!(outcome.revision, Some(3));
    let newest = cluster.revision(3).await.unwrap();
    assert_eq!(newest.summary.images["restapi/restapi"], image(1));

    // Rolling back to what runs now (the newest) writes nothing and
    // records nothing.
    let again = cluster.rollback(&newest, run(), &Quiet).await.unwrap();
    assert_eq!(again.revision, None, "{again:?}");
    assert!(!again.wrote, "{again:?}");
}

#[tokio::test]
async fn a_revision_that_does_not_exist_is_one_line_naming_those_there_are() {
    let server = serve(None).await;
    let cluster = server.cluster("broker");
    cluster.start(&fixture(), run(), &Quiet).await.unwrap();
    let error = cluster.revision(7).await.unwrap_err();
    assert!(matches!(error, ClusterError::Refused(_)));
    assert_eq!(
        error.to_string(),
        "there is no revision 7 in namespace broker (it has 1); see broker-images history"
    );
    let error = cluster.previous_revision().await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "namespace broker has only revision 1, the one running; nothing to roll back to"
    );
}

#[test]
fn a_gone_secret_is_replaced_by_the_current_one_of_the_same_base_name() {
    let objects: Vec<Value> = revision::stored_objects(&fixture());
    let replaced =
        revision::with_current_secrets(&objects, &["credentials-m2k9b8c6f7".to_owned()]).unwrap();
    let restapi = replaced
        .iter()
        .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == "restapi")
        .unwrap();
    let text = restapi.to_string();
    assert!(text.contains("credentials-m2k9b8c6f7"), "{text}");
    assert!(!text.contains("credentials-g6tb48ckm2"), "{text}");

    let error = revision::with_current_secrets(&objects, &[]).unwrap_err();
    assert_eq!(
        error,
        "Secret credentials-g6tb48ckm2 of that revision is gone and no current Secret credentials-<hash> replaces it; start with the manifests of today's environment first"
    );
}

#[test]
fn a_revision_round_trips_and_refuses_an_edited_one() {
    let objects = revision::stored_objects(&fixture());
    let config_map = revision::to_config_map("broker", 4, "2026-12-02T10:00:00Z", &objects);
    let decoded = revision::decode(&config_map).unwrap();
    assert_eq!(decoded.objects, objects);
    assert_eq!(decoded.summary.number, 4);
    let mut edited = config_map.clone();
    edited["metadata"]["annotations"][revision::CONTENT_HASH] = Value::from("0".repeat(64));
    let error = revision::decode(&edited).unwrap_err().to_string();
    assert!(error.contains("do not match its recorded hash"), "{error}");
}
