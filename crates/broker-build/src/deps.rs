//! The dependency stage: base image + pip/npm installs, built by the Docker
//! engine from a Dockerfile and exactly the broker files it declares.
//!
//! Its [`DepsKey`] covers everything that can change the result, so a key
//! already in the store (or the registry) means no engine call at all —
//! dependencies change monthly, sources daily.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use bollard::Docker;
use bollard::query_parameters::BuildImageOptionsBuilder;
use broker_oci::digest::DigestWriter;
use futures::StreamExt;

use crate::spec::ImageSpec;

/// Version of the key recipe; bump when the recipe changes.
const KEY_RECIPE: &str = "broker-images deps key v1";

/// The build arg that carries the base image reference.
pub const BASE_ARG: &str = "BASE";

/// The name the Dockerfile gets inside the build context, chosen so it
/// cannot collide with a broker file.
const CONTEXT_DOCKERFILE: &str = ".broker-images.Dockerfile";

/// sha256 (hex) over the Dockerfile, the base reference, the build args and
/// every file the deps stage copies.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DepsKey(String);

impl DepsKey {
    /// The full hex key.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The tag that marks a deps image in the store and the registry.
    pub fn tag(&self) -> String {
        format!("deps-{}", &self.0[..32])
    }
}

impl std::fmt::Display for DepsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Everything the deps stage of one image is built from, resolved against
/// command-line overrides.
#[derive(Clone, Debug)]
pub struct DepsInputs {
    /// The image's name.
    pub image: String,
    /// The Dockerfile's path.
    pub dockerfile: PathBuf,
    /// The Dockerfile's bytes.
    pub dockerfile_bytes: Vec<u8>,
    /// The base image reference, passed as build arg `BASE`.
    pub base: String,
    /// What `base` resolved to, when it could be resolved: a new digest
    /// behind the same reference (a re-tagged `python:3.10`) is a new key.
    pub base_digest: Option<BaseDigest>,
    /// All build args, `BASE` included.
    pub args: BTreeMap<String, String>,
    /// The declared broker files: path relative to the broker tree, bytes,
    /// and whether any execute bit is set.
    pub files: Vec<(String, Vec<u8>, bool)>,
}

/// A base image reference resolved to a digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BaseDigest {
    /// The manifest digest on the base's registry, or for a base only the
    /// Docker engine has, its image ID.
    pub digest: broker_oci::Digest,
    /// Only the engine has the base: `digest` is its image ID, not
    /// something a registry serves.
    pub local: bool,
}

impl BaseDigest {
    /// The reference to build `FROM`: `base` pinned to the digest when a
    /// registry serves it (so the engine builds on exactly that, pulling
    /// it when its own copy is older), else `base` itself.
    pub fn pinned(&self, base: &str) -> String {
        if self.local || base.contains('@') {
            base.to_owned()
        } else {
            format!("{base}@{}", self.digest)
        }
    }
}

