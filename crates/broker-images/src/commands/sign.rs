//! `broker-images sign`, and the signing `build --push --sign-key` does: a
//! cosign-compatible signature of each pushed image (broker-attest makes
//! it), stored and pushed through the publisher as the `sha256-<hex>.sig`
//! tag beside the image — its blobs first, the tag last — and its digest
//! recorded in the lock.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use broker_attest::{SigningKey, signature_manifest, signature_tag};
use broker_oci::{Digest, Store};
use broker_pins::{Lock, PinnedRef, Reference, RegistryPrefix};
use broker_registry::manifest::Descriptor;
use broker_registry::{Publisher, RegistryError, Reporter, Silent};

use crate::cli::SignArgs;
use crate::env;
use crate::reporter::Progress;

/// One image's signature, as `sign --json` and `build --json` report it.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct SignedImage {
    /// The image signed, pinned.
    pub image: String,
    /// `registry/repository:sha256-<hex>.sig`.
    pub signature: String,
    /// The signature manifest's digest: what the lock records.
    pub digest: Digest,
    /// Whether anything was pushed (false: the registry already held
    /// exactly this signature).
    pub pushed: bool,
}

/// The signing key at `path`. An encrypted key's passphrase comes from
/// stdin with `passphrase_stdin`, else from [`env::SIGN_PASSPHRASE`]; it
/// reaches no output.
pub(crate) fn signing_key(path: &Path, passphrase_stdin: bool) -> anyhow::Result<SigningKey> {
    let passphrase = if passphrase_stdin {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the key's passphrase from stdin")?;
        let text = text.trim_end_matches(['\n', '\r']).to_owned();
        if text.is_empty() {
            bail!("--passphrase-stdin: standard input held no passphrase");
        }
        Some(text)
    } else {
        std::env::var(env::SIGN_PASSPHRASE)
            .ok()
            .filter(|p| !p.is_empty())
    };
    Ok(SigningKey::from_file(path, passphrase.as_deref())?)
}

/// Signs the image `pinned`, pushed by `publisher` as `name`, with `key`.
/// Another signature already under the tag (another key, another tool) is
/// kept beside ours; when ours is there already nothing is pushed.
pub(crate) async fn sign_pushed(
    publisher: &Publisher,
    store: &Store,
    name: &str,
    pinned: &PinnedRef,
    key: &SigningKey,
) -> anyhow::Result<SignedImage> {
    let client = publisher.client();
    let repository = pinned.repository();
    let tag = signature_tag(pinned.digest());
    let existing = match broker_registry::fetch_manifest(client, repository, &tag, &Silent).await {
        Ok(fetched) => Some(fetched),
        Err(RegistryError::NotFound { .. }) => None,
        Err(err) => return Err(err).context(format!("cannot read its signatures ({tag})")),
    };
    let signed = broker_attest::sign_image(key, &pinned.name(), pinned.digest());
    let reference = format!("{}:{tag}", pinned.name());
    let artifact = signature_manifest(existing.as_ref().map(|f| f.bytes.as_slice()), &signed)
        .with_context(|| format!("{reference} holds something else"))?;
    let artifact = match (artifact, existing) {
        (Some(artifact), _) => artifact,
        (None, Some(existing)) => {
            return Ok(SignedImage {
                image: pinned.to_string(),
                signature: reference,
                digest: existing.digest,
                pushed: false,
            });
        }
        (None, None) => bail!("no signature manifest was made for {reference}"),
    };
    // The signatures kept must be in the store: the push reads every blob
    // of the manifest from there (or finds it in the registry).
    for layer in &artifact.kept {
        let blob = Descriptor {
            media_type: layer.media_type.clone(),
            digest: layer.digest,
            size: layer.size,
            platform: None,
        };
        broker_registry::fetch_blob_into(client, repository, &blob, store, &Silent)
            .await
            .with_context(|| format!("cannot read the signatures under {reference}"))?;
    }
    for blob in &artifact.blobs {
        store.write_blob(blob)?;
    }
    store.write_blob(&artifact.manifest)?;
    publisher
        .publish(store, &artifact.digest.to_string(), name, &tag)
        .await
        .with_context(|| format!("cannot push its signature {reference}"))?;
    Ok(SignedImage {
        image: pinned.to_string(),
        signature: reference,
        digest: artifact.digest,
        pushed: true,
    })
}

/// What one `sign` argument names: the image, its name under its prefix,
/// and its lock entry when it came from the lock.
struct Target {
    pinned: PinnedRef,
    prefix: RegistryPrefix,
    name: String,
    locked: Option<String>,
}

