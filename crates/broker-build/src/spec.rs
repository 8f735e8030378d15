//! Image specs: `images/<name>/image.yaml` beside the deps Dockerfile says
//! which broker files the deps stage needs, which source trees become
//! layers and where, and the runtime config. Adding an image means adding a
//! folder, never Rust code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use broker_pins::Platform;
use serde::Deserialize;

/// The file name of a spec inside its image folder.
pub const SPEC_FILE: &str = "image.yaml";

/// One image, as declared in `images/<name>/image.yaml`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    /// The image's name: the folder name, the store tag and the last
    /// repository component when pushed. Filled in from the folder.
    #[serde(skip)]
    pub name: String,
    /// The folder holding the spec and its Dockerfile.
    #[serde(skip)]
    pub dir: PathBuf,
    /// A line saying what the image is for.
    #[serde(default)]
    pub description: String,
    /// The platforms to build for (`linux/amd64`, `linux/arm64`); empty
    /// means this machine's. Two or more make the image an OCI image index
    /// over one manifest per platform; `--platform` overrides the list.
    #[serde(default)]
    pub platforms: Vec<Platform>,
    /// The dependency stage.
    pub deps: DepsSpec,
    /// Source trees baked in as layers, bottom first.
    #[serde(default)]
    pub layers: Vec<LayerSpec>,
    /// Runtime config; unset fields keep the deps image's values.
    #[serde(default)]
    pub config: RuntimeSpec,
}

/// The dependency stage: a Dockerfile built by the Docker engine.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepsSpec {
    /// The Dockerfile, relative to the image folder.
    #[serde(default = "default_dockerfile")]
    pub dockerfile: String,
    /// The production base image, passed as build arg `BASE`.
    pub base: String,
    /// Files of the broker tree the Dockerfile copies; the build context
    /// holds exactly these, at the same relative paths.
    #[serde(default)]
    pub files: Vec<String>,
    /// Build args besides `BASE`.
    #[serde(default)]
    pub args: BTreeMap<String, String>,
}

fn default_dockerfile() -> String {
    "Dockerfile".to_owned()
}

/// One source tree mapped into the image.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerSpec {
    /// Names the layer in history, the lock and `verify` output.
    pub name: String,
    /// Which source tree: `broker` (the `--source` tree) or `ttn-formatters`.
    #[serde(default = "default_tree")]
    pub tree: String,
    /// The directory inside that tree (`.` for all of it).
    pub from: String,
    /// The absolute path in the image.
    pub to: String,
    /// `uid:gid` owning the files.
    #[serde(default = "default_owner")]
    pub owner: String,
    /// Paths to leave out, `.dockerignore` syntax, relative to `from`.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Paths to keep even when they look like secrets.
    #[serde(default)]
    pub include: Vec<String>,
}

fn default_tree() -> String {
    "broker".to_owned()
}

fn default_owner() -> String {
    "0:0".to_owned()
}

/// Runtime config of the final image.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSpec {
    /// `USER`.
    #[serde(default)]
    pub user: Option<String>,
    /// `WORKDIR`.
    #[serde(default)]
    pub workdir: Option<String>,
    /// Environment variables added to (or replacing those of) the deps image.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// `ENTRYPOINT`.
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// `CMD`.
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    /// Ports the image listens on.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// Extra labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// An image spec that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// The images folder or a spec could not be read.
    #[error("cannot read {path}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A spec is not valid YAML or does not fit the schema.
    #[error("{path}:{line}:{column}: {why}")]
    Parse {
        /// The spec file.
        path: PathBuf,
        /// 1-based line.
        line: u64,
        /// 1-based column.
        column: u64,
        /// What is wrong.
        why: String,
    },
    /// A spec parses but says something impossible.
    #[error("{path}: {why}")]
    Invalid {
        /// The spec file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        why: String,
    },
    /// No image folder was found.
    #[error("no image specs in {dir}: each image needs {dir}/<name>/{SPEC_FILE}")]
    Empty {
        /// The images folder.
        dir: PathBuf,
    },
}

