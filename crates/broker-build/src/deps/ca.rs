//! The deps CA: PEM certificates the dependency stage's RUN steps trust
//! (e.g. a TLS-intercepting proxy's), handed to the build beside the
//! Dockerfile and removed from the deps image afterwards, so that no stored
//! or pushed image keeps a trace of them.

use std::path::PathBuf;

use crate::deps::error::DepsError;

/// The name of the deps CA bundle in the build context (beside the
/// Dockerfile, so it cannot collide with a broker file).
pub(crate) const CONTEXT_CA: &str = ".broker-images-deps-ca.pem";

/// Where RUN steps find the deps CA bundle. The layer holding it is removed
/// from the deps image before anything else sees it.
pub const DEPS_CA_PATH: &str = "/.broker-images-deps-ca.pem";

/// The environment variables that point TLS clients at the deps CA bundle
/// during RUN steps: OpenSSL (Python's ssl, curl, wget), pip, requests,
/// curl, Node/npm. They are declared as build args after every `FROM`, so
/// RUN steps see them and the image config's `Env` never holds them.
pub const DEPS_CA_VARIABLES: &[&str] = &[
    "SSL_CERT_FILE",
    "PIP_CERT",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
];

/// Reads the `--deps-ca-file` PEM files into one bundle (`None` for none).
pub fn read_ca_bundle(paths: &[PathBuf]) -> Result<Option<Vec<u8>>, DepsError> {
    if paths.is_empty() {
        return Ok(None);
    }
    let mut bundle = Vec::new();
    for path in paths {
        let bytes = std::fs::read(path).map_err(|source| DepsError::CaFile {
            path: path.clone(),
            source,
        })?;
        if !String::from_utf8_lossy(&bytes).contains("-----BEGIN CERTIFICATE-----") {
            return Err(DepsError::NotPem { path: path.clone() });
        }
        bundle.extend_from_slice(&bytes);
        if !bundle.ends_with(b"\n") {
            bundle.push(b'\n');
        }
    }
    Ok(Some(bundle))
}

/// `dockerfile` with, after every `FROM` instruction, the deps CA copied
/// to [`DEPS_CA_PATH`] and the [`DEPS_CA_VARIABLES`] declared as build
/// args pointing at it.
pub(crate) fn with_deps_ca(dockerfile: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(dockerfile);
    let mut out = String::with_capacity(text.len() + 512);
    let mut in_from = false;
    for line in text.lines() {
        out.push_str(line);
        out.push('\n');
        let trimmed = line.trim_start();
        let starts_from = trimmed
            .get(..5)
            .is_some_and(|w| w.eq_ignore_ascii_case("from ") || w.eq_ignore_ascii_case("from\t"));
        in_from = in_from || starts_from;
        // A FROM continued on the next line ends where the backslash stops.
        if in_from && !line.trim_end().ends_with('\\') {
            in_from = false;
            out.push_str(&format!("COPY {CONTEXT_CA} {DEPS_CA_PATH}\n"));
            for var in DEPS_CA_VARIABLES {
                out.push_str(&format!("ARG {var}={DEPS_CA_PATH}\n"));
            }
        }
    }
    out.into_bytes()
}

/// `created_by` of a history entry without the deps CA build args the
/// classic builder lists before a RUN command (`|N K=V … /bin/sh -c …`).
fn without_ca_args(created_by: &str) -> String {
    let Some(rest) = created_by.strip_prefix('|') else {
        return created_by.to_owned();
    };
    let Some((count, mut args)) = rest.split_once(' ') else {
        return created_by.to_owned();
    };
    let Ok(mut count) = count.parse::<usize>() else {
        return created_by.to_owned();
    };
    let mut owned = args.to_owned();
    for var in DEPS_CA_VARIABLES {
        let token = format!("{var}={DEPS_CA_PATH} ");
        if let Some(at) = owned.find(&token)
            && (at == 0 || owned.as_bytes()[at - 1] == b' ')
        {
            owned.replace_range(at..at + token.len(), "");
            count = count.saturating_sub(1);
        }
    }
    args = &owned;
    if count == 0 {
        args.to_owned()
    } else {
        format!("|{count} {args}")
    }
}