pub(crate) async fn run(
    store_dir: &Path,
    args: SignArgs,
    json: bool,
    progress: Arc<Progress>,
) -> anyhow::Result<()> {
    // The key first: a wrong key or passphrase fails before any request.
    let key = signing_key(&args.key, args.passphrase.passphrase_stdin)?;
    let mut lock = Lock::read(&args.lock)?;
    let options = super::client_options(&args.access)?;
    let reporter: Arc<dyn Reporter> = progress.clone();
    let mut targets = Vec::new();
    let names: Vec<String> = match (&lock, args.images.is_empty()) {
        (_, false) => args.images.clone(),
        (Some(lock), true) => lock.images.keys().cloned().collect(),
        (None, true) => bail!(
            "nothing to sign: name images, or have {} (build --push writes it)",
            args.lock.display()
        ),
    };
    for item in &names {
        targets.push(target(item, lock.as_ref(), &args.lock, &options).await?);
    }
    let store = Store::open(store_dir)
        .with_context(|| format!("cannot open the image store {}", store_dir.display()))?;
    // One publisher per registry prefix: images of one build share it.
    let mut publishers: Vec<(RegistryPrefix, Publisher)> = Vec::new();
    let mut signed = Vec::new();
    let mut failed = Vec::new();
    for target in &targets {
        if !publishers.iter().any(|(p, _)| *p == target.prefix) {
            let publisher = Publisher::new(target.prefix.clone(), &options, reporter.clone())?
                .recording_for(&store);
            publishers.push((target.prefix.clone(), publisher));
        }
        let Some((_, publisher)) = publishers.iter().find(|(p, _)| *p == target.prefix) else {
            continue;
        };
        let label = target
            .locked
            .clone()
            .unwrap_or_else(|| target.pinned.name());
        // An image of the lock gets its provenance and SBOM too (the lock
        // is what they are made from), before the signature tag.
        let locked = target
            .locked
            .as_ref()
            .and_then(|name| lock.as_ref()?.images.get(name).cloned());
        let attested = match &locked {
            Some(locked) => super::attest::attach(
                publisher,
                &store,
                &target.name,
                &target.pinned,
                locked,
                &key,
            )
            .await
            .map(Some),
            None => Ok(None),
        };
        let done = match attested {
            Ok(attested) => sign_pushed(publisher, &store, &target.name, &target.pinned, &key)
                .await
                .map(|done| (done, attested)),
            Err(err) => Err(err),
        };
        match done {
            Ok((done, attested)) => {
                progress.line(&format!("   {}", summary(&label, &done)));
                if let (Some(name), Some(lock)) = (&target.locked, lock.as_mut())
                    && let Some(image) = lock.images.get_mut(name)
                {
                    image.signature = Some(done.digest);
                    attested.unwrap_or_default().record(image);
                }
                signed.push(done);
            }
            Err(err) => failed.push((label, err)),
        }
    }
    if let Some(lock) = &lock
        && targets.iter().any(|t| t.locked.is_some())
        && !signed.is_empty()
    {
        lock.write(&args.lock)
            .with_context(|| format!("cannot write {}", args.lock.display()))?;
    }
    if !signed.is_empty() || failed.is_empty() {
        let lines: Vec<String> = signed
            .iter()
            .map(|s| format!("{}@{}", s.signature, s.digest))
            .collect();
        super::print_result(json, &serde_json::json!({ "signed": signed }), &lines);
    }
    if !failed.is_empty() {
        return Err(super::failed_images(failed, targets.len(), "signed"));
    }
    Ok(())
}

/// `signed NAME: REF (pushed|already there)`, the progress line.
pub(crate) fn summary(label: &str, done: &SignedImage) -> String {
    let what = if done.pushed {
        "pushed"
    } else {
        "already there"
    };
    format!("signed {label}: {} ({what})", done.signature)
}

/// Resolves one `sign` argument: a name in the lock, else a reference
/// (a tag is resolved to its digest on the registry).
async fn target(
    item: &str,
    lock: Option<&Lock>,
    lock_path: &Path,
    options: &broker_registry::ClientOptions,
) -> anyhow::Result<Target> {
    if let Some(locked) = lock.and_then(|l| l.images.get(item)) {
        let pinned = locked.pinned().map_err(|_| {
            anyhow::anyhow!(
                "{item}: {} records it as built but never pushed: push it first (build --push or push)",
                lock_path.display()
            )
        })?;
        let prefix = RegistryPrefix::of_image(&pinned.to_reference(), item).with_context(|| {
            format!("{item}: its locked reference {pinned} does not end in /{item}")
        })?;
        return Ok(Target {
            pinned,
            prefix,
            name: item.to_owned(),
            locked: Some(item.to_owned()),
        });
    }
    if !item.contains('/') {
        bail!(
            "{item} is not an image of {}: name one of its images, or give a pushed reference (HOST/REPOSITORY:TAG or @sha256:…)",
            lock_path.display()
        );
    }
    let reference: Reference = item.parse()?;
    let digest = match reference.digest() {
        Some(digest) => *digest,
        None => {
            let client = broker_registry::RegistryClient::for_reference(&reference, options)?;
            broker_registry::resolve(&client, &reference, &Silent)
                .await
                .with_context(|| format!("{item}: cannot resolve it to a digest"))?
        }
    };
    let pinned = PinnedRef::try_from(reference.with_digest(digest))?;
    let repository = pinned.repository();
    let name = repository
        .rsplit('/')
        .next()
        .unwrap_or(repository)
        .to_owned();
    let prefix = RegistryPrefix::of_image(&pinned.to_reference(), &name)
        .with_context(|| format!("{item}: not a reference of a repository"))?;
    Ok(Target {
        pinned,
        prefix,
        name,
        locked: None,
    })
}