/// The deps stage failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DepsError {
    /// A declared file could not be read.
    #[error("{image}: cannot read {path} (declared in deps.files)")]
    Read {
        /// The image.
        image: String,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// No Docker engine answered.
    #[error(
        "the deps stage of {image} needs a Docker engine, and none answers at {host}: {why}; start one (e.g. `sudo dockerd &`) or set DOCKER_HOST"
    )]
    NoEngine {
        /// The image.
        image: String,
        /// Where we looked.
        host: String,
        /// The connection error.
        why: String,
    },
    /// The Dockerfile failed at a step.
    #[error("deps stage of {image} failed at `{step}`: {message}{}", full_log(log.as_deref()))]
    BuildFailed {
        /// The image.
        image: String,
        /// The failing step, e.g. `Step 4/7 : RUN pip install …`.
        step: String,
        /// The engine's error message.
        message: String,
        /// What to show of the step's output: the lines around the first
        /// error marker and the tail ([`crate::deps_log::excerpt`]),
        /// terminal escapes removed.
        output: Vec<String>,
        /// The full build output, kept in the store.
        log: Option<PathBuf>,
    },
    /// Talking to the engine failed otherwise.
    #[error("Docker engine error during the deps stage of {image}: {why}")]
    Engine {
        /// The image.
        image: String,
        /// What failed.
        why: String,
    },
    /// The built image could not be exported into the store.
    #[error("cannot store the deps image of {image}")]
    Store {
        /// The image.
        image: String,
        /// The import error.
        #[source]
        source: Box<broker_oci::docker_archive::ImportDockerArchiveError>,
    },
    /// A `--deps-ca-file` could not be read.
    #[error("cannot read --deps-ca-file {path}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A `--deps-ca-file` holds no PEM certificate.
    #[error("--deps-ca-file {path} holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)")]
    NotPem {
        /// The file.
        path: PathBuf,
    },
    /// The deps image could not be rewritten without the CA layer.
    #[error("cannot remove the deps CA from the deps image of {image}")]
    DropCa {
        /// The image.
        image: String,
        /// The cause.
        #[source]
        source: broker_oci::StoreError,
    },
    /// A temporary file could not be written.
    #[error("cannot write a temporary file for {image}")]
    Temp {
        /// The image.
        image: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// `; full log: PATH`, or nothing.
fn full_log(log: Option<&Path>) -> String {
    log.map(|p| format!("; full log: {}", p.display()))
        .unwrap_or_default()
}

impl DepsInputs {
    /// Reads the inputs of `spec`'s deps stage from `broker_tree`;
    /// `base` and `args` override the spec's (from the command line).
    pub fn read(
        spec: &ImageSpec,
        broker_tree: &Path,
        base: Option<&str>,
        args: &BTreeMap<String, String>,
    ) -> Result<Self, DepsError> {
        let dockerfile = spec.dir.join(&spec.deps.dockerfile);
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| DepsError::Read {
                image: spec.name.clone(),
                path: path.to_path_buf(),
                source,
            })
        };
        let dockerfile_bytes = read(&dockerfile)?;
        let base = base.unwrap_or(&spec.deps.base).to_owned();
        let mut all_args = spec.deps.args.clone();
        all_args.extend(args.iter().map(|(k, v)| (k.clone(), v.clone())));
        all_args.insert(BASE_ARG.to_owned(), base.clone());
        let mut files = Vec::new();
        let mut declared = spec.deps.files.clone();
        declared.sort();
        declared.dedup();
        for rel in declared {
            let path = broker_tree.join(&rel);
            let bytes = read(&path)?;
            let executable = executable(&path);
            files.push((rel, bytes, executable));
        }
        Ok(Self {
            image: spec.name.clone(),
            dockerfile,
            dockerfile_bytes,
            base,
            base_digest: None,
            args: all_args,
            files,
        })
    }

    /// The key of these inputs.
    pub fn key(&self) -> DepsKey {
        let mut h = DigestWriter::new();
        let mut line = |s: &str| {
            h.update(s.as_bytes());
            h.update(b"\n");
        };
        line(KEY_RECIPE);
        line(&format!(
            "dockerfile {}",
            broker_oci::Digest::of(&self.dockerfile_bytes)
        ));
        if let Some(base) = &self.base_digest {
            line(&format!("base-digest {}", base.digest));
        }
        for (k, v) in &self.args {
            // Length-prefixed so `a=b` + `c` never equals `a` + `b=c`.
            line(&format!("arg {}:{k}={}:{v}", k.len(), v.len()));
        }
        for (path, bytes, exec) in &self.files {
            line(&format!(
                "file {}:{path} {} {}",
                path.len(),
                broker_oci::Digest::of(bytes),
                if *exec { "0755" } else { "0644" }
            ));
        }
        DepsKey(h.finish().0.hex())
    }

    /// The build context: the Dockerfile and the declared files, as a tar
    /// with fixed metadata (the engine hashes context files for its cache).
    pub fn context_tar(&self) -> Result<Vec<u8>, std::io::Error> {
        self.context_tar_with(&self.dockerfile_bytes, None)
    }

    /// The build context with `dockerfile` as its Dockerfile and, when
    /// given, the deps CA bundle beside it (see [`EngineOptions::ca_bundle`]).
    fn context_tar_with(
        &self,
        dockerfile: &[u8],
        ca_bundle: Option<&[u8]>,
    ) -> Result<Vec<u8>, std::io::Error> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut dirs = std::collections::BTreeSet::new();
        for (path, _, _) in &self.files {
            let mut p = Path::new(path).parent();
            while let Some(dir) = p.filter(|d| !d.as_os_str().is_empty()) {
                dirs.insert(dir.to_string_lossy().into_owned());
                p = dir.parent();
            }
        }
        for dir in &dirs {
            let mut header = fixed_header(tar::EntryType::Directory, 0o755, 0);
            builder.append_data(&mut header, format!("{dir}/"), std::io::empty())?;
        }
        let mut header = fixed_header(tar::EntryType::Regular, 0o644, dockerfile.len() as u64);
        builder.append_data(&mut header, CONTEXT_DOCKERFILE, dockerfile)?;
        if let Some(ca) = ca_bundle {
            let mut header = fixed_header(tar::EntryType::Regular, 0o644, ca.len() as u64);
            builder.append_data(&mut header, CONTEXT_CA, ca)?;
        }
        for (path, bytes, exec) in &self.files {
            let mut header = fixed_header(
                tar::EntryType::Regular,
                if *exec { 0o755 } else { 0o644 },
                bytes.len() as u64,
            );
            builder.append_data(&mut header, path, bytes.as_slice())?;
        }
        builder.into_inner()
    }
}

