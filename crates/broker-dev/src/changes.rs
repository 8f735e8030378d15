//! Which saved files matter, and to what: the paths the watcher reports,
//! sorted into the image layers, deps stages and render inputs they feed.
//! Pure: built from the specs, the resolved trees and the catalogue, tested
//! without a file system.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use broker_build::sources::{BROKER_TREE, SourceTree};
use broker_build::spec::ImageSpec;
use broker_oci::exclude::{PatternError, PatternList};
use globset::{Glob, GlobSet, GlobSetBuilder};

/// Names that never start a rebuild, besides each layer's own excludes
/// and the layers' default excludes (VCS folders, `__pycache__`, editor
/// swap and backup files): vim's `4913` write probe, and `node_modules`,
/// which a deps stage installs and a developer's tree may hold too.
pub const NEVER_TRIGGER: &[&str] = &["**/4913", "**/node_modules"];

/// One layer's tree as the watcher sees it.
#[derive(Clone, Debug)]
pub struct WatchedLayer {
    /// The image it is baked into.
    pub image: String,
    /// The layer's name in the spec.
    pub layer: String,
    /// The directory the layer is read from.
    pub root: PathBuf,
    /// The layer's excludes with the defaults, and [`NEVER_TRIGGER`].
    ignored: PatternList,
}

/// A problem with what is to be watched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WatchPlanError {
    /// A layer's exclude pattern does not compile (the build says the same).
    #[error("{image}: layer `{layer}`")]
    Pattern {
        /// The image.
        image: String,
        /// The layer.
        layer: String,
        /// Why.
        #[source]
        source: PatternError,
    },
    /// A generator's file pattern does not compile.
    #[error("catalogue: ConfigMap file pattern `{pattern}` is not a valid glob (fix it)")]
    Generator {
        /// The pattern.
        pattern: String,
        /// Why.
        #[source]
        source: globset::Error,
    },
}

/// What a dev session watches and how a changed path maps onto images and
/// render inputs.
#[derive(Clone, Debug)]
pub struct WatchPlan {
    layers: Vec<WatchedLayer>,
    /// Files whose change rebuilds an image's deps stage: its folder
    /// (Dockerfile, image.yaml) and the broker files its Dockerfile copies.
    deps_dirs: BTreeMap<PathBuf, BTreeSet<String>>,
    deps_files: BTreeMap<PathBuf, BTreeSet<String>>,
    /// The broker tree, against which generator patterns are matched.
    broker_root: PathBuf,
    generators: GlobSet,
    /// Directories holding generator files, for the watcher, and whether
    /// below them too (a pattern with a wildcard).
    generator_dirs: BTreeSet<(PathBuf, bool)>,
    /// Render inputs read whole (the environment file, the env file).
    render_files: BTreeSet<PathBuf>,
}

/// What one batch of saved files changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangeSet {
    /// Images whose source layers changed, with the layer names.
    pub layers: BTreeMap<String, BTreeSet<String>>,
    /// Images whose deps stage inputs changed.
    pub deps: BTreeSet<String>,
    /// Whether a render input besides the images changed (a generated
    /// ConfigMap's file, the environment file).
    pub config: bool,
    /// The files that matter, as reported.
    pub files: BTreeSet<PathBuf>,
}

impl ChangeSet {
    /// Whether nothing in it matters.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty() && self.deps.is_empty() && !self.config
    }

    /// The images to rebuild.
    pub fn images(&self) -> BTreeSet<String> {
        self.layers.keys().chain(&self.deps).cloned().collect()
    }

    /// Adds `other` (a later batch, or a change a failed round left).
    pub fn merge(&mut self, other: ChangeSet) {
        for (image, layers) in other.layers {
            self.layers.entry(image).or_default().extend(layers);
        }
        self.deps.extend(other.deps);
        self.config |= other.config;
        self.files.extend(other.files);
    }
}

/// A directory to watch and whether below it too.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct WatchRoot {
    /// The directory.
    pub path: PathBuf,
    /// Watch every directory below it.
    pub recursive: bool,
}

