//! Image references as users write them (`postgres:14.2`,
//! `registry.example:5000/broker/python-base@sha256:…`) normalised the way
//! Docker does, so `postgres` and `docker.io/library/postgres:latest` are one
//! image. [`PinnedRef`] is the form manifests are rendered with: it cannot
//! exist without a digest. [`RegistryPrefix`] is where images are pushed:
//! `HOST[:PORT]/PREFIX` or `docker.io/ORG`, parsed once from the command line.

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;

/// Docker Hub's canonical name in references.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that actually serves Docker Hub's registry API.
const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";
/// The key Docker Hub credentials are stored under in `config.json`.
pub const DOCKER_HUB_CREDENTIAL_KEY: &str = "https://index.docker.io/v1/";

/// An image reference that cannot be parsed.
#[derive(Debug, thiserror::Error)]
#[error("invalid image reference `{reference}`: {why}")]
pub struct ReferenceError {
    /// The text as given.
    pub reference: String,
    /// What is wrong with it.
    pub why: String,
}

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

/// An image reference that always carries its digest: what render writes
/// into manifests and what the lock records for pushed images. The tag, if
/// any, is kept for people; the digest is what clusters pull.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PinnedRef {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Digest,
}

impl PinnedRef {
    /// The registry host as written in references.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path, e.g. `broker/python-base`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag recorded beside the digest, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The manifest (or index) digest.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// `registry/repository` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The same image as a general [`Reference`].
    pub fn to_reference(&self) -> Reference {
        Reference::new(
            &self.registry,
            &self.repository,
            self.tag.as_deref(),
            Some(self.digest),
        )
    }
}

/// `registry/repository@sha256:…` — never the tag, so two spellings of one
/// image compare equal as text in rendered manifests.
impl fmt::Display for PinnedRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}@{}", self.registry, self.repository, self.digest)
    }
}

impl TryFrom<Reference> for PinnedRef {
    type Error = ReferenceError;

    fn try_from(reference: Reference) -> Result<Self, Self::Error> {
        match reference.digest {
            Some(digest) => Ok(Self {
                registry: reference.registry,
                repository: reference.repository,
                tag: reference.tag,
                digest,
            }),
            None => Err(ReferenceError {
                reference: reference.to_string(),
                why: "it has no digest (expected NAME@sha256:…)".to_owned(),
            }),
        }
    }
}

impl FromStr for PinnedRef {
    type Err = ReferenceError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        input
            .parse::<Reference>()
            .and_then(Self::try_from)
            .map_err(|e| ReferenceError {
                reference: input.to_owned(),
                why: e.why,
            })
    }
}

/// Where images are pushed: a registry host and an optional repository
/// prefix (`registry.example:5000/broker`, `docker.io/myorg`). Image `NAME`
/// goes to `PREFIX/NAME`.
///
/// Parsed once (it implements [`FromStr`], so clap can use it as a value
/// parser) and passed typed from there on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RegistryPrefix {
    registry: String,
    prefix: String,
}

impl RegistryPrefix {
    /// The registry host (`docker.io`, `127.0.0.1:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository prefix, empty when images sit at the registry's root.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The repository image `name` goes to.
    pub fn repository(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}/{name}", self.prefix)
        }
    }

    /// Image `name` under this prefix with `tag`.
    ///
    /// # Errors
    /// When `name` or `tag` is not valid in a reference.
    pub fn image(&self, name: &str, tag: &str) -> Result<Reference, ReferenceError> {
        format!("{}/{}:{tag}", self.registry, self.repository(name)).parse()
    }

    /// Recovers the prefix an image was pushed under, given the image's
    /// name: `host/broker/python-base` and `python-base` → `host/broker`.
    /// `None` when the repository does not end in `/name`.
    pub fn of_image(reference: &Reference, name: &str) -> Option<Self> {
        let repository = reference.repository();
        let prefix = if repository == name {
            ""
        } else {
            repository.strip_suffix(name)?.strip_suffix('/')?
        };
        Some(Self {
            registry: reference.registry().to_owned(),
            prefix: prefix.to_owned(),
        })
    }
}

impl fmt::Display for RegistryPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix.is_empty() {
            f.write_str(&self.registry)
        } else {
            write!(f, "{}/{}", self.registry, self.prefix)
        }
    }
}

