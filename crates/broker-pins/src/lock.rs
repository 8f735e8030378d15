//! `images.lock`: what build hands to render. For every broker image the
//! pushed reference pinned by digest, the deps key and the source
//! revisions it was built from; for every mirrored third-party image the
//! mirror's pinned reference. Written atomically; stable key order, so an
//! unchanged build rewrites identical bytes.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::platform::Platform;
use crate::reference::{PinnedRef, ReferenceError};

/// The lock file format version this tool writes and reads.
pub const LOCK_VERSION: u32 = 1;

/// The whole lock file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    /// Format version, [`LOCK_VERSION`].
    pub version: u32,
    /// The tool that wrote the file (`broker-images 0.1.0`), so a tool
    /// too old for it can say which version to upgrade to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written_by: Option<String>,
    /// Broker images by name (`python-base`, …).
    #[serde(default)]
    pub images: BTreeMap<String, LockedImage>,
    /// Third-party images by the reference users write (`postgres:14.2`).
    #[serde(default)]
    pub mirrors: BTreeMap<String, MirroredImage>,
}

/// One built (and possibly pushed) broker image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedImage {
    /// `registry/repository@sha256:…` when pushed; the store name otherwise.
    pub reference: String,
    /// The tag pushed alongside the digest, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// The image manifest digest.
    pub digest: Digest,
    /// The key of the dependency stage it was built on.
    pub deps_key: String,
    /// The base image reference the deps stage started from.
    pub base: String,
    /// What `base` resolved to when the deps stage was keyed: its manifest
    /// digest, or for a base only the Docker engine had, its image ID
    /// (then `base_local` is set). Absent in locks written before issue 12.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_digest: Option<Digest>,
    /// `base_digest` is an engine image ID, not a registry digest.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub base_local: bool,
    /// The deps stage's build args besides `BASE` (the spec's and the
    /// command line's), so that `verify` rebuilds with the same ones.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub build_args: BTreeMap<String, String>,
    /// The digest of the deps image (the layers below the source layers).
    pub deps_digest: Digest,
    /// Source trees baked in, by layer name.
    #[serde(default)]
    pub sources: BTreeMap<String, SourceRecord>,
    /// The digest of the image's cosign signature manifest (the
    /// `sha256-<hex>.sig` tag beside it), when it was signed (issue 25).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Digest>,
    /// The digest of the image's signed SLSA provenance artifact (its
    /// `subject` is the image), when one was attached (issue 25).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Digest>,
    /// The digest of the image's signed CycloneDX SBOM artifact (its
    /// `subject` is the image manifest), when one was attached (issue 25).
    /// A multi-platform image has one per platform instead, in
    /// [`platforms`](Self::platforms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sbom: Option<Digest>,
    /// A multi-platform image (issue 26): each platform's manifest, deps
    /// key and deps image. [`digest`](Self::digest) is then the OCI image
    /// index over them (what render pins), and `deps_key` / `deps_digest`
    /// are those of the first platform. Empty for a single-platform image,
    /// whose `digest` is its manifest's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub platforms: BTreeMap<Platform, LockedPlatform>,
    /// The platform of a single-platform image, so `verify` rebuilds that
    /// one without being told. Absent for a multi-platform image (its
    /// platforms are the keys of [`platforms`](Self::platforms)) and in
    /// locks written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

/// One platform of a multi-platform image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedPlatform {
    /// The platform's image manifest digest (an entry of the index).
    pub digest: Digest,
    /// The key of the platform's dependency stage.
    pub deps_key: String,
    /// The digest of the platform's deps image.
    pub deps_digest: Digest,
    /// The base its deps stage started from: the platform's manifest of a
    /// base index (or the image's `base_digest` when the base is no index);
    /// absent in locks written before provenance named it (issue 25).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_digest: Option<Digest>,
    /// The digest of the platform's signed SBOM artifact (its `subject`
    /// is the platform's manifest), when one was attached (issue 25).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sbom: Option<Digest>,
}

