//! `start`, `stop`, `restart` and `status`: the command line in front of
//! broker-cluster. Exit codes are decided here: any error, a wait that
//! did not end ready, or an unhealthy status exits 1.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use broker_cluster::health::BrokerState;
use broker_cluster::{
    Cluster, ClusterError, ConnectOptions, Quiet, RenderedSet, Reporter, StartOutcome, StartRun,
    StopOptions,
};

use crate::cli::{
    HistoryArgs, KubeArgs, ObjectsArgs, RestartArgs, RollbackArgs, StartArgs, StatusArgs, StopArgs,
    WaitArgs,
};
use crate::commands::print_result;
use crate::reporter::Progress;

pub(crate) async fn connect(
    kube: &KubeArgs,
    namespace: &str,
    wait: Option<&WaitArgs>,
) -> anyhow::Result<Cluster> {
    let mut options = ConnectOptions::new(namespace);
    options.kubeconfig = kube.kubeconfig.clone();
    options.context = kube.context.clone();
    if let Some(wait) = wait {
        options.lease_wait = Duration::from_secs(wait.lease_wait);
    }
    Ok(Cluster::connect(&options).await?)
}

fn reporter(json: bool, progress: &Arc<Progress>) -> &dyn Reporter {
    if json { &Quiet } else { progress.as_ref() }
}

/// The objects to apply: read from `--manifests DIR`, or rendered in
/// memory from `--environment` and the other render inputs (nothing is
/// written to disk, so no Secret file is left behind).
fn load_objects(
    objects: &ObjectsArgs,
    kube: &KubeArgs,
    command: &str,
    json: bool,
) -> anyhow::Result<RenderedSet> {
    if let Some(dir) = &objects.manifests {
        // Its errors name the directory or file already.
        return Ok(RenderedSet::read_dir_into(
            dir,
            kube.namespace.as_deref(),
            DEFAULT_NAMESPACE,
        )?);
    }
    let (Some(environment), Some(source)) = (&objects.environment, &objects.source) else {
        return Err(UsageError(format!(
            "{command} needs --manifests DIR (what `render --out` wrote) or --environment FILE --source DIR to render first"
        ))
        .into());
    };
    let rendered = broker_render::render_with_pull_credentials(
        &broker_render::Inputs {
            lock: &objects.lock,
            source,
            environment,
            env_file: objects.env_file.as_deref(),
            manifests: &objects.catalogue,
            require_pinned: objects.require_pinned,
        },
        &super::render::DockerConfigPullCredentials,
    )
    .context("render failed")?;
    for warning in &rendered.warnings {
        crate::reporter::warning(json, warning);
    }
    let values = rendered.objects.into_iter().map(|o| o.value).collect();
    RenderedSet::from_values_into(kube.namespace.as_deref(), DEFAULT_NAMESPACE, values)
        .with_context(|| format!("cannot {command} from {}", environment.display()))
}

/// The namespace when neither `--namespace` nor the objects say.
const DEFAULT_NAMESPACE: &str = "broker";

/// A command line that cannot work as given: exits 2, as clap's own
/// usage errors do.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// `start --manifests DIR`, or `start --environment FILE --source DIR`.
pub async fn start(args: StartArgs, json: bool, progress: Arc<Progress>) -> anyhow::Result<()> {
    let rendered = load_objects(&args.objects, &args.kube, "start", json)?;
    start_rendered(rendered, &args, json, progress).await
}

/// Starts an already parsed set of objects: the entry for `start --lock
/// --environment`, which renders in memory first.
pub async fn start_rendered(
    rendered: RenderedSet,
    args: &StartArgs,
    json: bool,
    progress: Arc<Progress>,
) -> anyhow::Result<()> {
    if args.delete_data && !(args.yes || confirm_delete_data(&rendered.namespace)?) {
        bail!(
            "--delete-data prunes the broker's PersistentVolumeClaims that left the rendered set, and their data; confirm on a terminal or pass --yes"
        );
    }
    let cluster = connect(&args.kube, &rendered.namespace, Some(&args.wait)).await?;
    let run = StartRun {
        dry_run: args.dry_run,
        force_conflicts: args.force_conflicts,
        delete_data: args.delete_data,
        no_prune: args.no_prune,
        credentials_changed_in_place: args.credentials_changed_in_place,
        rotate_credentials: args.rotate_credentials,
        timeout: Duration::from_secs(args.wait.timeout),
    };
    let outcome = match cluster
        .start(&rendered, run, reporter(json, &progress))
        .await
    {
        Ok(outcome) => outcome,
        Err(failure @ ClusterError::NotReady(_)) if args.rollback_on_failure => {
            return Err(roll_back_after(&cluster, failure, run, json, &progress).await);
        }
        Err(e) => return Err(anyhow::Error::new(e).context("start failed")),
    };
    let summary = if args.dry_run {
        format!(
            "dry run: {} object(s) would change, {} unchanged, {} would be pruned; nothing written",
            outcome.applied.len(),
            outcome.unchanged.len(),
            outcome.pruned.len()
        )
    } else if outcome.wrote {
        format!(
            "started: {} applied, {} unchanged, {} pruned, {} old config object(s) deleted",
            outcome.applied.len(),
            outcome.unchanged.len(),
            outcome.pruned.len(),
            outcome.collected.len()
        )
    } else {
        "no changes: the cluster already runs the rendered set; nothing written".to_owned()
    };
    print_result(
        json,
        &serde_json::to_value(&outcome).unwrap_or_default(),
        &[summary],
    );
    Ok(())
}

