//! The dependency stage through the Docker engine: connecting, building
//! the deps image from its context, reporting and logging the build output,
//! and exporting the result into the store (without the deps CA).

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;

use bollard::Docker;
use bollard::query_parameters::BuildImageOptionsBuilder;
use futures::StreamExt;

use std::sync::Arc;

use broker_oci::docker_archive::{ArchiveImage, ImportOptions, KnownLayers, LayerStreams};

use crate::deps::ca::{drop_deps_ca, with_deps_ca};
use crate::deps::error::DepsError;
use crate::deps::key::{BASE_ARG, CONTEXT_DOCKERFILE, DepsInputs};

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
    if let Some(socket) = host.strip_prefix("unix://") {
        let version = ping_api_version(socket)
            .await
            .map_err(|e| no_engine(e.to_string()))?;
        // The older of the engine's and ours, as bollard's negotiation picks.
        let ours = bollard::API_DEFAULT_VERSION;
        let version = if version < *ours { version } else { *ours };
        return Docker::connect_with_unix(socket, ENGINE_TIMEOUT_SECONDS, &version)
            .map_err(|e| no_engine(e.to_string()));
    }
    let docker = Docker::connect_with_local_defaults().map_err(|e| no_engine(e.to_string()))?;
    // Negotiating asks the engine for its version: an answer is the ping.
    docker
        .negotiate_version()
        .await
        .map_err(|e| no_engine(e.to_string()))
}

/// What the engine holds as image `name`: its id and its registry digests
/// (`repo@sha256:…`). `None` when the engine has no such image or none
/// answers.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
pub struct InspectedImage {
    /// The image id (`sha256:` of its config).
    #[serde(rename = "Id", default)]
    pub id: Option<String>,
    /// The `repo@digest` references it was pulled or pushed as.
    #[serde(rename = "RepoDigests", default)]
    pub repo_digests: Option<Vec<String>>,
}

/// Inspects image `name` in the engine at `DOCKER_HOST` (or the local
/// socket). On a unix socket this is one request on the unversioned path
/// (served at the engine's own API version; the two fields read here are
/// the same in every version), so a build whose deps come from the store
/// costs the engine one round trip instead of a ping, a connection and the
/// inspect; `engine` (connected on first use) serves other hosts.
pub async fn inspect_image(
    name: &str,
    engine: &tokio::sync::OnceCell<Docker>,
    image: &str,
) -> Option<InspectedImage> {
    let host =
        std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".to_owned());
    // A reference needs no escaping in a path; anything else takes the
    // client's way.
    let plain = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-/:@".contains(&b));
    if let (Some(socket), true) = (host.strip_prefix("unix://"), plain) {
        return inspect_on_socket(socket, name).await.ok().flatten();
    }
    let docker = engine.get_or_try_init(|| connect(image)).await.ok()?;
    let found = docker.inspect_image(name).await.ok()?;
    Some(InspectedImage {
        id: found.id,
        repo_digests: found.repo_digests,
    })
}

/// `GET /images/NAME/json` on the engine's unix socket: `Ok(None)` for a
/// 404 (no such image).
async fn inspect_on_socket(socket: &str, name: &str) -> std::io::Result<Option<InspectedImage>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::UnixStream::connect(socket).await?;
    stream
        .write_all(format!("GET /images/{name}/json HTTP/1.0\r\nHost: docker\r\n\r\n").as_bytes())
        .await?;
    let mut response = Vec::new();
    stream
        .take(16 * 1024 * 1024)
        .read_to_end(&mut response)
        .await?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("the engine sent no HTTP header"))?;
    let head = String::from_utf8_lossy(&response[..split]);
    let status = head.split_whitespace().nth(1).unwrap_or_default();
    match status {
        "200" => serde_json::from_slice(&response[split + 4..])
            .map(Some)
            .map_err(std::io::Error::other),
        "404" => Ok(None),
        other => Err(std::io::Error::other(format!(
            "the engine answered {other} to an image inspect"
        ))),
    }
}

/// How long one engine request may take (a deps build streams its output
/// meanwhile; bollard's own default).
const ENGINE_TIMEOUT_SECONDS: u64 = 120;

/// The API version the engine on `socket` speaks, from the `Api-Version`
/// header of `GET /_ping`: one cheap request, where `/version` makes the
/// engine run its components (`runc --version`, …) and takes milliseconds.
async fn ping_api_version(socket: &str) -> std::io::Result<bollard::ClientVersion> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::UnixStream::connect(socket).await?;
    stream
        .write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        .await?;
    let mut response = Vec::new();
    stream.take(64 * 1024).read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    let (head, _) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let version = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        if !name.trim().eq_ignore_ascii_case("api-version") {
            return None;
        }
        let (major, minor) = value.trim().split_once('.')?;
        Some(bollard::ClientVersion {
            major_version: major.parse().ok()?,
            minor_version: minor.parse().ok()?,
        })
    });
    version.ok_or_else(|| {
        let status = head.lines().next().unwrap_or("no answer").to_owned();
        std::io::Error::other(format!(
            "`GET /_ping` gave no API version ({status}); is this a Docker engine?"
        ))
    })
}

