//! Where credentials come from: explicit `--username/--password-stdin`, or
//! the Docker client configuration (`$DOCKER_CONFIG/config.json` or
//! `~/.docker/config.json`: `auths`, `credsStore`, `credHelpers`).
//!
//! A [`Credentials`] value never prints its secret: `Debug` redacts it, and no
//! error message of this crate includes it.

use std::fmt;
use std::path::{Path, PathBuf};

use docker_credential::{CredentialRetrievalError, DockerCredential};

use crate::error::RegistryError;

/// A secret to authenticate with, plus where it came from for messages.
#[derive(Clone)]
pub enum Credentials {
    /// Username and password (or access token used as a password).
    Basic {
        /// The user name; not secret.
        username: String,
        /// The password; never printed.
        password: String,
    },
    /// An identity (refresh) token from `docker login` against token-auth
    /// registries.
    IdentityToken(String),
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Basic { username, .. } => write!(f, "Basic({username}:<redacted>)"),
            Self::IdentityToken(_) => write!(f, "IdentityToken(<redacted>)"),
        }
    }
}

/// How credentials for a registry are found.
#[derive(Clone, Debug)]
pub enum CredentialSource {
    /// Look the registry up in the Docker client configuration in this
    /// directory (`None`: `$DOCKER_CONFIG`, else `~/.docker`); anonymous when
    /// nothing is configured for it.
    DockerConfig(Option<PathBuf>),
    /// Use exactly these credentials.
    Explicit(Credentials),
    /// Never send credentials.
    Anonymous,
}

/// Credentials found for one registry, and a description of their origin
/// that is safe to print.
#[derive(Clone, Debug)]
pub struct ResolvedCredentials {
    /// The secret, if any.
    pub credentials: Option<Credentials>,
    /// Where it came from, e.g. "docker config (credential helper `pass`)".
    pub origin: String,
}

impl CredentialSource {
    /// Finds the credentials for `credential_key` (a registry host, or Docker
    /// Hub's `https://index.docker.io/v1/`).
    pub fn resolve(&self, credential_key: &str) -> Result<ResolvedCredentials, RegistryError> {
        match self {
            Self::Explicit(c) => Ok(ResolvedCredentials {
                credentials: Some(c.clone()),
                origin: "--username/--password-stdin".to_owned(),
            }),
            Self::Anonymous => Ok(ResolvedCredentials {
                credentials: None,
                origin: "anonymous".to_owned(),
            }),
            Self::DockerConfig(dir) => {
                from_docker_config(&config_file(dir.as_deref()), credential_key)
            }
        }
    }
}

impl Default for CredentialSource {
    fn default() -> Self {
        Self::DockerConfig(None)
    }
}

/// The `config.json` Docker clients read: `$DOCKER_CONFIG/config.json`, else
/// `~/.docker/config.json`.
pub fn config_file(dir: Option<&Path>) -> PathBuf {
    if let Some(dir) = dir {
        return dir.join("config.json");
    }
    if let Some(dir) = std::env::var_os(DOCKER_CONFIG_ENV) {
        return PathBuf::from(dir).join("config.json");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".docker").join("config.json")
}

/// The environment variable naming the Docker client configuration directory.
pub const DOCKER_CONFIG_ENV: &str = "DOCKER_CONFIG";

fn from_docker_config(path: &Path, key: &str) -> Result<ResolvedCredentials, RegistryError> {
    let origin = format!("docker config {}", path.display());
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(ResolvedCredentials {
                credentials: None,
                origin: "anonymous (no docker config)".to_owned(),
            });
        }
        Err(e) => {
            return Err(RegistryError::Credentials {
                registry: key.to_owned(),
                why: format!("cannot read {}: {e}", path.display()),
            });
        }
    };
    match docker_credential::get_credential_from_reader(std::io::BufReader::new(file), key) {
        Ok(DockerCredential::UsernamePassword(username, password)) => Ok(ResolvedCredentials {
            credentials: Some(Credentials::Basic { username, password }),
            origin,
        }),
        Ok(DockerCredential::IdentityToken(token)) => Ok(ResolvedCredentials {
            credentials: Some(Credentials::IdentityToken(token)),
            origin,
        }),
        Err(
            CredentialRetrievalError::NoCredentialConfigured
            | CredentialRetrievalError::ConfigNotFound,
        ) => Ok(ResolvedCredentials {
            credentials: None,
            origin: "anonymous (nothing configured)".to_owned(),
        }),
        // The helper protocol's answer for "nothing stored" is a failure
        // whose output says so; Docker then goes on anonymously, and so do we.
        Err(CredentialRetrievalError::HelperFailure { stdout, .. })
            if stdout.contains("credentials not found") =>
        {
            Ok(ResolvedCredentials {
                credentials: None,
                origin: "anonymous (credential helper has none)".to_owned(),
            })
        }
        // The helper's stdout/stderr are left out on purpose: a broken helper
        // may echo what it was given.
        Err(CredentialRetrievalError::HelperFailure { helper, .. }) => {
            Err(RegistryError::Credentials {
                registry: key.to_owned(),
                why: format!("credential helper `{helper}` failed; run it by hand to see why"),
            })
        }
        Err(other) => Err(RegistryError::Credentials {
            registry: key.to_owned(),
            why: format!("{other} in {}", path.display()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret() {
        let c = Credentials::Basic {
            username: "ci".into(),
            password: "hunter2".into(),
        };
        assert_eq!(format!("{c:?}"), "Basic(ci:<redacted>)");
        let c = Credentials::IdentityToken("tok-123".into());
        assert!(!format!("{c:?}").contains("tok-123"));
    }
}