fn fixed_header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(broker_oci::SourceDateEpoch::DEFAULT.seconds());
    header.set_uid(0);
    header.set_gid(0);
    header
}

fn executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
}

/// The name of the deps CA bundle in the build context (beside the
/// Dockerfile, so it cannot collide with a broker file).
const CONTEXT_CA: &str = ".broker-images-deps-ca.pem";

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

/// How the engine runs a deps build beyond its inputs. Nothing here
/// changes the deps key: it changes how the packages are fetched, not
/// which.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineOptions {
    /// PEM certificates RUN steps trust (e.g. a TLS-intercepting proxy's
    /// CA). The deps image keeps no trace of them: no layer, no config.
    pub ca_bundle: Option<Vec<u8>>,
    /// The network RUN steps use (`host`, …); the engine's default when
    /// `None`.
    pub network: Option<String>,
}

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
fn with_deps_ca(dockerfile: &[u8]) -> Vec<u8> {
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
fn drop_deps_ca(
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

/// Receives the engine's build output, line by line.
pub trait BuildOutput: Send + Sync {
    /// One line of `docker build` output for `image`.
    fn line(&self, image: &str, line: &str);
}

/// Connects to the Docker engine (DOCKER_HOST or the local socket) and
/// agrees on an API version; the engine here may be as old as 20.10.
pub async fn connect(image: &str) -> Result<Docker, DepsError> {
    let host =
        std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".to_owned());
    let no_engine = |why: String| DepsError::NoEngine {
        image: image.to_owned(),
        host: host.clone(),
        why,
    };
    let docker = Docker::connect_with_local_defaults().map_err(|e| no_engine(e.to_string()))?;
    let docker = docker
        .negotiate_version()
        .await
        .map_err(|e| no_engine(e.to_string()))?;
    docker.ping().await.map_err(|e| no_engine(e.to_string()))?;
    Ok(docker)
}

/// Builds the deps image with the engine, tags it there as `engine_tag`,
/// and imports it into the store as `store_tag`.
pub async fn build_with_engine(
    docker: &Docker,
    inputs: &DepsInputs,
    engine_tag: &str,
    store: &broker_oci::Store,
    store_tag: &str,
    engine: &EngineOptions,
    output: &dyn BuildOutput,
) -> Result<broker_oci::StoredImage, DepsError> {
    let image = inputs.image.clone();
    let ca = engine.ca_bundle.as_deref();
    let dockerfile = match ca {
        Some(_) => with_deps_ca(&inputs.dockerfile_bytes),
        None => inputs.dockerfile_bytes.clone(),
    };
    let context = inputs
        .context_tar_with(&dockerfile, ca)
        .map_err(|source| DepsError::Temp {
            image: image.clone(),
            source,
        })?;
    let mut args: HashMap<String, String> = inputs.args.clone().into_iter().collect();
    if let Some(base) = &inputs.base_digest {
        args.insert(BASE_ARG.to_owned(), base.pinned(&inputs.base));
    }
    let mut options = BuildImageOptionsBuilder::default()
        .dockerfile(CONTEXT_DOCKERFILE)
        .t(engine_tag)
        .buildargs(&args)
        .rm(true)
        .forcerm(true);
    if let Some(network) = &engine.network {
        options = options.networkmode(network);
    }
    let options = options.build();
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(context.into())));
    let mut progress = StepOutput::new(&image, store, store_tag, output);
    while let Some(item) = stream.next().await {
        let info = match item {
            Ok(info) => info,
            Err(bollard::errors::Error::DockerStreamError { error }) => {
                return Err(progress.failed(&error));
            }
            Err(e) => {
                return Err(DepsError::Engine {
                    image: image.clone(),
                    why: e.to_string(),
                });
            }
        };
        if let Some(text) = info.stream.as_deref() {
            progress.text(text);
        }
        if let Some(detail) = info.error_detail {
            return Err(progress.failed(&detail.message.unwrap_or_default()));
        }
    }
    progress.finish();
    let stored = export_into_store(docker, &image, engine_tag, store, store_tag).await?;
    if ca.is_none() {
        return Ok(stored);
    }
    let stored = drop_deps_ca(store, store_tag).map_err(|source| DepsError::DropCa {
        image: image.clone(),
        source,
    })?;
    // The engine's copy still holds the CA layer: remove it, and the build
    // steps below it that nothing else uses (no prune off).
    let remove = bollard::query_parameters::RemoveImageOptions {
        force: false,
        noprune: false,
        platforms: None,
    };
    docker
        .remove_image(engine_tag, Some(remove), None)
        .await
        .map_err(|e| DepsError::Engine {
            image,
            why: format!("cannot remove {engine_tag}, which holds the deps CA: {e}"),
        })?;
    Ok(stored)
}

