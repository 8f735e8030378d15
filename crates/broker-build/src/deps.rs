//! The dependency stage: base image + pip/npm installs, built by the Docker
//! engine from a Dockerfile and exactly the broker files it declares.
//!
//! Its [`DepsKey`] covers everything that can change the result, so a key
//! already in the store (or the registry) means no engine call at all —
//! dependencies change monthly, sources daily.
//!
//! The stage lives in sibling modules, re-exported here: its inputs and
//! key (`deps_key`), its errors (`deps_error`), the deps CA (`deps_ca`) and
//! the engine build (`deps_engine`).

pub use crate::deps_ca::{DEPS_CA_PATH, DEPS_CA_VARIABLES, read_ca_bundle};
pub use crate::deps_engine::{
    BuildOutput, EngineImage, EngineOptions, build_with_engine, connect, drop_ca_after_export,
    export_into_store,
};
pub use crate::deps_error::DepsError;
pub use crate::deps_key::{BASE_ARG, BaseDigest, DepsInputs, DepsKey};
