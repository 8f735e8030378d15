//! The attestations attached to a pushed image — its signed SLSA
//! provenance and its signed CycloneDX SBOM (broker-attest makes both) —
//! and their check by `verify --key` / `render --require-signed`.
//!
//! Each is a DSSE envelope in an artifact manifest whose `subject` is the
//! image, pushed by digest and discoverable from the image: through the
//! OCI 1.1 referrers API where the registry has it (it then lists the
//! artifact by its subject itself), else through the referrers tag schema
//! (`sha256-<hex>`, an index kept with every other tool's entries).

use std::collections::BTreeMap;

use anyhow::Context;
use broker_attest::provenance::{self, DSSE_ENVELOPE, IN_TOTO_PAYLOAD};
use broker_attest::{PublicKey, SigningKey, oci, sbom};
use broker_oci::{Digest, Store};
use broker_pins::{LockedImage, PinnedRef, Platform};
use broker_registry::manifest::Descriptor;
use broker_registry::{Publisher, RegistryClient, RegistryError, Silent};

/// What was attached to one image: what the lock records.
#[derive(Clone, Debug, Default)]
pub(crate) struct Attestations {
    /// The provenance artifact.
    pub provenance: Option<Digest>,
    /// The SBOM artifact of a single-platform image.
    pub sbom: Option<Digest>,
    /// The SBOM artifact of each platform of a multi-platform image.
    pub platform_sboms: BTreeMap<Platform, Digest>,
}

impl Attestations {
    /// Records them in the image's lock entry.
    pub(crate) fn record(&self, locked: &mut LockedImage) {
        locked.provenance = self.provenance;
        locked.sbom = self.sbom;
        for (platform, entry) in &mut locked.platforms {
            entry.sbom = self.platform_sboms.get(platform).copied();
        }
    }
}

/// Attaches the provenance and the SBOM(s) of the image `pinned`
/// (recorded as `locked`, pushed by `publisher` as `name`), signed by `key`.
pub(crate) async fn attach(
    publisher: &Publisher,
    store: &Store,
    name: &str,
    pinned: &PinnedRef,
    locked: &LockedImage,
    key: &SigningKey,
) -> anyhow::Result<Attestations> {
    let statement = provenance::statement(name, &pinned.name(), locked);
    let envelope = provenance::envelope(key, IN_TOTO_PAYLOAD, &statement);
    let provenance = attach_envelope(
        publisher,
        store,
        name,
        pinned,
        pinned.digest(),
        envelope,
        provenance::SLSA_PROVENANCE,
    )
    .await
    .context("cannot attach its provenance")?;
    let mut out = Attestations {
        provenance: Some(provenance),
        ..Attestations::default()
    };
    // Each platform's filesystem is its own: an SBOM per manifest, the
    // index's platforms each naming theirs.
    let subjects: Vec<(Option<&Platform>, Digest)> = if locked.platforms.is_empty() {
        vec![(None, *pinned.digest())]
    } else {
        locked
            .platforms
            .iter()
            .map(|(p, e)| (Some(p), e.digest))
            .collect()
    };
    for (platform, subject) in subjects {
        let bom = sbom_of(publisher, store, pinned, &subject, locked).await?;
        let statement = sbom::statement(&pinned.name(), &subject, &bom);
        let envelope = provenance::envelope(key, IN_TOTO_PAYLOAD, &statement);
        let digest = attach_envelope(
            publisher,
            store,
            name,
            pinned,
            &subject,
            envelope,
            sbom::CYCLONEDX_PREDICATE,
        )
        .await
        .context("cannot attach its SBOM")?;
        match platform {
            Some(platform) => {
                out.platform_sboms.insert(platform.clone(), digest);
            }
            None => out.sbom = Some(digest),
        }
    }
    Ok(out)
}

/// The SBOM of the image manifest `subject` (of `pinned`'s repository),
/// made from its layers in the store. An image built elsewhere is first
/// fetched into the store (manifest, config, layers): the SBOM is always
/// made from the bytes the registry serves under that digest.
async fn sbom_of(
    publisher: &Publisher,
    store: &Store,
    pinned: &PinnedRef,
    subject: &Digest,
    locked: &LockedImage,
) -> anyhow::Result<Vec<u8>> {
    let client = publisher.client();
    let repository = pinned.repository();
    let what = format!("{repository}@{subject}");
    let bytes = match store.read_blob(subject) {
        Ok(bytes) => bytes,
        Err(_) => {
            broker_registry::fetch_manifest(client, repository, &subject.to_string(), &Silent)
                .await
                .with_context(|| format!("cannot read the image {what}"))?
                .bytes
        }
    };
    let broker_registry::Manifest::Image { config, layers } =
        broker_registry::Manifest::parse(&bytes, &what)?
    else {
        anyhow::bail!("{what} is an index, not an image manifest");
    };
    store.write_blob(&bytes)?;
    // Blobs already in the store are not fetched again.
    for blob in std::iter::once(&config).chain(&layers) {
        broker_registry::fetch_blob_into(client, repository, blob, store, &Silent)
            .await
            .with_context(|| format!("cannot read blob {} of {what}", blob.digest))?;
    }
    let created = serde_json::from_slice::<serde_json::Value>(&store.read_blob(&config.digest)?)
        .ok()
        .and_then(|c| c["created"].as_str().map(str::to_owned))
        .unwrap_or_else(|| broker_oci::SourceDateEpoch::default().rfc3339());
    let mut fs = sbom::Filesystem::new();
    for layer in &layers {
        let file = store.open_blob(&layer.digest)?;
        fs.apply(file)
            .map_err(|e| anyhow::anyhow!("cannot make its SBOM: {e} ({})", layer.digest))?;
    }
    let facts = sbom::ImageFacts {
        repository: pinned.name(),
        digest: *subject,
        created,
        base: Some(sbom::Base {
            reference: locked.base.clone(),
            digest: locked.base_digest,
            local: locked.base_local,
        }),
        trees: locked
            .sources
            .iter()
            .map(|(name, record)| sbom::Tree {
                name: name.clone(),
                target: record.target.clone(),
                source: record.source.clone(),
                revision: record.revision.clone(),
                layer: record.layer,
            })
            .collect(),
    };
    Ok(sbom::document(&facts, &fs))
}