impl ImageSpec {
    /// Reads and checks one spec file; `name` and `dir` come from its folder.
    pub fn load(path: &Path) -> Result<Self, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut spec: ImageSpec = serde_saphyr::from_str(&text).map_err(|e| {
            let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
            // saphyr's Display adds a source snippet over several lines; the
            // first line carries the message.
            let message = e.to_string();
            let first = message.lines().next().unwrap_or_default();
            // The location is said once, as `path:line:column`: drop saphyr's
            // own `error: line L column C: ` prefix.
            let first = first.strip_prefix("error: ").unwrap_or(first);
            let why = first
                .split_once(": ")
                .filter(|(head, _)| head.contains("line"))
                .map_or(first, |(_, rest)| rest)
                .to_owned();
            SpecError::Parse {
                path: path.to_path_buf(),
                line,
                column,
                why,
            }
        })?;
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        spec.name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        spec.dir = dir;
        spec.check(path)?;
        Ok(spec)
    }

    fn check(&self, path: &Path) -> Result<(), SpecError> {
        let invalid = |why: String| {
            Err(SpecError::Invalid {
                path: path.to_path_buf(),
                why,
            })
        };
        let name_ok = !self.name.is_empty()
            && self.name.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.')
            });
        if !name_ok {
            return invalid(format!(
                "folder name `{}` is not a valid image name (lowercase letters, digits, '_', '-', '.')",
                self.name
            ));
        }
        if !self.dir.join(&self.deps.dockerfile).is_file() {
            return invalid(format!(
                "deps.dockerfile `{}` does not exist in {}",
                self.deps.dockerfile,
                self.dir.display()
            ));
        }
        for file in &self.deps.files {
            if !is_relative_inside(file) {
                return invalid(format!(
                    "deps.files entry `{file}` must be a relative path inside the broker tree"
                ));
            }
        }
        if self.deps.args.contains_key("BASE") {
            return invalid("deps.args must not set BASE; use deps.base".to_owned());
        }
        let mut platforms = std::collections::BTreeSet::new();
        for platform in &self.platforms {
            if !platforms.insert(platform) {
                return invalid(format!("platform {platform} is listed twice"));
            }
            if platform.elf_machine().is_none() {
                return invalid(format!(
                    "platform {platform}: the deps stage cannot check its binaries; use linux/amd64 or linux/arm64"
                ));
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for layer in &self.layers {
            if !names.insert(layer.name.as_str()) {
                return invalid(format!("two layers are named `{}`", layer.name));
            }
            if !layer.to.starts_with('/') {
                return invalid(format!(
                    "layer `{}`: `to` must be an absolute path in the image, got `{}`",
                    layer.name, layer.to
                ));
            }
            if !is_relative_inside(&layer.from) {
                return invalid(format!(
                    "layer `{}`: `from` must be a relative path inside its tree, got `{}`",
                    layer.name, layer.from
                ));
            }
            if parse_owner(&layer.owner).is_none() {
                return invalid(format!(
                    "layer `{}`: owner `{}` is not `uid:gid` in numbers",
                    layer.name, layer.owner
                ));
            }
        }
        Ok(())
    }
}

/// Parses `uid:gid`.
pub fn parse_owner(owner: &str) -> Option<(u32, u32)> {
    let (uid, gid) = owner.split_once(':')?;
    Some((uid.parse().ok()?, gid.parse().ok()?))
}

fn is_relative_inside(path: &str) -> bool {
    let p = Path::new(path);
    !path.is_empty()
        && p.is_relative()
        && !p
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
}

/// The names of the images in `images_dir` (its folders holding a spec),
/// sorted, without reading the specs: what a caller can ask about while
/// the build loads them. An unreadable folder has none.
#[must_use]
pub fn image_names(images_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(images_dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|entry| entry.path().join(SPEC_FILE).is_file())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// Loads every `images/<name>/image.yaml`, sorted by name.
pub fn load_all(images_dir: &Path) -> Result<Vec<ImageSpec>, SpecError> {
    let entries = std::fs::read_dir(images_dir).map_err(|source| SpecError::Io {
        path: images_dir.to_path_buf(),
        source,
    })?;
    let mut specs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| SpecError::Io {
            path: images_dir.to_path_buf(),
            source,
        })?;
        let spec_path = entry.path().join(SPEC_FILE);
        if spec_path.is_file() {
            specs.push(ImageSpec::load(&spec_path)?);
        }
    }
    if specs.is_empty() {
        return Err(SpecError::Empty {
            dir: images_dir.to_path_buf(),
        });
    }
    specs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(specs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_spec(dir: &Path, name: &str, yaml: &str) -> PathBuf {
        let folder = dir.join(name);
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("Dockerfile"), "ARG BASE\nFROM ${BASE}\n").unwrap();
        let path = folder.join(SPEC_FILE);
        std::fs::write(&path, yaml).unwrap();
        path
    }

    #[test]
    fn the_shipped_specs_load() {
        let images = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../images");
        let specs = load_all(&images).unwrap();
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["mgmt-app", "python-base", "ttn_decoder"]);
    }

    #[test]
    fn errors_name_file_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_spec(
            dir.path(),
            "app",
            "deps:\n  base: x\nlayers:\n  - name: a\n    from: src\n    to: /a\n    colour: blue\n",
        );
        let err = ImageSpec::load(&path).unwrap_err().to_string();
        assert!(err.contains("image.yaml:7:5"), "{err}");
        assert!(err.contains("unknown field `colour`"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");

        let path = write_spec(dir.path(), "arch", "platforms: [arm64]\ndeps:\n  base: x\n");
        let err = ImageSpec::load(&path).unwrap_err().to_string();
        assert!(err.contains("arch/image.yaml:1:"), "{err}");
        assert!(err.contains("os/architecture"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");

        let path = write_spec(dir.path(), "bad", "deps: [unclosed\n");
        let err = ImageSpec::load(&path).unwrap_err().to_string();
        assert!(err.contains("bad/image.yaml:1:"), "{err}");
    }

    #[test]
    fn impossible_specs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for (yaml, expected) in [
            (
                "deps:\n  base: x\nlayers:\n  - {name: a, from: src, to: relative}\n",
                "must be an absolute path",
            ),
            (
                "deps:\n  base: x\nlayers:\n  - {name: a, from: ../up, to: /a}\n",
                "relative path inside",
            ),
            (
                "deps:\n  base: x\nlayers:\n  - {name: a, from: s, to: /a, owner: broker}\n",
                "uid:gid",
            ),
            ("deps:\n  base: x\n  args: {BASE: y}\n", "must not set BASE"),
            ("deps:\n  base: x\n  dockerfile: Nope\n", "does not exist"),
            (
                "platforms: [linux/arm64, linux/arm64/v8]\ndeps:\n  base: x\n",
                "platform linux/arm64 is listed twice",
            ),
        ] {
            let path = write_spec(dir.path(), "img", yaml);
            let err = ImageSpec::load(&path).unwrap_err().to_string();
            assert!(err.contains(expected), "{yaml}: {err}");
        }
    }
}
