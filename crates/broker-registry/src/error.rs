//! Errors of registry operations. Messages are one line, name the registry or
//! image and say what to do; none ever contains a credential.
//!
//! The convention of every error type in this workspace: a message says
//! what failed, once, and never interpolates its `#[source]`; the cause is
//! reached through [`std::error::Error::source`], and the binary prints the
//! whole chain once (`what: why: root cause`, anyhow's `{:#}`). Text that
//! comes from outside as plain strings (a registry's error body, an HTTP
//! library's chain flattened at the edge) is a `why` field, never a source.

use std::path::PathBuf;

pub use broker_pins::ReferenceError;

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The registry refused the credentials we sent (or wanted some and we
    /// had none).
    #[error("authentication to {registry} failed: {why}")]
    Unauthorized {
        /// The registry host.
        registry: String,
        /// What happened and what to do.
        why: String,
    },
    /// Credentials could not be read from the Docker configuration or helper.
    #[error("cannot get credentials for {registry}: {why}")]
    Credentials {
        /// The registry or credential key.
        registry: String,
        /// What went wrong.
        why: String,
    },
    /// A TLS handshake failed, typically an unknown certificate authority.
    #[error("TLS connection to {registry} failed: {why}")]
    Tls {
        /// The registry host.
        registry: String,
        /// The cause and the flag that helps.
        why: String,
    },
    /// The registry could not be reached or the connection broke, after
    /// every retry (one attempt for a request that is not resent as it is:
    /// an upload, whose caller retries at a higher level).
    #[error("cannot reach {registry} ({what}){}: {why}", after_attempts(*attempts))]
    Unreachable {
        /// The registry host.
        registry: String,
        /// The operation.
        what: String,
        /// How many attempts were made.
        attempts: u32,
        /// The last error.
        why: String,
    },
    /// A blob transfer failed every time it was tried: `attempts` tries of
    /// the step that failed last (a chunk, the commit, or the whole
    /// upload), the last failure as the source.
    #[error("{what} at {registry} failed{}", after_attempts(*attempts))]
    GaveUp {
        /// The registry host.
        registry: String,
        /// The step, e.g. "commit of the upload of sha256:… to broker/app".
        what: String,
        /// How many times that step was tried.
        attempts: u32,
        /// The last failure.
        #[source]
        last: Box<RegistryError>,
    },
    /// The registry answered nothing at all for the give-up budget
    /// (`--give-up-after`) while requests waited on it.
    #[error(
        "{registry} answered nothing for {secs}s: check that the registry is up and serves /v2/ at this address, and any proxy or firewall in between"
    )]
    Unresponsive {
        /// The registry host.
        registry: String,
        /// The budget that ran out, in seconds.
        secs: u64,
    },
    /// The registry answered with an unexpected status.
    #[error("{what} at {registry} failed: HTTP {status}{detail}")]
    Status {
        /// The registry host.
        registry: String,
        /// The operation, e.g. "push of manifest broker/python-base@sha256:…".
        what: String,
        /// The HTTP status code.
        status: u16,
        /// The registry's error code/message, prefixed with ": ", or empty.
        detail: String,
    },
    /// The named manifest or blob does not exist.
    #[error("{what} not found at {registry}")]
    NotFound {
        /// The registry host.
        registry: String,
        /// What was looked for.
        what: String,
    },
    /// Content did not match the digest or size it was fetched by.
    #[error("{what} from {registry} does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The registry host.
        registry: String,
        /// What was fetched.
        what: String,
        /// The digest or size asked for.
        expected: String,
        /// The digest or size received.
        actual: String,
    },
    /// A manifest or index could not be understood.
    #[error("{what} is not a valid manifest: {why}")]
    BadManifest {
        /// Which manifest.
        what: String,
        /// The parse error.
        why: String,
    },
    /// No manifest in an index matches the wanted platform.
    #[error("{image} has no manifest for platform {platform}")]
    NoPlatform {
        /// The image reference.
        image: String,
        /// The wanted platform, e.g. linux/amd64.
        platform: String,
    },
    /// Reading or writing a local file failed.
    #[error("{what} {path}")]
    Io {
        /// The operation, e.g. "cannot read".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A reference made from a registry prefix and an image name is
    /// invalid.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// The local image store failed.
    #[error(transparent)]
    Store(#[from] broker_oci::StoreError),
    /// A `--ca-file` holds no PEM certificate.
    #[error("CA file {} holds no PEM certificate{}", path.display(), why.as_ref().map(|w| format!(": {w}")).unwrap_or_default())]
    NoCertificate {
        /// The file.
        path: PathBuf,
        /// What the PEM parser said, if it failed.
        why: Option<String>,
    },
    /// The HTTP client could not be set up (TLS backend, roots).
    #[error("cannot set up HTTP client: {why}")]
    HttpClient {
        /// The cause, flattened.
        why: String,
    },
}

/// " after N attempts" (nothing for a single attempt: there was no retry
/// to count).
fn after_attempts(attempts: u32) -> String {
    match attempts {
        0 | 1 => String::new(),
        n => format!(" after {n} attempts"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_are_counted_in_words_that_fit() {
        let unreachable = |attempts| RegistryError::Unreachable {
            registry: "r:5000".into(),
            what: "check of blob".into(),
            attempts,
            why: "HTTP 503".into(),
        };
        assert_eq!(
            unreachable(1).to_string(),
            "cannot reach r:5000 (check of blob): HTTP 503"
        );
        assert_eq!(
            unreachable(6).to_string(),
            "cannot reach r:5000 (check of blob) after 6 attempts: HTTP 503"
        );
        let gave_up = RegistryError::GaveUp {
            registry: "r:5000".into(),
            what: "commit of the upload of sha256:ab to broker/app".into(),
            attempts: 5,
            last: Box::new(unreachable(1)),
        };
        assert_eq!(
            gave_up.to_string(),
            "commit of the upload of sha256:ab to broker/app at r:5000 failed after 5 attempts"
        );
    }
}
