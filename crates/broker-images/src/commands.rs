//! Wires the parsed command line to the library crates.

use anyhow::bail;

use crate::cli::{Cli, Command};

/// Runs one subcommand to completion.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let name = match cli.command {
        Command::Build => "build",
        Command::Push => "push",
        Command::Mirror => "mirror",
        Command::Verify => "verify",
        Command::Render => "render",
        Command::Start => "start",
        Command::Stop => "stop",
        Command::Restart => "restart",
        Command::Status => "status",
    };
    bail!("`broker-images {name}` is not implemented yet")
}
