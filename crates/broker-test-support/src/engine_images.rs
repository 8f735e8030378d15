//! What tests leave in the Docker engine, and taking it out again.
//!
//! There is one engine per machine, shared by every test of a run, later
//! runs and other people's runs. A test that tags, pulls or builds there
//! removes what it made before it ends, passing or panicking, through an
//! [`EngineImages`] guard:
//!
//! - references it names itself ([`EngineImages::add`]): a `docker tag`,
//!   a `docker pull`: removed when the guard drops;
//! - the deps images its builds left (`broker-images/NAME:deps-KEY`), found
//!   in the stores it names ([`EngineImages::watch_store`]): removed once no
//!   guard of this process is alive any more, because tests of one binary
//!   that build the same spec on the same base share that tag, and one
//!   test's clean-up must not pull it from under another still exporting
//!   it. A deps tag the engine held before this process's first guard is
//!   never removed: it is another run's, possibly still in use.
//!
//! A [`TestRegistry`](crate::TestRegistry) the engine talked to removes,
//! when it drops, every engine reference under its own `127.0.0.1:PORT`
//! (the bases a deps build pulled, images a test pushed or pulled): while it
//! runs that port is its alone.
//!
//! What stays, on purpose, bounded by name: the fixtures made once and
//! shared by every run, `broker-test/<name>:<recipe-key>` (busybox, its
//! arm64 twin, the Debian minbase, the postgres and rabbitmq stand-ins),
//! one tag per recipe ([`SHARED_REPOSITORIES`]).
//!
//! With `BROKER_TEST_ENGINE_JOURNAL` set to a file, every registry host and
//! every reference handed to a guard is appended to it, one `host …`,
//! `ref …` or `deps …` line each: `.ci/engine-leaks` uses that to tell this
//! run's leftovers from other runs' images on a shared engine.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

use crate::docker::{docker_host, find_tool};

/// The repositories of the fixtures every run shares and keeps (one tag per
/// recipe key): see [`crate::base_images`] and [`crate::standins`].
pub const SHARED_REPOSITORIES: &[&str] = &[
    "broker-test/busybox",
    "broker-test/busybox-arm64",
    "broker-test/debian-minbase",
    "broker-test/postgres-standin",
    "broker-test/rabbitmq-standin",
];

/// The variable naming the journal file (see the module documentation).
pub const JOURNAL_VAR: &str = "BROKER_TEST_ENGINE_JOURNAL";

/// The repository the deps stage tags its images under in the engine.
const DEPS_REPOSITORY_PREFIX: &str = "broker-images/";

/// The images one test made in the Docker engine; dropping the guard
/// removes them (see the module documentation for which, and when).
#[derive(Debug)]
pub struct EngineImages {
    refs: Mutex<Vec<String>>,
    stores: Mutex<Vec<PathBuf>>,
}

/// This process's guards: how many are alive, and the deps tags their
/// stores showed, removed when the last one drops.
struct Process {
    live: usize,
    pending: BTreeSet<String>,
}

static PROCESS: Mutex<Process> = Mutex::new(Process {
    live: 0,
    pending: BTreeSet::new(),
});

/// The deps tags the engine held when this process made its first guard.
static BEFORE: OnceLock<BTreeSet<String>> = OnceLock::new();

impl EngineImages {
    /// A guard with nothing to remove yet.
    pub fn new() -> Self {
        BEFORE.get_or_init(|| list_references(&[&format!("{DEPS_REPOSITORY_PREFIX}*")]));
        lock_process().live += 1;
        Self {
            refs: Mutex::new(Vec::new()),
            stores: Mutex::new(Vec::new()),
        }
    }

    /// `reference` (a tag or a `repo@sha256:…` the test makes: `docker tag`,
    /// `docker pull`, `docker build -t`) is removed when the guard drops.
    /// Only for names no other test uses at the same time.
    pub fn add(&self, reference: &str) {
        journal("ref", reference);
        self.refs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(reference.to_owned());
    }

    /// The deps images (`NAME:deps-KEY` tags) the OCI layout `store` holds
    /// when the guard drops are removed from the engine's
    /// `broker-images/NAME:deps-KEY` once this process has no live guard.
    pub fn watch_store(&self, store: &Path) {
        self.stores
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(store.to_owned());
    }
}

impl Default for EngineImages {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for EngineImages {
    fn drop(&mut self) {
        let refs = std::mem::take(&mut *self.refs.lock().unwrap_or_else(|e| e.into_inner()));
        remove_references(&refs);
        let before = BEFORE.get().cloned().unwrap_or_default();
        let mut deps = BTreeSet::new();
        for store in self.stores.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            deps.extend(
                deps_tags_in(store)
                    .into_iter()
                    .filter(|tag| !before.contains(tag)),
            );
        }
        for tag in &deps {
            journal("deps", tag);
        }
        // Held while removing: a guard made meanwhile waits, so its test
        // cannot start using a tag that is being removed.
        let mut process = lock_process();
        process.pending.extend(deps);
        process.live = process.live.saturating_sub(1);
        if process.live == 0 {
            let pending: Vec<String> = std::mem::take(&mut process.pending).into_iter().collect();
            remove_references(&pending);
        }
    }
}

fn lock_process() -> std::sync::MutexGuard<'static, Process> {
    PROCESS.lock().unwrap_or_else(|e| e.into_inner())
}

