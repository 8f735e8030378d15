//! The render stage: the `manifests/` catalogue, an environment file, the
//! credentials and `images.lock` in; Kubernetes objects out, every image
//! pinned by digest, ConfigMaps and Secrets generated with kustomize's
//! content-hash names, storage and Service types chosen by the profile.
//! No network, no Docker, no cluster: the lock is read through
//! [`broker_pins`], everything else is files.
//!
//! The same inputs always give the same bytes: objects are sorted (kind in
//! apply order, then name), every mapping's keys are sorted, and nothing
//! depends on time, paths or the machine.
//!
//! ```no_run
//! use std::path::Path;
//!
//! let rendered = broker_render::render(&broker_render::Inputs {
//!     lock: Path::new("images.lock"),
//!     source: Path::new("../broker"),
//!     environment: Path::new("environments/single-node.yaml"),
//!     env_file: Some(Path::new("broker.env")),
//!     manifests: Path::new("manifests"),
//!     require_pinned: false,
//! })?;
//! for warning in &rendered.warnings {
//!     eprintln!("warning: {warning}");
//! }
//! rendered.write_dir(Path::new("rendered"))?;
//! # Ok::<(), broker_render::RenderError>(())
//! ```

pub mod catalogue;
pub mod environment;
mod error;
pub mod hash;
mod render;
pub mod secrets;
mod yaml;

use std::io::Write as _;
use std::path::Path;

pub use environment::Profile;
pub use error::RenderError;
pub use render::{
    ARGOCD_KEEP, ARGOCD_SYNC_OPTIONS, FLUX_PRUNE, FLUX_PRUNE_DISABLED, HOST_PATH_INIT,
    MANAGED_BY_LABEL, NAME_LABEL, PART_OF_LABEL, POD_SECURITY_ENFORCE,
    POD_SECURITY_ENFORCE_VERSION,
};

/// What a render reads.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    /// `images.lock`.
    pub lock: &'a Path,
    /// The broker tree (its `db/init.d`, `config/rabbitmq`, …).
    pub source: &'a Path,
    /// The environment file.
    pub environment: &'a Path,
    /// `KEY=VALUE` credentials, unless the environment names existing
    /// Secrets for every Secret generator.
    pub env_file: Option<&'a Path>,
    /// The catalogue directory.
    pub manifests: &'a Path,
    /// Refuse third-party images the lock has no mirror of, instead of
    /// leaving them unpinned with a warning.
    pub require_pinned: bool,
}

/// One rendered object.
#[derive(Clone, Debug)]
pub struct Object {
    /// `kind`.
    pub kind: String,
    /// `metadata.name` (with the hash suffix for generated objects).
    pub name: String,
    /// Its file in an output directory: `<kind>-<base name>.yaml`, stable
    /// across content changes so only changed files differ.
    pub file_name: String,
    /// Whether it holds credentials (written with mode 0600).
    pub secret: bool,
    /// The object.
    pub value: serde_json::Value,
    /// Its YAML document.
    pub yaml: String,
}

/// The result of a render.
#[derive(Clone, Debug)]
pub struct Rendered {
    /// The objects in apply order.
    pub objects: Vec<Object>,
    /// Things the caller should tell the user (unpinned third-party
    /// images). Never contains a credential.
    pub warnings: Vec<String>,
}

/// Renders the catalogue for one environment. An environment that asks
/// for a generated pull Secret (`generatedPullSecret`) needs
/// [`render_with_pull_credentials`].
pub fn render(inputs: &Inputs<'_>) -> Result<Rendered, RenderError> {
    render::render(inputs, &NoPullCredentials)
}

/// Renders as [`render`] does, looking up in `credentials` what the
/// environment's generated pull Secret holds: the entry of each registry
/// host the rendered pods pull from, and of no other.
pub fn render_with_pull_credentials(
    inputs: &Inputs<'_>,
    credentials: &dyn PullCredentialLookup,
) -> Result<Rendered, RenderError> {
    render::render(inputs, credentials)
}

