//! Command-line arguments. The doc comments here are the `--help` text.

use clap::{Parser, Subcommand};

/// Build, push and deploy the IoT data broker: images with sources baked in,
/// pushed to a registry, pinned by digest into Kubernetes manifests.
#[derive(Debug, Parser)]
#[command(name = "broker-images", version, about, long_about = None)]
pub struct Cli {
    /// Print more detail (repeat for more). Secrets are never printed.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands, one per pipeline stage.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build the broker images into the local store (and push them with --push).
    Build,
    /// Push images from the local store to a registry.
    Push,
    /// Copy third-party images into a registry by digest.
    Mirror,
    /// Rebuild from the same inputs and compare digests with images.lock.
    Verify,
    /// Render pinned Kubernetes manifests from manifests/ and images.lock.
    Render,
    /// Apply the rendered manifests to the cluster.
    Start,
    /// Stop the broker's workloads, keeping its data.
    Stop,
    /// Stop, then start.
    Restart,
    /// Show what runs in the cluster and whether it matches the rendered set.
    Status,
}
