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
    #[arg(short, long, action = clap::ArgAction::Count, global = true, help_heading = GLOBAL)]
    pub verbose: u8,

    /// Print results as JSON on stdout, progress as JSON lines on stderr,
    /// and a failure as one JSON object on stderr.
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub json: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The `--help` heading of the options every command takes, so a
/// command's own options stand apart from them.
const GLOBAL: &str = "Global options";

/// The local image store, for the commands that read or write it (build,
/// verify, push, mirror, sign).
#[derive(Debug, Args, Clone)]
pub struct StoreArgs {
    /// The local image store (an OCI image layout directory).
    #[arg(long, env = env::STORE, default_value = ".broker-images/store")]
    pub store: PathBuf,
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

    /// Seconds without progress after which one request counts as stalled:
    /// it is abandoned and sent again (an upload continues where the
    /// registry stands). Must be below --give-up-after, so a stalled
    /// request is retried before the registry is given up on.
    #[arg(long, default_value_t = DEFAULT_STALL_TIMEOUT_SECS, value_name = "SECONDS")]
    pub stall_timeout: u64,

    /// Seconds the registry may answer nothing at all, on any request,
    /// before the run gives up on it (whatever --retries says). Any answer,
    /// to a retried stalled request or to another one, starts the count
    /// afresh; an upload whose bytes keep moving is not silence.
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
    /// Sign pushed images the way cosign does (a `sha256-<hex>.sig` tag
    /// beside each) and attach, to images of the lock, their signed
    /// provenance and SBOM, recording all of them in the lock.
    Sign(SignArgs),
    /// Render pinned Kubernetes manifests from manifests/ and images.lock.
    Render(RenderArgs),
    /// Apply rendered manifests to the cluster (server-side apply, in
    /// dependency order), wait until ready, prune what left the set.
    Start(StartArgs),
    /// Scale the broker's workloads to zero, keeping data, config and
    /// Services (so addresses and node ports stay).
    Stop(StopArgs),
    /// Rolling restart of workloads (all, or the ones named).
    Restart(RestartArgs),
    /// Show workloads, images versus the lock, exposure and volumes.
    /// Exits 0 only when every workload is ready, every image matches the
    /// lock (with --lock) and every volume claim is bound; 1 otherwise.
    Status(StatusArgs),
    /// List the revisions recorded in the namespace: one per start that
    /// ended ready with something new (the newest 10 are kept).
    History(HistoryArgs),
    /// Apply a recorded revision again (default: the one before the newest)
    /// with the Secrets the namespace holds now, and wait like start.
    Rollback(RollbackArgs),
    /// Build, push and start once, then watch the trees baked into the
    /// images: each save rebuilds only the changed layers, pushes only new
    /// blobs and rolls only the workloads whose image or config changed.
    /// The release lock is never written (dev records its digests in
    /// `<lock stem>.dev.lock`); Ctrl-C leaves the cluster as it is and
    /// prints the command that returns it to the release lock.
    Dev(DevArgs),
}

/// Which cluster and namespace (shared by the cluster commands).
#[derive(Debug, Args, Clone)]
pub struct KubeArgs {
    /// The kubeconfig file. Without it: $KUBECONFIG, else ~/.kube/config.
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// The kubeconfig context to use instead of the current one.
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,

    /// The broker's namespace. Without it: the namespace the manifests
    /// (or the --environment file) are rendered for, else `broker`.
    #[arg(long, short = 'n', value_name = "NAME")]
    pub namespace: Option<String>,
}

/// How long start, stop, restart and dev wait (status waits for nothing).
#[derive(Debug, Args, Clone)]
pub struct WaitArgs {
    /// Seconds to wait for workloads to become ready (start, restart, dev)
    /// or for their pods to go (stop).
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub timeout: u64,

    /// Seconds to wait while another run holds the namespace (its
    /// `broker-images` Lease) before giving up.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub lease_wait: u64,
}

impl KubeArgs {
    /// The namespace when no objects say which: `--namespace`, else
    /// `broker`.
    pub fn namespace_or_default(&self) -> String {
        self.namespace
            .clone()
            .unwrap_or_else(|| "broker".to_owned())
    }
}

