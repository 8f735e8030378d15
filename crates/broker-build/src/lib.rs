//! The build stage: image specs under `images/`, the dependency stage through
//! the Docker engine, source layers baked on top, and the `images.lock`
//! entries of what was built. It builds and nothing more: deps images are
//! looked up by key through a [`build::DepsSource`] the caller provides (the
//! binary's is the registry), and publishing is the caller's next stage.

pub mod build;
pub mod deps;
pub mod sources;
pub mod spec;

pub use broker_pins::{Lock, LockError, LockedImage, MirroredImage, SourceRecord};
pub use spec::{ImageSpec, SpecError};
