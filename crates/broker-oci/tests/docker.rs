//! The store's images against the real consumers: `docker save` output
//! imported, skopeo inspecting and copying what we wrote, and `docker run`
//! showing the baked-in files with the expected owners, modes and contents.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use broker_oci::base::{LayerListings, dir_metadata, file_head};
use broker_oci::image::{
    LABEL_BASE_DIGEST, LABEL_BASE_NAME, LABEL_CREATED, LABEL_REVISION, LABEL_SOURCE,
};
use broker_oci::{
    ImageBuilder, LayerMapping, LayerOptions, ParentDir, Provenance, RuntimeConfig,
    SourceDateEpoch, Store, build_layer,
};
use broker_test_support::base_images::busybox;
use broker_test_support::docker::{docker_cli, require_tool, run_ok};

/// `docker save` the busybox test image and import it into `store`.
fn import_busybox(store: &Store, dir: &Path) -> broker_oci::StoredImage {
    let base = busybox();
    let archive = dir.join("busybox.tar");
    run_ok(
        docker_cli()
            .arg("save")
            .arg(&base.docker_ref)
            .arg("-o")
            .arg(&archive),
    );
    store.import_docker_archive(&archive, "busybox").unwrap()
}

#[test]
fn docker_archive_import_is_deterministic() {
    let t = tempfile::tempdir().unwrap();
    let a = Store::open(&t.path().join("a")).unwrap();
    let b = Store::open(&t.path().join("b")).unwrap();
    let first = import_busybox(&a, t.path());
    let second = import_busybox(&b, t.path());
    assert_eq!(first.raw_manifest, second.raw_manifest);
    // Again into the same store: served from the compressed-layer cache.
    let again = import_busybox(&a, t.path());
    assert_eq!(
        again.manifest_descriptor.digest(),
        first.manifest_descriptor.digest()
    );
    // The config is kept byte for byte: its digest is the Docker image ID.
    let id =
        run_ok(docker_cli().args(["image", "inspect", "-f", "{{.Id}}", &busybox().docker_ref]));
    assert_eq!(first.manifest.config().digest().to_string(), id.trim());
    assert_eq!(
        first.manifest.media_type().as_ref().unwrap().to_string(),
        "application/vnd.oci.image.manifest.v1+json"
    );
    // skopeo reads the imported image.
    let skopeo = require_tool("skopeo", "apt-get install -y skopeo");
    run_ok(
        Command::new(skopeo)
            .arg("inspect")
            .arg(format!("oci:{}:busybox", a.dir().display())),
    );
}