/// The revision recorded for a tree that is not a git checkout and was
/// given no revision (`--source-revision`).
pub const UNKNOWN_REVISION: &str = "unknown";

/// Where a source layer came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceRecord {
    /// The path in the image.
    pub target: String,
    /// Where the tree came from (its git URL), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The git commit of the tree (or the revision given for it), else
    /// [`UNKNOWN_REVISION`]; absent in locks written before issue 12.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The layer's digest (compressed).
    pub layer: Digest,
}

/// A third-party image copied into our registry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirroredImage {
    /// The original, pinned: `docker.io/library/postgres@sha256:…`.
    pub source: String,
    /// The copy, pinned by the same digest.
    pub reference: String,
    /// The digest (manifest or index), identical on both sides.
    pub digest: Digest,
}

/// One reason a rebuilt image differs from the one in the lock.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ImageDifference {
    /// The lock has no image of that name.
    NotLocked,
    /// The deps inputs changed (Dockerfile, args, base, copied files).
    DepsKey {
        /// The key in the lock.
        locked: String,
        /// The key now.
        rebuilt: String,
    },
    /// A source layer has other bytes (or is new).
    Layer {
        /// The layer's name in `image.yaml`.
        layer: String,
        /// Its digest in the lock, if it was there.
        locked: Option<Digest>,
        /// Its digest now.
        rebuilt: Digest,
    },
    /// One platform's manifest differs (or is new, or is gone).
    Platform {
        /// The platform.
        platform: Platform,
        /// Its manifest digest in the lock, if it was there.
        locked: Option<Digest>,
        /// Its manifest digest now, if it was rebuilt.
        rebuilt: Option<Digest>,
    },
    /// Deps and layers match; the image config or manifest differs.
    Config,
}

impl std::fmt::Display for ImageDifference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotLocked => f.write_str("not in the lock"),
            Self::DepsKey { locked, rebuilt } => write!(
                f,
                "deps inputs changed (key {} in the lock, {} now)",
                short(locked),
                short(rebuilt)
            ),
            Self::Layer {
                layer,
                locked: Some(locked),
                rebuilt,
            } => write!(
                f,
                "layer `{layer}` differs ({locked} in the lock, {rebuilt} now)"
            ),
            Self::Layer {
                layer,
                locked: None,
                ..
            } => write!(f, "layer `{layer}` is new"),
            Self::Platform {
                platform,
                locked,
                rebuilt,
            } => match (locked, rebuilt) {
                (Some(locked), Some(rebuilt)) => write!(
                    f,
                    "platform {platform} differs ({locked} in the lock, {rebuilt} now)"
                ),
                (None, _) => write!(f, "platform {platform} is new"),
                (Some(_), None) => write!(f, "platform {platform} was not rebuilt"),
            },
            Self::Config => f.write_str(
                "config or manifest differs (runtime config, labels or SOURCE_DATE_EPOCH)",
            ),
        }
    }
}

/// The first 12 characters of a key, as people compare them.
fn short(key: &str) -> &str {
    key.get(..12).unwrap_or(key)
}

impl LockedImage {
    /// Whether a node running `digest` runs this image: the recorded
    /// digest, or for a multi-platform image one of its platforms'
    /// manifests (container runtimes report either).
    pub fn runs_as(&self, digest: &Digest) -> bool {
        self.digest == *digest || self.platforms.values().any(|p| p.digest == *digest)
    }

    /// Records where the image was published: `pinned` (its digest is the
    /// image's) with `tag` beside it.
    pub fn published(&mut self, pinned: &PinnedRef, tag: &str) {
        self.reference = pinned.to_string();
        self.tag = Some(tag.to_owned());
    }