/// The engine's build output as it arrives: split into lines (a line may
/// span two stream messages), terminal escapes removed, reported, written
/// to the full log, and the current step's lines kept for an excerpt.
struct StepOutput<'a> {
    image: &'a str,
    output: &'a dyn BuildOutput,
    log: crate::deps_log::DepsLog,
    pending: String,
    step: String,
    step_lines: Vec<String>,
}

impl<'a> StepOutput<'a> {
    fn new(
        image: &'a str,
        store: &broker_oci::Store,
        store_tag: &str,
        output: &'a dyn BuildOutput,
    ) -> Self {
        Self {
            image,
            output,
            log: crate::deps_log::DepsLog::create(store.dir(), store_tag),
            pending: String::new(),
            step: String::from("(before the first step)"),
            step_lines: Vec::new(),
        }
    }

    fn text(&mut self, text: &str) {
        self.pending.push_str(text);
        while let Some(end) = self.pending.find('\n') {
            let raw: String = self.pending.drain(..=end).collect();
            self.line(&raw);
        }
    }

    fn line(&mut self, raw: &str) {
        let line = crate::deps_log::strip_terminal_escapes(raw);
        let line = line.trim_end();
        if line.trim().is_empty() {
            return;
        }
        self.log.line(line);
        if line.starts_with("Step ") {
            line.trim().clone_into(&mut self.step);
            self.step_lines.clear();
        } else {
            self.step_lines.push(line.to_owned());
        }
        self.output.line(self.image, line);
    }

    /// The rest of an unterminated last line.
    fn flush(&mut self) {
        let rest = std::mem::take(&mut self.pending);
        self.line(&rest);
    }

    fn finish(mut self) -> Option<PathBuf> {
        self.flush();
        self.log.finish()
    }

