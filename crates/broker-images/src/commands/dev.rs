//! `broker-images dev`: the command line in front of broker-dev. Builds,
//! pushes and starts once, then runs a round per save until Ctrl-C, and
//! says how to return to the release lock.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use broker_build::build::{BaseResolver, BuildHooks, BuildReporter, DepsSource};
use broker_dev::{ChangeReport, DevError, DevOptions, DevReporter, DevSession, RegistryDeps};

use super::build::RegistryBases;
use crate::cli::DevArgs;
use crate::reporter::Progress;

/// Prints each round: one line per change, or one JSON event with the
/// timings; a failed round as one `dev: error: …` line (or event).
struct Rounds {
    progress: Arc<Progress>,
    json: bool,
}

impl broker_cluster::Reporter for Rounds {
    fn line(&self, text: &str) {
        if !self.json {
            self.progress.line(text);
        }
    }
}

impl DevReporter for Rounds {
    fn changed(&self, report: &ChangeReport) {
        if self.json {
            let mut event = serde_json::to_value(report).unwrap_or_default();
            event["event"] = serde_json::json!("change");
            eprintln!("{event}");
        } else {
            self.progress.line(&report.line());
        }
    }

    fn failed(&self, error: &DevError) {
        let causes = causes(error);
        if self.json {
            eprintln!(
                "{}",
                serde_json::json!({"event": "change_failed", "error": error.to_string(), "causes": causes})
            );
        } else {
            let mut chain = vec![error.to_string()];
            chain.extend(causes);
            self.progress.line(&format!(
                "dev: error: {}; nothing applied, waiting for the next save",
                chain.join(": ")
            ));
        }
    }
}

/// The causes of `error`, outermost first.
fn causes(error: &DevError) -> Vec<String> {
    let mut out = Vec::new();
    let mut next = std::error::Error::source(error);
    while let Some(cause) = next {
        out.push(cause.to_string());
        next = cause.source();
    }
    out
}

pub(crate) async fn run(args: DevArgs, json: bool, progress: Arc<Progress>) -> anyhow::Result<()> {
    let store_dir = args.store.store.clone();
    let mut build = super::build::options(&store_dir, &args.sources, false)?;
    // Seconds per change means this machine's platform only (a foreign
    // one runs under emulation); --platform still chooses.
    if build.platforms.is_empty() {
        build.platforms = vec![broker_pins::Platform::host()];
    }
    let store = broker_oci::Store::open(&store_dir)?;
    let publisher = Arc::new(
        super::publisher(args.registry.clone(), &args.access, &progress)?.recording_for(&store),
    );
    let reporter: Arc<dyn BuildReporter> = progress.clone();
    let hooks = BuildHooks {
        deps_source: Some(Arc::new(RegistryDeps(Arc::clone(&publisher))) as Arc<dyn DepsSource>),
        base_resolver: Some(
            Arc::new(RegistryBases::new(&args.access, None)) as Arc<dyn BaseResolver>
        ),
        layer_streams: None,
        reporter,
    };
    let dev_lock = broker_dev::dev_lock_path(&args.lock);
    let options = DevOptions {
        build,
        tag: args.tag.clone(),
        release_lock: args.lock.clone(),
        dev_lock: dev_lock.clone(),
        environment: args.environment.clone(),
        env_file: args.env_file.clone(),
        catalogue: args.catalogue.clone(),
        require_pinned: args.require_pinned,
        namespace: args.kube.namespace.clone(),
        timeout: Duration::from_secs(args.wait.timeout),
        force_conflicts: args.force_conflicts,
    };
    let mut session = DevSession::prepare(options, hooks, publisher).context("dev")?;
    // Watching before the first build: a save during it is the first round.
    let watcher = broker_dev::Watcher::start(&session.plan().roots()).context("dev")?;
    for missing in &watcher.missing {
        crate::reporter::warning(
            json,
            &format!(
                "{} does not exist: nothing there is watched",
                missing.display()
            ),
        );
    }
    let built = session.build_all().await.context("dev: first build")?;
    progress.line(&format!(
        "dev: built and pushed {} (recorded in {}; {} is not written)",
        built.join(", "),
        dev_lock.display(),
        args.lock.display()
    ));
    let rendered = session.render().context("dev: first render")?;
    let cluster =
        super::cluster::connect(&args.kube, &rendered.namespace, Some(&args.wait)).await?;
    let namespace = rendered.namespace.clone();
    let rounds = Rounds {
        progress: Arc::clone(&progress),
        json,
    };
    let started = session
        .start(cluster, &rendered, &rounds)
        .await
        .context("dev")?;
    progress.line(&format!(
        "dev: started ({} applied, {} unchanged); watching {} tree(s) — save a file to roll it out, Ctrl-C to stop",
        started.applied.len(),
        started.unchanged.len(),
        session.plan().layers().len()
    ));
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    broker_dev::run(session, watcher, &rounds, stop)
        .await
        .finish()
        .await;
    let back = return_command(&args, &namespace);
    progress.line(&format!(
        "dev: stopped; the cluster keeps running the dev builds. To return it to the release lock: {back}"
    ));
    super::print_result(
        json,
        &serde_json::json!({"stopped": true, "dev_lock": dev_lock, "return_to_release": back}),
        &[],
    );
    Ok(())
}