    /// This multi-platform image narrowed to `kept` of its platforms (in
    /// its index's order), now `digest`: for several, the index over them,
    /// whose deps key and deps image are the first's; for one, that
    /// platform's manifest, recorded as a single-platform image is (no
    /// `platforms`). A signature or provenance made for the whole index
    /// does not cover the new digest and is dropped. `None` when a platform
    /// of `kept` is not recorded, or `kept` is empty.
    #[must_use]
    pub fn narrowed(&self, kept: &[Platform], digest: Digest) -> Option<Self> {
        let first = self.platforms.get(kept.first()?)?;
        let mut platforms = BTreeMap::new();
        for platform in kept {
            platforms.insert(platform.clone(), self.platforms.get(platform)?.clone());
        }
        let mut narrowed = self.clone();
        narrowed.digest = digest;
        narrowed.deps_key.clone_from(&first.deps_key);
        narrowed.deps_digest = first.deps_digest;
        (narrowed.platforms, narrowed.platform) = if kept.len() == 1 {
            (BTreeMap::new(), kept.first().cloned())
        } else {
            (platforms, None)
        };
        narrowed.signature = None;
        narrowed.provenance = None;
        // A platform's SBOM is about its own manifest, still true of one
        // platform pushed alone; an index's is not about a new index.
        narrowed.sbom = if kept.len() == 1 { first.sbom } else { None };
        Some(narrowed)
    }

    /// The pushed reference pinned by digest; an error naming the image
    /// when it was built but never pushed (the reference is then only a
    /// store name).
    pub fn pinned(&self) -> Result<PinnedRef, ReferenceError> {
        let pinned: PinnedRef = self.reference.parse()?;
        if pinned.digest() != &self.digest {
            return Err(ReferenceError {
                reference: self.reference.clone(),
                why: format!("its digest is not the recorded {}", self.digest),
            });
        }
        Ok(pinned)
    }
}

impl MirroredImage {
    /// The mirror's reference pinned by digest.
    pub fn pinned(&self) -> Result<PinnedRef, ReferenceError> {
        self.reference.parse()
    }
}

/// Reading or writing the lock file failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// The file could not be read or written.
    #[error("{what} {path}")]
    Io {
        /// The operation.
        what: &'static str,
        /// The lock file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is damaged or was not written by broker-images.
    #[error("{path}:{line}:{column}: not a valid lock file ({why}); delete it and build again")]
    Parse {
        /// The lock file.
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// What is wrong.
        why: String,
    },
    /// The file is of a newer lock format than this tool reads.
    #[error(
        "{path} is lock format {version}, written by {written_by}; this broker-images ({ours}) reads format {LOCK_VERSION}: upgrade broker-images (the lock is fine, keep it)"
    )]
    NewerFormat {
        /// The lock file.
        path: PathBuf,
        /// Its format version.
        version: u64,
        /// Who wrote it, as it says.
        written_by: String,
        /// This tool's version.
        ours: String,
    },
}

impl Lock {
    /// An empty lock of the current version.
    pub fn new() -> Self {
        Self {
            version: LOCK_VERSION,
            ..Self::default()
        }
    }

