//! A temporary workspace for tests that run the `broker-images` binary:
//! its own store, its own Docker client configuration (so no login leaks
//! between tests), a `bin/` directory first on the child's PATH (for
//! credential helpers a test provides) and an [`EngineImages`] guard that
//! takes the deps images its builds left out of the Docker engine.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use broker_oci::Store;

use crate::EngineImages;

/// A temporary directory holding `store/`, `docker/` and `bin/`, and the
/// binary under test.
pub struct Workspace {
    // First: it reads the store before the directory goes.
    engine: EngineImages,
    dir: tempfile::TempDir,
    bin: PathBuf,
}

impl Workspace {
    /// A fresh workspace for the binary `bin` (a test passes
    /// `env!("CARGO_BIN_EXE_broker-images")`).
    pub fn new(bin: impl Into<PathBuf>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["store", "docker", "bin"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        let engine = EngineImages::new();
        engine.watch_store(&dir.path().join("store"));
        Self {
            engine,
            dir,
            bin: bin.into(),
        }
    }

    /// The guard removing what this workspace's test made in the Docker
    /// engine (the store's deps images already; a test adds its own tags
    /// and pulls).
    pub fn engine(&self) -> &EngineImages {
        &self.engine
    }

    /// The workspace directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `rel` inside the workspace.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The workspace's image store.
    pub fn store(&self) -> Store {
        Store::open(&self.path("store")).unwrap()
    }

    /// `BIN --store <store> ARGS…`, run in the workspace with its
    /// `DOCKER_CONFIG` and PATH, no stdin, and none of the environment
    /// variables that would change what the command does
    /// (`BROKER_IMAGES_*`, `SOURCE_DATE_EPOCH`).
    pub fn command<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut cmd = Command::new(&self.bin);
        let path = format!(
            "{}:{}",
            self.path("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        // The store by its variable: only the commands that use one read it.
        cmd.current_dir(self.dir())
            .args(args)
            .env("BROKER_IMAGES_STORE", self.path("store"))
            .env("DOCKER_CONFIG", self.path("docker"))
            .env("PATH", path)
            .env_remove("BROKER_IMAGES_REGISTRY")
            .env_remove("BROKER_IMAGES_SOURCE_REVISION")
            .env_remove("BROKER_IMAGES_DEPS_CA_FILE")
            .env_remove("SOURCE_DATE_EPOCH")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `command(args)` to completion.
    pub fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs `command(args)` with `stdin` as its standard input (e.g. a
    /// password for `--password-stdin`).
    pub fn run_with_stdin<S: AsRef<OsStr>>(&self, args: &[S], stdin: &str) -> Output {
        crate::output_with_stdin(&mut self.command(args), stdin)
    }
}

/// A finished command's status, stdout and stderr, for assertion
/// messages.
pub fn describe(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The stderr (the progress) of a command that must have succeeded;
/// panics with [`describe`] when it did not.
pub fn succeeded(out: &Output) -> String {
    assert!(out.status.success(), "{}", describe(out));
    String::from_utf8_lossy(&out.stderr).into_owned()
}