/// `start --rollback-on-failure` after its wait failed: the newest
/// revision (the last start that ended ready) applied again and waited
/// for. Always an error: the start did fail.
async fn roll_back_after(
    cluster: &Cluster,
    failure: ClusterError,
    run: StartRun,
    json: bool,
    progress: &Arc<Progress>,
) -> anyhow::Error {
    let newest = match cluster.revisions().await {
        Ok(all) => all.last().map(|r| r.number),
        Err(e) => {
            return anyhow::anyhow!(
                "start failed: {failure}; could not read the revisions to roll back to: {e}"
            );
        }
    };
    let Some(number) = newest else {
        return anyhow::anyhow!(
            "start failed: {failure}; no earlier start ended ready, so there is no revision to roll back to"
        );
    };
    reporter(json, progress).line(&format!(
        "start failed: {failure}; rolling back to revision {number}"
    ));
    let result = match cluster.revision(number).await {
        Ok(revision) => {
            cluster
                .rollback(&revision, run, reporter(json, progress))
                .await
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(_) => anyhow::anyhow!(
            "start failed: {failure}; rolled back to revision {number}, which is ready again"
        ),
        Err(e) => anyhow::anyhow!(
            "start failed: {failure}; the rollback to revision {number} failed too: {e}"
        ),
    }
}

/// `history`.
pub async fn history(args: HistoryArgs, json: bool) -> anyhow::Result<()> {
    let namespace = args.kube.namespace_or_default();
    let cluster = connect(&args.kube, &namespace, None).await?;
    let revisions = cluster.revisions().await.context("history failed")?;
    let mut lines = Vec::new();
    if revisions.is_empty() {
        lines.push(format!(
            "no revisions in namespace {namespace}: a start that ends ready records one"
        ));
    }
    let newest = revisions.last().map(|r| r.number);
    for r in &revisions {
        let images: Vec<String> = r
            .images
            .iter()
            .map(|(workload, image)| format!("{workload}={}", short_image(image)))
            .collect();
        lines.push(format!(
            "{:>4}  {}  {}{}",
            r.number,
            r.created,
            images.join(" "),
            if Some(r.number) == newest {
                "  (running)"
            } else {
                ""
            }
        ));
    }
    print_result(
        json,
        &serde_json::json!({ "namespace": namespace, "revisions": revisions }),
        &lines,
    );
    Ok(())
}

/// `name@sha256:` + 12 hex digits: enough to tell revisions apart.
fn short_image(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once("@sha256:") {
        Some((name, hex)) => format!("{name}@{}", &hex[..hex.len().min(12)]),
        None => last.to_owned(),
    }
}

/// Refuses a rollback, before any write, whose images the registry no
/// longer has (deleted by a retention policy, say): one line naming each.
async fn images_still_there(
    revision: &broker_cluster::revision::Revision,
    access: &crate::cli::RegistryArgs,
) -> anyhow::Result<()> {
    let mut pinned: Vec<broker_pins::PinnedRef> = revision
        .summary
        .images
        .values()
        .filter_map(|image| image.parse().ok())
        .collect();
    pinned.sort_by_key(ToString::to_string);
    pinned.dedup_by_key(|p| p.to_string());
    let options = super::client_options(access)?;
    let missing = broker_registry::missing_manifests(&pinned, &options).await;
    if missing.is_empty() {
        return Ok(());
    }
    let each: Vec<String> = missing
        .iter()
        .map(|(image, why)| format!("{image} is {why}"))
        .collect();
    bail!(
        "rollback to revision {} refused, nothing written: {}; push it again or roll back to another revision (broker-images history)",
        revision.summary.number,
        each.join("; ")
    )
}

/// `rollback [REVISION]`.
pub async fn rollback(
    args: RollbackArgs,
    json: bool,
    progress: Arc<Progress>,
) -> anyhow::Result<()> {
    let namespace = args.kube.namespace_or_default();
    let cluster = connect(&args.kube, &namespace, Some(&args.wait)).await?;
    let number = match args.revision {
        Some(n) => n,
        None => cluster.previous_revision().await?,
    };
    let revision = cluster.revision(number).await?;
    images_still_there(&revision, &args.access).await?;
    let run = StartRun {
        dry_run: false,
        force_conflicts: args.force_conflicts,
        delete_data: false,
        no_prune: false,
        credentials_changed_in_place: false,
        rotate_credentials: false,
        timeout: Duration::from_secs(args.wait.timeout),
    };
    let outcome: StartOutcome = cluster
        .rollback(&revision, run, reporter(json, &progress))
        .await
        .with_context(|| format!("rollback to revision {number} failed"))?;
    let summary = match outcome.revision {
        Some(new) => format!(
            "rolled back to revision {number} (recorded as revision {new}): {} applied, {} unchanged, {} pruned",
            outcome.applied.len(),
            outcome.unchanged.len(),
            outcome.pruned.len()
        ),
        None => format!("revision {number} is what runs already; nothing written"),
    };
    print_result(
        json,
        &serde_json::to_value(&outcome).unwrap_or_default(),
        &[summary],
    );
    Ok(())
}

/// Asks on a terminal before data is deleted; off a terminal only `--yes`
/// confirms.
fn confirm_delete_data(namespace: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        return Ok(false);
    }
    eprint!(
        "Delete the broker's PersistentVolumeClaims in namespace {namespace}, and all their data? Type yes: "
    );
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .context("cannot read the confirmation")?;
    Ok(answer.trim() == "yes")
}

