//! Synthetic images written straight into a store: noise layers and a
//! matching config and manifest. Registries never look inside layers, so
//! transfer tests need no real filesystem content.

use broker_oci::{Digest, Store};

/// Deterministic xorshift noise: incompressible like real compressed
/// layers, different for every seed, no RNG crate needed.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// An image written by [`image`] or [`manifest`].
#[derive(Debug, Clone)]
pub struct SyntheticImage {
    /// The manifest's digest.
    pub digest: Digest,
    /// The manifest's exact bytes.
    pub manifest: String,
    /// The layer blobs, bottom first.
    pub layers: Vec<Digest>,
    /// The config blob.
    pub config: Digest,
}

impl SyntheticImage {
    /// Every blob the manifest references: layers, then the config.
    pub fn blobs(&self) -> Vec<Digest> {
        let mut all = self.layers.clone();
        all.push(self.config);
        all
    }
}

/// Writes `layers` noise layers of `size` bytes for `arch`, their config and
/// the manifest into `store`, without tagging it.
pub fn manifest(
    store: &Store,
    seed: u64,
    layers: usize,
    size: usize,
    arch: &str,
) -> SyntheticImage {
    let blobs = (0..layers)
        .map(|i| noise(seed * 1000 + i as u64, size))
        .collect();
    manifest_of(store, blobs, arch)
}

/// A gzip tar layer holding the files `(path, bytes)`, as image layers are.
pub fn tar_layer(files: &[(&str, &[u8])]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for (path, bytes) in files {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, path, *bytes).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

/// Like [`image`], but each layer is a real gzip tar (one noise file of
/// `size` bytes), so tools that read layers (an SBOM) find a filesystem.
pub fn tar_image(
    store: &Store,
    name: &str,
    seed: u64,
    layers: usize,
    size: usize,
) -> SyntheticImage {
    let blobs = (0..layers)
        .map(|i| {
            let path = format!("noise/{seed}-{i}");
            tar_layer(&[(&path, &noise(seed * 1000 + i as u64, size))])
        })
        .collect();
    let image = manifest_of(store, blobs, "amd64");
    tag(
        store,
        name,
        image.digest,
        image.manifest.len(),
        "application/vnd.oci.image.manifest.v1+json",
    );
    image
}

/// Writes the layer `blobs`, a config for `arch` and the manifest.
fn manifest_of(store: &Store, blobs: Vec<Vec<u8>>, arch: &str) -> SyntheticImage {
    let sizes: Vec<usize> = blobs.iter().map(Vec::len).collect();
    let layers: Vec<Digest> = blobs
        .iter()
        .map(|blob| store.write_blob(blob).unwrap())
        .collect();
    let layer_json: Vec<String> = layers
        .iter()
        .zip(&sizes)
        .map(|(d, size)| format!(r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{d}","size":{size}}}"#))
        .collect();
    let diff_ids: Vec<String> = layers.iter().map(|d| format!("\"{d}\"")).collect();
    let config = format!(
        r#"{{"architecture":"{arch}","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":[{}]}},"history":[]}}"#,
        diff_ids.join(",")
    );
    let config_digest = store.write_blob(config.as_bytes()).unwrap();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{}]}}"#,
        config.len(),
        layer_json.join(",")
    );
    let digest = store.write_blob(manifest.as_bytes()).unwrap();
    SyntheticImage {
        digest,
        manifest,
        layers,
        config: config_digest,
    }
}

/// Points the store tag `tag` at the manifest or index `digest`.
pub fn tag(store: &Store, tag: &str, digest: Digest, size: usize, media_type: &str) {
    let descriptor = oci_spec::image::Descriptor::new(
        oci_spec::image::MediaType::from(media_type),
        size as u64,
        broker_oci::oci_digest::to_oci(&digest),
    );
    store.tag(tag, &descriptor).unwrap();
}

/// A single-platform (amd64) synthetic image tagged `name` in `store`.
pub fn image(store: &Store, name: &str, seed: u64, layers: usize, size: usize) -> SyntheticImage {
    let image = manifest(store, seed, layers, size, "amd64");
    tag(
        store,
        name,
        image.digest,
        image.manifest.len(),
        "application/vnd.oci.image.manifest.v1+json",
    );
    image
}
