//! Wires the parsed command line to the library crates. Each subcommand is
//! a module; this one holds what they share.

mod attest;
mod build;
pub mod cluster;
pub(crate) mod dev;
mod mirror;
mod push;
mod render;
mod sign;

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
        Command::Push(args) => runtime.block_on(push::run(
            &args.store.store.clone(),
            args,
            cli.json,
            progress,
        )),
        Command::Mirror(args) => runtime.block_on(mirror::run(
            &args.store.store.clone(),
            args,
            cli.json,
            progress,
        )),
        Command::Build(args) => runtime.block_on(build::run(
            &args.store.store.clone(),
            args,
            cli.json,
            progress,
        )),
        Command::Render(args) => {
            if let (true, Some(key)) = (args.require_signed, &args.key) {
                runtime.block_on(sign::require_signed(&args.lock, key, &args.access))?;
            }
            render::run(&args, cli.json)
        }
        Command::Verify(args) => runtime.block_on(build::verify(
            &args.store.store.clone(),
            args,
            cli.json,
            progress,
        )),
        Command::Sign(args) => runtime.block_on(sign::run(
            &args.store.store.clone(),
            args,
            cli.json,
            progress,
        )),
        Command::Start(args) => runtime.block_on(cluster::start(args, cli.json, progress)),
        Command::Stop(args) => runtime.block_on(cluster::stop(args, cli.json, progress)),
        Command::Restart(args) => runtime.block_on(cluster::restart(args, cli.json, progress)),
        Command::Status(args) => runtime.block_on(cluster::status(args, cli.json)),
        Command::History(args) => runtime.block_on(cluster::history(args, cli.json)),
        Command::Rollback(args) => runtime.block_on(cluster::rollback(args, cli.json, progress)),
        Command::Dev(args) => runtime.block_on(dev::run(args, cli.json, progress)),
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
    let (stall, give_up) = (args.stall_timeout.max(1), args.give_up_after.max(1));
    if stall >= give_up {
        bail!(
            "--stall-timeout {stall} is not below --give-up-after {give_up}: one stalled request would end the run instead of being retried; lower --stall-timeout or raise --give-up-after"
        );
    }
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
        read_timeout: Duration::from_secs(stall),
        give_up_after: Duration::from_secs(give_up),
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
    // A chain that opens with the image's name says it already: as
    // `NAME: …` (build errors) it is grouped and shown without it, as
    // `NAME is …` (a store error) it is shown as it is. Either way each
    // image is named once.
    let mut groups: Vec<(Vec<String>, Vec<String>)> = Vec::new();
    for (name, err) in failed {
        let mut chain: Vec<String> = err.chain().map(ToString::to_string).collect();
        let names_itself = match chain.first_mut() {
            Some(first) => match first.strip_prefix(&format!("{name}: ")) {
                Some(rest) => {
                    *first = rest.to_owned();
                    false
                }
                None => first.starts_with(&format!("{name} ")),
            },
            None => false,
        };
        let names = if names_itself { Vec::new() } else { vec![name] };
        match groups
            .iter_mut()
            .find(|(n, c)| *c == chain && !n.is_empty())
        {
            Some((known, _)) if !names.is_empty() => known.extend(names),
            _ => groups.push((names, chain)),
        }
    }
    let summary = format!("{count} of {total} images not {what}");
    let named = |names: &[String], text: String| {
        if names.is_empty() {
            text
        } else {
            format!("{}: {text}", names.join(", "))
        }
    };
    if groups.len() == 1
        && let Some((names, mut chain)) = groups.pop()
    {
        let first = if chain.is_empty() {
            String::new()
        } else {
            chain.remove(0)
        };
        let first = named(&names, first);
        // The only image there was: the summary would add nothing.
        let head = if total == 1 {
            first
        } else {
            format!("{summary}: {first}")
        };
        // One cause: kept as a chain, so --json lists its causes.
        return rechain(head, chain);
    }
    let parts: Vec<String> = groups
        .into_iter()
        .map(|(names, chain)| named(&names, chain.join(": ")))
        .collect();
    anyhow::anyhow!("{summary}: {}", parts.join(" | "))
}

/// An error whose chain is `head` followed by `causes`, each its own link.
fn rechain(head: String, causes: Vec<String>) -> anyhow::Error {
    let mut links = causes.into_iter().rev();
    let Some(root) = links.next() else {
        return anyhow::anyhow!(head);
    };
    let mut err = anyhow::anyhow!(root);
    for link in links {
        err = err.context(link);
    }
    err.context(head)
}

