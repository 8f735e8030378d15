//! The `manifests/` catalogue: plain Kubernetes objects in any `*.yaml`
//! file below the directory, plus `catalogue.yaml`, which declares what
//! plain YAML cannot say — the third-party images workloads name and the
//! ConfigMaps and Secrets generated from the broker tree, the environment
//! and the credentials.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::error::RenderError;
use crate::yaml;

/// The file in the catalogue that is not a Kubernetes object.
pub const CATALOGUE_FILE: &str = "catalogue.yaml";

/// `catalogue.yaml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CatalogueFile {
    /// Third-party images by the symbolic name workloads use
    /// (`postgres` → `postgres:14.2`). Broker images need no entry: their
    /// names are the lock's.
    #[serde(default)]
    pub images: BTreeMap<String, String>,
    /// Generated ConfigMaps.
    #[serde(default)]
    pub config_maps: Vec<ConfigMapGenerator>,
    /// Generated Secrets.
    #[serde(default)]
    pub secrets: Vec<SecretGenerator>,
}

/// A ConfigMap made from files of the broker tree and/or the environment.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigMapGenerator {
    /// The name workloads refer to; render adds the content-hash suffix.
    pub name: String,
    /// Files of the broker tree, relative to it; `DIR/*` takes every file
    /// of `DIR`. Each becomes one key named after the file.
    #[serde(default)]
    pub files: Vec<String>,
    /// Also take the environment file's `env` values.
    #[serde(default)]
    pub environment: bool,
}

/// A Secret made from the credentials (`--env-file`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretGenerator {
    /// The name workloads refer to; render adds the content-hash suffix.
    pub name: String,
    /// The credential keys it holds.
    pub keys: Vec<String>,
}

/// One Kubernetes object of the catalogue and the file it came from.
#[derive(Debug, Clone)]
pub struct SourceObject {
    /// The file, for error messages.
    pub path: PathBuf,
    /// The object.
    pub value: Value,
}

impl SourceObject {
    /// `kind`.
    pub fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or_default()
    }

    /// `metadata.name`.
    pub fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or_default()
    }
}

/// The whole catalogue.
#[derive(Debug)]
pub struct Catalogue {
    /// The `catalogue.yaml` path.
    pub path: PathBuf,
    /// Its content.
    pub file: CatalogueFile,
    /// Every object, files in path order, documents in file order.
    pub objects: Vec<SourceObject>,
}

impl Catalogue {
    /// Reads `dir`.
    pub fn read(dir: &Path) -> Result<Self, RenderError> {
        let path = dir.join(CATALOGUE_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| RenderError::io("read", &path, e))?;
        let file: CatalogueFile = yaml::parse(&path, &text)?;
        let mut files = Vec::new();
        collect_yaml(dir, &mut files)?;
        files.retain(|f| f != &path);
        files.sort();
        let mut objects = Vec::new();
        for file in files {
            let text =
                std::fs::read_to_string(&file).map_err(|e| RenderError::io("read", &file, e))?;
            for (index, value) in yaml::parse_documents(&file, &text)?.into_iter().enumerate() {
                let object = SourceObject {
                    path: file.clone(),
                    value,
                };
                if object.value["apiVersion"].as_str().is_none()
                    || object.kind().is_empty()
                    || object.name().is_empty()
                {
                    return Err(RenderError::invalid(
                        &file,
                        format!(
                            "document {} is not a Kubernetes object (it needs apiVersion, kind and metadata.name)",
                            index + 1
                        ),
                    ));
                }
                objects.push(object);
            }
        }
        let mut seen = BTreeSet::new();
        for object in &objects {
            if !seen.insert((object.kind().to_owned(), object.name().to_owned())) {
                return Err(RenderError::invalid(
                    &object.path,
                    format!(
                        "{} `{}` is defined twice in the catalogue",
                        object.kind(),
                        object.name()
                    ),
                ));
            }
        }
        let mut generated = BTreeSet::new();
        for name in file
            .config_maps
            .iter()
            .map(|g| ("ConfigMap", &g.name))
            .chain(file.secrets.iter().map(|g| ("Secret", &g.name)))
        {
            if !generated.insert(name) || seen.contains(&(name.0.to_owned(), name.1.clone())) {
                return Err(RenderError::invalid(
                    &path,
                    format!("{} `{}` is declared twice", name.0, name.1),
                ));
            }
        }
        Ok(Self {
            path,
            file,
            objects,
        })
    }

    /// Every credential key the Secret generators hold.
    pub fn credential_keys(&self) -> BTreeSet<String> {
        self.file
            .secrets
            .iter()
            .flat_map(|s| s.keys.iter().cloned())
            .collect()
    }
}

fn collect_yaml(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), RenderError> {
    let entries = std::fs::read_dir(dir).map_err(|e| RenderError::io("read", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| RenderError::io("read", dir, e))?;
        let path = entry.path();
        let kind = entry
            .file_type()
            .map_err(|e| RenderError::io("read", &path, e))?;
        if kind.is_dir() {
            collect_yaml(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
    Ok(())
}

/// The entries of a ConfigMap generated from files: key → content, text
/// and binary (base64) apart, as kustomize splits them.
#[derive(Debug, Default)]
pub struct FileEntries {
    /// UTF-8 files.
    pub data: BTreeMap<String, String>,
    /// Other files, base64.
    pub binary_data: BTreeMap<String, String>,
}

/// Reads the files `generator` names from the broker tree at `source`.
pub fn read_generator_files(
    catalogue: &Path,
    generator: &ConfigMapGenerator,
    source: &Path,
) -> Result<FileEntries, RenderError> {
    let mut entries = FileEntries::default();
    for pattern in &generator.files {
        let files = match pattern.strip_suffix("/*") {
            Some(dir) => {
                let dir_path = source.join(dir);
                let listing = std::fs::read_dir(&dir_path).map_err(|e| {
                    RenderError::invalid(
                        catalogue,
                        format!(
                            "ConfigMap `{}` takes `{pattern}`, but {} cannot be read ({e}); is --source the broker tree?",
                            generator.name,
                            dir_path.display()
                        ),
                    )
                })?;
                let mut files = Vec::new();
                for entry in listing.flatten() {
                    if entry.file_type().is_ok_and(|t| t.is_file()) {
                        files.push(entry.path());
                    }
                }
                if files.is_empty() {
                    return Err(RenderError::invalid(
                        catalogue,
                        format!(
                            "ConfigMap `{}` takes `{pattern}`, but {} holds no files",
                            generator.name,
                            dir_path.display()
                        ),
                    ));
                }
                files.sort();
                files
            }
            None => vec![source.join(pattern)],
        };
        for file in files {
            let bytes = std::fs::read(&file).map_err(|e| {
                RenderError::invalid(
                    catalogue,
                    format!(
                        "ConfigMap `{}` takes `{pattern}`, but {} cannot be read ({e}); is --source the broker tree?",
                        generator.name,
                        file.display()
                    ),
                )
            })?;
            let key = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let duplicate =
                entries.data.contains_key(&key) || entries.binary_data.contains_key(&key);
            if duplicate {
                return Err(RenderError::invalid(
                    catalogue,
                    format!(
                        "ConfigMap `{}` has two files called `{key}`",
                        generator.name
                    ),
                ));
            }
            match String::from_utf8(bytes) {
                Ok(text) => entries.data.insert(key, text),
                Err(e) => entries
                    .binary_data
                    .insert(key, crate::hash::base64(e.as_bytes())),
            };
        }
    }
    Ok(entries)
}
