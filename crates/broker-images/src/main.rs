//! `broker-images`: build the broker's images with sources baked in, push them
//! to a registry, pin their digests into Kubernetes manifests and apply them.
//!
//! `main` only parses arguments and turns errors into exit codes; each
//! subcommand lives in `commands/` and calls the library crates.
//!
//! Errors follow one convention across the workspace: a library error's
//! message says what failed and never repeats its `#[source]`; the chain is
//! printed once, here, outermost first (see [`error_report`]).

mod cli;
mod commands;
mod env;
mod error_report;
mod reporter;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        // A usage error with --json is one JSON object too (--help and
        // --version are not errors: clap prints them).
        Err(err) if err.use_stderr() && std::env::args_os().any(|a| a == "--json") => {
            eprintln!("{}", error_report::render_usage(&err));
            return ExitCode::from(2);
        }
        Err(err) => err.exit(),
    };
    let json = cli.json;
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{}", error_report::render(&err, json));
            // A command line that cannot work as given is a usage error,
            // as clap's own are.
            if err.is::<commands::cluster::UsageError>() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
