//! Reading from a registry: resolve a tag to a digest (HEAD, which Docker
//! Hub does not count against pull limits), fetch manifests and blobs, and
//! verify every digest and size before anything is kept.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use broker_oci::digest::DigestWriter;
use broker_oci::{Digest, Store};
use futures::{StreamExt, TryStreamExt};
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, StatusCode};

use crate::client::{ClientOptions, RegistryClient, error_chain, reported_digest};
use crate::error::RegistryError;
use crate::manifest::{Descriptor, Manifest, select_platform};
use crate::progress::{Reporter, Silent};
use crate::repository::Repository;
use broker_pins::Reference;

/// A manifest as the registry sent it, verified against its digest.
#[derive(Clone, Debug)]
pub struct FetchedManifest {
    /// The exact bytes; their sha256 is `digest`.
    pub bytes: Vec<u8>,
    /// The media type (from the manifest, else the Content-Type header).
    pub media_type: String,
    /// The manifest's digest.
    pub digest: Digest,
    /// The parsed content.
    pub manifest: Manifest,
}

/// Resolves `reference` to the digest of the manifest (or index) it names.
pub async fn resolve(
    client: &RegistryClient,
    reference: &Reference,
    reporter: &dyn Reporter,
) -> Result<Digest, RegistryError> {
    if let Some(digest) = reference.digest() {
        return Ok(*digest);
    }
    let repository = reference.repository();
    let selector = reference.manifest_selector();
    let response = Repository::new(client, repository, reporter)
        .read_manifest(Method::HEAD, &format!("resolve of {reference}"), &selector)
        .await?;
    if response.status() == StatusCode::NOT_FOUND {
        return Err(RegistryError::NotFound {
            registry: client.registry().to_owned(),
            what: format!("image {reference}"),
        });
    }
    if let Some(digest) = reported_digest(response.headers()) {
        return Ok(digest);
    }
    // Registries need not send the header on HEAD: hash the manifest itself.
    Ok(fetch_manifest(client, repository, &selector, reporter)
        .await?
        .digest)
}

/// The OCI 1.1 referrers list (an image index's bytes) of `subject` in
/// `repository`, `None` when the registry has no referrers API (it answers
/// 404, or something that is not an index): then the referrers tag schema
/// is the way to list and find attachments.
pub async fn fetch_referrers(
    client: &RegistryClient,
    repository: &str,
    subject: &Digest,
    reporter: &dyn Reporter,
) -> Result<Option<Vec<u8>>, RegistryError> {
    let response = Repository::new(client, repository, reporter)
        .get_referrers(subject)
        .await?;
    if response.status() != StatusCode::OK {
        return Ok(None);
    }
    let what = format!("referrers of {repository}@{subject}");
    let bytes = response
        .bytes()
        .await
        .map_err(|e| RegistryError::Unreachable {
            registry: client.registry().to_owned(),
            what: what.clone(),
            attempts: 1,
            why: error_chain(&e),
        })?
        .to_vec();
    let index = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .filter(|v| v["manifests"].is_array());
    Ok(index.map(|_| bytes))
}

/// Fetches the manifest `selector` (a tag or digest) of `repository`.
pub async fn fetch_manifest(
    client: &RegistryClient,
    repository: &str,
    selector: &str,
    reporter: &dyn Reporter,
) -> Result<FetchedManifest, RegistryError> {
    let what = format!("manifest {repository}:{selector}");
    let fetch = format!("fetch of {what}");
    let response = Repository::new(client, repository, reporter)
        .read_manifest(Method::GET, &fetch, selector)
        .await?;
    let header_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = response
        .bytes()
        .await
        .map_err(|e| RegistryError::Unreachable {
            registry: client.registry().to_owned(),
            what: fetch.clone(),
            attempts: 1,
            why: error_chain(&e),
        })?
        .to_vec();
    let digest = Digest::of(&bytes);
    if let Ok(expected) = selector.parse::<Digest>()
        && expected != digest
    {
        return Err(RegistryError::DigestMismatch {
            registry: client.registry().to_owned(),
            what,
            expected: expected.to_string(),
            actual: digest.to_string(),
        });
    }
    let manifest = Manifest::parse(&bytes, &what)?;
    let media_type = Manifest::media_type_of(&bytes)
        .filter(|_| {
            bytes
                .windows(b"\"mediaType\"".len())
                .any(|w| w == b"\"mediaType\"")
        })
        .or(header_type)
        .unwrap_or_else(|| crate::manifest::OCI_MANIFEST.to_owned());
    Ok(FetchedManifest {
        bytes,
        media_type,
        digest,
        manifest,
    })
}

/// Fails unless the received `(digest, size)` is the expected one.
fn check_digest(
    client: &RegistryClient,
    what: &str,
    expected: &Digest,
    expected_size: u64,
    actual: (Digest, u64),
) -> Result<(), RegistryError> {
    if actual.0 != *expected {
        return Err(RegistryError::DigestMismatch {
            registry: client.registry().to_owned(),
            what: what.to_owned(),
            expected: expected.to_string(),
            actual: actual.0.to_string(),
        });
    }
    if actual.1 != expected_size {
        return Err(RegistryError::DigestMismatch {
            registry: client.registry().to_owned(),
            what: format!("size of {what}"),
            expected: format!("{expected_size} bytes"),
            actual: format!("{} bytes", actual.1),
        });
    }
    Ok(())
}

