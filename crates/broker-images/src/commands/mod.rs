//! Wires the parsed command line to the library crates. Each subcommand is
//! a module; this one holds what they share.

mod build;
pub mod cluster;
mod mirror;
mod push;
mod render;

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use broker_registry::{
    ClientOptions, CredentialSource, Credentials, Publisher, RegistryPrefix, Reporter, RetryPolicy,
};

use crate::cli::{Cli, Command, RegistryArgs};
use crate::reporter::{Mode, Progress};

/// Runs one subcommand to completion.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let progress = Arc::new(Progress::new(Mode::detect(cli.json), cli.verbose));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match cli.command {
        Command::Push(args) => runtime.block_on(push::run(&cli.store, args, cli.json, progress)),
        Command::Mirror(args) => {
            runtime.block_on(mirror::run(&cli.store, args, cli.json, progress))
        }
        Command::Build(args) => runtime.block_on(build::run(&cli.store, args, cli.json, progress)),
        Command::Render(args) => render::run(&args, cli.json),
        Command::Verify(args) => {
            runtime.block_on(build::verify(&cli.store, args, cli.json, progress))
        }
        Command::Start(args) => runtime.block_on(cluster::start(args, cli.json, progress)),
        Command::Stop(args) => runtime.block_on(cluster::stop(args, cli.json, progress)),
        Command::Restart(args) => runtime.block_on(cluster::restart(args, cli.json, progress)),
        Command::Status(args) => runtime.block_on(cluster::status(args, cli.json)),
    }
}

/// The publisher to `prefix`, reaching it as `access` says and reporting
/// to `progress`.
pub(crate) fn publisher(
    prefix: RegistryPrefix,
    access: &RegistryArgs,
    progress: &Arc<Progress>,
) -> anyhow::Result<Publisher> {
    let reporter: Arc<dyn Reporter> = progress.clone();
    Ok(Publisher::new(prefix, &client_options(access)?, reporter)?)
}

/// Client options from the command line. Reads the password from stdin
/// when asked to; it never reaches any output.
pub(crate) fn client_options(args: &RegistryArgs) -> anyhow::Result<ClientOptions> {
    let credentials = match (&args.username, args.password_stdin) {
        (Some(username), true) => {
            let mut password = String::new();
            std::io::stdin()
                .read_to_string(&mut password)
                .context("cannot read the password from stdin")?;
            let password = password.trim_end_matches(['\n', '\r']).to_owned();
            if password.is_empty() {
                bail!("--password-stdin: standard input held no password");
            }
            CredentialSource::Explicit(Credentials::Basic {
                username: username.clone(),
                password,
            })
        }
        _ => CredentialSource::default(),
    };
    Ok(ClientOptions {
        insecure_registries: args.insecure_registries.clone(),
        ca_files: args.ca_files.clone(),
        skip_tls_verify: args.skip_tls_verify,
        credentials,
        retry: RetryPolicy {
            max_attempts: args.retries.max(1),
            ..RetryPolicy::default()
        },
        read_timeout: Duration::from_secs(args.stall_timeout.max(1)),
        give_up_after: Duration::from_secs(args.give_up_after.max(1)),
        concurrency: args.jobs.max(1),
        ..ClientOptions::default()
    })
}

/// The error for images that failed while others went through: one line
/// naming every failed image, each distinct cause said once (a dead
/// registry fails every image the same way). `what` says where to, e.g.
/// "pushed to registry.example/broker".
pub(crate) fn failed_images(
    failed: Vec<(String, anyhow::Error)>,
    total: usize,
    what: &str,
) -> anyhow::Error {
    let count = failed.len();
    // Failures grouped by their cause chain, in the order they happened.
    let mut groups: Vec<(Vec<String>, String, anyhow::Error)> = Vec::new();
    for (name, err) in failed {
        let cause = format!("{err:#}");
        match groups.iter_mut().find(|(_, c, _)| *c == cause) {
            Some((names, _, _)) => names.push(name),
            None => groups.push((vec![name], cause, err)),
        }
    }
    let summary = format!("{count} of {total} images not {what}");
    if groups.len() == 1
        && let Some((names, cause, err)) = groups.pop()
    {
        // The only image there was: the summary would add nothing.
        if total == 1 {
            return err;
        }
        // One cause: keep it as the chain, so --json lists its causes.
        // Build errors already open with the image's name: not twice.
        if let [name] = names.as_slice()
            && cause.starts_with(&format!("{name}: "))
        {
            return err.context(summary);
        }
        return err.context(format!("{summary}: {}", names.join(", ")));
    }
    let parts: Vec<String> = groups
        .into_iter()
        .map(|(names, cause, _)| format!("{}: {cause}", names.join(", ")))
        .collect();
    anyhow::anyhow!("{summary}: {}", parts.join(" | "))
}

/// Prints a result: pretty JSON with `--json`, else the given lines.
pub(crate) fn print_result(json: bool, value: &serde_json::Value, lines: &[String]) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    } else {
        for line in lines {
            println!("{line}");
        }
    }
}
