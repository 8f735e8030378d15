//! The image half that needs no network and no Docker engine: deterministic
//! source layers, the OCI image model (config, manifest, index) and the local
//! OCI image layout store that every later stage reads from.
//!
//! - [`layer`]: a source tree → a gzip'd tar whose digest depends only on
//!   file contents, names and the [`LayerMapping`] ([`build_layer`]).
//! - [`gzip`]: the deterministic, optionally parallel gzip under it.
//! - [`exclude`]: `.dockerignore` patterns, default excludes, secret names.
//! - [`image`]: [`ImageBuilder`] appends layers to a base image and writes
//!   OCI config and manifest.
//! - [`store`]: [`Store`], the OCI image layout directory (blobs, tags),
//!   with [`docker_archive`] import and [`base`] inspection.
//!
//! ```
//! use broker_oci::{LayerMapping, LayerOptions, Store, build_layer};
//!
//! let tmp = tempfile::tempdir()?;
//! let src = tmp.path().join("src");
//! std::fs::create_dir(&src)?;
//! std::fs::write(src.join("main.py"), "print('hello')\n")?;
//!
//! let store = Store::open(&tmp.path().join("store"))?;
//! let mut mapping = LayerMapping::new(&src, "/opt/app");
//! mapping.uid = 1000;
//! mapping.gid = 1000;
//! let layer = build_layer(&store, &mapping, &LayerOptions::default())?;
//! assert!(store.has_blob(&layer.digest));
//!
//! // The same tree gives the same layer, now without tar or gzip.
//! let again = build_layer(&store, &mapping, &LayerOptions::default())?;
//! assert!(again.from_cache && again.digest == layer.digest);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod archive;
pub mod base;
mod cache;
/// Digests live in the shared types crate; re-exported so layer code reads
/// as before.
pub use broker_pins::digest;
pub mod docker_archive;
pub mod epoch;
pub mod exclude;
pub mod gzip;
pub mod image;
pub mod json;
pub mod layer;
pub mod media_type;
pub mod oci_digest;
pub mod platforms;
mod source_layer;
pub mod store;
mod walk;

pub use digest::Digest;
pub use epoch::{ParseEpochError, SourceDateEpoch};
pub use image::{BuildImageError, ImageBuilder, Provenance, RuntimeConfig};
pub use layer::{
    BuildLayerError, LayerMapping, LayerOptions, ParentDir, SourceLayer, build_layer, write_layer,
};
pub use store::{BlobWriter, Store, StoreError, StoredImage};
