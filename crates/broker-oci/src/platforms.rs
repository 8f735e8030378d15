//! The platforms of what the store holds: the entries of an image index
//! (a multi-platform image of ours, or a base's index kept by digest), and
//! a selection of a stored image's platforms, which `push --platform`
//! sends.
//!
//! One platform selected is that platform's own manifest, as a build of
//! one platform makes a plain manifest: the digest the full index lists,
//! so a runtime reporting either finds it. Several are an index over
//! them, in the stored index's order, so the same selection always gives
//! the same digest.

use broker_pins::Platform;
use oci_spec::image::{Descriptor, ImageIndex, MediaType};

use crate::digest::Digest;
use crate::image::{BuildImageError, image_index};
use crate::store::{Store, StoreError, descriptor_digest};

/// The manifests of the image index `bytes` by platform, in its order
/// (entries without a platform, or with one that is not
/// `os/architecture[/variant]`, are left out); `None` when `bytes` is not
/// an index (an OCI index or a Docker manifest list) but a single image
/// manifest.
#[must_use]
pub fn index_platforms(bytes: &[u8]) -> Option<Vec<(Platform, Digest)>> {
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let entries = value.get("manifests")?.as_array()?;
    Some(
        entries
            .iter()
            .filter_map(|entry| {
                let platform = entry.get("platform")?;
                let mut text = format!(
                    "{}/{}",
                    platform.get("os")?.as_str()?,
                    platform.get("architecture")?.as_str()?
                );
                if let Some(variant) = platform.get("variant").and_then(|v| v.as_str()) {
                    text.push('/');
                    text.push_str(variant);
                }
                let digest = entry.get("digest")?.as_str()?.parse().ok()?;
                Some((text.parse().ok()?, digest))
            })
            .collect(),
    )
}

/// What a selection of a stored image's platforms is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlatformSelection {
    /// What to push: the stored index itself when every platform is
    /// selected, a new index (in the store) over several, or one
    /// platform's manifest.
    pub digest: Digest,
    /// The platforms selected, in the stored image's order.
    pub platforms: Vec<Platform>,
    /// `digest` is an image index (else a single image manifest).
    pub index: bool,
}

/// Why a selection of platforms cannot be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SelectPlatformsError {
    /// The stored image was not built for a platform asked for.
    #[error(
        "{image} has no {platform} image in the store (it was built for {built}): run `broker-images build` with --platform {platform} among its platforms first"
    )]
    NotBuilt {
        /// The store name.
        image: String,
        /// The platform asked for.
        platform: Platform,
        /// The platforms it has, comma-separated.
        built: String,
    },
    /// The store cannot give the image or take the new index.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The new index could not be assembled.
    #[error(transparent)]
    Assemble(#[from] BuildImageError),
}

/// The platforms of the stored image `name` (a store tag), each with its
/// manifest's descriptor, in the image's order: an index's entries, or a
/// single manifest's platform from its config.
///
/// # Errors
/// An unknown tag, or blobs the store cannot read.
pub fn stored_platforms(
    store: &Store,
    name: &str,
) -> Result<Vec<(Platform, Descriptor)>, StoreError> {
    let descriptor = store.resolve(name)?;
    if *descriptor.media_type() != MediaType::ImageIndex {
        let image = store.image(name)?;
        let config = &image.config;
        let mut text = format!("{}/{}", config.os(), config.architecture());
        if let Some(variant) = config.variant() {
            text.push('/');
            text.push_str(variant);
        }
        let platforms = text
            .parse()
            .map(|platform| vec![(platform, image.manifest_descriptor.clone())]);
        return Ok(platforms.unwrap_or_default());
    }
    let digest = descriptor_digest(&descriptor, &format!("tag `{name}`"))?;
    let bytes = store.read_blob(&digest)?;
    let index: ImageIndex = serde_json::from_slice(&bytes).map_err(|source| StoreError::Json {
        path: store.blob_path(&digest),
        source,
    })?;
    Ok(index
        .manifests()
        .iter()
        .filter_map(|entry| {
            let p = entry.platform().as_ref()?;
            let mut text = format!("{}/{}", p.os(), p.architecture());
            if let Some(variant) = p.variant() {
                text.push('/');
                text.push_str(variant);
            }
            let mut plain = entry.clone();
            plain.set_platform(None);
            Some((text.parse().ok()?, plain))
        })
        .collect())
}

/// The platforms `wanted` of the stored image `name`, ready to push: see
/// [`PlatformSelection`]. A new index is written to the store (untagged).
///
/// # Errors
/// A platform the image was not built for (the first one, naming what it
/// has), or the store.
pub fn select_platforms(
    store: &Store,
    name: &str,
    wanted: &[Platform],
) -> Result<PlatformSelection, SelectPlatformsError> {
    let stored = stored_platforms(store, name)?;
    for platform in wanted {
        if !stored.iter().any(|(p, _)| p == platform) {
            let built: Vec<String> = stored.iter().map(|(p, _)| p.to_string()).collect();
            return Err(SelectPlatformsError::NotBuilt {
                image: name.to_owned(),
                platform: platform.clone(),
                built: if built.is_empty() {
                    "no known platform".to_owned()
                } else {
                    built.join(", ")
                },
            });
        }
    }
    let kept: Vec<(Descriptor, Platform)> = stored
        .iter()
        .filter(|(p, _)| wanted.contains(p))
        .map(|(p, d)| (d.clone(), p.clone()))
        .collect();
    let platforms: Vec<Platform> = kept.iter().map(|(_, p)| p.clone()).collect();
    if let [(manifest, _)] = kept.as_slice() {
        let digest = descriptor_digest(manifest, "platform manifest")?;
        return Ok(PlatformSelection {
            digest,
            platforms,
            index: false,
        });
    }
    let descriptor = store.resolve(name)?;
    let whole = *descriptor.media_type() == MediaType::ImageIndex && kept.len() == stored.len();
    let digest = if whole {
        descriptor_digest(&descriptor, &format!("tag `{name}`"))?
    } else {
        let index = store.put_index(&image_index(&kept)?)?;
        descriptor_digest(&index, "new index")?
    };
    Ok(PlatformSelection {
        digest,
        platforms,
        index: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 26 (offline bases): what an index lists, spelled either way,
    /// and a single manifest is not an index.
    #[test]
    fn an_index_lists_its_platforms_in_order_and_a_manifest_lists_none() {
        let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
        let list = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[
                {{"digest":"{b}","platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},
                {{"digest":"{a}","platform":{{"os":"linux","architecture":"amd64"}}}},
                {{"digest":"{a}"}}]}}"#
        );
        let listed = index_platforms(list.as_bytes()).unwrap();
        let expected: Vec<(Platform, Digest)> = vec![
            ("linux/arm64".parse().unwrap(), b),
            ("linux/amd64".parse().unwrap(), a),
        ];
        assert_eq!(listed, expected);
        let manifest = format!(r#"{{"schemaVersion":2,"config":{{"digest":"{a}"}},"layers":[]}}"#);
        assert_eq!(index_platforms(manifest.as_bytes()), None);
        assert_eq!(index_platforms(b"not json"), None);
    }
}