#[test]
fn built_image_runs_with_expected_owners_modes_and_contents() {
    let skopeo = require_tool("skopeo", "apt-get install -y skopeo");
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(&t.path().join("store")).unwrap();
    let busybox_image = import_busybox(&store, t.path());
    let epoch = SourceDateEpoch::new(1_700_000_000);
    let opts = LayerOptions::default();

    // A base that has /home/broker owned by uid 1000, mode 0750.
    let empty = t.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let mut home = LayerMapping::new(&empty, "/home/broker");
    home.uid = 1000;
    home.gid = 1000;
    home.epoch = epoch;
    home.parents = vec![ParentDir {
        path: "/home/broker".into(),
        uid: 1000,
        gid: 1000,
        mode: 0o750,
    }];
    let home_layer = build_layer(&store, &home, &opts).unwrap();
    let mut b = ImageBuilder::new(&busybox_image, "broker-test/busybox").unwrap();
    b.append_layer(&home_layer, "home directory").epoch(epoch);
    let broker_base = b.write(&store).unwrap();
    store
        .tag("broker-base", &broker_base.manifest_descriptor)
        .unwrap();

    // The sources, baked in below /home/broker.
    let src = t.path().join("src");
    fs::create_dir_all(src.join("pkg")).unwrap();
    fs::write(src.join("main.py"), "print('broker')\n").unwrap();
    fs::write(src.join("pkg/mod.py"), "X = 1\n").unwrap();
    fs::write(src.join("run.sh"), "#!/bin/sh\necho running\n").unwrap();
    fs::set_permissions(src.join("run.sh"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::set_permissions(src.join("main.py"), fs::Permissions::from_mode(0o600)).unwrap();
    let base = store.image("broker-base").unwrap();
    let parents = dir_metadata(&store, &base, &["/home", "/home/broker"]).unwrap();
    assert!(parents.contains(&ParentDir {
        path: "/home/broker".into(),
        uid: 1000,
        gid: 1000,
        mode: 0o750
    }));
    let mut app = LayerMapping::new(&src, "/home/broker/app");
    app.uid = 1000;
    app.gid = 1000;
    app.epoch = epoch;
    app.parents = parents;
    let app_layer = build_layer(&store, &app, &opts).unwrap();

    let mut env = BTreeMap::new();
    env.insert("BROKER_HOME".to_owned(), "/home/broker".to_owned());
    let mut labels = BTreeMap::new();
    labels.insert("org.example.role".to_owned(), "test".to_owned());
    let mut b = ImageBuilder::new(&base, "broker-base").unwrap();
    b.append_layer(&app_layer, "python sources")
        .epoch(epoch)
        .runtime(RuntimeConfig {
            user: Some("1000:1000".into()),
            working_dir: Some("/home/broker/app".into()),
            env,
            entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
            cmd: Some(vec!["./run.sh".into()]),
            exposed_ports: vec!["1883/tcp".into()],
            labels,
        })
        .provenance(Provenance {
            source: Some("https://example.invalid/broker".into()),
            revision: Some("0123abcd".into()),
            ..Provenance::default()
        });
    let image = b.write(&store).unwrap();
    store.tag("app:test", &image.manifest_descriptor).unwrap();
    // Same inputs, same image.
    assert_eq!(b.write(&store).unwrap().raw_manifest, image.raw_manifest);

    // skopeo inspect.
    let oci_ref = format!("oci:{}:app:test", store.dir().display());
    let inspect: serde_json::Value =
        serde_json::from_str(&run_ok(Command::new(&skopeo).arg("inspect").arg(&oci_ref))).unwrap();
    assert_eq!(
        inspect["Digest"],
        image.manifest_descriptor.digest().to_string()
    );
    assert_eq!(inspect["Created"], "2023-11-14T22:13:20Z");
    let labels = &inspect["Labels"];
    assert_eq!(labels[LABEL_SOURCE], "https://example.invalid/broker");
    assert_eq!(labels[LABEL_REVISION], "0123abcd");
    assert_eq!(labels[LABEL_CREATED], "2023-11-14T22:13:20Z");
    assert_eq!(labels[LABEL_BASE_NAME], "broker-base");
    assert_eq!(
        labels[LABEL_BASE_DIGEST],
        base.manifest_descriptor.digest().to_string()
    );
    assert_eq!(labels["org.example.role"], "test");
    assert_eq!(
        inspect["Layers"].as_array().unwrap().len(),
        busybox_image.manifest.layers().len() + 2
    );
    let raw: serde_json::Value = serde_json::from_str(&run_ok(
        Command::new(&skopeo)
            .args(["inspect", "--raw"])
            .arg(&oci_ref),
    ))
    .unwrap();
    for l in raw["layers"].as_array().unwrap() {
        assert_eq!(
            l["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
    }
    let config: serde_json::Value = serde_json::from_str(&run_ok(
        Command::new(&skopeo)
            .args(["inspect", "--config"])
            .arg(&oci_ref),
    ))
    .unwrap();
    let history = config["history"].as_array().unwrap();
    let last = history.last().unwrap()["created_by"].as_str().unwrap();
    assert!(
        last.contains("python sources") && last.contains("/home/broker/app"),
        "{last}"
    );

    // Into the engine, and run.
    let docker_ref = format!(
        "broker-oci-test/app:{}",
        broker_test_support::unique_suffix()
    );
    let engine = broker_test_support::EngineImages::new();
    engine.add(&docker_ref);
    run_ok(
        Command::new(&skopeo)
            .args(["--insecure-policy", "copy"])
            .arg(&oci_ref)
            .arg(format!("docker-daemon:{docker_ref}")),
    );
    let out = run_ok(docker_cli().args(["run", "--rm", &docker_ref]));
    assert_eq!(out, "running\n");
    let listing = run_ok(docker_cli().args([
        "run",
        "--rm",
        "--entrypoint",
        "/bin/sh",
        &docker_ref,
        "-c",
        "id -u; pwd; echo $BROKER_HOME; \
         for p in /home /home/broker /home/broker/app /home/broker/app/pkg \
                  /home/broker/app/main.py /home/broker/app/run.sh /home/broker/app/pkg/mod.py; do \
           stat -c '%u:%g %a %n' $p; done; cat /home/broker/app/main.py",
    ]));
    assert_eq!(
        listing,
        "1000\n/home/broker/app\n/home/broker\n\
         0:0 755 /home\n\
         1000:1000 750 /home/broker\n\
         1000:1000 755 /home/broker/app\n\
         1000:1000 755 /home/broker/app/pkg\n\
         1000:1000 644 /home/broker/app/main.py\n\
         1000:1000 755 /home/broker/app/run.sh\n\
         1000:1000 644 /home/broker/app/pkg/mod.py\n\
         print('broker')\n"
    );
}

/// Builds `FROM busybox` + one file `name` + one file the same in every
/// such image (same bytes, same mtime: the same layer on another parent,
/// which `docker save` writes once and links to) in the engine as `tag`.
fn build_on_busybox(dir: &Path, tag: &str, name: &str) {
    let context = dir.join(format!("ctx-{name}"));
    fs::create_dir_all(&context).unwrap();
    fs::write(context.join(name), format!("{name}\n")).unwrap();
    fs::write(context.join("shared"), "shared\n").unwrap();
    run_ok(
        Command::new("touch")
            .args(["-d", "@1700000000"])
            .arg(context.join("shared")),
    );
    fs::write(
        context.join("Dockerfile"),
        format!(
            "FROM {}\nCOPY {name} /{name}\nCOPY shared /shared\n",
            busybox().docker_ref
        ),
    )
    .unwrap();
    run_ok(
        docker_cli()
            .env("DOCKER_BUILDKIT", "0")
            .args(["build", "-q", "-t", tag])
            .arg(&context),
    );
}

#[test]
fn one_export_of_several_images_compresses_each_layer_once_whatever_the_thread_count() {
    use broker_oci::docker_archive::{ArchiveImage, ImportOptions, KnownLayers};
    let options = |known, threads| ImportOptions {
        known,
        threads,
        streams: None,
    };
    let none = KnownLayers::new();
    let t = tempfile::tempdir().unwrap();
    let suffix = broker_test_support::unique_suffix();
    let (a, b) = (
        format!("broker-oci-test/a:{suffix}"),
        format!("broker-oci-test/b:{suffix}"),
    );
    let engine = broker_test_support::EngineImages::new();
    engine.add(&a);
    engine.add(&b);
    build_on_busybox(t.path(), &a, "a");
    build_on_busybox(t.path(), &b, "b");
    let archive = t.path().join("both.tar");
    run_ok(docker_cli().args(["save", &a, &b, "-o"]).arg(&archive));
    // The shared layer sits under both images' parents: one copy and a
    // symlink in the archive, which the import must follow.
    let listing = run_ok(Command::new("tar").arg("tvf").arg(&archive));
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with('l') && l.contains("layer.tar")),
        "no linked layer in the archive:\n{listing}"
    );
    let wanted = [
        ArchiveImage {
            repo_tag: &a,
            store_tag: "a",
        },
        ArchiveImage {
            repo_tag: &b,
            store_tag: "b",
        },
    ];

    let mut imports = Vec::new();
    for threads in [1, 4] {
        let store = Store::open(&t.path().join(format!("store-{threads}"))).unwrap();
        let images = store
            .import_docker_archive_images(&archive, &wanted, options(&none, threads))
            .unwrap();
        imports.push((store, images));
    }
    let (store, images) = &imports[0];
    for (one, four) in images.iter().zip(&imports[1].1) {
        assert_eq!(
            one.raw_manifest, four.raw_manifest,
            "thread count changed a digest"
        );
    }
    // The busybox layer is shared: one blob, in both manifests.
    let base_layer = images[0].manifest.layers()[0].digest().clone();
    assert_eq!(images[1].manifest.layers()[0].digest(), &base_layer);
    let blobs = fs::read_dir(store.dir().join("blobs/sha256"))
        .unwrap()
        .count();
    let layers: std::collections::BTreeSet<_> = images
        .iter()
        .flat_map(|i| i.manifest.layers().iter().map(|l| l.digest().to_string()))
        .collect();
    assert_eq!(
        blobs,
        layers.len() + 2 + 2,
        "layers, two configs, two manifests"
    );

    // What each layer does to the tree was noted on the way: the base layer
    // is never decompressed again (its blob may even be gone).
    let base_digest = broker_oci::oci_digest::from_oci(&base_layer).unwrap();
    fs::remove_file(store.blob_path(&base_digest)).unwrap();
    let dirs = dir_metadata(store, &images[0], &["/bin"]).unwrap();
    assert_eq!(dirs.len(), 1, "{dirs:?}");

    // A layer the caller vouches for (here: the busybox layer compressed at
    // another level, as a registry might serve it) is kept, not recompressed.
    let known_store = Store::open(&t.path().join("store-known")).unwrap();
    let diff_id: broker_oci::Digest = images[0].config.rootfs().diff_ids()[0].parse().unwrap();
    let uncompressed = {
        use std::io::Read;
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(fs::File::open(imports[1].0.blob_path(&base_digest)).unwrap())
            .read_to_end(&mut out)
            .unwrap();
        out
    };
    let other_gzip = {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&uncompressed).unwrap();
        e.finish().unwrap()
    };
    let other_digest = known_store.write_blob(&other_gzip).unwrap();
    let mut known = KnownLayers::new();
    known.insert(
        diff_id,
        oci_spec::image::Descriptor::new(
            oci_spec::image::MediaType::ImageLayerGzip,
            other_gzip.len() as u64,
            broker_oci::oci_digest::to_oci(&other_digest),
        ),
    );
    let kept = known_store
        .import_docker_archive_images(&archive, &wanted[..1], options(&known, 2))
        .unwrap();
    assert_eq!(
        kept[0].manifest.layers()[0].digest().to_string(),
        other_digest.to_string()
    );
    assert_ne!(kept[0].raw_manifest, images[0].raw_manifest);

    // The deps platform check's file heads: images sharing a base read its
    // layer once per LayerListings. The second image's lookup is answered
    // with its blob gone; a fresh LayerListings has to read it, and cannot.
    let (store, images) = (&imports[1].0, &imports[1].1);
    let listings = LayerListings::default();
    let sh = file_head(store, &images[0], "/bin/sh", 4, &listings).unwrap();
    assert_eq!(sh.as_deref(), Some(&b"\x7fELF"[..]), "busybox is ELF");
    fs::remove_file(store.blob_path(&base_digest)).unwrap();
    assert_eq!(
        file_head(store, &images[1], "/bin/sh", 4, &listings).unwrap(),
        sh
    );
    assert!(file_head(store, &images[1], "/bin/sh", 4, &LayerListings::default()).is_err());
}