/// Rewrites the stored deps image `store_tag` without the layers that hold
/// the deps CA and without its build args in the history, then deletes
/// those layer blobs: the CA reaches no stored or pushed image.
pub(crate) fn drop_deps_ca(
    store: &broker_oci::Store,
    store_tag: &str,
) -> Result<broker_oci::StoredImage, broker_oci::StoreError> {
    let stored = store.image(store_tag)?;
    let mut config = stored.config.clone();
    let copy_marker = format!(" in {DEPS_CA_PATH}");
    let mut dropped = Vec::new();
    let mut history = Vec::new();
    let mut layer = 0;
    for mut entry in config.history().clone().unwrap_or_default() {
        let created_by = entry.created_by().clone().unwrap_or_default();
        let empty = entry.empty_layer().unwrap_or(false);
        let ours = created_by.contains(DEPS_CA_PATH)
            && (created_by.contains(&copy_marker) || created_by.contains("ARG "));
        if !empty {
            layer += 1;
        }
        if ours {
            if !empty {
                dropped.push(layer - 1);
            }
            continue;
        }
        entry.set_created_by(Some(without_ca_args(&created_by)));
        history.push(entry);
    }
    config.set_history(Some(history));
    let keep = |i: &usize| !dropped.contains(i);
    let diff_ids: Vec<String> = config
        .rootfs()
        .diff_ids()
        .iter()
        .enumerate()
        .filter(|(i, _)| keep(i))
        .map(|(_, d)| d.clone())
        .collect();
    *config.rootfs_mut().diff_ids_mut() = diff_ids;
    let gone: Vec<_> = stored
        .manifest
        .layers()
        .iter()
        .enumerate()
        .filter(|(i, _)| !keep(i))
        .map(|(_, d)| d.clone())
        .collect();
    let layers: Vec<_> = stored
        .manifest
        .layers()
        .iter()
        .enumerate()
        .filter(|(i, _)| keep(i))
        .map(|(_, d)| d.clone())
        .collect();
    let mut manifest = stored.manifest.clone();
    manifest.set_config(store.put_config(&config)?);
    manifest.set_layers(layers);
    let descriptor = store.put_manifest(&manifest)?;
    store.tag(store_tag, &descriptor)?;
    for layer in gone {
        if let Ok(digest) = broker_oci::store::descriptor_digest(&layer, "deps CA layer") {
            // Another image's import may have removed it already.
            let _ = std::fs::remove_file(store.blob_path(&digest));
        }
    }
    store.image(store_tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deps_ca_follows_every_from_and_leaves_the_history() {
        let dockerfile =
            b"ARG BASE\nFROM ${BASE} AS build\nRUN pip install x\nfrom \\\n  ${BASE}\nRUN npm i\n";
        let text = String::from_utf8(with_deps_ca(dockerfile)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[2], format!("COPY {CONTEXT_CA} {DEPS_CA_PATH}"));
        assert_eq!(lines[3], format!("ARG SSL_CERT_FILE={DEPS_CA_PATH}"));
        assert_eq!(lines[9], "from \\");
        assert_eq!(lines[11], format!("COPY {CONTEXT_CA} {DEPS_CA_PATH}"));
        assert_eq!(text.matches("COPY").count(), 2);

        let ours: String = DEPS_CA_VARIABLES
            .iter()
            .map(|v| format!("{v}={DEPS_CA_PATH} "))
            .collect();
        let run = format!("|6 FLAVOUR=a b {ours}/bin/sh -c pip install x");
        assert_eq!(
            without_ca_args(&run),
            "|1 FLAVOUR=a b /bin/sh -c pip install x"
        );
        let run = format!("|5 {ours}/bin/sh -c pip install x");
        assert_eq!(without_ca_args(&run), "/bin/sh -c pip install x");
        assert_eq!(without_ca_args("/bin/sh -c x"), "/bin/sh -c x");
    }
}
