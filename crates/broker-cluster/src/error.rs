//! What can go wrong talking to the cluster, one variant per cause, each
//! message one line naming the object and what to do.

use std::path::PathBuf;

/// A cluster operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The manifests directory could not be read or parsed.
    #[error("cannot read manifests from {path}: {why}")]
    Manifests {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// An object in the manifests is not one of ours or not one we apply.
    #[error("{object}: {why}")]
    Object {
        /// `Kind/name`.
        object: String,
        /// What is wrong with it.
        why: String,
    },
    /// The kubeconfig could not be read or names no usable context.
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    /// The API server could not be reached at all.
    #[error("cannot reach the Kubernetes API server at {server}: {why}")]
    Unreachable {
        /// The server URL from the kubeconfig.
        server: String,
        /// The transport error.
        why: String,
    },
    /// Server-side apply found fields owned by another field manager.
    #[error(
        "{object}: field {field} is owned by field manager {manager}; rerun with --force-conflicts to take it over"
    )]
    Conflict {
        /// `Kind/name`.
        object: String,
        /// The other manager, as the server names it.
        manager: String,
        /// The conflicting field path(s).
        field: String,
    },
    /// The credentials in use may not do this.
    #[error("forbidden: cannot {verb} {resource} {scope}; ask for RBAC permission ({message})")]
    Forbidden {
        /// The API verb (`get`, `list`, `patch`, `delete`).
        verb: String,
        /// The resource (plural), e.g. `deployments.apps`.
        resource: String,
        /// `in namespace NAME`, or `cluster-wide`.
        scope: String,
        /// The server's message.
        message: String,
    },
    /// The namespace is being deleted; nothing can be applied into it.
    #[error(
        "namespace {0} is terminating: nothing can be applied or run there until it is gone (kubectl get namespace {0})"
    )]
    NamespaceTerminating(String),
    /// The ApplySet parent belongs to another tool.
    #[error(
        "ApplySet parent Secret {namespace}/{name} is managed by {tooling}, not broker-images; refusing to change it"
    )]
    ForeignApplySet {
        /// The parent's namespace.
        namespace: String,
        /// The parent's name.
        name: String,
        /// Its `applyset.kubernetes.io/tooling` value.
        tooling: String,
    },
    /// The parent names a kind this version cannot list or prune.
    #[error(transparent)]
    UnknownKind(#[from] crate::applyset::UnknownGroupKind),
    /// The workloads asked for are scaled to zero by `stop`.
    #[error("{0}")]
    Stopped(String),
    /// Another broker-images run holds the namespace's lease.
    #[error("{0}")]
    Busy(String),
    /// Any other answer of the API server.
    #[error("{verb} {object}: the API server answered {code} {reason}: {message}")]
    Api {
        /// What we asked.
        verb: String,
        /// `Kind/name` or the resource listed.
        object: String,
        /// HTTP status.
        code: u16,
        /// The Status reason.
        reason: String,
        /// The Status message.
        message: String,
    },
    /// A request failed below HTTP (connection reset, TLS, timeout).
    #[error("{verb} {object}: {why}")]
    Transport {
        /// What we asked.
        verb: String,
        /// `Kind/name` or the resource listed.
        object: String,
        /// The client's error.
        why: String,
    },
    /// Workloads did not become ready.
    #[error("{0}")]
    NotReady(String),
    /// The server's dry run refused an object: nothing of the set was
    /// applied (on a first start only the empty namespace was created).
    #[error("{refusal} (preflight: {})", if *.namespace_created { "only the empty namespace was created" } else { "nothing was written" })]
    Preflight {
        /// What the server refused and what to do.
        refusal: crate::preflight::Refusal,
        /// Whether this start created the namespace before the dry run
        /// (a dry run into a namespace that does not exist cannot run).
        namespace_created: bool,
    },
    /// Deleting data needs an explicit yes.
    #[error("{0}")]
    Refused(String),
}