    /// The error for an engine failure `message`, with the excerpt of the
    /// failing step and the log's path.
    fn failed(mut self, message: &str) -> DepsError {
        self.flush();
        let message = crate::deps_log::strip_terminal_escapes(message);
        self.log.line(&message);
        DepsError::BuildFailed {
            image: self.image.to_owned(),
            step: std::mem::take(&mut self.step),
            message: message.trim().to_owned(),
            output: crate::deps_log::excerpt(&self.step_lines),
            log: self.log.finish(),
        }
    }
}

/// Copies an engine image into the store (`docker save` format in,
/// deterministic OCI layers out).
pub async fn export_into_store(
    docker: &Docker,
    image: &str,
    engine_ref: &str,
    store: &broker_oci::Store,
    store_tag: &str,
) -> Result<broker_oci::StoredImage, DepsError> {
    let temp = tempfile::NamedTempFile::new_in(store.dir()).map_err(|source| DepsError::Temp {
        image: image.to_owned(),
        source,
    })?;
    {
        let mut file = std::io::BufWriter::new(temp.as_file());
        let mut stream = docker.export_image(engine_ref);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| DepsError::Engine {
                image: image.to_owned(),
                why: format!("export of {engine_ref}: {e}"),
            })?;
            file.write_all(&chunk).map_err(|source| DepsError::Temp {
                image: image.to_owned(),
                source,
            })?;
        }
        file.flush().map_err(|source| DepsError::Temp {
            image: image.to_owned(),
            source,
        })?;
    }
    store
        .import_docker_archive(temp.path(), store_tag)
        .map_err(|source| DepsError::Store {
            image: image.to_owned(),
            source: Box::new(source),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> DepsInputs {
        DepsInputs {
            image: "x".into(),
            dockerfile: PathBuf::from("Dockerfile"),
            dockerfile_bytes: b"ARG BASE\nFROM ${BASE}\n".to_vec(),
            base: "python:3.10".into(),
            base_digest: None,
            args: BTreeMap::from([("BASE".to_owned(), "python:3.10".to_owned())]),
            files: vec![(
                "images/restapi/requirements.txt".into(),
                b"fastapi==0.1\n".to_vec(),
                false,
            )],
        }
    }

    #[test]
    fn key_changes_with_every_input_and_nothing_else() {
        let a = inputs();
        assert_eq!(a.key(), inputs().key());
        assert_eq!(a.key().as_str().len(), 64);
        let mut b = inputs();
        b.dockerfile_bytes.push(b'\n');
        assert_ne!(a.key(), b.key());
        let mut b = inputs();
        b.args.insert("BASE".into(), "python:3.11".into());
        assert_ne!(a.key(), b.key());
        let mut b = inputs();
        b.files[0].1 = b"fastapi==0.2\n".to_vec();
        assert_ne!(a.key(), b.key());
        let mut b = inputs();
        b.files[0].2 = true;
        assert_ne!(a.key(), b.key());
        let mut b = inputs();
        b.args.insert("NPM_PACKAGES".into(), String::new());
        assert_ne!(a.key(), b.key());
        // Issue 12: the same base reference re-tagged to new content.
        let mut b = inputs();
        let digest = |bytes: &[u8]| BaseDigest {
            digest: broker_oci::Digest::of(bytes),
            local: false,
        };
        b.base_digest = Some(digest(b"v1"));
        let mut c = inputs();
        c.base_digest = Some(digest(b"v2"));
        assert_ne!(a.key(), b.key());
        assert_ne!(b.key(), c.key());
        assert_eq!(
            digest(b"v1").pinned("python:3.10"),
            format!("python:3.10@{}", broker_oci::Digest::of(b"v1"))
        );
        // The Dockerfile's path on this machine is not an input.
        let mut b = inputs();
        b.dockerfile = PathBuf::from("/elsewhere/Dockerfile");
        assert_eq!(a.key(), b.key());
    }

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

    #[test]
    fn context_is_byte_identical_and_holds_only_declared_files() {
        let a = inputs().context_tar().unwrap();
        assert_eq!(a, inputs().context_tar().unwrap());
        let mut archive = tar::Archive::new(a.as_slice());
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "images/",
                "images/restapi/",
                CONTEXT_DOCKERFILE,
                "images/restapi/requirements.txt"
            ]
        );
    }
}
