//! What can go wrong in a build, whichever stage of it fails: one error
//! type, so the caller handles a single kind.

use std::path::PathBuf;

use crate::{deps, sources, spec};

/// An error of a [`crate::build::DepsSource`], whatever its kind (the
/// registry's errors belong to the crate implementing the source).
pub type DepsSourceError = Box<dyn std::error::Error + Send + Sync>;

/// A build failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// An image spec is unusable.
    #[error(transparent)]
    Spec(#[from] spec::SpecError),
    /// A source tree is missing or could not be checked out.
    #[error(transparent)]
    Source(#[from] sources::SourceError),
    /// `--only` or an override names no image.
    #[error("no image named `{name}` in {dir} (images: {known})")]
    UnknownImage {
        /// The name given.
        name: String,
        /// The images folder.
        dir: PathBuf,
        /// The names that exist.
        known: String,
    },
    /// An image needs a tree that was not given.
    #[error("image {image} bakes in the {tree} tree: pass --formatters PATH|GIT_URL")]
    MissingTree {
        /// The image.
        image: String,
        /// The tree.
        tree: String,
    },
    /// The deps stage failed.
    #[error(transparent)]
    Deps(Box<deps::DepsError>),
    /// A layer could not be built.
    #[error("{image}: layer `{layer}`")]
    Layer {
        /// The image.
        image: String,
        /// The layer.
        layer: String,
        /// The cause.
        #[source]
        source: Box<broker_oci::BuildLayerError>,
    },
    /// The image could not be assembled.
    #[error("{image}")]
    Image {
        /// The image.
        image: String,
        /// The cause.
        #[source]
        source: broker_oci::image::BuildImageError,
    },
    /// The base image's directories could not be read.
    #[error("{image}")]
    Base {
        /// The image.
        image: String,
        /// The cause.
        #[source]
        source: broker_oci::base::InspectBaseError,
    },
    /// The store failed.
    #[error("{image}")]
    Store {
        /// The image.
        image: String,
        /// The cause.
        #[source]
        source: broker_oci::StoreError,
    },
    /// The deps source failed (not: did not have the image).
    #[error("{image}: cannot look the deps image up")]
    DepsSource {
        /// The image.
        image: String,
        /// The cause.
        #[source]
        source: DepsSourceError,
    },
    /// Verification needs the deps image the build used.
    #[error(
        "{image}: deps image {tag} is neither in the store nor in the registry; verify needs the deps image the build used (pass --registry where the build pushed)"
    )]
    NoDeps {
        /// The image.
        image: String,
        /// The deps tag.
        tag: String,
    },
    /// SOURCE_DATE_EPOCH is set but not a timestamp.
    #[error(transparent)]
    Epoch(#[from] broker_oci::ParseEpochError),
    /// A base could not be resolved to a digest, and none is recorded.
    #[error(
        "{image}: base {base} has no recorded digest, and --offline resolves none; build once without --offline"
    )]
    OfflineBase {
        /// The image.
        image: String,
        /// The base reference.
        base: String,
    },
    /// The base's index has no manifest for a platform to build.
    #[error(
        "{image}: base {base} has no {platform} manifest (its index has {available}); pick a base published for {platform}, or leave {platform} out of `platforms:` / --platform"
    )]
    BaseWithoutPlatform {
        /// The image.
        image: String,
        /// The base reference.
        base: String,
        /// The platform asked for (`linux/arm64`).
        platform: String,
        /// The platforms the index has, comma-separated.
        available: String,
    },
    /// Offline, the store has no copy of the base's index (or manifest)
    /// to take a platform's manifest from: a build online keeps it there.
    #[error(
        "{image}: base {base} ({index}) is not in this store, so --offline cannot tell which of its manifests is {platform}'s: build once without --offline (the store then keeps the base's index)"
    )]
    OfflineBaseIndex {
        /// The image.
        image: String,
        /// The base reference.
        base: String,
        /// The digest the lock records for it.
        index: broker_oci::Digest,
        /// The platform to build (`linux/arm64`).
        platform: String,
    },
    /// A background task panicked or was cancelled.
    #[error("internal error: a layer task of {image} failed")]
    Task {
        /// The image.
        image: String,
        /// The cause.
        #[source]
        source: tokio::task::JoinError,
    },
}

impl From<deps::DepsError> for BuildError {
    fn from(err: deps::DepsError) -> Self {
        Self::Deps(Box::new(err))
    }
}