/// Downloads a blob into the store unless it is there already, verifying
/// digest and size; a failed or corrupt download leaves nothing behind.
pub async fn fetch_blob_into(
    client: &RegistryClient,
    repository: &str,
    blob: &Descriptor,
    store: &Store,
    reporter: &dyn Reporter,
) -> Result<(), RegistryError> {
    if store.has_blob(&blob.digest) {
        return Ok(());
    }
    let mut writer = store.blob_writer()?;
    download(client, repository, blob, reporter, &mut writer, store.dir()).await?;
    writer.finish()?;
    Ok(())
}

/// Downloads a small blob (a signature payload, an attestation) into
/// memory, verifying digest and size; refused above `limit` bytes, so a
/// hostile descriptor cannot make us hold a large blob.
pub async fn fetch_small_blob(
    client: &RegistryClient,
    repository: &str,
    blob: &Descriptor,
    limit: u64,
    reporter: &dyn Reporter,
) -> Result<Vec<u8>, RegistryError> {
    if blob.size > limit {
        return Err(RegistryError::BadManifest {
            what: format!("blob {} in {repository}", blob.digest),
            why: format!("{} bytes, more than the {limit} expected", blob.size),
        });
    }
    let mut bytes = Vec::new();
    download(
        client,
        repository,
        blob,
        reporter,
        &mut bytes,
        Path::new(repository),
    )
    .await?;
    Ok(bytes)
}

/// Streams `blob` into `sink` (at `path`, for errors), failing unless what
/// arrived has the blob's digest and size. The caller discards the sink on
/// failure.
pub(crate) async fn download(
    client: &RegistryClient,
    repository: &str,
    blob: &Descriptor,
    reporter: &dyn Reporter,
    sink: &mut (dyn Write + Send),
    path: &Path,
) -> Result<(), RegistryError> {
    let what = format!("blob {}", blob.digest);
    let io = |source| RegistryError::Io {
        what: "cannot write",
        path: path.to_path_buf(),
        source,
    };
    let mut hasher = DigestWriter::new();
    let mut stream = Repository::new(client, repository, reporter)
        .get_blob(&blob.digest)
        .await?
        .bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| RegistryError::Unreachable {
            registry: client.registry().to_owned(),
            what: format!("download of {what}"),
            attempts: 1,
            why: error_chain(&e),
        })?;
        hasher.update(&chunk);
        sink.write_all(&chunk).map_err(io)?;
    }
    sink.flush().map_err(io)?;
    check_digest(client, &what, &blob.digest, blob.size, hasher.finish())
}

/// How many blobs of one image are downloaded at once.
const PARALLEL_BLOB_FETCHES: usize = 4;

/// Pulls `reference` into the store and tags it `tag` there. An index is
/// narrowed to the `linux/<arch>` manifest of this machine.
pub async fn pull_into_store(
    client: &RegistryClient,
    reference: &Reference,
    store: &Store,
    tag: &str,
    reporter: &Arc<dyn Reporter>,
) -> Result<Digest, RegistryError> {
    let repository = reference.repository();
    let mut fetched = fetch_manifest(
        client,
        repository,
        &reference.manifest_selector(),
        reporter.as_ref(),
    )
    .await?;
    if let Manifest::Index { manifests } = &fetched.manifest {
        let arch = oci_arch();
        let chosen = select_platform(manifests, "linux", arch, None).ok_or_else(|| {
            RegistryError::NoPlatform {
                image: reference.to_string(),
                platform: format!("linux/{arch}"),
            }
        })?;
        fetched = fetch_manifest(
            client,
            repository,
            &chosen.digest.to_string(),
            reporter.as_ref(),
        )
        .await?;
    }
    // A few blobs at once: a base's layers are large and independent.
    let fetches: Vec<_> = fetched
        .manifest
        .blobs()
        .into_iter()
        .map(|blob| fetch_blob_into(client, repository, blob, store, reporter.as_ref()))
        .collect();
    futures::stream::iter(fetches)
        .buffer_unordered(PARALLEL_BLOB_FETCHES)
        .try_collect::<()>()
        .await?;
    let stored = store.write_blob(&fetched.bytes)?;
    debug_assert_eq!(stored, fetched.digest);
    let descriptor = oci_spec::image::Descriptor::new(
        oci_spec::image::MediaType::from(fetched.media_type.as_str()),
        fetched.bytes.len() as u64,
        broker_oci::oci_digest::to_oci(&fetched.digest),
    );
    store.tag(tag, &descriptor)?;
    Ok(fetched.digest)
}

/// This machine's architecture in OCI spelling.
pub fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "s390x" => "s390x",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The images of `pinned` (references by digest) whose registry no longer
/// serves that manifest, each with why, in the order given: what a
/// rollback to an old revision checks before it writes anything, so a
/// deleted image is one line now rather than an ImagePullBackOff later.
/// A registry that cannot be asked counts as missing too, saying so.
pub async fn missing_manifests(
    pinned: &[broker_pins::PinnedRef],
    options: &ClientOptions,
) -> Vec<(String, String)> {
    let mut missing = Vec::new();
    for image in pinned {
        let answer = match RegistryClient::for_reference(&image.to_reference(), options) {
            Ok(client) => {
                fetch_manifest(
                    &client,
                    image.repository(),
                    &image.digest().to_string(),
                    &Silent,
                )
                .await
            }
            Err(e) => Err(e),
        };
        match answer {
            Ok(_) => {}
            Err(RegistryError::NotFound { .. }) => missing.push((
                image.to_string(),
                "gone from its registry (the manifest answers 404)".to_owned(),
            )),
            Err(e) => missing.push((image.to_string(), format!("cannot be checked: {e}"))),
        }
    }
    missing
}
