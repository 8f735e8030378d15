//! Client for OCI distribution registries (Docker Hub, CNCF Distribution,
//! Harbor): credentials, pushes that upload only what is missing and survive a
//! flaky network, pulls that verify every byte, tag resolution and mirroring.
//!
//! The entry point for putting images into a registry is the [`Publisher`]:
//! it owns the client for one registry prefix and the record of which
//! repositories hold which blobs, and `build --push`, `push` and `mirror`
//! all go through it.
//!
//! Written on raw HTTP (reqwest) rather than `oci-client`: pushes need a HEAD
//! before every blob, cross-repository mounts that accept the spec's 202
//! answer, streamed uploads from files, fresh upload sessions after a broken
//! body, and retries with backoff — none of which that crate's push offers.
//!
//! ```no_run
//! # async fn demo() -> Result<(), broker_registry::RegistryError> {
//! use std::sync::Arc;
//! use broker_registry::{ClientOptions, Publisher, RegistryPrefix, Reporter, Silent};
//! let store = broker_oci::Store::open(std::path::Path::new(".broker-images/store"))?;
//! let prefix: RegistryPrefix = "127.0.0.1:5000/broker".parse()?;
//! let reporter: Arc<dyn Reporter> = Arc::new(Silent);
//! let publisher = Publisher::new(prefix, &ClientOptions::default(), reporter)?
//!     .recording_for(&store);
//! let pushed = publisher.publish(&store, "python-base", "python-base", "dev").await?;
//! println!("{}", pushed.pinned);
//! # Ok(()) }
//! ```

mod blob_locations;
mod client;
mod credentials;
mod error;
pub mod manifest;
mod progress;
mod publish;
mod pull;
mod push;
mod repository;
mod streamed;
mod transfer;
mod upload_sessions;

pub use blob_locations::{BLOB_LOCATIONS, record_path};
pub use broker_pins::{DOCKER_HUB, DOCKER_HUB_CREDENTIAL_KEY, Reference, RegistryPrefix};
pub use client::{
    ClientOptions, DEFAULT_GIVE_UP_SECS, DEFAULT_JOBS, DEFAULT_RETRIES, DEFAULT_STALL_TIMEOUT_SECS,
    RegistryClient, RetryPolicy, is_loopback,
};
pub use credentials::{
    CredentialSource, Credentials, DOCKER_CONFIG_ENV, ResolvedCredentials, config_file,
};
pub use error::{ReferenceError, RegistryError};
pub use manifest::{Manifest, select_platform};
pub use progress::{BlobOutcome, Reporter, Silent};
pub use publish::Publisher;
pub use pull::{
    FetchedManifest, fetch_blob_into, fetch_manifest, fetch_referrers, fetch_small_blob,
    missing_manifests, oci_arch, pull_into_store, resolve,
};
pub use push::{MirroredImage, PushedImage, mirror, push_from_store};
pub use streamed::StreamedPiece;
pub use transfer::TransferStats;
pub use upload_sessions::UPLOAD_SESSIONS;
