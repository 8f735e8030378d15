//! What one file of an image says is installed: a Python distribution's
//! `METADATA` (or an egg's `PKG-INFO`), an npm package's `package.json`,
//! the Debian packages of `/var/lib/dpkg/status`; and the package URLs
//! (purl) naming each. Pure functions over bytes.

use serde::Deserialize;

/// The ecosystem a package belongs to: what its purl type is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Ecosystem {
    /// A Python distribution (`pkg:pypi/…`).
    Pypi,
    /// An npm package (`pkg:npm/…`).
    Npm,
    /// A Debian package (`pkg:deb/debian/…`).
    Deb,
}

/// How a package states its licence.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum License {
    /// An SPDX expression (`License-Expression`, PEP 639).
    Expression(String),
    /// Licence names as written (`License`, classifiers, npm's `license`).
    Names(Vec<String>),
}

/// One installed package.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Package {
    /// Its ecosystem.
    pub ecosystem: Ecosystem,
    /// Its name as the package writes it (`PyYAML`, `@types/ms`).
    pub name: String,
    /// Its version as written.
    pub version: String,
    /// Its licence, when it states one.
    pub license: Option<License>,
    /// The architecture (Debian only).
    pub arch: Option<String>,
}

impl Package {
    /// The package URL naming it.
    #[must_use]
    pub fn purl(&self) -> String {
        match self.ecosystem {
            Ecosystem::Pypi => pypi_purl(&self.name, &self.version),
            Ecosystem::Npm => npm_purl(&self.name, &self.version),
            Ecosystem::Deb => deb_purl(&self.name, &self.version, self.arch.as_deref()),
        }
    }
}

/// Longest `License` field taken as a licence name: many distributions put
/// their whole licence text there, which names nothing.
const LICENSE_NAME_LIMIT: usize = 100;

/// The distribution a core metadata file (`METADATA`, `PKG-INFO`) describes;
/// `None` without a `Name` and a `Version`.
#[must_use]
pub fn python_metadata(text: &str) -> Option<Package> {
    let (mut name, mut version, mut expression, mut license) = (None, None, None, None);
    let mut classifiers = Vec::new();
    // The headers end at the first empty line; the description follows.
    // Continuation lines (leading whitespace) only extend a long `License`,
    // which is not taken anyway.
    for line in text.lines() {
        if line.is_empty() {
            break;
        }
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key {
            "Name" => name = Some(value.to_owned()),
            "Version" => version = Some(value.to_owned()),
            "License-Expression" => expression = Some(value.to_owned()),
            "License" => license = Some(value.to_owned()),
            "Classifier" => {
                if let Some(named) = value.strip_prefix("License ::") {
                    let named = named.rsplit("::").next().unwrap_or(named).trim();
                    if !named.is_empty() && named != "OSI Approved" {
                        classifiers.push(named.to_owned());
                    }
                }
            }
            _ => {}
        }
    }
    let license = if let Some(expression) = expression.filter(|e| !e.is_empty()) {
        Some(License::Expression(expression))
    } else if let Some(license) = license.filter(|l| {
        !l.is_empty() && l.len() <= LICENSE_NAME_LIMIT && !l.eq_ignore_ascii_case("UNKNOWN")
    }) {
        Some(License::Names(vec![license]))
    } else if classifiers.is_empty() {
        None
    } else {
        classifiers.sort();
        classifiers.dedup();
        Some(License::Names(classifiers))
    };
    Some(Package {
        ecosystem: Ecosystem::Pypi,
        name: name.filter(|n| !n.is_empty())?,
        version: version.filter(|v| !v.is_empty())?,
        license,
        arch: None,
    })
}

#[derive(Deserialize)]
struct PackageJson {
    name: Option<String>,
    version: Option<String>,
    license: Option<serde_json::Value>,
    licenses: Option<Vec<serde_json::Value>>,
}

/// The npm package a `package.json` under `node_modules` describes; `None`
/// when it is not JSON or names no package (a test fixture, a stub).
#[must_use]
pub fn npm_package(bytes: &[u8]) -> Option<Package> {
    let json: PackageJson = serde_json::from_slice(bytes).ok()?;
    let name = json.name.filter(|n| !n.is_empty())?;
    let version = json.version.filter(|v| !v.is_empty())?;
    // `license` is a string; old packages wrote `{type, url}` or a
    // `licenses` list of those.
    let type_of = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("type")?.as_str().map(str::to_owned),
        _ => None,
    };
    let mut names: Vec<String> = json.license.iter().filter_map(type_of).collect();
    names.extend(json.licenses.iter().flatten().filter_map(type_of));
    names.retain(|n| !n.is_empty());
    Some(Package {
        ecosystem: Ecosystem::Npm,
        name,
        version,
        license: (!names.is_empty()).then_some(License::Names(names)),
        arch: None,
    })
}

