//! Signatures laid out the way cosign stores them, so `cosign verify --key`,
//! Kyverno `verifyImages` and policy-controller accept them:
//!
//! - the signed message is a *simple signing* payload naming the image's
//!   repository (`critical.identity.docker-reference`) and manifest digest
//!   (`critical.image.docker-manifest-digest`);
//! - it is stored as a layer (media type [`SIMPLE_SIGNING`]) of an OCI
//!   image manifest tagged `sha256-<hex>.sig` in the image's repository,
//!   the DER ECDSA signature in base64 in the layer's [`SIGNATURE_ANNOTATION`];
//! - several signatures (other keys, other tools) are several layers of
//!   that one manifest, so adding ours keeps theirs.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use broker_pins::Digest;
use serde::{Deserialize, Serialize};

use crate::key::{PublicKey, SigningKey};
use crate::oci::{self, Blob, Descriptor, ImageManifest};

/// The media type of a simple signing payload layer.
pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation holding the base64 DER signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// `critical.type` of a cosign container image signature.
pub const SIGNATURE_TYPE: &str = "cosign container image signature";

/// The tag a signature manifest of the image `subject` lives under.
#[must_use]
pub fn signature_tag(subject: &Digest) -> String {
    format!("sha256-{}.sig", subject.hex())
}

/// The simple signing payload: what a signature says about an image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimpleSigning {
    /// What verifiers must check.
    pub critical: Critical,
    /// Free-form claims; cosign writes `null` when there are none.
    pub optional: Option<BTreeMap<String, serde_json::Value>>,
}

/// The `critical` part of a [`SimpleSigning`] payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Critical {
    /// The repository the image was signed for.
    pub identity: Identity,
    /// The image signed.
    pub image: SignedImage,
    /// Always [`SIGNATURE_TYPE`].
    #[serde(rename = "type")]
    pub kind: String,
}

/// `critical.identity`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// `registry/repository`, without tag or digest.
    #[serde(rename = "docker-reference")]
    pub docker_reference: String,
}

/// `critical.image`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedImage {
    /// The manifest digest, as text: a tampered payload may name anything.
    #[serde(rename = "docker-manifest-digest")]
    pub docker_manifest_digest: String,
}

impl SimpleSigning {
    /// The payload for the image `digest` in `repository`
    /// (`registry/repository`).
    #[must_use]
    pub fn for_image(repository: &str, digest: &Digest) -> Self {
        Self {
            critical: Critical {
                identity: Identity {
                    docker_reference: repository.to_owned(),
                },
                image: SignedImage {
                    docker_manifest_digest: digest.to_string(),
                },
                kind: SIGNATURE_TYPE.to_owned(),
            },
            optional: None,
        }
    }

    /// The payload's bytes (compact JSON, keys in cosign's order).
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// One signature: the payload bytes and the base64 DER signature over them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signed {
    /// The payload exactly as signed.
    pub payload: Vec<u8>,
    /// The DER signature in standard base64.
    pub signature: String,
}

/// Signs the image `digest` of `repository` with `key`.
#[must_use]
pub fn sign_image(key: &SigningKey, repository: &str, digest: &Digest) -> Signed {
    let payload = SimpleSigning::for_image(repository, digest).to_bytes();
    let signature = STANDARD.encode(key.sign_der(&payload));
    Signed { payload, signature }
}

/// A signature manifest and the blobs it needs that are new: what to put
/// into the store and push under [`signature_tag`].
#[derive(Clone, Debug)]
pub struct SignatureArtifact {
    /// The manifest's exact bytes.
    pub manifest: Vec<u8>,
    /// Its digest.
    pub digest: Digest,
    /// The config and our payload.
    pub blobs: Vec<Vec<u8>>,
    /// The layers of the existing manifest that were kept (other
    /// signatures): their blobs are in the registry, not among `blobs`.
    pub kept: Vec<Descriptor>,
}

/// Why an existing signature manifest could not be read.
#[derive(Debug, thiserror::Error)]
#[error("the signature manifest is not an OCI image manifest: {0}")]
pub struct BadSignatureManifest(String);

