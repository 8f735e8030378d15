//! `broker-images`: build the broker's images with sources baked in, push them
//! to a registry, pin their digests into Kubernetes manifests and apply them.
//!
//! `main` only parses arguments and turns errors into exit codes; each
//! subcommand lives in `commands/` and calls the library crates.

mod cli;
mod commands;
mod env;
mod reporter;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line: what failed, then why, outermost first.
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