/// The objects `start` (and `restart --hard`) apply: the directory an
/// earlier `render --out` wrote, or a render done in memory first from the
/// same inputs `render` takes.
#[derive(Debug, Args, Clone)]
pub struct ObjectsArgs {
    /// The directory `render --out` wrote.
    #[arg(long, value_name = "DIR", conflicts_with = "environment")]
    pub manifests: Option<PathBuf>,

    /// Render first, in memory, for this environment file (with --source,
    /// --lock, --env-file) instead of reading --manifests.
    #[arg(long, value_name = "FILE", requires = "source")]
    pub environment: Option<PathBuf>,

    /// The broker tree to render from (with --environment).
    #[arg(long, value_name = "DIR", requires = "environment")]
    pub source: Option<PathBuf>,

    /// The lock file whose digests pin the images (with --environment).
    #[arg(long, default_value = "images.lock", value_name = "PATH")]
    pub lock: PathBuf,

    /// KEY=VALUE credentials for the generated Secret (with --environment).
    #[arg(long, value_name = "FILE", requires = "environment")]
    pub env_file: Option<PathBuf>,

    /// Refuse unpinned third-party images (with --environment).
    #[arg(long, requires = "environment")]
    pub require_pinned: bool,

    /// The catalogue to render (with --environment).
    #[arg(long, default_value = "manifests", value_name = "DIR")]
    pub catalogue: PathBuf,
}

/// Arguments of `start`.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// What to apply: a rendered directory, or a render done first.
    #[command(flatten)]
    pub objects: ObjectsArgs,

    /// Ask the server what would change (server-side dry run) and print a
    /// diff per object, Secret values masked. Writes nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Take over fields another field manager owns instead of failing.
    #[arg(long)]
    pub force_conflicts: bool,

    /// Also prune PersistentVolumeClaims that left the rendered set (their
    /// data is deleted). Asks for confirmation on a terminal.
    #[arg(long)]
    pub delete_data: bool,

    /// Confirm --delete-data without asking (scripts).
    #[arg(long, requires = "delete_data")]
    pub yes: bool,

    /// Delete nothing that left the rendered set (members and old config
    /// stay, listed as kept).
    #[arg(long, conflicts_with = "delete_data")]
    pub no_prune: bool,

    /// When the wait fails, apply the newest recorded revision (the last
    /// start that ended ready) again and wait for it; still exits 1,
    /// saying what failed and that it rolled back.
    #[arg(long, conflicts_with = "dry_run")]
    pub rollback_on_failure: bool,

    /// A database or broker password was changed inside the running
    /// server already (postgres and RabbitMQ read theirs only when their
    /// data is first initialised): apply the new Secret value.
    #[arg(long)]
    pub credentials_changed_in_place: bool,

    /// Change a changed database or broker password inside its running
    /// server first (the catalogue's broker-images.io/rotate-credentials
    /// script, run through the API server's exec, the new value on its
    /// standard input), then apply the new Secret value.
    #[arg(long, conflicts_with_all = ["credentials_changed_in_place", "dry_run"])]
    pub rotate_credentials: bool,

    /// How long to wait.
    #[command(flatten)]
    pub wait: WaitArgs,

    /// Which cluster.
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// Arguments of `stop`.
#[derive(Debug, Args)]
pub struct StopArgs {
    /// Delete the workloads and Services instead of scaling to zero
    /// (PersistentVolumeClaims, Secrets, ConfigMaps and the namespace stay).
    #[arg(long)]
    pub remove: bool,

    /// Also delete the broker's PersistentVolumeClaims and with them all
    /// its data (implies --remove). Asks for confirmation on a terminal.
    #[arg(long)]
    pub delete_data: bool,

    /// Confirm --delete-data without asking (scripts).
    #[arg(long, requires = "delete_data")]
    pub yes: bool,

    /// How long to wait.
    #[command(flatten)]
    pub wait: WaitArgs,

    /// Which cluster.
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// Arguments of `restart`.
#[derive(Debug, Args)]
pub struct RestartArgs {
    /// Workloads to restart (e.g. `mq restapi`); all when none are named.
    #[arg(value_name = "WORKLOAD")]
    pub workloads: Vec<String>,

    /// Stop, then start (from --manifests, or rendering with
    /// --environment), instead of a rolling restart.
    #[arg(long)]
    pub hard: bool,

