//! The small types every stage of the pipeline shares, and nothing that
//! talks to a network, a Docker engine or a cluster: a crate that reads
//! `images.lock` (render, the cluster commands) depends on this one only.
//!
//! - [`Digest`]: always `sha256:` + 64 lowercase hex digits.
//! - [`Reference`]: an image reference normalised as Docker does;
//!   [`PinnedRef`]: one that always carries its digest.
//! - [`RegistryPrefix`]: where images are pushed, parsed once.
//! - [`Platform`]: `linux/amd64`, `linux/arm64`, normalised.
//! - [`Lock`]: `images.lock`, what build hands to render, with atomic
//!   read/write, merge and diff.
//! - [`transport::TransportCauses`]: what a request with no HTTP answer
//!   ran into, for the registry and cluster clients to say in words.
//!
//! ```
//! use broker_pins::{Digest, Lock, LockedImage, RegistryPrefix};
//!
//! let registry: RegistryPrefix = "127.0.0.1:5000/broker".parse()?;
//! let digest = Digest::of(b"manifest bytes");
//! let reference = registry.image("python-base", "v1")?.with_digest(digest);
//!
//! let mut lock = Lock::new();
//! lock.images.insert("python-base".into(), LockedImage {
//!     reference: reference.pinned().unwrap_or_default(),
//!     tag: Some("v1".into()),
//!     digest,
//!     deps_key: "k".into(),
//!     base: "python:3.10".into(),
//!     base_digest: None,
//!     base_local: false,
//!     build_args: Default::default(),
//!     deps_digest: digest,
//!     sources: Default::default(),
//!     signature: None,
//!     provenance: None,
//!     sbom: None,
//!     platforms: Default::default(),
//!     platform: None,
//! });
//! let pinned = lock.images["python-base"].pinned()?;
//! assert_eq!(pinned.to_string(), format!("127.0.0.1:5000/broker/python-base@{digest}"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod digest;
pub mod lock;
pub mod ownership;
pub mod platform;
pub mod reference;
pub mod transport;

pub use digest::{Digest, DigestWriter, ParseDigestError};
pub use lock::{
    ImageDifference, LOCK_VERSION, Lock, LockError, LockedImage, LockedPlatform, MirroredImage,
    SourceRecord, UNKNOWN_REVISION, write_atomic,
};
pub use platform::{ParsePlatformError, Platform};
pub use reference::{
    DOCKER_HUB, DOCKER_HUB_CREDENTIAL_KEY, PinnedRef, Reference, ReferenceError, RegistryPrefix,
};