/// A user name and password (or access token) nodes pull with. `Debug`
/// never shows the password.
#[derive(Clone)]
pub struct PullCredentials {
    /// The user name.
    pub username: String,
    /// The password or access token; never printed.
    pub password: String,
}

impl std::fmt::Debug for PullCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PullCredentials({}:<redacted>)", self.username)
    }
}

/// Where render finds the credentials of a generated pull Secret (the
/// CLI: the Docker configuration and its credential helpers, as the push
/// used them). Render itself reads no credential store.
pub trait PullCredentialLookup {
    /// The credentials stored under `credential_key` (a registry host, or
    /// Docker Hub's `https://index.docker.io/v1/`), `None` when there are
    /// none; an error is one line that never holds a secret.
    fn lookup(&self, credential_key: &str) -> Result<Option<PullCredentials>, String>;
}

/// A lookup that finds nothing: for renders without a generated pull
/// Secret.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoPullCredentials;

impl PullCredentialLookup for NoPullCredentials {
    fn lookup(&self, _credential_key: &str) -> Result<Option<PullCredentials>, String> {
        Ok(None)
    }
}

/// The name of the kustomization file in an output directory.
pub const KUSTOMIZATION: &str = "kustomization.yaml";

/// The first line of every `kustomization.yaml` render writes: how a later
/// render recognises a directory it may replace.
const KUSTOMIZATION_HEADER: &str =
    "# Written by `broker-images render`; apply with `kubectl apply -k`.";

/// The second line of `kustomization.yaml`: why the Namespace is not a
/// resource, and how to create it.
const NAMESPACE_NOTE: &str = "The Namespace is not listed, so that deleting or pruning these resources never deletes it (and with it the claims): create it first with `kubectl apply -f` on its namespace-*.yaml file here, or let `broker-images start` do it.";

/// `--out` replaces its directory whole, so it must never be anything but
/// an earlier render's output (or empty): a mistyped `--out manifests` must
/// not delete the catalogue.
fn refuse_foreign_output(dir: &Path) -> Result<(), RenderError> {
    let metadata = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(RenderError::io("read", dir, e)),
    };
    let ours = metadata.is_dir()
        && (std::fs::read_dir(dir)
            .map_err(|e| RenderError::io("read", dir, e))?
            .next()
            .is_none()
            || std::fs::read_to_string(dir.join(KUSTOMIZATION))
                .is_ok_and(|k| k.starts_with(KUSTOMIZATION_HEADER)));
    if ours {
        Ok(())
    } else {
        Err(RenderError::invalid(
            dir,
            "exists and is not the output of an earlier render (which --out replaces whole); choose another --out or remove it",
        ))
    }
}

impl Rendered {
    /// One multi-document YAML stream.
    pub fn to_stream(&self) -> String {
        let mut out = String::new();
        for object in &self.objects {
            out.push_str("---\n");
            out.push_str(&object.yaml);
        }
        out
    }

    /// The `kustomization.yaml` listing every object file but the
    /// Namespace's.
    ///
    /// The Namespace stays out so that `kubectl delete -k DIR`, or Flux or
    /// Argo CD pruning a directory they sync, can never delete it: deleting
    /// a namespace deletes every claim in it, and with the claims the data.
    /// Its file is still written beside the others (`start --manifests`
    /// reads every file of the directory and applies it first); by hand it
    /// is `kubectl apply -f DIR/namespace-NAME.yaml` before `apply -k`.
    pub fn kustomization(&self) -> String {
        let mut out = format!(
            "{KUSTOMIZATION_HEADER}\n\
             # {NAMESPACE_NOTE}\n\
             apiVersion: kustomize.config.k8s.io/v1beta1\n\
             kind: Kustomization\n\
             resources:\n",
        );
        for object in self.objects.iter().filter(|o| o.kind != "Namespace") {
            out.push_str("  - ");
            out.push_str(&object.file_name);
            out.push('\n');
        }
        out
    }

