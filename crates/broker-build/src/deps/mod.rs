//! The dependency stage: base image + pip/npm installs, built by the Docker
//! engine from a Dockerfile and exactly the broker files it declares.
//!
//! Its [`DepsKey`] covers everything that can change the result, so a key
//! already in the store (or the registry) means no engine call at all —
//! dependencies change monthly, sources daily.
//!
//! The stage's files, in the order they take part:
//! 1. `key`: the inputs (Dockerfile, build args, base and its digest, the
//!    broker files the Dockerfile copies) and the key over them;
//! 2. `ca`: an extra CA trusted during RUN steps only, stripped after;
//! 3. `engine`: the build through the Docker engine and the export of its
//!    result into the store;
//! 4. `platform`: emulation for a foreign platform before the build, and
//!    the built image's binaries checked against its platform after it;
//! 5. `log`: the build's output kept in the store, and the excerpt a
//!    failure shows;
//! 6. `error`: what can go wrong, one variant per cause.
//!
//! What callers use is re-exported here.

mod ca;
mod engine;
mod error;
mod key;
pub mod log;
mod platform;

pub use crate::deps::ca::{DEPS_CA_PATH, DEPS_CA_VARIABLES, read_ca_bundle};
pub use crate::deps::engine::{
    BuildOutput, EngineImage, EngineOptions, InspectedImage, build_with_engine, connect,
    drop_ca_after_export, export_into_store, inspect_image,
};
pub use crate::deps::error::DepsError;
pub use crate::deps::key::{BASE_ARG, BaseDigest, DepsInputs, DepsKey};
pub use crate::deps::platform::{
    CHECKED_BINARIES, PlatformCheck, check_deps_platform, check_emulation,
};
