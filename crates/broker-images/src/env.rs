//! Every environment variable broker-images reads, in one place.

/// Overrides `--store`: the local image store directory.
pub const STORE: &str = "BROKER_IMAGES_STORE";
/// Overrides `--registry`: where images are pushed (`HOST/PREFIX`).
pub const REGISTRY: &str = "BROKER_IMAGES_REGISTRY";
/// Sets `--source-revision`: the broker tree's revision (e.g. the commit CI
/// built a tarball from) when the tree is not a git checkout.
pub const SOURCE_REVISION: &str = "BROKER_IMAGES_SOURCE_REVISION";
/// Adds one `--deps-ca-file`: a PEM file (it may hold several
/// certificates) the deps stage's RUN steps trust, e.g. a TLS-intercepting
/// proxy's CA.
pub const DEPS_CA_FILE: &str = "BROKER_IMAGES_DEPS_CA_FILE";
/// The passphrase of an encrypted signing key (`build --sign-key`,
/// `sign --key`) when `--passphrase-stdin` is not given.
pub const SIGN_PASSPHRASE: &str = broker_attest::PASSPHRASE_ENV;
/// The Docker client configuration directory holding `config.json`
/// (credentials); defaults to `~/.docker`.
#[allow(dead_code)] // listed for completeness; broker-registry reads it
pub const DOCKER_CONFIG: &str = broker_registry::DOCKER_CONFIG_ENV;
/// The kubeconfig search path (`:`-separated) the cluster commands use
/// when `--kubeconfig` is not given; kube-rs reads it as kubectl does.
#[allow(dead_code)] // listed for completeness; kube-rs reads it
pub const KUBECONFIG: &str = "KUBECONFIG";