impl WatchPlan {
    /// The plan for `specs`, whose trees are resolved in `trees`;
    /// `generator_files` are the catalogue's ConfigMap file patterns
    /// (relative to the broker tree, `DIR/*` style) and `render_files` the
    /// other files a render reads (the environment file, the env file).
    pub fn new(
        specs: &[ImageSpec],
        trees: &BTreeMap<String, SourceTree>,
        generator_files: &[String],
        render_files: &[PathBuf],
    ) -> Result<Self, WatchPlanError> {
        let broker_root = trees
            .get(BROKER_TREE)
            .map(|t| t.root.clone())
            .unwrap_or_default();
        let mut layers = Vec::new();
        let mut deps_dirs: BTreeMap<PathBuf, BTreeSet<String>> = BTreeMap::new();
        let mut deps_files: BTreeMap<PathBuf, BTreeSet<String>> = BTreeMap::new();
        for spec in specs {
            deps_dirs
                .entry(spec.dir.clone())
                .or_default()
                .insert(spec.name.clone());
            for file in &spec.deps.files {
                deps_files
                    .entry(broker_root.join(file))
                    .or_default()
                    .insert(spec.name.clone());
            }
            for layer in &spec.layers {
                let Some(tree) = trees.get(&layer.tree) else {
                    continue;
                };
                let mut patterns = layer.exclude.clone();
                patterns.extend(NEVER_TRIGGER.iter().map(|p| (*p).to_owned()));
                let ignored = PatternList::with_defaults(&patterns).map_err(|source| {
                    WatchPlanError::Pattern {
                        image: spec.name.clone(),
                        layer: layer.name.clone(),
                        source,
                    }
                })?;
                layers.push(WatchedLayer {
                    image: spec.name.clone(),
                    layer: layer.name.clone(),
                    root: clean_join(&tree.root, &layer.from),
                    ignored,
                });
            }
        }
        let mut generators = GlobSetBuilder::new();
        let mut generator_dirs = BTreeSet::new();
        for pattern in generator_files {
            let glob = Glob::new(pattern).map_err(|source| WatchPlanError::Generator {
                pattern: pattern.clone(),
                source,
            })?;
            generators.add(glob);
            let (dir, recursive) = literal_dir(pattern);
            generator_dirs.insert((broker_root.join(dir), recursive));
        }
        let generators = generators
            .build()
            .map_err(|source| WatchPlanError::Generator {
                pattern: generator_files.join(" "),
                source,
            })?;
        Ok(Self {
            layers,
            deps_dirs,
            deps_files,
            broker_root,
            generators,
            generator_dirs,
            render_files: render_files.iter().cloned().collect(),
        })
    }

    /// The layers watched.
    pub fn layers(&self) -> &[WatchedLayer] {
        &self.layers
    }

    /// The directories to watch: every layer's tree (recursively), the
    /// folders of the deps inputs, generator files and render files.
    pub fn roots(&self) -> Vec<WatchRoot> {
        let mut roots: BTreeSet<WatchRoot> = BTreeSet::new();
        for layer in &self.layers {
            roots.insert(WatchRoot {
                path: layer.root.clone(),
                recursive: true,
            });
        }
        for (dir, recursive) in &self.generator_dirs {
            roots.insert(WatchRoot {
                path: dir.clone(),
                recursive: *recursive,
            });
        }
        let files = self
            .deps_files
            .keys()
            .chain(&self.render_files)
            .filter_map(|f| f.parent().map(Path::to_path_buf));
        for dir in self.deps_dirs.keys().cloned().chain(files) {
            roots.insert(WatchRoot {
                path: dir,
                recursive: false,
            });
        }
        // A directory already watched recursively from above needs no
        // watch of its own.
        let recursive: Vec<PathBuf> = roots
            .iter()
            .filter(|r| r.recursive)
            .map(|r| r.path.clone())
            .collect();
        roots
            .into_iter()
            .filter(|r| {
                !recursive
                    .iter()
                    .any(|above| r.path != *above && r.path.starts_with(above))
            })
            .collect()
    }

