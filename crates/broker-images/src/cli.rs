//! Command-line arguments. The doc comments here are the `--help` text.

use std::path::PathBuf;

use broker_registry::{
    DEFAULT_GIVE_UP_SECS, DEFAULT_JOBS, DEFAULT_RETRIES, DEFAULT_STALL_TIMEOUT_SECS, RegistryPrefix,
};
use clap::{Args, Parser, Subcommand};

use crate::env;

/// Build, push and deploy the IoT data broker: images with sources baked in,
/// pushed to a registry, pinned by digest into Kubernetes manifests.
#[derive(Debug, Parser)]
#[command(name = "broker-images", version, about, long_about = None)]
pub struct Cli {
    /// Print more detail (repeat for more). Secrets are never printed.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Print results as JSON on stdout, progress as JSON lines on stderr,
    /// and a failure as one JSON object on stderr.
    #[arg(long, global = true)]
    pub json: bool,

    /// The local image store (an OCI image layout directory).
    #[arg(long, global = true, env = env::STORE, default_value = ".broker-images/store")]
    pub store: PathBuf,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How to reach registries: transport and credentials.
#[derive(Debug, Args, Clone, Default)]
pub struct RegistryArgs {
    /// Speak plain HTTP to this registry host (repeatable). Loopback hosts
    /// (127.0.0.0/8, localhost) always use plain HTTP.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure_registries: Vec<String>,

    /// Trust this PEM CA certificate besides the system roots (repeatable).
    #[arg(long = "ca-file", value_name = "PATH")]
    pub ca_files: Vec<PathBuf>,

    /// Accept any TLS certificate. Only for throwaway registries.
    #[arg(long = "insecure-skip-tls-verify")]
    pub skip_tls_verify: bool,

    /// User name for the target registry; the password is read from stdin
    /// with --password-stdin. Without them, the Docker configuration
    /// ($DOCKER_CONFIG/config.json or ~/.docker/config.json, including
    /// credential helpers) is used.
    #[arg(long, requires = "password_stdin")]
    pub username: Option<String>,

    /// Read the password for --username from standard input.
    #[arg(long, requires = "username")]
    pub password_stdin: bool,

    /// Attempts per request before giving up on a flaky registry.
    #[arg(long, default_value_t = DEFAULT_RETRIES, value_name = "N")]
    pub retries: u32,

    /// Seconds without progress after which a request counts as stalled and
    /// is retried.
    #[arg(long, default_value_t = DEFAULT_STALL_TIMEOUT_SECS, value_name = "SECONDS")]
    pub stall_timeout: u64,

    /// Seconds a registry may answer nothing at all before the run gives
    /// up on it (whatever --retries says).
    #[arg(long, default_value_t = DEFAULT_GIVE_UP_SECS, value_name = "SECONDS")]
    pub give_up_after: u64,

    /// Blobs transferred at once.
    #[arg(long, default_value_t = DEFAULT_JOBS, value_name = "N")]
    pub jobs: usize,
}

/// The subcommands, one per pipeline stage.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build the broker images into the local store (and push them with --push).
    Build(BuildArgs),
    /// Push images from the local store to a registry, uploading only what it lacks.
    Push(PushArgs),
    /// Copy third-party images (e.g. postgres:14.2) into a registry by
    /// digest, all platforms, and record them in the lock file.
    Mirror(MirrorArgs),
    /// Rebuild from the same inputs and compare digests with images.lock,
    /// naming the layer that differs.
    Verify(VerifyArgs),
}

/// Arguments of `push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// Images in the local store to push, by their store name (e.g.
    /// `python-base`). Each goes to REGISTRY/NAME.
    #[arg(required = true, value_name = "NAME")]
    pub images: Vec<String>,

    /// Where to push: `HOST[:PORT]/PREFIX` (an internal registry) or
    /// `docker.io/ORG` (Docker Hub).
    #[arg(long, env = env::REGISTRY, value_name = "HOST/PREFIX")]
    pub registry: RegistryPrefix,

    /// Tag to set on every pushed image.
    #[arg(long, default_value = "latest")]
    pub tag: String,

    /// How to reach the registry.
    #[command(flatten)]
    pub access: RegistryArgs,
}