/// The engine tags (`broker-images/NAME:deps-KEY`) of the deps images the
/// store `store` knows: its `NAME:deps-KEY` tags, and the logs of the
/// engine's deps builds (`logs/NAME-deps-KEY.log`), which a build that
/// failed after its deps stage leaves without the tag.
fn deps_tags_in(store: &Path) -> BTreeSet<String> {
    let mut tags = BTreeSet::new();
    if let Ok(logs) = std::fs::read_dir(store.join("logs")) {
        for log in logs.flatten() {
            let file = log.file_name();
            let Some(stem) = file.to_str().and_then(|f| f.strip_suffix(".log")) else {
                continue;
            };
            if let Some((name, key)) = stem.rsplit_once("-deps-")
                && !name.is_empty()
                && key.len() == 32
                && key.bytes().all(|b| b.is_ascii_hexdigit())
            {
                tags.insert(format!("{DEPS_REPOSITORY_PREFIX}{name}:deps-{key}"));
            }
        }
    }
    let index = std::fs::read(store.join("index.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .unwrap_or_default();
    let stored = index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str())
        .filter(|name| {
            name.split_once(':')
                .is_some_and(|(_, tag)| tag.starts_with("deps-"))
        })
        .map(|name| format!("{DEPS_REPOSITORY_PREFIX}{name}"));
    tags.extend(stored);
    tags
}

/// Removes every engine reference under `host/` (`127.0.0.1:PORT`): tags
/// and the `repo@sha256:…` references pulls leave; now, or when the test
/// process ends (`at_exit`).
pub(crate) fn remove_references_under(host: &str, at_exit: bool) {
    // A `*` in a reference filter stops at `/`: one pattern per depth.
    let patterns: Vec<String> = (1..=5)
        .map(|depth| format!("{host}{}", "/*".repeat(depth)))
        .collect();
    let patterns: Vec<&str> = patterns.iter().map(String::as_str).collect();
    let refs: Vec<String> = list_references(&patterns).into_iter().collect();
    if at_exit {
        for reference in &refs {
            crate::docker::remove_from_engine_when_done(reference);
        }
    } else {
        remove_references(&refs);
    }
}

/// The references (`repo:tag`, and `repo@digest` for images without a
/// tag in that repository) matching any of the `docker image ls --filter
/// reference=…` patterns; empty when the engine cannot be asked.
fn list_references(patterns: &[&str]) -> BTreeSet<String> {
    let Some(docker) = find_tool("docker") else {
        return BTreeSet::new();
    };
    let mut cmd = Command::new(docker);
    cmd.env("DOCKER_HOST", docker_host()).args([
        "image",
        "ls",
        "--all",
        "--digests",
        "--no-trunc",
        "--format",
        "{{.Repository}} {{.Tag}} {{.Digest}}",
    ]);
    for pattern in patterns {
        cmd.arg("--filter").arg(format!("reference={pattern}"));
    }
    let Ok(out) = cmd.stderr(Stdio::null()).output() else {
        return BTreeSet::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let mut words = line.split(' ');
            let (repo, tag, digest) = (words.next()?, words.next()?, words.next()?);
            if repo == "<none>" {
                None
            } else if tag != "<none>" {
                Some(format!("{repo}:{tag}"))
            } else if digest != "<none>" {
                Some(format!("{repo}@{digest}"))
            } else {
                None
            }
        })
        .collect()
}

/// `docker rmi` of `refs` (each untags; an image goes with its last
/// reference, and with it the build's intermediate images). One that is
/// already gone is fine; any other failure is said on stderr, as a
/// clean-up never fails a test (`.ci/engine-leaks` catches what stays).
fn remove_references(refs: &[String]) {
    if refs.is_empty() {
        return;
    }
    let Some(docker) = find_tool("docker") else {
        return;
    };
    let out = Command::new(docker)
        .env("DOCKER_HOST", docker_host())
        .arg("rmi")
        .args(refs)
        .stdin(Stdio::null())
        .output();
    if let Ok(out) = out
        && !out.status.success()
    {
        for line in String::from_utf8_lossy(&out.stderr).lines() {
            if !line.contains("No such image") && !line.trim().is_empty() {
                eprintln!("broker-test-support: engine clean-up: {line}");
            }
        }
    }
}

/// Appends `KIND value` to the journal file, when there is one.
pub(crate) fn journal(kind: &str, value: &str) {
    let Some(path) = std::env::var_os(JOURNAL_VAR).filter(|p| !p.is_empty()) else {
        return;
    };
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        // One write per line: appends from parallel processes stay whole.
        let _ = file.write_all(format!("{kind} {value}\n").as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_deps_tags_of_a_store() {
        let dir = tempfile::tempdir().unwrap();
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [
                {"annotations": {"org.opencontainers.image.ref.name": "tiny:deps-0123"}},
                {"annotations": {"org.opencontainers.image.ref.name": "tiny"}},
                {"annotations": {"org.opencontainers.image.ref.name": "tiny:latest"}},
                {"annotations": {}},
                {"annotations": {"org.opencontainers.image.ref.name": "python-base:deps-4567"}},
            ],
        });
        std::fs::write(dir.path().join("index.json"), index.to_string()).unwrap();
        let logs = dir.path().join("logs");
        std::fs::create_dir(&logs).unwrap();
        for file in [
            "mgmt-app-deps-0123456789abcdef0123456789abcdef.log",
            "odd-deps-short.log",
            "notes.txt",
        ] {
            std::fs::write(logs.join(file), "").unwrap();
        }
        assert_eq!(
            deps_tags_in(dir.path()).into_iter().collect::<Vec<_>>(),
            [
                "broker-images/mgmt-app:deps-0123456789abcdef0123456789abcdef",
                "broker-images/python-base:deps-4567",
                "broker-images/tiny:deps-0123"
            ]
        );
        assert!(deps_tags_in(&dir.path().join("none")).is_empty());
    }
}