/// `stop`.
pub async fn stop(args: StopArgs, json: bool, progress: Arc<Progress>) -> anyhow::Result<()> {
    let options = StopOptions {
        remove: args.remove,
        delete_data: args.delete_data,
    };
    let namespace = args.kube.namespace_or_default();
    let confirmed = args.delete_data && (args.yes || confirm_delete_data(&namespace)?);
    let cluster = connect(&args.kube, &namespace, Some(&args.wait)).await?;
    let steps = cluster
        .stop(
            options,
            confirmed,
            Duration::from_secs(args.wait.timeout),
            reporter(json, &progress),
        )
        .await
        .context("stop failed")?;
    let done: Vec<String> = steps.iter().map(ToString::to_string).collect();
    print_result(
        json,
        &serde_json::json!({ "steps": done }),
        &[format!("stopped: {} step(s)", done.len())],
    );
    Ok(())
}

/// `restart [WORKLOAD…]` and `restart --hard`.
pub async fn restart(args: RestartArgs, json: bool, progress: Arc<Progress>) -> anyhow::Result<()> {
    if args.hard {
        if !args.workloads.is_empty() {
            return Err(UsageError(
                "restart --hard stops and starts everything; name no workloads".into(),
            )
            .into());
        }
        // Loaded before anything stops: bad input must not leave the
        // broker stopped.
        let rendered = load_objects(&args.objects, &args.kube, "restart --hard", json)?;
        let mut kube = args.kube.clone();
        kube.namespace = Some(rendered.namespace.clone());
        stop(
            StopArgs {
                remove: false,
                delete_data: false,
                yes: false,
                wait: args.wait.clone(),
                kube: kube.clone(),
            },
            json,
            progress.clone(),
        )
        .await?;
        let start_args = StartArgs {
            objects: args.objects.clone(),
            dry_run: false,
            force_conflicts: false,
            delete_data: false,
            yes: false,
            no_prune: false,
            rollback_on_failure: false,
            credentials_changed_in_place: false,
            rotate_credentials: false,
            wait: args.wait.clone(),
            kube,
        };
        return start_rendered(rendered, &start_args, json, progress).await;
    }
    let cluster = connect(
        &args.kube,
        &args.kube.namespace_or_default(),
        Some(&args.wait),
    )
    .await?;
    let restarted = cluster
        .restart(
            &args.workloads,
            Duration::from_secs(args.wait.timeout),
            reporter(json, &progress),
        )
        .await
        .context("restart failed")?;
    print_result(
        json,
        &serde_json::json!({ "restarted": restarted }),
        &[format!("restarted: {}", restarted.join(", "))],
    );
    Ok(())
}

/// `status`: exit 0 only when healthy.
pub async fn status(args: StatusArgs, json: bool) -> anyhow::Result<()> {
    let lock = match &args.lock {
        Some(path) => Some(
            broker_pins::Lock::read(path)?
                .with_context(|| format!("lock file {} does not exist", path.display()))?,
        ),
        None => None,
    };
    let namespace = args.kube.namespace_or_default();
    let cluster = connect(&args.kube, &namespace, None).await?;
    let report = cluster
        .status(lock.as_ref())
        .await
        .context("status failed")?;
    let mut value = serde_json::to_value(&report).unwrap_or_default();
    let mut lines = report.lines();
    if let Some(lock) = &args.lock {
        let (dev_lock, builds) = super::dev::dev_builds(&report, lock)?;
        for build in &builds {
            lines.push(format!(
                "{} runs a dev build of {} ({}, recorded in {}), not {}",
                build.workload,
                build.image,
                build.digest.get(..19).unwrap_or(&build.digest),
                dev_lock.display(),
                lock.display()
            ));
        }
        if !builds.is_empty() {
            value["dev_builds"] = serde_json::to_value(&builds).unwrap_or_default();
        }
    }
    print_result(json, &value, &lines);
    match report.state {
        BrokerState::Absent => bail!("no broker in namespace {namespace}"),
        BrokerState::Stopped => bail!(
            "the broker in namespace {namespace} is stopped (broker-images start brings it back)"
        ),
        BrokerState::Running => {}
    }
    if !report.healthy {
        bail!(
            "the broker in namespace {namespace} is not healthy (not ready, drifted from the lock, a workload missing, or a claim unbound)"
        );
    }
    Ok(())
}
