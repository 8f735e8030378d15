//! The build stage: image specs under `images/`, the dependency stage through
//! the Docker engine, source layers baked on top, and the `images.lock`
//! entries of what was built. It builds and nothing more: deps images are
//! looked up by key through a [`build::DepsSource`] the caller provides (the
//! binary's is the registry), and publishing is the caller's next stage.

pub mod build;
mod build_base;
mod build_deps;
mod build_error;
mod build_labels;
mod build_layers;
mod build_lock;
mod build_run;
pub mod deps;
mod deps_ca;
mod deps_engine;
mod deps_error;
mod deps_key;
pub mod deps_log;
pub mod sources;
pub mod spec;

pub use broker_pins::{Lock, LockError, LockedImage, MirroredImage, SourceRecord};
pub use spec::{ImageSpec, SpecError};
