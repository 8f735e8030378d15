//! What is attached to a pushed image so that a cluster that did not build
//! it can check who published it: cosign-compatible signatures over a
//! simple signing payload, made with an ECDSA P-256 key read from PEM.
//!
//! Pure functions over bytes and types: this crate makes manifests and
//! blobs and checks them; the CLI stores them and broker-registry's
//! publisher pushes them (blobs first, the `.sig` tag last).
//!
//! ```
//! use broker_attest::{PublicKey, SigningKey, check_signatures, sign_image, signature_manifest};
//! use broker_pins::Digest;
//!
//! // A throwaway key kept for examples and tests (never used for anything real).
//! let pem = include_str!("../tests/data/example-p256.key");
//! let key = SigningKey::from_pem(pem, None, "cosign.key")?;
//! let image = Digest::of(b"an image manifest");
//! let signed = sign_image(&key, "registry.example/broker/python-base", &image);
//! let artifact = signature_manifest(None, &signed)?.expect("nothing was there yet");
//!
//! // A verifier with the public key finds the signature in the manifest.
//! let public = PublicKey::from_pem(&key.public_key().to_pem(), "cosign.pub")?;
//! let payload = |_: &Digest| Some(signed.payload.clone());
//! check_signatures(&artifact.manifest, &payload, &public,
//!     "registry.example/broker/python-base", &image)?;
//!
//! // Signing again changes nothing: RFC 6979 signatures are deterministic.
//! let again = sign_image(&key, "registry.example/broker/python-base", &image);
//! assert!(signature_manifest(Some(&artifact.manifest), &again)?.is_none());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod cosign;
mod key;
pub mod oci;
pub mod provenance;
pub mod sbom;

pub use cosign::{
    SignatureArtifact, SignatureProblem, Signed, SimpleSigning, check_signatures, sign_image,
    signature_manifest, signature_tag,
};
pub use key::{KeyError, PASSPHRASE_ENV, PublicKey, SigningKey};