    /// Sorts the reported paths into what they change; paths that change
    /// nothing (excluded, editor files, other files in a watched folder)
    /// are left out.
    pub fn classify<'a>(&self, paths: impl IntoIterator<Item = &'a Path>) -> ChangeSet {
        let mut changes = ChangeSet::default();
        for path in paths {
            let mut matters = false;
            for layer in &self.layers {
                let Ok(rel) = path.strip_prefix(&layer.root) else {
                    continue;
                };
                let Some(rel) = rel.to_str() else {
                    // The build names such a file in its error.
                    changes
                        .layers
                        .entry(layer.image.clone())
                        .or_default()
                        .insert(layer.layer.clone());
                    matters = true;
                    continue;
                };
                if rel.is_empty() || layer.ignored.matches(rel) {
                    continue;
                }
                changes
                    .layers
                    .entry(layer.image.clone())
                    .or_default()
                    .insert(layer.layer.clone());
                matters = true;
            }
            if let Some(images) = self.deps_files.get(path) {
                changes.deps.extend(images.iter().cloned());
                matters = true;
            }
            if let Some(parent) = path.parent()
                && let Some(images) = self.deps_dirs.get(parent)
                && !is_editor_file(path)
            {
                changes.deps.extend(images.iter().cloned());
                matters = true;
            }
            if self.render_files.contains(path)
                || (!is_editor_file(path)
                    && path
                        .strip_prefix(&self.broker_root)
                        .is_ok_and(|rel| self.generators.is_match(rel)))
            {
                changes.config = true;
                matters = true;
            }
            if matters {
                changes.files.insert(path.to_path_buf());
            }
        }
        changes
    }
}

/// Whether a file name is an editor's temporary or backup file.
fn is_editor_file(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    name == "4913"
        || name.ends_with('~')
        || name.ends_with(".swp")
        || name.ends_with(".swo")
        || name.starts_with(".#")
        || (name.starts_with('#') && name.ends_with('#'))
}

/// `root/from` without a trailing `.` component (`from: .` is the whole
/// tree), so that prefixes compare.
fn clean_join(root: &Path, from: &str) -> PathBuf {
    let mut path = root.to_path_buf();
    for part in Path::new(from).components() {
        match part {
            std::path::Component::CurDir => {}
            other => path.push(other),
        }
    }
    path
}