/// Builds the deps image with the engine and tags it there as
/// `engine_tag`; [`export_into_store`] then brings it (and the other deps
/// images of the run) into the store in one export. `store_tag` names the
/// build's log in the store.
pub async fn build_with_engine(
    docker: &Docker,
    inputs: &DepsInputs,
    engine_tag: &str,
    store: &broker_oci::Store,
    store_tag: &str,
    engine: &EngineOptions,
    output: &dyn BuildOutput,
) -> Result<(), DepsError> {
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
    if let Some(manifest) = inputs.platform_base {
        // The platform's own manifest of the base index: Docker 20.10's
        // legacy builder would otherwise pick the host's.
        let name = inputs
            .base
            .split_once('@')
            .map_or(inputs.base.as_str(), |(n, _)| n);
        args.insert(BASE_ARG.to_owned(), format!("{name}@{manifest}"));
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
    Ok(())
}

/// Removes the deps CA from the stored deps image `store_tag`, and the
/// engine's copy `engine_tag` (which still holds it) from the engine.
pub async fn drop_ca_after_export(
    docker: &Docker,
    image: &str,
    engine_tag: &str,
    store: &broker_oci::Store,
    store_tag: &str,
) -> Result<broker_oci::StoredImage, DepsError> {
    let stored = drop_deps_ca(store, store_tag).map_err(|source| DepsError::DropCa {
        image: image.to_owned(),
        source,
    })?;
    // The build steps below it that nothing else uses go too (no prune off).
    let remove = bollard::query_parameters::RemoveImageOptions {
        force: false,
        noprune: false,
        platforms: None,
    };
    docker
        .remove_image(engine_tag, Some(remove), None)
        .await
        .map_err(|e| DepsError::Engine {
            image: image.to_owned(),
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
    log: crate::deps::log::DepsLog,
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
            log: crate::deps::log::DepsLog::create(store.dir(), store_tag),
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
        let line = crate::deps::log::strip_terminal_escapes(raw);
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
        let message = crate::deps::log::strip_terminal_escapes(message);
        self.log.line(&message);
        DepsError::BuildFailed {
            image: self.image.to_owned(),
            step: std::mem::take(&mut self.step),
            message: message.trim().to_owned(),
            output: crate::deps::log::excerpt(&self.step_lines),
            log: self.log.finish(),
        }
    }
}

/// One engine image to copy into the store.
#[derive(Clone, Copy, Debug)]
pub struct EngineImage<'a> {
    /// The image it is the deps image of (for errors).
    pub image: &'a str,
    /// Its name in the engine.
    pub engine_tag: &'a str,
    /// The tag it gets in the store.
    pub store_tag: &'a str,
}

/// Copies engine images into the store with one export (`docker save`
/// format in, deterministic OCI layers out): the engine writes a layer the
/// images share once, and the store compresses it once. Layers in `known`
/// (a registry base's blobs) are not compressed at all; the others stream
/// to what `streams` opens while they are compressed. The archive is
/// spooled to a temporary file in the store: its index comes last.
pub async fn export_into_store(
    docker: &Docker,
    images: &[EngineImage<'_>],
    store: &broker_oci::Store,
    known: &KnownLayers,
    threads: usize,
    streams: Option<Arc<dyn LayerStreams>>,
) -> Result<Vec<broker_oci::StoredImage>, DepsError> {
    let first = images.first().map_or("", |i| i.image).to_owned();
    let names: Vec<&str> = images.iter().map(|i| i.engine_tag).collect();
    let temp_err = |source| DepsError::Temp {
        image: first.clone(),
        source,
    };
    let temp = tempfile::NamedTempFile::new_in(store.dir()).map_err(temp_err)?;
    {
        let mut file = std::io::BufWriter::with_capacity(1 << 20, temp.as_file());
        let mut stream = docker.export_images(&names);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| DepsError::Engine {
                image: first.clone(),
                why: format!("export of {}: {e}", names.join(", ")),
            })?;
            file.write_all(&chunk).map_err(temp_err)?;
        }
        file.flush().map_err(temp_err)?;
    }
    let tags: Vec<(String, String)> = images
        .iter()
        .map(|i| (i.engine_tag.to_owned(), i.store_tag.to_owned()))
        .collect();
    let store = store.clone();
    let known = known.clone();
    // Compression is CPU work: off the runtime's threads.
    tokio::task::spawn_blocking(move || {
        let wanted: Vec<ArchiveImage<'_>> = tags
            .iter()
            .map(|(engine_tag, store_tag)| ArchiveImage {
                repo_tag: engine_tag,
                store_tag,
            })
            .collect();
        let options = ImportOptions {
            known: &known,
            threads,
            streams: streams.as_deref(),
        };
        store.import_docker_archive_images(temp.path(), &wanted, options)
    })
    .await
    .map_err(|e| DepsError::Engine {
        image: first.clone(),
        why: format!("the import stopped: {e}"),
    })?
    .map_err(|source| DepsError::Store {
        image: first,
        source: Box::new(source),
    })
}