/// What a push or mirror moved, e.g. `1 uploaded (66.6 MiB sent, 48.0 MiB
/// resumed), 2 mounted, 3 already there`: the bytes actually sent (resends
/// included), and those an interrupted earlier run had already put there.
pub(crate) fn transfer_summary(stats: &broker_registry::TransferStats) -> String {
    let sent = indicatif::HumanBytes(stats.bytes_sent);
    let bytes = if stats.bytes_resumed > 0 {
        let resumed = indicatif::HumanBytes(stats.bytes_resumed);
        format!("{sent} sent, {resumed} resumed")
    } else {
        format!("{sent} sent")
    };
    format!(
        "{} uploaded ({bytes}), {} mounted, {} already there",
        stats.uploaded, stats.mounted, stats.existed
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    fn build_failure(name: &str, why: &str) -> anyhow::Error {
        anyhow::anyhow!("cannot reach r:5000 ({why})")
            .context("upload of sha256:ab to broker/x at r:5000 failed after 6 attempts")
            .context(format!("{name}: cannot publish"))
    }

    #[test]
    fn each_image_is_named_once() {
        // Issue 20: `mgmt-app: mgmt-app: cannot publish: …`.
        let failed = vec![
            ("mgmt-app".to_owned(), build_failure("mgmt-app", "reset")),
            (
                "ttn_decoder".to_owned(),
                build_failure("ttn_decoder", "503"),
            ),
        ];
        let text = format!("{:#}", failed_images(failed, 3, "pushed to r:5000/broker"));
        assert_eq!(text.matches("mgmt-app").count(), 1, "{text}");
        assert_eq!(text.matches("ttn_decoder").count(), 1, "{text}");
        assert!(
            text.starts_with(
                "2 of 3 images not pushed to r:5000/broker: mgmt-app: cannot publish: upload of"
            ),
            "{text}"
        );

        // The same cause for both: grouped, each named once, the chain kept.
        let failed = vec![
            ("mgmt-app".to_owned(), build_failure("mgmt-app", "reset")),
            (
                "ttn_decoder".to_owned(),
                build_failure("ttn_decoder", "reset"),
            ),
        ];
        let err = failed_images(failed, 3, "pushed to r:5000/broker");
        let chain: Vec<String> = err.chain().map(ToString::to_string).collect();
        assert_eq!(
            chain,
            [
                "2 of 3 images not pushed to r:5000/broker: mgmt-app, ttn_decoder: cannot publish",
                "upload of sha256:ab to broker/x at r:5000 failed after 6 attempts",
                "cannot reach r:5000 (reset)",
            ]
        );

        // A single image: named once, no summary.
        let failed = vec![("app".to_owned(), build_failure("app", "reset"))];
        let text = format!("{:#}", failed_images(failed, 1, "pushed"));
        assert!(text.starts_with("app: cannot publish: upload of"), "{text}");
        // A push error names no image of its own: the name is added.
        let failed = vec![("app".to_owned(), anyhow::anyhow!("cannot reach r:5000"))];
        let text = format!("{:#}", failed_images(failed, 1, "pushed"));
        assert_eq!(text, "app: cannot reach r:5000");
        // One that names it in its own words is left as it is.
        let failed = vec![
            ("app".to_owned(), anyhow::anyhow!("cannot reach r:5000")),
            (
                "broken".to_owned(),
                anyhow::anyhow!("broken is not a valid manifest"),
            ),
        ];
        let text = format!("{:#}", failed_images(failed, 3, "pushed"));
        assert_eq!(
            text,
            "2 of 3 images not pushed: app: cannot reach r:5000 | broken is not a valid manifest"
        );
    }

    #[test]
    fn the_summary_tells_sent_from_resumed_bytes() {
        let stats = broker_registry::TransferStats {
            uploaded: 1,
            mounted: 2,
            existed: 3,
            bytes_uploaded: 120_000_000,
            bytes_sent: 69_800_000,
            bytes_resumed: 50_300_000,
        };
        assert_eq!(
            transfer_summary(&stats),
            "1 uploaded (66.57 MiB sent, 47.97 MiB resumed), 2 mounted, 3 already there"
        );
        let fresh = broker_registry::TransferStats {
            bytes_resumed: 0,
            ..stats
        };
        assert!(transfer_summary(&fresh).starts_with("1 uploaded (66.57 MiB sent),"));
    }
}