    /// Reads `path`; `Ok(None)` when it does not exist.
    pub fn read(path: &Path) -> Result<Option<Self>, LockError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(LockError::Io {
                    what: "cannot read",
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        // The format version first: a newer file is no damage, and its
        // unknown fields must not read as if it were.
        if let Ok(loose) = serde_json::from_str::<serde_json::Value>(&text)
            && let Some(version) = loose.get("version").and_then(serde_json::Value::as_u64)
            && version > u64::from(LOCK_VERSION)
        {
            return Err(LockError::NewerFormat {
                path: path.to_path_buf(),
                version,
                written_by: loose
                    .get("written_by")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or("a newer broker-images")
                    .to_owned(),
                ours: env!("CARGO_PKG_VERSION").to_owned(),
            });
        }
        let mut lock: Lock = serde_json::from_str(&text).map_err(|e| LockError::Parse {
            path: path.to_path_buf(),
            line: e.line(),
            column: e.column(),
            why: without_position(&e.to_string()),
        })?;
        // Who wrote it matters only to a tool too old to read it.
        lock.written_by = None;
        if lock.version != LOCK_VERSION {
            return Err(LockError::Parse {
                path: path.to_path_buf(),
                line: 1,
                column: 1,
                why: format!("version {} is not {LOCK_VERSION}", lock.version),
            });
        }
        Ok(Some(lock))
    }

    /// Reads `path`, or an empty lock when it does not exist.
    pub fn read_or_new(path: &Path) -> Result<Self, LockError> {
        Ok(Self::read(path)?.unwrap_or_else(Self::new))
    }

    /// Takes every image and mirror of `newer`, replacing entries of the
    /// same name and keeping the others: a build of some images, or a
    /// mirror run, never forgets what earlier runs recorded.
    pub fn merge(&mut self, newer: Lock) {
        self.version = newer.version;
        for (name, mut image) in newer.images {
            // The same image at the same place keeps the signature recorded
            // for it: a rebuild that changed nothing still is signed.
            if let Some(older) = self.images.get(&name)
                && image.signature.is_none()
                && older.digest == image.digest
                && older.reference == image.reference
            {
                image.signature = older.signature;
            }
            if let Some(older) = self.images.get(&name)
                && older.digest == image.digest
                && older.reference == image.reference
            {
                image.provenance = image.provenance.or(older.provenance);
                image.sbom = image.sbom.or(older.sbom);
                for (platform, entry) in &mut image.platforms {
                    if let Some(was) = older.platforms.get(platform)
                        && was.digest == entry.digest
                    {
                        entry.sbom = entry.sbom.or(was.sbom);
                    }
                }
            }
            self.images.insert(name, image);
        }
        self.mirrors.extend(newer.mirrors);
    }

    /// Records that `image` (as users write it, `postgres:14.2`) was
    /// mirrored from `source` to `copy`, both pinned by the same digest.
    pub fn record_mirror(&mut self, image: &str, source: &PinnedRef, copy: &PinnedRef) {
        self.mirrors.insert(
            image.to_owned(),
            MirroredImage {
                source: source.to_string(),
                reference: copy.to_string(),
                digest: *copy.digest(),
            },
        );
    }

    /// What differs between the image `name` recorded here and `rebuilt`:
    /// empty when the digests match. Used by `verify` to say which input
    /// changed.
    pub fn diff_image(&self, name: &str, rebuilt: &LockedImage) -> Vec<ImageDifference> {
        let Some(locked) = self.images.get(name) else {
            return vec![ImageDifference::NotLocked];
        };
        if locked.digest == rebuilt.digest {
            return Vec::new();
        }
        let mut out = Vec::new();
        // Every platform is compared: an index differs when any of its
        // manifests does, and the reader needs to know which.
        for platform in locked.platforms.keys().chain(rebuilt.platforms.keys()) {
            let was = locked.platforms.get(platform).map(|p| p.digest);
            let now = rebuilt.platforms.get(platform).map(|p| p.digest);
            let listed = out.iter().any(
                |d| matches!(d, ImageDifference::Platform { platform: p, .. } if p == platform),
            );
            if was != now && !listed {
                out.push(ImageDifference::Platform {
                    platform: platform.clone(),
                    locked: was,
                    rebuilt: now,
                });
            }
        }
        if locked.deps_key != rebuilt.deps_key {
            out.push(ImageDifference::DepsKey {
                locked: locked.deps_key.clone(),
                rebuilt: rebuilt.deps_key.clone(),
            });
        }
        for (layer, record) in &rebuilt.sources {
            match locked.sources.get(layer) {
                Some(old) if old.layer == record.layer => {}
                old => out.push(ImageDifference::Layer {
                    layer: layer.clone(),
                    locked: old.map(|o| o.layer),
                    rebuilt: record.layer,
                }),
            }
        }
        if out.is_empty() {
            // Same deps and layers but another manifest: labels, config or
            // the base below the deps stage changed.
            out.push(ImageDifference::Config);
        }
        out
    }

    /// The exact bytes [`Lock::write`] puts on disk, naming this tool as
    /// their writer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut stamped = self.clone();
        stamped.written_by = Some(concat!("broker-images ", env!("CARGO_PKG_VERSION")).to_owned());
        // Serialising plain maps of strings cannot fail.
        let mut text = serde_json::to_string_pretty(&stamped).unwrap_or_default();
        text.push('\n');
        text.into_bytes()
    }

