//! The example workspace the dev loop is tried on, by its tests
//! (broker-dev's and the CLI's) and its benchmark alike.

use std::path::{Path, PathBuf};

use crate::{copy_dir, repo_root};

/// The images of the example.
pub const EXAMPLE_IMAGES: [&str; 3] = ["python-base", "mgmt-app", "ttn_decoder"];

/// Lays the example out in `dir` as the dev loop's tests and benchmark use
/// it: `broker/` and `fmt/`, copies of `examples/broker` and
/// `examples/ttn-formatters`; `images/<name>/` with the shipped
/// `image.yaml` and a deps stage that is `FROM` the base only (a dev loop
/// tries sources, not dependencies); `broker.env` from
/// `environments/env.sample`.
///
/// # Panics
/// When a file of the repository cannot be read or `dir` written.
pub fn dev_example(dir: &Path) {
    let root = repo_root();
    copy_dir(&root.join("examples/broker"), &dir.join("broker"));
    copy_dir(&root.join("examples/ttn-formatters"), &dir.join("fmt"));
    for image in EXAMPLE_IMAGES {
        let to = dir.join("images").join(image);
        std::fs::create_dir_all(&to).unwrap();
        std::fs::copy(
            root.join("images").join(image).join("image.yaml"),
            to.join("image.yaml"),
        )
        .unwrap();
        std::fs::write(to.join("Dockerfile"), "ARG BASE\nFROM ${BASE}\n").unwrap();
    }
    std::fs::copy(root.join("environments/env.sample"), dir.join("broker.env")).unwrap();
}

/// Writes `dir/kubeconfig`, whose current context (`scripted`) reaches an
/// API endpoint at `addr` over plain HTTP with a token, and returns its path.
///
/// # Panics
/// When the file cannot be written.
pub fn kubeconfig_for(dir: &Path, addr: &std::net::SocketAddr) -> PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://{addr}\ncontexts:\n- name: scripted\n  context:\n    cluster: c\n    user: u\ncurrent-context: scripted\nusers:\n- name: u\n  user:\n    token: t\n"
        ),
    )
    .unwrap();
    path
}