impl FromStr for RegistryPrefix {
    type Err = ReferenceError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let invalid = |why: &str| ReferenceError {
            reference: input.to_owned(),
            why: why.to_owned(),
        };
        let trimmed = input.trim_end_matches('/');
        if trimmed.is_empty() {
            return Err(invalid("it is empty"));
        }
        if trimmed.contains('@') {
            return Err(invalid("a registry prefix has no digest"));
        }
        let (first, rest) = trimmed.split_once('/').unwrap_or((trimmed, ""));
        // The same rule as for references: a host has a dot, a port or is
        // localhost; anything else is an organisation on Docker Hub.
        let (registry, prefix) = if first.contains(['.', ':']) || first == "localhost" {
            (first, rest)
        } else {
            (DOCKER_HUB, trimmed)
        };
        // Validate the host and the prefix components with the reference
        // parser, through the reference of an image below the prefix.
        let probe: Reference = format!("{registry}/{prefix}/probe")
            .replace("//", "/")
            .parse()
            .map_err(|e: ReferenceError| invalid(&e.why))?;
        if probe.tag().is_some() || registry.is_empty() {
            return Err(invalid(
                "expected HOST[:PORT]/PREFIX or docker.io/ORG, without a tag",
            ));
        }
        let (registry, prefix) = (probe.registry().to_owned(), prefix.to_owned());
        if registry == DOCKER_HUB && prefix.is_empty() {
            return Err(invalid("Docker Hub needs an organisation: docker.io/ORG"));
        }
        Ok(Self { registry, prefix })
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
    fn docker_hub_names_reach_its_api_host_and_keep_org_repositories() {
        // Issue 12, item 6: every spelling of a Docker Hub image talks to
        // registry-1.docker.io with the index's credential key; only
        // single-component names gain `library/`.
        for (written, repository) in [
            ("docker.io/org/x", "org/x"),
            ("docker.io/org/team/x:v1", "org/team/x"),
            ("docker.io/postgres", "library/postgres"),
            ("docker.io/library/postgres", "library/postgres"),
            ("registry-1.docker.io/org/x", "org/x"),
            ("index.docker.io/library/postgres", "library/postgres"),
            ("org/x", "org/x"),
        ] {
            let r: Reference = written.parse().unwrap();
            assert_eq!(r.registry(), "docker.io", "{written}");
            assert_eq!(r.api_host(), "registry-1.docker.io", "{written}");
            assert_eq!(r.credential_key(), DOCKER_HUB_CREDENTIAL_KEY, "{written}");
            assert_eq!(r.repository(), repository, "{written}");
        }
        // A host-looking first component is a registry, not a Hub org.
        for (written, registry) in [
            ("localhost/x", "localhost"),
            ("my.registry/x", "my.registry"),
            ("host:5000/x", "host:5000"),
        ] {
            let r: Reference = written.parse().unwrap();
            assert_eq!((r.registry(), r.api_host()), (registry, registry));
            assert_eq!(r.credential_key(), registry);
            assert_eq!(r.repository(), "x");
        }
        // A Hub prefix pushes below the org, never into `library/`.
        let p: RegistryPrefix = "docker.io/myorg".parse().unwrap();
        let image = p.image("python-base", "v1").unwrap();
        assert_eq!(image.repository(), "myorg/python-base");
        assert_eq!(image.api_host(), "registry-1.docker.io");
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

    #[test]
    fn pinned_refs_need_a_digest() {
        let d = format!("sha256:{}", "b".repeat(64));
        let p: PinnedRef = format!("127.0.0.1:5000/broker/mgmt-app:v1@{d}")
            .parse()
            .unwrap();
        assert_eq!(p.to_string(), format!("127.0.0.1:5000/broker/mgmt-app@{d}"));
        assert_eq!(p.tag(), Some("v1"));
        assert_eq!(p.to_reference().pinned().unwrap(), p.to_string());
        let err = "postgres:14.2"
            .parse::<PinnedRef>()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`postgres:14.2`") && err.contains("no digest"),
            "{err}"
        );
    }

    #[test]
    fn registry_prefixes_parse_once() {
        let p: RegistryPrefix = "127.0.0.1:5000/broker/".parse().unwrap();
        assert_eq!((p.registry(), p.prefix()), ("127.0.0.1:5000", "broker"));
        assert_eq!(
            p.image("python-base", "v1").unwrap().to_string(),
            "127.0.0.1:5000/broker/python-base:v1"
        );
        let p: RegistryPrefix = "registry.example:5000".parse().unwrap();
        assert_eq!(p.prefix(), "");
        assert_eq!(p.to_string(), "registry.example:5000");
        let p: RegistryPrefix = "docker.io/myorg".parse().unwrap();
        assert_eq!(
            p.image("x", "latest").unwrap().to_string(),
            "docker.io/myorg/x:latest"
        );
        let p: RegistryPrefix = "myorg".parse().unwrap();
        assert_eq!(p.to_string(), "docker.io/myorg");
        for bad in ["", "Upper/Case", "host:5000/x:tag", "host/x@sha256:aa"] {
            assert!(bad.parse::<RegistryPrefix>().is_err(), "{bad} accepted");
        }
        let r: Reference = "h:1/a/b/mgmt-app:v2".parse().unwrap();
        assert_eq!(
            RegistryPrefix::of_image(&r, "mgmt-app")
                .unwrap()
                .to_string(),
            "h:1/a/b"
        );
        assert!(RegistryPrefix::of_image(&r, "other").is_none());
    }
}