/// Arguments of `mirror`.
#[derive(Debug, Args)]
pub struct MirrorArgs {
    /// Images to copy, e.g. `postgres:14.2 rabbitmq:3.9-management`.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,

    /// The registry to copy into: `HOST[:PORT]/PREFIX`. An image keeps its
    /// repository path below the prefix (`PREFIX/library/postgres`).
    #[arg(long, env = env::REGISTRY, value_name = "HOST/PREFIX")]
    pub registry: RegistryPrefix,

    /// The lock file that records the mirrored references for render.
    #[arg(long, default_value = "images.lock")]
    pub lock: PathBuf,

    /// How to reach the registries (credentials apply to the target;
    /// sources are read with the Docker configuration).
    #[command(flatten)]
    pub access: RegistryArgs,
}

/// Where the sources and image specs come from (shared by build and verify).
#[derive(Debug, Args, Clone)]
pub struct SourceArgs {
    /// The broker tree (its src/, db/, config/, images/restapi/…).
    #[arg(long, default_value = ".", value_name = "DIR")]
    pub source: PathBuf,

    /// The ttn-formatters repository: a directory, or a git URL (or local
    /// repository) to clone, optionally as `URL#COMMIT`.
    #[arg(long, value_name = "PATH|GIT_URL")]
    pub formatters: Option<String>,

    /// The ttn-formatters commit to check out (clones the repository).
    #[arg(long, value_name = "COMMIT")]
    pub formatters_rev: Option<String>,

    /// The folder holding one `<name>/image.yaml` + Dockerfile per image.
    #[arg(long, default_value = "images", value_name = "DIR")]
    pub images: PathBuf,

    /// Build only this image (repeatable).
    #[arg(long, value_name = "NAME")]
    pub only: Vec<String>,

    /// Replace an image's deps base image, e.g. `python-base=local/python:3.11`
    /// (offline or test builds; the production spec is untouched).
    #[arg(long = "base", value_name = "NAME=REF")]
    pub bases: Vec<String>,

    /// Add a deps build arg for one image, e.g. `ttn_decoder:NPM_PACKAGES=`.
    #[arg(long = "build-arg", value_name = "NAME:KEY=VALUE")]
    pub build_args: Vec<String>,

    /// Where git checkouts are cached.
    #[arg(long, default_value = ".broker-images/cache", value_name = "DIR")]
    pub cache: PathBuf,

    /// Compression threads per layer (the bytes do not depend on it).
    #[arg(long, value_name = "N")]
    pub layer_threads: Option<usize>,
}

/// Arguments of `build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Sources and specs.
    #[command(flatten)]
    pub sources: SourceArgs,

    /// Also push the images (and any deps image built here) to --registry.
    #[arg(long, requires = "registry")]
    pub push: bool,

    /// Where to push: `HOST[:PORT]/PREFIX` or `docker.io/ORG`.
    #[arg(long, env = env::REGISTRY, value_name = "HOST/PREFIX")]
    pub registry: Option<RegistryPrefix>,

    /// The tag pushed beside each digest.
    #[arg(long, default_value = "latest")]
    pub tag: String,

    /// The lock file to write.
    #[arg(long, default_value = "images.lock")]
    pub lock: PathBuf,

    /// How to reach the registry.
    #[command(flatten)]
    pub access: RegistryArgs,
}

/// Arguments of `verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Sources and specs, as given to the build being verified.
    #[command(flatten)]
    pub sources: SourceArgs,

    /// The lock file to compare with.
    #[arg(long, default_value = "images.lock")]
    pub lock: PathBuf,

    /// How to reach the registry (to fetch deps images not in the store).
    #[command(flatten)]
    pub access: RegistryArgs,
}