/// The directory part of a pattern before its first wildcard, and whether
/// the pattern has one (`db/init.d/*` → `db/init.d`, true;
/// `config/rabbitmq/enabled_plugins` → `config/rabbitmq`, false).
fn literal_dir(pattern: &str) -> (PathBuf, bool) {
    let literal: Vec<&str> = pattern
        .split('/')
        .take_while(|part| !part.contains(['*', '?', '[', '{']))
        .collect();
    let mut dir = PathBuf::from(literal.join("/"));
    let wildcard = literal.len() < pattern.split('/').count();
    if !wildcard {
        // The pattern names one file.
        dir.pop();
    }
    (dir, wildcard)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn spec(name: &str, json: &str) -> ImageSpec {
        let mut spec: ImageSpec = from_json(json);
        spec.name = name.to_owned();
        spec.dir = PathBuf::from(format!("/w/images/{name}"));
        spec
    }

    /// Specs are read by broker-build; here they are built from JSON to keep
    /// this crate free of a YAML parser.
    fn from_json(json: &str) -> ImageSpec {
        serde_json::from_str(json).unwrap()
    }

    fn plan() -> WatchPlan {
        let python = spec(
            "python-base",
            r#"{"deps": {"base": "python:3.10", "files": ["images/restapi/requirements.txt"]},
                "layers": [{"name": "python-sources", "from": "src/python", "to": "/home/broker/python"}]}"#,
        );
        let www = spec(
            "mgmt-app",
            r#"{"deps": {"base": "python:3.8"},
                "layers": [{"name": "www", "from": "src/www", "to": "/app",
                            "exclude": ["app/chromedriver.exe", "tests"]}]}"#,
        );
        let decoder = spec(
            "ttn_decoder",
            r#"{"deps": {"base": "node:16"},
                "layers": [{"name": "decoder", "from": "src/js/ttn_decoder/src", "to": "/usr/src/ttn_decoder/src"},
                           {"name": "formatters", "tree": "ttn-formatters", "from": ".", "to": "/usr/src/ttn_formatters"}]}"#,
        );
        let tree = |name: &str, root: &str| SourceTree {
            name: name.to_owned(),
            root: PathBuf::from(root),
            revision: None,
            commit_time: None,
            origin: None,
        };
        let trees = BTreeMap::from([
            ("broker".to_owned(), tree("broker", "/w/broker")),
            (
                "ttn-formatters".to_owned(),
                tree("ttn-formatters", "/w/fmt"),
            ),
        ]);
        WatchPlan::new(
            &[python, www, decoder],
            &trees,
            &[
                "db/init.d/*".to_owned(),
                "config/rabbitmq/enabled_plugins".to_owned(),
            ],
            &[PathBuf::from("/w/environments/dev.yaml")],
        )
        .unwrap()
    }

    fn classify(paths: &[&str]) -> ChangeSet {
        plan().classify(paths.iter().map(Path::new))
    }

    #[test]
    fn a_python_file_changes_only_the_python_image() {
        let changes = classify(&["/w/broker/src/python/restapi/RestAPI.py"]);
        assert_eq!(
            changes.layers,
            BTreeMap::from([(
                "python-base".to_owned(),
                BTreeSet::from(["python-sources".to_owned()])
            )])
        );
        assert!(changes.deps.is_empty() && !changes.config);
        let changes = classify(&["/w/fmt/uplink/ex.js"]);
        assert_eq!(changes.images(), BTreeSet::from(["ttn_decoder".to_owned()]));
        let changes = classify(&["/w/broker/src/www/app/main.py"]);
        assert_eq!(changes.images(), BTreeSet::from(["mgmt-app".to_owned()]));
    }

    #[test]
    fn excluded_vcs_cache_and_editor_files_change_nothing() {
        for path in [
            "/w/broker/src/www/app/chromedriver.exe",
            "/w/broker/src/www/tests/test_x.py",
            "/w/broker/src/python/.git/index",
            "/w/broker/src/python/util/__pycache__/x.cpython-310.pyc",
            "/w/broker/src/python/restapi/4913",
            "/w/broker/src/python/restapi/RestAPI.py~",
            "/w/broker/src/python/restapi/.RestAPI.py.swp",
            "/w/broker/src/js/ttn_decoder/src/node_modules/x/index.js",
            "/w/broker/README.md",
            "/w/images/python-base/Dockerfile~",
            "/w/broker/db/init.d/4913",
        ] {
            assert!(classify(&[path]).is_empty(), "{path}");
        }
    }

    #[test]
    fn deps_inputs_and_config_files_are_told_apart() {
        let changes = classify(&["/w/broker/images/restapi/requirements.txt"]);
        assert_eq!(changes.deps, BTreeSet::from(["python-base".to_owned()]));
        let changes = classify(&["/w/images/mgmt-app/Dockerfile"]);
        assert_eq!(changes.deps, BTreeSet::from(["mgmt-app".to_owned()]));
        let changes = classify(&["/w/broker/db/init.d/01-schema.sql"]);
        assert!(changes.config && changes.images().is_empty());
        let changes = classify(&["/w/broker/config/rabbitmq/enabled_plugins"]);
        assert!(changes.config);
        assert!(classify(&["/w/broker/config/rabbitmq/other"]).is_empty());
        assert!(classify(&["/w/environments/dev.yaml"]).config);
    }

    #[test]
    fn roots_cover_every_tree_once() {
        let roots = plan().roots();
        let shown: Vec<(String, bool)> = roots
            .iter()
            .map(|r| (r.path.display().to_string(), r.recursive))
            .collect();
        assert!(shown.contains(&("/w/broker/src/python".to_owned(), true)));
        assert!(shown.contains(&("/w/fmt".to_owned(), true)));
        assert!(shown.contains(&("/w/broker/db/init.d".to_owned(), true)));
        assert!(shown.contains(&("/w/broker/config/rabbitmq".to_owned(), false)));
        assert!(shown.contains(&("/w/broker/images/restapi".to_owned(), false)));
        assert!(shown.contains(&("/w/images/python-base".to_owned(), false)));
        assert!(shown.contains(&("/w/environments".to_owned(), false)));
    }
}
