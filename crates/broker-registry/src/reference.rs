//! Image references as users write them (`postgres:14.2`,
//! `registry.example:5000/broker/python-base@sha256:…`) normalised the way
//! Docker does, so `postgres` and `docker.io/library/postgres:latest` are one
//! image.

use std::fmt;
use std::str::FromStr;

use broker_oci::Digest;

use crate::error::ReferenceError;

/// Docker Hub's canonical name in references.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that actually serves Docker Hub's registry API.
const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";
/// The key Docker Hub credentials are stored under in `config.json`.
pub const DOCKER_HUB_CREDENTIAL_KEY: &str = "https://index.docker.io/v1/";

/// A normalised image reference: registry host, repository path, and a tag,
/// a digest or both.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Builds a reference from parts that are already normalised.
    pub fn new(
        registry: &str,
        repository: &str,
        tag: Option<&str>,
        digest: Option<Digest>,
    ) -> Self {
        Self {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            tag: tag.map(str::to_owned),
            digest,
        }
    }

    /// The registry host as written in references (`docker.io`, `host:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The host whose `/v2/` API serves this registry.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API_HOST
        } else {
            &self.registry
        }
    }

    /// The key under which `config.json` and credential helpers store
    /// credentials for this registry.
    pub fn credential_key(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_CREDENTIAL_KEY
        } else {
            &self.registry
        }
    }

    /// The repository path, e.g. `library/postgres`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if the reference names one.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if the reference pins one.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// What to ask the registry for: the digest when pinned, else the tag
    /// (`latest` when none was written).
    pub fn manifest_selector(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_owned(),
        }
    }

    /// The same repository pinned to `digest`, keeping the tag for display.
    pub fn with_digest(&self, digest: Digest) -> Self {
        Self {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// The same repository with another tag and no digest.
    pub fn with_tag(&self, tag: &str) -> Self {
        Self {
            tag: Some(tag.to_owned()),
            digest: None,
            ..self.clone()
        }
    }

    /// `registry/repository@sha256:…` — the form manifests pin.
    pub fn pinned(&self) -> Option<String> {
        self.digest
            .as_ref()
            .map(|d| format!("{}/{}@{d}", self.registry, self.repository))
    }

    /// `registry/repository` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let invalid = |why: &str| ReferenceError {
            reference: input.to_owned(),
            why: why.to_owned(),
        };
        if input.is_empty() {
            return Err(invalid("it is empty"));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((rest, digest)) => {
                let digest = digest
                    .parse::<Digest>()
                    .map_err(|_| invalid("the digest is not sha256: followed by 64 hex digits"))?;
                (rest, Some(digest))
            }
            None => (input, None),
        };
        // A tag follows the last ':' after the last '/', so `host:5000/repo` has none.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag {
            let valid = !tag.is_empty()
                && tag.len() <= 128
                && tag
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
                && !tag.starts_with(['.', '-']);
            if !valid {
                return Err(invalid(
                    "the tag may hold only letters, digits, '_', '.' and '-' (at most 128)",
                ));
            }
        }
        // The first component is a registry host when it looks like one, as Docker decides.
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
                (first.to_owned(), rest.to_owned())
            }
            _ => (DOCKER_HUB.to_owned(), name.to_owned()),
        };
        let registry = if registry == "index.docker.io" || registry == DOCKER_HUB_API_HOST {
            DOCKER_HUB.to_owned()
        } else {
            registry
        };
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.chars().all(|ch| {
                    ch.is_ascii_lowercase() || ch.is_ascii_digit() || matches!(ch, '.' | '_' | '-')
                })
                && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
                && c.ends_with(|ch: char| ch.is_ascii_alphanumeric())
        };
        if !repository.split('/').all(component_ok) {
            return Err(invalid(
                "repository names are lowercase letters, digits and '.', '_', '-' separated by '/'",
            ));
        }
        Ok(Self {
            registry,
            repository,
            tag: tag.map(str::to_owned),
            digest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_short_names_are_normalised() {
        let r: Reference = "postgres:14.2".parse().unwrap();
        assert_eq!(r.to_string(), "docker.io/library/postgres:14.2");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(r.credential_key(), "https://index.docker.io/v1/");
        let r: Reference = "rabbitmq:3.9-management".parse().unwrap();
        assert_eq!(r.repository(), "library/rabbitmq");
        assert_eq!(r.tag(), Some("3.9-management"));
        let r: Reference = "index.docker.io/myorg/app".parse().unwrap();
        assert_eq!(r.to_string(), "docker.io/myorg/app");
        assert_eq!(r.manifest_selector(), "latest");
    }

    #[test]
    fn registry_with_port_is_not_a_tag() {
        let r: Reference = "127.0.0.1:5000/broker/python-base".parse().unwrap();
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "broker/python-base");
        assert_eq!(r.tag(), None);
        let d = format!("sha256:{}", "a".repeat(64));
        let r: Reference = format!("localhost:5000/x:v1@{d}").parse().unwrap();
        assert_eq!(r.tag(), Some("v1"));
        assert_eq!(r.manifest_selector(), d);
        assert_eq!(r.pinned().unwrap(), format!("localhost:5000/x@{d}"));
    }

    #[test]
    fn bad_references_say_why() {
        for bad in ["", "Upper/Case", "x@sha256:zz", "x:bad tag", "a//b"] {
            let err = bad.parse::<Reference>().unwrap_err().to_string();
            assert!(err.contains("invalid image reference"), "{err}");
        }
    }
}