    /// What `--hard` starts.
    #[command(flatten)]
    pub objects: ObjectsArgs,

    /// How long to wait.
    #[command(flatten)]
    pub wait: WaitArgs,

    /// Which cluster.
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// Arguments of `status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Compare running image digests with this lock file; a difference is
    /// drift and makes status exit 1.
    #[arg(long, value_name = "PATH")]
    pub lock: Option<PathBuf>,

    /// Which cluster.
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// Arguments of `history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Which cluster.
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// Arguments of `rollback`.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The revision to go back to (see `history`); without it, the one
    /// before the newest.
    #[arg(value_name = "REVISION")]
    pub revision: Option<u64>,

    /// How to reach the registries of the revision's images (each is
    /// checked to still exist before anything is written).
    #[command(flatten)]
    pub access: RegistryArgs,

    /// Take over fields another field manager owns instead of failing.
    #[arg(long)]
    pub force_conflicts: bool,

    /// How long to wait.
    #[command(flatten)]
    pub wait: WaitArgs,

    /// Which cluster.
    #[command(flatten)]
    pub kube: KubeArgs,
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

    /// Push only this platform of each image (repeatable), e.g.
    /// `linux/arm64`; every platform it was built for when not given. Two or
    /// more go up as an OCI image index over them, in the order the built
    /// index lists them. One goes up as that platform's own manifest, as a
    /// build of one platform makes: the digest the full index lists, so
    /// nodes, `status` and the lock see the same image either way. A
    /// platform an image was not built for is refused before anything is
    /// sent.
    #[arg(long = "platform", value_name = "OS/ARCH")]
    pub platforms: Vec<broker_pins::Platform>,

    /// Record what was pushed in this lock file (the one the build wrote):
    /// each image's reference, tag and digest, and with --platform only
    /// the platforms pushed, so `render` pins what the registry holds.
    /// Without it no lock is written.
    #[arg(long, value_name = "FILE")]
    pub lock: Option<PathBuf>,

    /// How to reach the registry.
    #[command(flatten)]
    pub access: RegistryArgs,

    /// The local image store.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// The passphrase of an encrypted signing key.
#[derive(Debug, Args, Clone, Default)]
pub struct PassphraseArgs {
    /// Read an encrypted key's passphrase from standard input (else it is
    /// taken from $BROKER_IMAGES_SIGN_PASSPHRASE). Never printed.
    #[arg(long, conflicts_with = "password_stdin")]
    pub passphrase_stdin: bool,
}

/// Arguments of `sign`.
#[derive(Debug, Args)]
pub struct SignArgs {
    /// Images to sign: names in the lock (`python-base`: the image it
    /// records, and the signature is recorded there), or pushed references
    /// (`HOST/REPOSITORY:TAG`, `HOST/REPOSITORY@sha256:…`). Every image of
    /// the lock when none is named.
    #[arg(value_name = "IMAGE")]
    pub images: Vec<String>,

    /// The ECDSA P-256 private key (PEM: PKCS#8, encrypted PKCS#8 or SEC1).
    #[arg(long, value_name = "KEY")]
    pub key: PathBuf,

    /// The passphrase of an encrypted key.
    #[command(flatten)]
    pub passphrase: PassphraseArgs,

    /// The lock file naming the images and recording their signatures.
    #[arg(long, default_value = "images.lock")]
    pub lock: PathBuf,

    /// How to reach the registry.
    #[command(flatten)]
    pub access: RegistryArgs,

    /// The local image store (signature manifests are staged there).
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Arguments of `mirror`.
#[derive(Debug, Args)]
pub struct MirrorArgs {
    /// Images to copy, e.g. `postgres:14.2 rabbitmq:3.9-management`.
    /// `NAME=SOURCE` copies SOURCE and records it for NAME, the reference
    /// the manifests use: `postgres:14.2=registry.internal/hardened/postgres:14.2`
    /// pins db to a build of your own.
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

    /// The local image store.
    #[command(flatten)]
    pub store: StoreArgs,
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

    /// The broker tree's revision (e.g. the commit a CI tarball was made
    /// from), for the `org.opencontainers.image.revision` label and the
    /// lock; needed when --source is not a git checkout, and wins over the
    /// checkout's commit when it is.
    #[arg(long, env = env::SOURCE_REVISION, value_name = "REV")]
    pub source_revision: Option<String>,

