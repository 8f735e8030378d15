//! The build stage: image specs under `images/`, the dependency stage through
//! the Docker engine, source layers baked on top, and `images.lock`.

pub mod build;
pub mod deps;
pub mod sources;
pub mod spec;

pub use broker_pins::{Lock, LockError, LockedImage, MirroredImage, SourceRecord};
pub use spec::{ImageSpec, SpecError};