/// Pushes `envelope` (an in-toto statement of `predicate_type` in DSSE)
/// as an artifact about `subject`, into `pinned`'s repository, and lists
/// it: the referrers API does that by itself; without one the tag-schema
/// index gets an entry. Its digest; nothing is pushed that the registry
/// already has.
async fn attach_envelope(
    publisher: &Publisher,
    store: &Store,
    name: &str,
    pinned: &PinnedRef,
    subject: &Digest,
    envelope: Vec<u8>,
    predicate_type: &str,
) -> anyhow::Result<Digest> {
    let client = publisher.client();
    let repository = pinned.repository();
    let subject_bytes = match store.read_blob(subject) {
        Ok(bytes) => bytes,
        Err(_) => {
            broker_registry::fetch_manifest(client, repository, &subject.to_string(), &Silent)
                .await
                .with_context(|| format!("cannot read the image {repository}@{subject}"))?
                .bytes
        }
    };
    let subject_descriptor = oci::Descriptor {
        media_type: broker_registry::manifest::Manifest::media_type_of(&subject_bytes)
            .unwrap_or_else(|| oci::OCI_MANIFEST.to_owned()),
        digest: *subject,
        size: subject_bytes.len() as u64,
        annotations: BTreeMap::new(),
    };
    // The provenance keeps the bytes (and digest) it had before SBOMs
    // came: its predicate is found by opening it, as before.
    let annotations = if predicate_type == provenance::SLSA_PROVENANCE {
        BTreeMap::new()
    } else {
        BTreeMap::from([(
            sbom::PREDICATE_TYPE_ANNOTATION.to_owned(),
            predicate_type.to_owned(),
        )])
    };
    let artifact = oci::annotated_artifact(
        IN_TOTO_PAYLOAD,
        DSSE_ENVELOPE,
        envelope,
        subject_descriptor,
        annotations,
    );
    for blob in &artifact.blobs {
        store.write_blob(blob)?;
    }
    store.write_blob(&artifact.manifest)?;
    publisher
        .publish_untagged(store, &artifact.digest, name)
        .await
        .with_context(|| format!("cannot push {}", artifact.digest))?;
    if broker_registry::fetch_referrers(client, repository, subject, &Silent)
        .await
        .with_context(|| format!("cannot ask for the referrers of {repository}@{subject}"))?
        .is_some()
    {
        // The registry indexes referrers by subject: a tag-schema index
        // too would be a second list to keep in step.
        return Ok(artifact.digest);
    }
    let tag = oci::referrers_tag(subject);
    let existing = match broker_registry::fetch_manifest(client, repository, &tag, &Silent).await {
        Ok(fetched) => Some(fetched.bytes),
        Err(RegistryError::NotFound { .. }) => None,
        Err(err) => return Err(err).context(format!("cannot read its referrers ({tag})")),
    };
    if let Some(index) =
        oci::referrers_index(existing.as_deref(), std::slice::from_ref(&artifact.entry))
    {
        publisher
            .put_manifest(name, &tag, oci::OCI_INDEX, &index)
            .await
            .with_context(|| {
                format!("cannot list {} in {}:{tag}", artifact.digest, pinned.name())
            })?;
    }
    Ok(artifact.digest)
}

/// The largest attestation envelope read.
const ENVELOPE_LIMIT: u64 = 16 << 20;

