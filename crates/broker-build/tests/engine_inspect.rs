//! Issue 22 item 12: a build whose deps come from the store asks the
//! engine about a local base in one unversioned request; what it reads
//! must be what the engine says of the image (`docker image inspect`),
//! a retag must show, and an image the engine lacks is `None`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use broker_test_support::{
    EngineImages, busybox, busybox_arm64, docker_cli, run_ok, unique_suffix,
};

fn inspect(name: &str) -> Option<broker_build::deps::InspectedImage> {
    let engine = tokio::sync::OnceCell::new();
    broker_test_support::runtime()
        .block_on(broker_build::deps::inspect_image(name, &engine, "test"))
}

fn docker_id(name: &str) -> String {
    run_ok(docker_cli().args(["image", "inspect", "--format", "{{.Id}}", name]))
        .trim()
        .to_owned()
}

#[test]
fn the_engine_inspect_reads_the_id_a_retag_changes_and_none_for_a_missing_image() {
    let name = format!("broker-build-test/base:{}", unique_suffix());
    let engine = EngineImages::new();
    engine.add(&name);
    run_ok(docker_cli().args(["tag", &busybox().docker_ref, &name]));
    let found = inspect(&name).expect("the engine has the image");
    assert_eq!(found.id.as_deref(), Some(docker_id(&name).as_str()));

    // The same name on other content: the id read follows.
    run_ok(docker_cli().args(["tag", &busybox_arm64().docker_ref, &name]));
    let retagged = inspect(&name).expect("the engine has the image");
    assert_eq!(retagged.id.as_deref(), Some(docker_id(&name).as_str()));
    assert_ne!(retagged.id, found.id);

    assert_eq!(
        inspect(&format!("broker-build-test/none:{}", unique_suffix())),
        None
    );
}