/// The packages `/var/lib/dpkg/status` lists as installed (status
/// `install ok installed`); removed ones whose configuration remains and
/// half-installed ones are not in the image.
#[must_use]
pub fn dpkg_status(text: &str) -> Vec<Package> {
    let mut out = Vec::new();
    for paragraph in text.split("\n\n") {
        let field = |name: &str| {
            paragraph.lines().find_map(|line| {
                let (key, value) = line.split_once(':')?;
                (key == name).then(|| value.trim().to_owned())
            })
        };
        let installed = field("Status").is_some_and(|s| s.ends_with(" installed"));
        if let (true, Some(name), Some(version)) = (installed, field("Package"), field("Version")) {
            out.push(Package {
                ecosystem: Ecosystem::Deb,
                name,
                version,
                license: None,
                arch: field("Architecture"),
            });
        }
    }
    out
}

/// Whether `path` (relative, `/`-separated) is a file this module reads,
/// and which kind.
#[must_use]
pub fn kind_of(path: &str) -> Option<FileKind> {
    if path == "var/lib/dpkg/status" {
        return Some(FileKind::DpkgStatus);
    }
    let parts: Vec<&str> = path.split('/').collect();
    match parts.as_slice() {
        [.., dir, "METADATA"] if dir.ends_with(".dist-info") => Some(FileKind::PythonMetadata),
        [.., dir, "PKG-INFO"] if dir.ends_with(".egg-info") => Some(FileKind::PythonMetadata),
        // An egg-info may also be a single file (distutils installs).
        [.., file] if file.ends_with(".egg-info") && parts.len() > 1 => {
            Some(FileKind::PythonMetadata)
        }
        // A package's own manifest sits right below `node_modules` (or its
        // scope); any deeper `package.json` is a file of that package.
        [.., "node_modules", name, "package.json"] if !name.starts_with(['.', '@']) => {
            Some(FileKind::PackageJson)
        }
        [.., "node_modules", scope, name, "package.json"]
            if scope.starts_with('@') && !name.starts_with('.') =>
        {
            Some(FileKind::PackageJson)
        }
        _ => None,
    }
}

/// The kinds of file read for packages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A Python core metadata file.
    PythonMetadata,
    /// An npm `package.json`.
    PackageJson,
    /// The dpkg status database.
    DpkgStatus,
}

/// Percent-encodes `text` for a purl segment: everything but the
/// unreserved characters of RFC 3986.
#[must_use]
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A Python distribution name normalised as PEP 503 (and the purl spec)
/// say: lower case, runs of `-`, `_`, `.` as one `-`.
#[must_use]
pub fn normalise_pypi(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !out.ends_with('-') {
                out.push('-');
            }
        } else {
            out.extend(c.to_lowercase());
        }
    }
    out
}

/// `pkg:pypi/<normalised name>@<version>`.
#[must_use]
pub fn pypi_purl(name: &str, version: &str) -> String {
    format!(
        "pkg:pypi/{}@{}",
        percent_encode(&normalise_pypi(name)),
        percent_encode(version)
    )
}

/// `pkg:npm/<name>@<version>`, a scope as the namespace (`%40scope/name`).
#[must_use]
pub fn npm_purl(name: &str, version: &str) -> String {
    let path = match name.split_once('/') {
        Some((scope, name)) if scope.starts_with('@') => {
            format!("{}/{}", percent_encode(scope), percent_encode(name))
        }
        _ => percent_encode(name),
    };
    format!("pkg:npm/{path}@{}", percent_encode(version))
}

/// `pkg:deb/debian/<name>@<version>?arch=<arch>` (an epoch's `:` encoded).
#[must_use]
pub fn deb_purl(name: &str, version: &str, arch: Option<&str>) -> String {
    let mut purl = format!(
        "pkg:deb/debian/{}@{}",
        percent_encode(name),
        percent_encode(version)
    );
    if let Some(arch) = arch {
        purl.push_str(&format!("?arch={}", percent_encode(arch)));
    }
    purl
}

/// `pkg:oci/<last path segment>@<digest>?repository_url=<registry/path>`,
/// the purl spec's form for an OCI image.
#[must_use]
pub fn oci_purl(repository: &str, digest: &broker_pins::Digest) -> String {
    let name = repository.rsplit('/').next().unwrap_or(repository);
    format!(
        "pkg:oci/{}@{}?repository_url={}",
        percent_encode(&name.to_lowercase()),
        percent_encode(&digest.to_string()),
        percent_encode_path(repository)
    )
}

/// [`percent_encode`] keeping `/` and `:` (a qualifier value that is a
/// URL-like path stays readable; both are allowed there).
fn percent_encode_path(text: &str) -> String {
    text.split('/')
        .map(|segment| {
            segment
                .split(':')
                .map(percent_encode)
                .collect::<Vec<_>>()
                .join(":")
        })
        .collect::<Vec<_>>()
        .join("/")
}