/// The referrers of `subject` in `repository` (the referrers API when the
/// registry has it, else the tag-schema index) that are in-toto
/// attestations, and where they were listed.
async fn attestations_of(
    client: &RegistryClient,
    repository: &str,
    subject: &Digest,
) -> anyhow::Result<(Vec<oci::IndexEntry>, String)> {
    let listed = broker_registry::fetch_referrers(client, repository, subject, &Silent)
        .await
        .with_context(|| format!("cannot ask for the referrers of {subject}"))?;
    let (bytes, place) = match listed {
        Some(bytes) => (bytes, format!("the referrers of {subject}")),
        None => {
            let tag = oci::referrers_tag(subject);
            match broker_registry::fetch_manifest(client, repository, &tag, &Silent).await {
                Ok(fetched) => (fetched.bytes, tag),
                Err(RegistryError::NotFound { .. }) => (Vec::new(), tag),
                Err(err) => return Err(err).context(format!("cannot read its referrers ({tag})")),
            }
        }
    };
    let entries = oci::index_entries(&bytes)
        .into_iter()
        .filter(|e| e.artifact_type.as_deref() == Some(IN_TOTO_PAYLOAD))
        .collect();
    Ok((entries, place))
}

/// Why a listed attestation of the kind looked for is not accepted.
enum Rejected {
    /// Its manifest or its statement is about another image.
    OtherImage(String),
    /// Its envelope verifies with no key given.
    OtherKey,
}

/// Checks that an attestation of `predicate_type` (`what` names it:
/// "provenance", "SBOM") about `subject` is listed for it in `repository`
/// and signed by `key`. Otherwise the error says what was found instead:
/// nothing, one about another image, or one signed by another key.
async fn check_attestation(
    client: &RegistryClient,
    repository: &str,
    subject: &Digest,
    what: &str,
    predicate_type: &str,
    key: &PublicKey,
) -> anyhow::Result<()> {
    let (entries, place) = attestations_of(client, repository, subject).await?;
    let mut rejected: Option<(Digest, Rejected)> = None;
    let about_subject = |statement: &serde_json::Value| {
        statement["subject"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["digest"]["sha256"] == subject.hex()))
    };
    for entry in &entries {
        let selector = entry.digest.to_string();
        let Ok(artifact) =
            broker_registry::fetch_manifest(client, repository, &selector, &Silent).await
        else {
            continue;
        };
        let Ok(parsed) = serde_json::from_slice::<oci::ImageManifest>(&artifact.bytes) else {
            continue;
        };
        for layer in parsed
            .layers
            .iter()
            .filter(|l| l.media_type == DSSE_ENVELOPE)
        {
            let blob = Descriptor {
                media_type: layer.media_type.clone(),
                digest: layer.digest,
                size: layer.size,
                platform: None,
            };
            let Ok(bytes) = broker_registry::fetch_small_blob(
                client,
                repository,
                &blob,
                ENVELOPE_LIMIT,
                &Silent,
            )
            .await
            else {
                continue;
            };
            let Some(claimed) = provenance::unverified_statement(&bytes) else {
                continue;
            };
            if claimed["predicateType"] != predicate_type {
                continue;
            }
            let manifest_subject = parsed.subject.as_ref().map(|s| s.digest);
            let problem = if manifest_subject != Some(*subject) {
                Rejected::OtherImage(
                    manifest_subject.map_or_else(|| "no image".to_owned(), |d| d.to_string()),
                )
            } else if let Some(payload) = provenance::open_envelope(&bytes, key) {
                let statement: serde_json::Value =
                    serde_json::from_slice(&payload).unwrap_or_default();
                if about_subject(&statement) && statement["predicateType"] == predicate_type {
                    return Ok(());
                }
                Rejected::OtherImage(
                    statement["subject"][0]["digest"]["sha256"]
                        .as_str()
                        .map_or_else(|| "no image".to_owned(), |h| format!("sha256:{h}")),
                )
            } else {
                Rejected::OtherKey
            };
            rejected.get_or_insert((entry.digest, problem));
        }
    }
    Err(match rejected {
        None => anyhow::anyhow!("no {what} signed by the key (none listed in {place})"),
        Some((artifact, Rejected::OtherImage(about))) => anyhow::anyhow!(
            "no {what} signed by the key: {artifact}, listed in {place}, is about {about}"
        ),
        Some((artifact, Rejected::OtherKey)) => anyhow::anyhow!(
            "no {what} signed by the key: {artifact}, listed in {place}, is signed by another key"
        ),
    })
}

/// Checks the provenance and SBOM(s) of the pushed image `pinned`
/// (recorded as `locked`, when it came from a lock).
pub(crate) async fn check(
    client: &RegistryClient,
    pinned: &PinnedRef,
    locked: &LockedImage,
    key: &PublicKey,
) -> anyhow::Result<()> {
    let repository = pinned.repository();
    let digest = pinned.digest();
    check_attestation(
        client,
        repository,
        digest,
        "provenance",
        provenance::SLSA_PROVENANCE,
        key,
    )
    .await?;
    let subjects: Vec<(String, Digest)> = if locked.platforms.is_empty() {
        vec![(String::new(), *digest)]
    } else {
        locked
            .platforms
            .iter()
            .map(|(p, e)| (format!(" for {p}"), e.digest))
            .collect()
    };
    for (label, subject) in subjects {
        check_attestation(
            client,
            repository,
            &subject,
            &format!("SBOM{label}"),
            sbom::CYCLONEDX_PREDICATE,
            key,
        )
        .await?;
    }
    Ok(())
}