    /// Writes one file per object plus `kustomization.yaml` to `dir`,
    /// replacing it whole: the files go to a temporary directory beside it,
    /// which is then renamed into place. A failure before the rename leaves
    /// the previous output untouched.
    pub fn write_dir(&self, dir: &Path) -> Result<(), RenderError> {
        let parent = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        std::fs::create_dir_all(parent).map_err(|e| RenderError::io("create", parent, e))?;
        refuse_foreign_output(dir)?;
        let file_name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "rendered".to_owned());
        let staging = tempfile::Builder::new()
            .prefix(&format!(".{file_name}.new-"))
            .tempdir_in(parent)
            .map_err(|e| RenderError::io("create a directory in", parent, e))?;
        let kustomization = self.kustomization();
        let files = self
            .objects
            .iter()
            .map(|o| {
                let mode = if o.secret { SECRET_MODE } else { 0o666 };
                (o.file_name.as_str(), o.yaml.as_bytes(), mode)
            })
            .chain([(KUSTOMIZATION, kustomization.as_bytes(), 0o666)]);
        // Everything is written before anything is synced, so the disk sees
        // one batch rather than a flush per file.
        let mut written = Vec::new();
        for (name, bytes, mode) in files {
            let path = staging.path().join(name);
            written.push((write_file(&path, bytes, mode)?, path));
        }
        for (file, path) in written {
            file.sync_all()
                .map_err(|e| RenderError::io("write", &path, e))?;
        }
        // The directory follows the umask as the files did (a CI step
        // running as another user may need to read it): read bits of the
        // kustomization file, with search bits where reading is allowed.
        let file_mode = file_mode(&staging.path().join(KUSTOMIZATION));
        set_mode(staging.path(), file_mode | ((file_mode & 0o444) >> 2))?;
        sync_dir(staging.path())?;
        // A directory cannot replace a non-empty one in a single rename:
        // move the old one aside first, then drop it.
        let old = if dir.exists() {
            let aside = tempfile::Builder::new()
                .prefix(&format!(".{file_name}.old-"))
                .tempdir_in(parent)
                .map_err(|e| RenderError::io("create a directory in", parent, e))?;
            let aside_path = aside.path().join("previous");
            std::fs::rename(dir, &aside_path).map_err(|e| RenderError::io("move aside", dir, e))?;
            Some(aside)
        } else {
            None
        };
        let staged = staging.keep();
        if let Err(e) = std::fs::rename(&staged, dir) {
            if let Some(old) = &old {
                let _ = std::fs::rename(old.path().join("previous"), dir);
            }
            let _ = std::fs::remove_dir_all(&staged);
            return Err(RenderError::io("write", dir, e));
        }
        drop(old);
        // The rename itself is durable only once the parent is synced.
        sync_dir(parent)
    }
}

/// Rendered Secrets are readable by their owner only, whatever the umask.
const SECRET_MODE: u32 = 0o600;

/// The permission bits a file got (0o644 where there are none).
fn file_mode(path: &Path) -> u32 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(path).map_or(0o644, |m| m.permissions().mode() & 0o777)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        0o644
    }
}

/// Creates `path` with `mode` less the umask — or, for Secrets, exactly
/// [`SECRET_MODE`] — and writes `bytes`; the caller syncs.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<std::fs::File, RenderError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(mode);
    }
    let mut file = options
        .open(path)
        .map_err(|e| RenderError::io("write", path, e))?;
    file.write_all(bytes)
        .map_err(|e| RenderError::io("write", path, e))?;
    // The umask may have taken bits away; Secrets must be exactly 0600.
    #[cfg(unix)]
    if mode == SECRET_MODE {
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| RenderError::io("set permissions of", path, e))?;
    }
    Ok(file)
}

/// Makes a directory's entries durable (a no-op where directories cannot
/// be opened as files).
fn sync_dir(dir: &Path) -> Result<(), RenderError> {
    #[cfg(unix)]
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| RenderError::io("sync", dir, e))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<(), RenderError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| RenderError::io("set permissions of", path, e))?;
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}