/// The one command that puts the cluster back on the release lock.
fn return_command(args: &DevArgs, namespace: &str) -> String {
    let mut words = vec![
        "broker-images".to_owned(),
        "start".to_owned(),
        "--environment".to_owned(),
        quoted(&args.environment),
        "--source".to_owned(),
        quoted(&args.sources.source),
        "--lock".to_owned(),
        quoted(&args.lock),
    ];
    if let Some(env_file) = &args.env_file {
        words.extend(["--env-file".to_owned(), quoted(env_file)]);
    }
    if args.catalogue != Path::new("manifests") {
        words.extend(["--catalogue".to_owned(), quoted(&args.catalogue)]);
    }
    if args.require_pinned {
        words.push("--require-pinned".to_owned());
    }
    words.extend(["--namespace".to_owned(), namespace.to_owned()]);
    if let Some(kubeconfig) = &args.kube.kubeconfig {
        words.extend(["--kubeconfig".to_owned(), quoted(kubeconfig)]);
    }
    if let Some(context) = &args.kube.context {
        words.extend(["--context".to_owned(), context.clone()]);
    }
    words.join(" ")
}

/// A path as a shell word.
fn quoted(path: &Path) -> String {
    let text = path.display().to_string();
    if text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+=:@".contains(c))
    {
        text
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// A workload image that differs from the release lock because it is a
/// build `dev` pushed.
#[derive(Debug, serde::Serialize)]
pub(crate) struct DevBuild {
    /// The workload.
    pub workload: String,
    /// The image name in the dev lock.
    pub image: String,
    /// The digest it runs (or is specified with, before a pod runs).
    pub digest: String,
}

/// The drifted images of `report` that the dev lock beside `lock` names:
/// what `status --lock` calls dev builds rather than unknown drift.
pub(crate) fn dev_builds(
    report: &broker_cluster::StatusReport,
    lock: &Path,
) -> anyhow::Result<(std::path::PathBuf, Vec<DevBuild>)> {
    let path = broker_dev::dev_lock_path(lock);
    let Some(dev) = broker_pins::Lock::read(&path)? else {
        return Ok((path, Vec::new()));
    };
    let mut found = Vec::new();
    for workload in &report.workloads {
        for image in workload.images.iter().filter(|i| i.drift) {
            let specified = image.image.rsplit_once('@').map(|(_, d)| d.to_owned());
            let Some(digest) = image.running.clone().or(specified) else {
                continue;
            };
            if let Some((name, _)) = dev
                .images
                .iter()
                .find(|(_, locked)| locked.digest.to_string() == digest)
            {
                found.push(DevBuild {
                    workload: workload.name.clone(),
                    image: name.clone(),
                    digest,
                });
            }
        }
    }
    Ok((path, found))
}
