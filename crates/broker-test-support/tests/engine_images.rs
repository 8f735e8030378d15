//! Issue 22 item 11: what a test makes in the Docker engine goes when the
//! test does — its guard's references also when it panics, a registry's
//! references with the registry, and a store's deps tags once no other
//! test of the process may still use them. Real engine, real registry.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::sync::Mutex;

use broker_test_support::{EngineImages, TestRegistry, busybox, docker_cli, run_ok, unique_suffix};

/// The deps tags wait for the process's last live guard: these tests
/// count on being the only guards alive, so they take turns.
static ALONE: Mutex<()> = Mutex::new(());

fn in_engine(reference: &str) -> bool {
    docker_cli()
        .args(["image", "inspect", "--format", "{{.Id}}", reference])
        .output()
        .unwrap()
        .status
        .success()
}

fn tag_busybox(reference: &str) {
    run_ok(docker_cli().args(["tag", &busybox().docker_ref, reference]));
    assert!(in_engine(reference), "{reference} was not tagged");
}

#[test]
fn a_guard_removes_what_its_test_tagged_also_when_the_test_panics() {
    let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
    let reference = format!("broker-test-guard/panics:{}", unique_suffix());
    let tagged = reference.clone();
    let panicked = std::thread::spawn(move || {
        let engine = EngineImages::new();
        engine.add(&tagged);
        tag_busybox(&tagged);
        panic!("the test fails after tagging");
    })
    .join();
    assert!(panicked.is_err());
    assert!(!in_engine(&reference), "{reference} outlived its test");
    // The image under it is a shared fixture: it stays.
    assert!(in_engine(&busybox().docker_ref));
}

#[test]
fn a_registry_takes_the_engine_references_under_its_host_with_it() {
    let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
    let registry = TestRegistry::start();
    let tag = format!("{}/guard/pushed:{}", registry.host(), unique_suffix());
    tag_busybox(&tag);
    run_ok(docker_cli().args(["push", &tag]));
    let pulled = {
        let listed = run_ok(docker_cli().args([
            "image",
            "inspect",
            "--format",
            "{{join .RepoDigests \"\\n\"}}",
            &tag,
        ]));
        listed
            .lines()
            .find(|l| l.starts_with(&registry.host()))
            .unwrap_or_else(|| panic!("no digest reference under the registry: {listed}"))
            .to_owned()
    };
    let kept = TestRegistry::start();
    let other = format!("{}/guard/untouched:{}", kept.host(), unique_suffix());
    tag_busybox(&other);
    drop(registry);
    assert!(!in_engine(&tag), "{tag} outlived its registry");
    assert!(!in_engine(&pulled), "{pulled} outlived its registry");
    // A registry the engine never talked to sweeps nothing; another
    // registry's references are not this one's to remove.
    drop(kept);
    assert!(
        in_engine(&other),
        "{other} was removed by a registry it is not under"
    );
    run_ok(docker_cli().args(["rmi", &other]));
}

#[test]
fn a_deps_tag_two_tests_share_goes_with_the_last_of_them() {
    let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
    use sha2::Digest as _;
    let key = hex::encode(sha2::Sha256::digest(unique_suffix()))[..32].to_owned();
    let deps = format!("broker-images/guard-shared:deps-{key}");
    let (first, second) = (EngineImages::new(), EngineImages::new());
    // Both stores show the deps build (its log), as two builds of the same
    // spec on the same base do.
    let stores: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    for store in &stores {
        std::fs::create_dir(store.path().join("logs")).unwrap();
        std::fs::write(
            store
                .path()
                .join(format!("logs/guard-shared-deps-{key}.log")),
            "",
        )
        .unwrap();
    }
    first.watch_store(stores[0].path());
    second.watch_store(stores[1].path());
    tag_busybox(&deps);
    drop(first);
    assert!(
        in_engine(&deps),
        "{deps} removed while another test used it"
    );
    drop(second);
    assert!(!in_engine(&deps), "{deps} outlived the last test using it");
}
