//! The image half that needs no network and no Docker engine: deterministic
//! source layers, the OCI image model (config, manifest, index) and the local
//! OCI image layout store that every later stage reads from.

mod archive;
pub mod base;
mod cache;
pub mod digest;
pub mod docker_archive;
pub mod epoch;
pub mod exclude;
pub mod gzip;
pub mod image;
pub mod json;
pub mod layer;
pub mod store;

pub use digest::Digest;
pub use epoch::SourceDateEpoch;
pub use image::{BuildImageError, ImageBuilder, Provenance, RuntimeConfig};
pub use layer::{
    BuildLayerError, LayerMapping, LayerOptions, ParentDir, SourceLayer, build_layer, write_layer,
};
pub use store::{BlobWriter, Store, StoreError, StoredImage};