/// The largest signature payload read: cosign's are a few hundred bytes.
const PAYLOAD_LIMIT: u64 = 1 << 20;

/// Checks, for every image of `lock`, the signatures the registry holds
/// for it against `key`: one must be by the key over a payload naming the
/// locked digest and repository. The images that pass, and each one that
/// does not with why.
pub(crate) async fn check_lock(
    lock: &Lock,
    key: &broker_attest::PublicKey,
    options: &broker_registry::ClientOptions,
) -> (Vec<String>, Vec<(String, anyhow::Error)>) {
    let (mut passed, mut failed) = (Vec::new(), Vec::new());
    for (name, locked) in &lock.images {
        let checked = match locked.pinned() {
            Ok(pinned) => check_image(&pinned, Some(locked), key, options).await,
            Err(_) => Err(anyhow::anyhow!(
                "never pushed (the lock names no registry for it)"
            )),
        };
        match checked {
            Ok(()) => passed.push(name.clone()),
            Err(err) => failed.push((name.clone(), err)),
        }
    }
    (passed, failed)
}

/// Checks the signatures of the pushed image `pinned`, and with its lock
/// entry `locked` its provenance and SBOM(s).
async fn check_image(
    pinned: &PinnedRef,
    locked: Option<&broker_pins::LockedImage>,
    key: &broker_attest::PublicKey,
    options: &broker_registry::ClientOptions,
) -> anyhow::Result<()> {
    let client = broker_registry::RegistryClient::for_reference(&pinned.to_reference(), options)?;
    let repository = pinned.repository();
    let tag = signature_tag(pinned.digest());
    let manifest = match broker_registry::fetch_manifest(&client, repository, &tag, &Silent).await {
        Ok(fetched) => fetched,
        Err(RegistryError::NotFound { .. }) => {
            return Err(broker_attest::SignatureProblem::Unsigned { tag }.into());
        }
        Err(err) => return Err(err).context(format!("cannot read its signatures ({tag})")),
    };
    let mut payloads = std::collections::BTreeMap::new();
    if let broker_registry::manifest::Manifest::Image { layers, .. } = &manifest.manifest {
        for layer in layers
            .iter()
            .filter(|l| l.media_type == broker_attest::cosign::SIMPLE_SIGNING)
        {
            // A payload that is missing or too large is no signature: the
            // check below says none verifies.
            if let Ok(bytes) = broker_registry::fetch_small_blob(
                &client,
                repository,
                layer,
                PAYLOAD_LIMIT,
                &Silent,
            )
            .await
            {
                payloads.insert(layer.digest, bytes);
            }
        }
    }
    let payload = |digest: &Digest| payloads.get(digest).cloned();
    broker_attest::check_signatures(
        &manifest.bytes,
        &payload,
        key,
        &pinned.name(),
        pinned.digest(),
    )?;
    match locked {
        Some(locked) => super::attest::check(&client, pinned, locked, key).await,
        None => Ok(()),
    }
}

/// The public key at `path`.
pub(crate) fn public_key(path: &Path) -> anyhow::Result<broker_attest::PublicKey> {
    Ok(broker_attest::PublicKey::from_file(path)?)
}

/// `render --require-signed`: fails, naming each image and why, unless
/// every broker image of the lock at `lock_path` is signed by `key`.
pub(crate) async fn require_signed(
    lock_path: &Path,
    key: &Path,
    access: &crate::cli::RegistryArgs,
) -> anyhow::Result<()> {
    let public = public_key(key)?;
    let Some(lock) = Lock::read(lock_path)? else {
        bail!(
            "{} does not exist: run `broker-images build` first",
            lock_path.display()
        );
    };
    let options = super::client_options(access)?;
    let (_, failed) = check_lock(&lock, &public, &options).await;
    if failed.is_empty() {
        return Ok(());
    }
    let what = format!(
        "signed by {} (render --require-signed pins only signed images)",
        key.display()
    );
    Err(super::failed_images(failed, lock.images.len(), &what))
}