/// The signature manifest holding `signed`, keeping every other layer of
/// `existing` (the manifest under the tag now, if any). `None` when
/// `existing` already holds exactly this signature: nothing to push.
pub fn signature_manifest(
    existing: Option<&[u8]>,
    signed: &Signed,
) -> Result<Option<SignatureArtifact>, BadSignatureManifest> {
    let payload = Blob::new(SIMPLE_SIGNING, signed.payload.clone());
    let mut layers: Vec<Descriptor> = match existing {
        Some(bytes) => {
            serde_json::from_slice::<ImageManifest>(bytes)
                .map_err(|e| BadSignatureManifest(e.to_string()))?
                .layers
        }
        None => Vec::new(),
    };
    let ours = |layer: &Descriptor| {
        layer.digest == payload.digest
            && layer.annotation(SIGNATURE_ANNOTATION) == Some(signed.signature.as_str())
    };
    if layers.iter().any(ours) {
        return Ok(None);
    }
    let kept = layers.clone();
    let mut layer = payload.descriptor();
    layer
        .annotations
        .insert(SIGNATURE_ANNOTATION.to_owned(), signed.signature.clone());
    layers.push(layer);
    let config = oci::layers_config(&layers);
    let manifest = ImageManifest::new(config.descriptor(), layers).to_bytes();
    Ok(Some(SignatureArtifact {
        digest: Digest::of(&manifest),
        manifest,
        blobs: vec![config.bytes, payload.bytes],
        kept,
    }))
}

/// What is wrong with an image's signatures.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureProblem {
    /// No `.sig` tag at all.
    #[error("not signed (no {tag} in its repository)")]
    Unsigned {
        /// The tag looked for.
        tag: String,
    },
    /// Signatures exist, none by the key.
    #[error("no signature by the key given ({found} signature(s) by other keys or tampered)")]
    NotByKey {
        /// How many signature layers there are.
        found: usize,
    },
    /// A signature by the key, over a payload naming another image.
    #[error(
        "the signed payload names {named}, not {expected} (a signature re-pointed from another image)"
    )]
    OtherImage {
        /// What the payload names.
        named: String,
        /// The locked digest or repository.
        expected: String,
    },
}

/// Checks the signature manifest `manifest` of the image `digest` in
/// `repository`: some layer must carry a signature by `key` over a payload
/// naming exactly that image. `payload` gives a layer's bytes (fetched and
/// verified against its digest by the caller), `None` when missing.
pub fn check_signatures(
    manifest: &[u8],
    payload: &dyn Fn(&Digest) -> Option<Vec<u8>>,
    key: &PublicKey,
    repository: &str,
    digest: &Digest,
) -> Result<(), SignatureProblem> {
    let layers = serde_json::from_slice::<ImageManifest>(manifest)
        .map(|m| m.layers)
        .unwrap_or_default();
    let mut wrong_image = None;
    let signatures: Vec<&Descriptor> = layers
        .iter()
        .filter(|l| l.media_type == SIMPLE_SIGNING)
        .collect();
    for layer in &signatures {
        let Some(signature) = layer
            .annotation(SIGNATURE_ANNOTATION)
            .and_then(|s| STANDARD.decode(s).ok())
        else {
            continue;
        };
        let Some(bytes) = payload(&layer.digest) else {
            continue;
        };
        if !key.verifies(&bytes, &signature) {
            continue;
        }
        let Ok(signed) = serde_json::from_slice::<SimpleSigning>(&bytes) else {
            continue;
        };
        let named_digest = &signed.critical.image.docker_manifest_digest;
        let named_repository = &signed.critical.identity.docker_reference;
        if *named_digest != digest.to_string() {
            wrong_image = Some((named_digest.clone(), digest.to_string()));
        } else if named_repository != repository {
            wrong_image = Some((named_repository.clone(), repository.to_owned()));
        } else if signed.critical.kind == SIGNATURE_TYPE {
            return Ok(());
        }
    }
    Err(match wrong_image {
        Some((named, expected)) => SignatureProblem::OtherImage { named, expected },
        None => SignatureProblem::NotByKey {
            found: signatures.len(),
        },
    })
}