    /// The folder holding one `<name>/image.yaml` + Dockerfile per image.
    #[arg(long, default_value = "images", value_name = "DIR")]
    pub images: PathBuf,

    /// Build only this image (repeatable).
    #[arg(long, value_name = "NAME")]
    pub only: Vec<String>,

    /// Build for this platform (repeatable), e.g. `linux/amd64`, `linux/arm64`,
    /// replacing the `platforms:` of every image.yaml. Two or more make
    /// each image an OCI image index. A platform other than this machine's
    /// runs its deps stage under QEMU user emulation (binfmt_misc).
    #[arg(long = "platform", value_name = "OS/ARCH")]
    pub platforms: Vec<broker_pins::Platform>,

    /// Replace an image's deps base image, e.g. `python-base=local/python:3.11`
    /// (offline or test builds; the production spec is untouched).
    #[arg(long = "base", value_name = "NAME=REF")]
    pub bases: Vec<String>,

    /// Add a deps build arg for one image, e.g. `ttn_decoder:NPM_PACKAGES=`.
    #[arg(long = "build-arg", value_name = "NAME:KEY=VALUE")]
    pub build_args: Vec<String>,

    /// Trust this PEM CA in the deps stage's RUN steps (repeatable), e.g. a
    /// TLS-intercepting proxy's: pip, npm, requests and OpenSSL clients
    /// are pointed at it while RUN steps run. It reaches no layer and no
    /// config of any image, and does not change the deps key.
    #[arg(long = "deps-ca-file", env = env::DEPS_CA_FILE, value_name = "PEM")]
    pub deps_ca_files: Vec<PathBuf>,

    /// The network the deps stage's RUN steps use, e.g. `host` to reach a
    /// proxy or package mirror on the build machine's loopback.
    #[arg(long, value_name = "MODE")]
    pub deps_network: Option<String>,

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

    /// The registry: where deps images are looked up by key before the
    /// Docker engine builds them, and, with --push, where everything is
    /// pushed: `HOST[:PORT]/PREFIX` or `docker.io/ORG`.
    #[arg(long, env = env::REGISTRY, value_name = "HOST/PREFIX")]
    pub registry: Option<RegistryPrefix>,

    /// Resolve no base image: key the deps stage on the base digests the
    /// lock records (every base must have one there). A multi-platform
    /// deps stage the engine builds takes each platform's manifest of the
    /// base from the index the store kept when it was built online.
    #[arg(long)]
    pub offline: bool,

    /// The tag pushed beside each digest.
    #[arg(long, default_value = "latest")]
    pub tag: String,

    /// The lock file to write.
    #[arg(long, default_value = "images.lock")]
    pub lock: PathBuf,

    /// Sign every pushed image with this ECDSA P-256 private key (PEM:
    /// PKCS#8, encrypted PKCS#8 or SEC1) the way cosign does: a
    /// `sha256-<hex>.sig` tag beside each image, pushed after it and after
    /// its signed SLSA provenance and CycloneDX SBOM.
    #[arg(long, requires = "push", value_name = "KEY")]
    pub sign_key: Option<PathBuf>,

    /// The passphrase of an encrypted --sign-key.
    #[command(flatten)]
    pub passphrase: PassphraseArgs,

    /// How to reach the registry.
    #[command(flatten)]
    pub access: RegistryArgs,

    /// The local image store.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Arguments of `verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Sources and specs, as given to the build being verified.
    #[command(flatten)]
    pub sources: SourceArgs,

    /// The lock file to compare with. Images are rebuilt on the bases and
    /// with the build args it records unless --base / --build-arg say
    /// otherwise.
    #[arg(long, default_value = "images.lock")]
    pub lock: PathBuf,

    /// Where to fetch deps images missing from the store:
    /// `HOST[:PORT]/PREFIX` or `docker.io/ORG`. Defaults to where the lock
    /// says the build pushed.
    #[arg(long, env = env::REGISTRY, value_name = "HOST/PREFIX")]
    pub registry: Option<RegistryPrefix>,

