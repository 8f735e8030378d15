//! Fixtures that start the real components tests run against: a CNCF
//! Distribution registry, the Docker engine, locally made base images and
//! stand-ins for the official postgres and rabbitmq images.
//!
//! Everything here panics with a clear message (and an install hint when a
//! tool is missing) instead of returning errors: these are test fixtures, and
//! a missing component must fail the test, never skip it silently.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod background;
pub mod base_images;
pub mod cli;
pub mod cyclonedx;
pub mod dev_example;
pub mod docker;
pub mod engine_images;
pub mod fault_proxy;
mod referrers_fake;
pub mod registry;
pub mod silent_server;
pub mod standins;
pub mod synthetic;
pub mod token_issuer;

pub use base_images::{
    BaseImage, busybox, busybox_arm64, debian_minbase, push_multi_platform, push_multi_platform_to,
};
pub use cli::{Workspace, describe, succeeded};
pub use dev_example::{EXAMPLE_IMAGES, dev_example, kubeconfig_for};
pub use docker::{
    docker_cli, engine, git, output_ok, remove_from_engine_when_done,
    remove_repository_from_engine_when_done, require_tool, run_ok,
};
pub use engine_images::EngineImages;
pub use fault_proxy::{Fault, FaultPolicy, FaultProxy};
pub use registry::{RequestRecord, TestRegistry};
pub use silent_server::SilentServer;
pub use standins::Standin;
pub use token_issuer::{IssuedToken, TokenIssuer};

use std::path::{Path, PathBuf};

/// The cargo target directory of the running tests.
///
/// `CARGO_TARGET_DIR` when set (relative paths are taken from the workspace
/// root), else `CARGO_TARGET_TMPDIR`'s parent when set, else the nearest
/// ancestor of the running executable holding cargo's `CACHEDIR.TAG`, else
/// `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        return workspace.join(dir);
    }
    if let Some(parent) = std::env::var_os("CARGO_TARGET_TMPDIR")
        .filter(|d| !d.is_empty())
        .and_then(|d| PathBuf::from(d).parent().map(Path::to_path_buf))
    {
        return parent;
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.ancestors().find(|a| a.join("CACHEDIR.TAG").is_file())
    {
        return dir.to_path_buf();
    }
    workspace.join("target")
}

/// The directory shared by all test processes of a run (and later runs) for
/// cached fixtures: `BROKER_TEST_FIXTURES_DIR` when set, else
/// `<target>/broker-test-fixtures`.
pub fn fixtures_dir() -> PathBuf {
    std::env::var_os("BROKER_TEST_FIXTURES_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("broker-test-fixtures"))
}

/// A suffix unique to this process and call, for image names, tags and
/// repositories that parallel tests must not share (lowercase, `[a-z0-9-]`).
pub fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{}-{}-{:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos
    )
}

/// A multi-threaded tokio runtime for tests that drive async library code
/// from a plain `#[test]`.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The repository's root directory (where `images/`, `examples/` and
/// `registry/` live).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root exists")
}

/// Copies the directory tree `from` into `to` (files and directories only),
/// e.g. an example tree into a test's temporary directory.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Runs `cmd` to completion with `stdin` as its standard input (e.g. a
/// password for `--password-stdin`), capturing stdout and stderr.
pub fn output_with_stdin(cmd: &mut std::process::Command, stdin: &str) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}