    /// Writes the lock to `path` atomically: readers see the old file or
    /// the new one, never a half-written one.
    pub fn write(&self, path: &Path) -> Result<(), LockError> {
        let bytes = self.to_bytes();
        // An unchanged lock keeps its file (and its mtime, for make-style
        // tools watching it).
        if std::fs::read(path).is_ok_and(|old| old == bytes) {
            return Ok(());
        }
        write_atomic(path, &bytes).map_err(|source| LockError::Io {
            what: "cannot write",
            path: path.to_path_buf(),
            source,
        })
    }
}

/// serde_json's message without its trailing ` at line L column C`: the
/// position is said once, as `path:line:column`.
fn without_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) if message[at..].contains(" column ") => message[..at].to_owned(),
        _ => message.to_owned(),
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory
/// and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    // A lock is no secret: it gets the umask's mode (tempfile's own
    // default, 0600, leaves it unreadable to a CI step of another user).
    let mut builder = tempfile::Builder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let mut temp = builder.tempfile_in(dir)?;
    temp.write_all(bytes)?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 22 item 7: written with the umask's mode, as `touch` would.
    #[cfg(unix)]
    #[test]
    fn the_lock_gets_the_umasks_mode() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("images.lock");
        Lock::new().write(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        let probe = dir.path().join("probe");
        std::fs::write(&probe, b"").unwrap();
        let expected = std::fs::metadata(&probe).unwrap().permissions().mode() & 0o777;
        assert_eq!(format!("{mode:o}"), format!("{expected:o}"));
        assert_ne!(mode, 0o600, "umask here is 022 or 002");
    }

    /// Issue 22 item 2: a newer format is no damage — say to upgrade.
    #[test]
    fn a_lock_of_a_newer_format_says_which_version_wrote_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("images.lock");
        std::fs::write(
            &path,
            r#"{"version": 2, "written_by": "broker-images 0.9.0", "images": {}, "platforms": {}}"#,
        )
        .unwrap();
        let text = Lock::read(&path).unwrap_err().to_string();
        assert!(
            text.contains("is lock format 2, written by broker-images 0.9.0"),
            "{text}"
        );
        assert!(text.contains("upgrade broker-images"), "{text}");
        assert!(!text.contains("delete it"), "{text}");
        // A damaged one may be rebuilt; its position is said once.
        std::fs::write(&path, "{\"version\": 1, \"images\": {").unwrap();
        let text = Lock::read(&path).unwrap_err().to_string();
        assert!(text.ends_with("delete it and build again"), "{text}");
        assert_eq!(text.matches("line").count(), 0, "{text}");
    }

    #[test]
    fn round_trips_and_is_stable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("images.lock");
        assert_eq!(Lock::read(&path).unwrap(), None);
        let mut lock = Lock::new();
        let d = Digest::of(b"x");
        lock.mirrors.insert(
            "postgres:14.2".into(),
            MirroredImage {
                source: format!("docker.io/library/postgres@{d}"),
                reference: format!("r/library/postgres@{d}"),
                digest: d,
            },
        );
        lock.write(&path).unwrap();
        let first = std::fs::read(&path).unwrap();
        let back = Lock::read(&path).unwrap().unwrap();
        assert_eq!(back, lock);
        back.write(&path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), first);
    }

    #[test]
    fn locks_without_build_args_stay_readable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("images.lock");
        let d = Digest::of(b"x");
        let old = format!(
            r#"{{"version":1,"images":{{"a":{{"reference":"a@{d}","digest":"{d}","deps_key":"k","base":"b","deps_digest":"{d}","sources":{{"s":{{"target":"/s","layer":"{d}"}}}}}}}}}}"#
        );
        std::fs::write(&path, old).unwrap();
        let lock = Lock::read(&path).unwrap().unwrap();
        assert!(lock.images["a"].build_args.is_empty());
        assert_eq!(lock.images["a"].sources["s"].revision, None);
    }

    #[test]
    fn malformed_lock_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("images.lock");
        std::fs::write(&path, "{\n  \"version\": 1,\n  \"images\": [}\n").unwrap();
        let err = Lock::read(&path).unwrap_err().to_string();
        assert!(err.contains("images.lock:3:"), "{err}");
    }

    /// Issue 26 (push --platform): one platform is recorded as a
    /// single-platform image, several keep their records and the first's
    /// deps; a signature of the whole index is dropped.
    #[test]
    fn a_narrowed_image_records_only_the_platforms_kept() {
        let (amd64, arm64): (Platform, Platform) = (
            "linux/amd64".parse().unwrap(),
            "linux/arm64".parse().unwrap(),
        );
        let mut indexed = image(Digest::of(b"index"), "k-amd64", Digest::of(b"layer"));
        indexed.signature = Some(Digest::of(b"sig"));
        for (platform, name) in [(&amd64, "amd64"), (&arm64, "arm64")] {
            indexed.platforms.insert(
                platform.clone(),
                LockedPlatform {
                    digest: Digest::of(name.as_bytes()),
                    deps_key: format!("k-{name}"),
                    deps_digest: Digest::of(format!("deps-{name}").as_bytes()),
                    base_digest: None,
                    sbom: None,
                },
            );
        }
        let one = indexed
            .narrowed(std::slice::from_ref(&arm64), Digest::of(b"arm64"))
            .unwrap();
        assert_eq!(one.digest, Digest::of(b"arm64"));
        assert_eq!(one.deps_key, "k-arm64");
        assert_eq!(one.deps_digest, Digest::of(b"deps-arm64"));
        assert!(one.platforms.is_empty());
        assert_eq!((one.signature, one.provenance), (None, None));
        assert_eq!(one.sources, indexed.sources);

        let both = indexed
            .narrowed(&[arm64.clone(), amd64.clone()], Digest::of(b"other index"))
            .unwrap();
        assert_eq!(both.platforms, indexed.platforms);
        assert_eq!(both.deps_key, "k-arm64", "the first kept");

        let s390x: Platform = "linux/s390x".parse().unwrap();
        assert_eq!(indexed.narrowed(&[s390x], Digest::of(b"x")), None);
        assert_eq!(indexed.narrowed(&[], Digest::of(b"x")), None);
    }

    fn image(digest: Digest, key: &str, layer: Digest) -> LockedImage {
        let mut sources = BTreeMap::new();
        sources.insert(
            "python".to_owned(),
            SourceRecord {
                target: "/home/broker/python".into(),
                source: None,
                revision: None,
                layer,
            },
        );
        LockedImage {
            reference: format!("127.0.0.1:5000/broker/python-base@{digest}"),
            tag: Some("v1".into()),
            digest,
            deps_key: key.into(),
            base: "python:3.10".into(),
            base_digest: None,
            base_local: false,
            build_args: BTreeMap::new(),
            deps_digest: Digest::of(b"deps"),
            sources,
            signature: None,
            provenance: None,
            sbom: None,
            platforms: BTreeMap::new(),
            platform: None,
        }
    }

    #[test]
    fn an_unchanged_image_keeps_its_signature_and_a_changed_one_drops_it() {
        let signature = Some(Digest::of(b"sig"));
        let mut old = Lock::new();
        for name in ["same", "changed"] {
            let mut signed = image(Digest::of(name.as_bytes()), "k", Digest::of(b"l"));
            signed.signature = signature;
            old.images.insert(name.into(), signed);
        }
        let mut newer = Lock::new();
        let same = image(Digest::of(b"same"), "k", Digest::of(b"l"));
        newer.images.insert("same".into(), same);
        let changed = image(Digest::of(b"changed2"), "k", Digest::of(b"l"));
        newer.images.insert("changed".into(), changed);
        old.merge(newer);
        assert_eq!(old.images["same"].signature, signature);
        assert_eq!(old.images["changed"].signature, None);
        // Written only when set: locks without signatures read as before.
        let text = serde_json::to_string(&old).unwrap();
        assert_eq!(text.matches("\"signature\"").count(), 1, "{text}");
    }

    #[test]
    fn merge_keeps_what_the_newer_lock_does_not_mention() {
        let mut old = Lock::new();
        old.images
            .insert("a".into(), image(Digest::of(b"a1"), "k", Digest::of(b"l")));
        old.images
            .insert("b".into(), image(Digest::of(b"b1"), "k", Digest::of(b"l")));
        let mut newer = Lock::new();
        newer
            .images
            .insert("a".into(), image(Digest::of(b"a2"), "k", Digest::of(b"l")));
        old.merge(newer);
        assert_eq!(old.images["a"].digest, Digest::of(b"a2"));
        assert_eq!(old.images["b"].digest, Digest::of(b"b1"));
    }

    #[test]
    fn diff_names_the_changed_input() {
        let mut lock = Lock::new();
        lock.images.insert(
            "a".into(),
            image(Digest::of(b"a1"), "key-one-0000000", Digest::of(b"l1")),
        );
        let same = image(Digest::of(b"a1"), "key-one-0000000", Digest::of(b"l1"));
        assert!(lock.diff_image("a", &same).is_empty());
        let layer = image(Digest::of(b"a2"), "key-one-0000000", Digest::of(b"l2"));
        let diff = lock.diff_image("a", &layer);
        assert_eq!(diff.len(), 1);
        assert!(
            diff[0].to_string().starts_with("layer `python` differs"),
            "{}",
            diff[0]
        );
        let deps = image(Digest::of(b"a3"), "key-two-0000000", Digest::of(b"l1"));
        assert_eq!(
            lock.diff_image("a", &deps)[0].to_string(),
            "deps inputs changed (key key-one-0000 in the lock, key-two-0000 now)"
        );
        assert_eq!(
            lock.diff_image("zz", &same),
            vec![ImageDifference::NotLocked]
        );
        assert_eq!(
            lock.images["a"].pinned().unwrap().digest(),
            &Digest::of(b"a1")
        );
    }

    #[test]
    fn platforms_are_recorded_and_compared_one_by_one() {
        let index = Digest::of(b"index");
        let mut multi = image(index, "k", Digest::of(b"layer"));
        for (platform, manifest) in [("linux/amd64", b"amd"), ("linux/arm64", b"arm")] {
            multi.platforms.insert(
                platform.parse().unwrap(),
                LockedPlatform {
                    digest: Digest::of(manifest),
                    deps_key: format!("k-{platform}"),
                    deps_digest: Digest::of(b"deps"),
                    base_digest: None,
                    sbom: None,
                },
            );
        }
        let mut lock = Lock::new();
        lock.images.insert("python-base".into(), multi.clone());
        let text = String::from_utf8(lock.to_bytes()).unwrap();
        assert!(text.contains("\"linux/arm64\": {"), "{text}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("images.lock");
        lock.write(&path).unwrap();
        assert_eq!(Lock::read(&path).unwrap().unwrap(), lock);
        assert!(multi.runs_as(&index));
        assert!(multi.runs_as(&Digest::of(b"arm")));
        assert!(!multi.runs_as(&Digest::of(b"other")));

        // A single-platform lock writes no `platforms` at all.
        let single = image(Digest::of(b"m"), "k", Digest::of(b"layer"));
        let mut old = Lock::new();
        old.images.insert("x".into(), single);
        assert!(
            !String::from_utf8(old.to_bytes())
                .unwrap()
                .contains("platforms")
        );

        let mut rebuilt = multi.clone();
        rebuilt.digest = Digest::of(b"index 2");
        let arm: Platform = "linux/arm64".parse().unwrap();
        rebuilt.platforms.get_mut(&arm).unwrap().digest = Digest::of(b"arm 2");
        let why = lock.diff_image("python-base", &rebuilt);
        assert_eq!(
            why,
            [ImageDifference::Platform {
                platform: arm,
                locked: Some(Digest::of(b"arm")),
                rebuilt: Some(Digest::of(b"arm 2")),
            }]
        );
        assert!(
            why[0]
                .to_string()
                .starts_with("platform linux/arm64 differs")
        );
    }
}
