//! What can go wrong in the dependency stage, from reading its inputs to
//! storing what the engine built: one error type for the whole stage, so
//! its callers handle a single kind.

use std::path::{Path, PathBuf};

/// The deps stage failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DepsError {
    /// A declared file could not be read.
    #[error("{image}: cannot read {path} (declared in deps.files)")]
    Read {
        /// The image.
        image: String,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// No Docker engine answered.
    #[error(
        "the deps stage of {image} needs a Docker engine, and none answers at {host}: {why}; start one (e.g. `sudo dockerd &`) or set DOCKER_HOST"
    )]
    NoEngine {
        /// The image.
        image: String,
        /// Where we looked.
        host: String,
        /// The connection error.
        why: String,
    },
    /// The Dockerfile failed at a step.
    #[error("deps stage of {image} failed at `{step}`: {message}{}", full_log(log.as_deref()))]
    BuildFailed {
        /// The image.
        image: String,
        /// The failing step, e.g. `Step 4/7 : RUN pip install …`.
        step: String,
        /// The engine's error message.
        message: String,
        /// What to show of the step's output: the lines around the first
        /// error marker and the tail ([`crate::deps::log::excerpt`]),
        /// terminal escapes removed.
        output: Vec<String>,
        /// The full build output, kept in the store.
        log: Option<PathBuf>,
    },
    /// Talking to the engine failed otherwise.
    #[error("Docker engine error during the deps stage of {image}: {why}")]
    Engine {
        /// The image.
        image: String,
        /// What failed.
        why: String,
    },
    /// The built image could not be exported into the store.
    #[error("cannot store the deps image of {image}")]
    Store {
        /// The image.
        image: String,
        /// The import error.
        #[source]
        source: Box<broker_oci::docker_archive::ImportDockerArchiveError>,
    },
    /// A `--deps-ca-file` could not be read.
    #[error("cannot read --deps-ca-file {path}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A `--deps-ca-file` holds no PEM certificate.
    #[error("--deps-ca-file {path} holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)")]
    NotPem {
        /// The file.
        path: PathBuf,
    },
    /// The deps image could not be rewritten without the CA layer.
    #[error("cannot remove the deps CA from the deps image of {image}")]
    DropCa {
        /// The image.
        image: String,
        /// The cause.
        #[source]
        source: broker_oci::StoreError,
    },
    /// The deps image holds executables of another platform than the one
    /// it was built for.
    #[error(
        "{image}: the deps image is not {platform}: its {binary} is a {found} executable; build it on a base published for {platform} (the base's index must have a {platform} manifest)"
    )]
    WrongPlatform {
        /// The image (and platform) built.
        image: String,
        /// The platform it was built for (`linux/arm64`).
        platform: String,
        /// The binary checked.
        binary: &'static str,
        /// What that binary is.
        found: String,
    },
    /// This machine cannot run the platform's executables in containers.
    #[error(
        "{image}: building deps for {platform} on this {host} machine needs QEMU user emulation, and {why}: {}",
        crate::deps::platform::SET_UP
    )]
    NoEmulation {
        /// The image (and platform) built.
        image: String,
        /// The platform asked for (`linux/arm64`).
        platform: String,
        /// This machine's.
        host: String,
        /// What is missing.
        why: String,
    },
    /// The deps image's layers could not be read for the platform check.
    #[error("{image}: cannot check the deps image's platform")]
    Inspect {
        /// The image.
        image: String,
        /// The cause.
        #[source]
        source: Box<broker_oci::base::InspectBaseError>,
    },
    /// A temporary file could not be written.
    #[error("cannot write a temporary file for {image}")]
    Temp {
        /// The image.
        image: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// `; full log: PATH`, or nothing.
fn full_log(log: Option<&Path>) -> String {
    log.map(|p| format!("; full log: {}", p.display()))
        .unwrap_or_default()
}