    /// Also check, in the registry, every locked image's signatures with
    /// this ECDSA P-256 public key (PEM): one must be by the key over a
    /// payload naming the locked digest and repository, and its provenance
    /// and SBOM (one per platform) must be there, about it, signed by the
    /// key.
    #[arg(long, value_name = "PUB")]
    pub key: Option<PathBuf>,

    /// Only check the signatures (--key); rebuild nothing, so no sources
    /// are needed.
    #[arg(long, requires = "key")]
    pub no_rebuild: bool,

    /// How to reach the registry (to fetch deps images not in the store,
    /// and the signatures).
    #[command(flatten)]
    pub access: RegistryArgs,

    /// The local image store.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Arguments of `render`.
#[derive(Debug, Args)]
pub struct RenderArgs {
    /// The lock file whose digests pin the images.
    #[arg(long, default_value = "images.lock")]
    pub lock: PathBuf,

    /// The broker tree the ConfigMaps are generated from (its db/init.d,
    /// config/rabbitmq, …).
    #[arg(long, value_name = "DIR")]
    pub source: PathBuf,

    /// The deployment's environment file (e.g. environments/single-node.yaml).
    #[arg(long, value_name = "FILE")]
    pub environment: PathBuf,

    /// KEY=VALUE credentials for the generated Secret (see
    /// environments/env.sample). Never printed.
    #[arg(long, value_name = "FILE")]
    pub env_file: Option<PathBuf>,

    /// Refuse third-party images the lock has no mirror of, instead of
    /// leaving them unpinned with a warning.
    #[arg(long)]
    pub require_pinned: bool,

    /// Refuse to render unless every broker image of the lock carries, in
    /// its registry, a signature by --key over its locked digest and its
    /// provenance and SBOM signed by --key (as `verify --key` checks). Mirrored third-party images are not ours to
    /// sign and are not checked.
    #[arg(long, requires = "key")]
    pub require_signed: bool,

    /// The ECDSA P-256 public key (PEM) for --require-signed.
    #[arg(long, value_name = "PUB", requires = "require_signed")]
    pub key: Option<PathBuf>,

    /// How to reach the registries holding the signatures
    /// (--require-signed).
    #[command(flatten)]
    pub access: RegistryArgs,

    /// The catalogue: Kubernetes YAML plus catalogue.yaml.
    #[arg(long, default_value = "manifests", value_name = "DIR")]
    pub catalogue: PathBuf,

    /// Output directory (one file per object plus kustomization.yaml,
    /// replaced whole), or `-` for one YAML stream on stdout.
    #[arg(long, value_name = "DIR|-")]
    pub out: PathBuf,
}

/// Arguments of `dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Sources and specs, as `build` takes them.
    #[command(flatten)]
    pub sources: SourceArgs,

    /// Where the dev images are pushed (and deps images looked up):
    /// `HOST[:PORT]/PREFIX` or `docker.io/ORG`.
    #[arg(long, env = env::REGISTRY, value_name = "HOST/PREFIX")]
    pub registry: RegistryPrefix,

    /// The tag pushed beside each dev digest (not the release's tag).
    #[arg(long, default_value = "dev")]
    pub tag: String,

    /// The release lock: read for mirrors and bases, never written. Dev's
    /// own record goes beside it (`images.lock` → `images.dev.lock`).
    #[arg(long, default_value = "images.lock", value_name = "PATH")]
    pub lock: PathBuf,

    /// The deployment's environment file (e.g. environments/single-node.yaml).
    #[arg(long, value_name = "FILE")]
    pub environment: PathBuf,

    /// KEY=VALUE credentials for the generated Secret. Never printed.
    #[arg(long, value_name = "FILE")]
    pub env_file: Option<PathBuf>,

    /// Refuse unpinned third-party images.
    #[arg(long)]
    pub require_pinned: bool,

    /// The catalogue to render.
    #[arg(long, default_value = "manifests", value_name = "DIR")]
    pub catalogue: PathBuf,

    /// Take over fields another field manager owns instead of failing.
    #[arg(long)]
    pub force_conflicts: bool,

    /// How long to wait.
    #[command(flatten)]
    pub wait: WaitArgs,

    /// Which cluster.
    #[command(flatten)]
    pub kube: KubeArgs,

    /// How to reach the registry.
    #[command(flatten)]
    pub access: RegistryArgs,

    /// The local image store.
    #[command(flatten)]
    pub store: StoreArgs,
}
