//! Why a render failed. Every message is one line naming the file (and the
//! line, where the input is YAML) and what to do; credential values never
//! appear in one.

use std::path::PathBuf;

/// A render that could not be completed. Nothing was written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RenderError {
    /// A file or directory could not be read or written.
    #[error("cannot {what} {}", path.display())]
    Io {
        /// The operation (`read`, `write`, …).
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A YAML file is malformed or has an unknown or mistyped key.
    #[error("{}:{line}:{column}: {why}", path.display())]
    Yaml {
        /// The file.
        path: PathBuf,
        /// 1-based line (0 when unknown).
        line: u64,
        /// 1-based column (0 when unknown).
        column: u64,
        /// What is wrong.
        why: String,
    },
    /// The lock file is missing or unreadable.
    #[error("{}: no lock file; run `broker-images build --push` first", path.display())]
    NoLock {
        /// The lock file.
        path: PathBuf,
    },
    /// The lock file could not be parsed.
    #[error(transparent)]
    Lock(#[from] broker_pins::LockError),
    /// A lock entry cannot be used as a pinned reference.
    #[error("{}: image `{image}` is not pinned; build it with --push", path.display())]
    LockEntry {
        /// The lock file.
        path: PathBuf,
        /// The image name in the lock.
        image: String,
        /// Why its reference is not a pinned one.
        #[source]
        source: broker_pins::ReferenceError,
    },
    /// A workload names an image neither the lock nor the catalogue knows.
    #[error(
        "{}: workload `{workload}` uses image `{image}`, which is neither a broker image in the lock ({known}) nor a third-party image in catalogue.yaml's `images`",
        path.display()
    )]
    UnknownImage {
        /// The manifest file.
        path: PathBuf,
        /// The workload.
        workload: String,
        /// The image as written.
        image: String,
        /// The broker images the lock holds, comma-separated.
        known: String,
    },
    /// `--require-pinned` and third-party images have no mirror in the
    /// lock: every one named, with the command that mirrors them all.
    #[error(
        "--require-pinned: {images} {verb} no mirror in {}; run `{command}` or drop --require-pinned",
        lock.display()
    )]
    Unpinned {
        /// The lock file.
        lock: PathBuf,
        /// Each unmirrored reference with the workloads (and files) using it.
        images: String,
        /// `has` or `have`.
        verb: &'static str,
        /// The whole `broker-images mirror …` command.
        command: String,
    },
    /// Something in a file is well-formed YAML but wrong for render.
    #[error("{}: {why}", path.display())]
    Invalid {
        /// The file, with `:line` where known.
        path: PathBuf,
        /// What is wrong and what to do.
        why: String,
    },
}

impl RenderError {
    /// An [`RenderError::Invalid`] for `path`.
    pub(crate) fn invalid(path: impl Into<PathBuf>, why: impl Into<String>) -> Self {
        Self::Invalid {
            path: path.into(),
            why: why.into(),
        }
    }

    /// An [`RenderError::Invalid`] at `path:line`.
    pub(crate) fn at_line(path: &std::path::Path, line: u64, why: impl Into<String>) -> Self {
        Self::Invalid {
            path: PathBuf::from(format!("{}:{line}", path.display())),
            why: why.into(),
        }
    }

    /// An [`RenderError::Io`].
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            what,
            path: path.into(),
            source,
        }
    }
}
