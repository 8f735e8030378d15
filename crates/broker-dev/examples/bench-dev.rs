//! The dev loop's speed for a one-line change of one Python file of the
//! example, against a CNCF Distribution registry on loopback and the
//! scripted API endpoint of broker-cluster's tests (or, with
//! `BENCH_KUBECONFIG`, a real API server), compared with the long way:
//! `build --push`, `render` and `start` as separate processes.
//!
//! Run by `scripts/bench-dev`, which builds the binary first and passes it
//! as `BENCH_DEV_BIN`. Prints median and max over `BENCH_RUNS` changes
//! (default 10) of write → seen, built, pushed, applied and ready, the long
//! way's write → started, and their ratio. Exit status 1 when write →
//! applied misses the 300 ms median target.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../../broker-cluster/tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker_build::build::{BuildHooks, BuildOptions, BuildReporter};
use broker_dev::{ChangeReport, DevError, DevOptions, DevReporter, DevSession, Watcher};
use broker_registry::{ClientOptions, Publisher, RegistryPrefix, Silent};
use broker_test_support::{
    EXAMPLE_IMAGES as IMAGES, TestRegistry, busybox, dev_example, kubeconfig_for, repo_root,
};
use tokio::sync::mpsc;

const CHANGED: &str = "broker/src/python/restapi/RestAPI.py";

struct QuietBuild;
impl broker_build::deps::BuildOutput for QuietBuild {
    fn line(&self, _image: &str, _line: &str) {}
}
impl BuildReporter for QuietBuild {
    fn stage(&self, _image: &str, _message: &str) {}
    fn notice(&self, _message: &str) {}
}

struct Rounds(mpsc::UnboundedSender<Result<ChangeReport, String>>);
impl broker_cluster::Reporter for Rounds {
    fn line(&self, _text: &str) {}
}
impl DevReporter for Rounds {
    fn changed(&self, report: &ChangeReport) {
        let _ = self.0.send(Ok(report.clone()));
    }
    fn failed(&self, error: &DevError) {
        let _ = self.0.send(Err(error.to_string()));
    }
}

fn append_line(dir: &Path, n: usize) {
    let path = dir.join(CHANGED);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!("# bench change {n}\n"));
    std::fs::write(path, text).unwrap();
}

