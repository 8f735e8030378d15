//! The image half that needs no network and no Docker engine: deterministic
//! source layers, the OCI image model (config, manifest, index) and the local
//! OCI image layout store that every later stage reads from.

pub mod digest;
pub mod exclude;
pub mod gzip;

pub use digest::Digest;