fn stats(values: &mut [f64]) -> (f64, f64) {
    values.sort_by(f64::total_cmp);
    let median = if values.is_empty() {
        0.0
    } else if values.len() % 2 == 1 {
        values[values.len() / 2]
    } else {
        f64::midpoint(values[values.len() / 2 - 1], values[values.len() / 2])
    };
    (median, values.last().copied().unwrap_or(0.0))
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(10);
    let bin = PathBuf::from(std::env::var("BENCH_DEV_BIN").expect(
        "BENCH_DEV_BIN: the broker-images binary for the long way (scripts/bench-dev sets it)",
    ));
    let base = std::env::var("BENCH_BASE").unwrap_or_else(|_| busybox().docker_ref);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let registry = TestRegistry::start();
        let host = std::env::var("BENCH_REGISTRY_HOST").unwrap_or_else(|_| registry.host());
        let scripted = support::serve(None).await;
        let real_api = std::env::var_os("BENCH_KUBECONFIG").map(PathBuf::from);
        let tmp = tempfile::tempdir().unwrap();
        let kubeconfig = real_api
            .clone()
            .unwrap_or_else(|| kubeconfig_for(tmp.path(), &scripted.addr));
        let api_name = if real_api.is_some() {
            "the API server of BENCH_KUBECONFIG"
        } else {
            "the scripted endpoint (not a Kubernetes API server: every Deployment is ready at once)"
        };
        println!(
            "registry {host} on loopback; cluster: {api_name}; {runs} one-line changes of {}",
            CHANGED.trim_start_matches("broker/")
        );

        // The dev loop, in process.
        let dev = tmp.path().join("dev");
        dev_example(&dev);
        let build = BuildOptions {
            images_dir: dev.join("images"),
            broker_tree: dev.join("broker"),
            formatters: Some(dev.join("fmt").display().to_string()),
            formatters_rev: None,
            source_revision: Some("bench".to_owned()),
            only: Vec::new(),
            platforms: vec![broker_pins::Platform::host()],
            base_overrides: IMAGES
                .iter()
                .map(|i| ((*i).to_owned(), base.clone()))
                .collect(),
            arg_overrides: Default::default(),
            recorded: Default::default(),
            recorded_bases: Default::default(),
            offline: false,
            deps_ca_files: Vec::new(),
            deps_network: None,
            store_dir: dev.join("store"),
            cache_dir: dev.join("cache"),
            layer_threads: 2,
            verify: false,
        };
        let options = DevOptions {
            build,
            tag: "dev".to_owned(),
            release_lock: dev.join("images.lock"),
            dev_lock: dev.join("images.dev.lock"),
            environment: repo_root().join("environments/single-node.yaml"),
            env_file: Some(dev.join("broker.env")),
            catalogue: repo_root().join("manifests"),
            require_pinned: false,
            namespace: None,
            timeout: Duration::from_secs(300),
            force_conflicts: false,
        };
        let prefix: RegistryPrefix = format!("{host}/bench-dev").parse().unwrap();
        let publisher =
            Arc::new(Publisher::new(prefix, &ClientOptions::default(), Arc::new(Silent)).unwrap());
        let hooks = BuildHooks {
            deps_source: None,
            base_resolver: None,
            layer_streams: None,
            reporter: Arc::new(QuietBuild),
        };
        let mut session = DevSession::prepare(options, hooks, publisher).unwrap();
        let watcher = Watcher::start(&session.plan().roots()).unwrap();
        session.build_all().await.unwrap();
        // The deps images the engine built (the long way builds the same
        // ones) leave the engine when the bench ends.
        let dev_lock = broker_pins::Lock::read(&dev.join("images.dev.lock"))
            .unwrap()
            .unwrap();
        for (name, image) in &dev_lock.images {
            let key = image.deps_key.get(..32).unwrap_or(&image.deps_key);
            broker_test_support::remove_from_engine_when_done(&format!(
                "broker-images/{name}:deps-{key}"
            ));
        }
        let rendered = session.render().unwrap();
        let cluster = match &real_api {
            Some(path) => {
                let mut connect = broker_cluster::ConnectOptions::new(&rendered.namespace);
                connect.kubeconfig = Some(path.clone());
                broker_cluster::Cluster::connect(&connect).await.unwrap()
            }
            None => scripted.cluster(&rendered.namespace),
        };
        let (sender, mut rounds) = mpsc::unbounded_channel();
        let reporter = Rounds(sender);
        session.start(cluster, &rendered, &reporter).await.unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            broker_dev::run(session, watcher, &reporter, async {
                let _ = stopped.await;
            })
            .await
            .finish()
            .await;
        });
        // One untimed change: the first round warms the file caches.
        let mut columns: [Vec<f64>; 5] = Default::default();
        for n in 0..=runs {
            append_line(&dev, n);
            let report = tokio::time::timeout(Duration::from_secs(300), rounds.recv())
                .await
                .expect("no round within 300 s")
                .expect("the loop ended")
                .unwrap_or_else(|e| panic!("round failed: {e}"));
            if n == 0 {
                continue;
            }
            let t = report.timings;
            let built = t.seen_ms + t.build_ms;
            let pushed = built + t.push_ms;
            for (column, value) in columns.iter_mut().zip([
                t.seen_ms,
                built,
                pushed,
                t.write_to_applied_ms,
                t.write_to_ready_ms,
            ]) {
                column.push(value);
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        let _ = stop.send(());
        task.await.unwrap();
        println!("\ndev loop (in process), ms        median      max");
        let mut applied = 0.0;
        for (name, column) in [
            "write → seen",
            "write → built",
            "write → pushed",
            "write → applied",
            "write → ready",
        ]
        .iter()
        .zip(columns.iter_mut())
        {
            let (median, max) = stats(column);
            if *name == "write → applied" {
                applied = median;
            }
            println!("  {name:<28} {median:>8.1} {max:>8.1}");
        }

        // The long way: three processes per change.
        let long = tmp.path().join("long");
        dev_example(&long);
        let mut build_cmd: Vec<String> = vec![
            "build".into(),
            "--push".into(),
            "--source".into(),
            "broker".into(),
            "--formatters".into(),
            "fmt".into(),
            "--images".into(),
            "images".into(),
            "--source-revision".into(),
            "bench".into(),
            // As the dev loop: this machine's platform only.
            "--platform".into(),
            broker_pins::Platform::host().to_string(),
            "--registry".into(),
            format!("{host}/bench-long"),
            "--store".into(),
            "store".into(),
            "--cache".into(),
            "cache".into(),
            "--lock".into(),
            "images.lock".into(),
        ];
        for image in IMAGES {
            build_cmd.push("--base".into());
            build_cmd.push(format!("{image}={base}"));
        }
        let environment = repo_root().join("environments/single-node.yaml");
        let catalogue = repo_root().join("manifests");
        let render_cmd: Vec<String> = vec![
            "render".into(),
            "--lock".into(),
            "images.lock".into(),
            "--source".into(),
            "broker".into(),
            "--environment".into(),
            environment.display().to_string(),
            "--env-file".into(),
            "broker.env".into(),
            "--catalogue".into(),
            catalogue.display().to_string(),
            "--out".into(),
            "rendered".into(),
        ];
        let start_cmd: Vec<String> = vec![
            "start".into(),
            "--manifests".into(),
            "rendered".into(),
            "--kubeconfig".into(),
            kubeconfig.display().to_string(),
        ];
        let step = |args: &[String]| {
            let out = Command::new(&bin)
                .args(args)
                .current_dir(&long)
                .env_remove("KUBECONFIG")
                .env_remove("BROKER_IMAGES_STORE")
                .env_remove("BROKER_IMAGES_REGISTRY")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{} failed:\n{}",
                args[0],
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let mut long_way = Vec::new();
        for n in 0..=runs {
            let written = Instant::now();
            append_line(&long, n);
            tokio::task::block_in_place(|| {
                step(&build_cmd);
                step(&render_cmd);
                step(&start_cmd);
            });
            if n > 0 {
                long_way.push(written.elapsed().as_secs_f64() * 1000.0);
            }
        }
        let (long_median, long_max) = stats(&mut long_way);
        println!("\nthe long way (build --push, render, start as processes), ms");
        println!(
            "  {:<28} {long_median:>8.1} {long_max:>8.1}",
            "write → started"
        );
        println!(
            "\nratio (long way write → started / dev write → applied, medians): {:.1}×",
            long_median / applied.max(0.1)
        );
        let met = applied <= 300.0;
        println!(
            "target write → applied <= 300 ms median: {} ({applied:.1} ms)",
            if met { "met" } else { "NOT met" }
        );
        if !met {
            std::process::exit(1);
        }
    });
}
