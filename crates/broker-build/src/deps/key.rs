//! The inputs of the dependency stage and their [`DepsKey`]: what one
//! image's deps image is built from, read from the broker tree, hashed into
//! the key that names it, and packed into the engine's build context.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use broker_oci::digest::DigestWriter;
use broker_pins::Platform;

use crate::deps::ca::CONTEXT_CA;
use crate::deps::error::DepsError;
use crate::spec::ImageSpec;

/// Version of the key recipe; bump when the recipe changes.
const KEY_RECIPE: &str = "broker-images deps key v1";

/// The build arg that carries the base image reference.
pub const BASE_ARG: &str = "BASE";

/// The name the Dockerfile gets inside the build context, chosen so it
/// cannot collide with a broker file.
pub(crate) const CONTEXT_DOCKERFILE: &str = ".broker-images.Dockerfile";

/// sha256 (hex) over the Dockerfile, the base reference, the build args and
/// every file the deps stage copies.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DepsKey(String);

impl DepsKey {
    /// The full hex key.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The tag that marks a deps image in the store and the registry.
    pub fn tag(&self) -> String {
        format!("deps-{}", &self.0[..32])
    }
}

impl std::fmt::Display for DepsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Everything the deps stage of one image is built from, resolved against
/// command-line overrides.
#[derive(Clone, Debug)]
pub struct DepsInputs {
    /// The image's name.
    pub image: String,
    /// The Dockerfile's path.
    pub dockerfile: PathBuf,
    /// The Dockerfile's bytes.
    pub dockerfile_bytes: Vec<u8>,
    /// The base image reference, passed as build arg `BASE`.
    pub base: String,
    /// What `base` resolved to, when it could be resolved: a new digest
    /// behind the same reference (a re-tagged `python:3.10`) is a new key.
    pub base_digest: Option<BaseDigest>,
    /// The platform the deps image is built for.
    pub platform: Platform,
    /// The base's manifest for [`platform`](Self::platform), when
    /// `base_digest` names an index: what the engine builds `FROM`, so a
    /// foreign platform's build starts from that platform's base. The key
    /// covers it through `base_digest` (the index) and the platform.
    pub platform_base: Option<broker_oci::Digest>,
    /// All build args, `BASE` included.
    pub args: BTreeMap<String, String>,
    /// The declared broker files: path relative to the broker tree, bytes,
    /// and whether any execute bit is set.
    pub files: Vec<(String, Vec<u8>, bool)>,
}

/// A base image reference resolved to a digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BaseDigest {
    /// The manifest digest on the base's registry, or for a base only the
    /// Docker engine has, its image ID.
    pub digest: broker_oci::Digest,
    /// Only the engine has the base: `digest` is its image ID, not
    /// something a registry serves.
    pub local: bool,
}

impl BaseDigest {
    /// The reference to build `FROM`: `base` pinned to the digest when a
    /// registry serves it (so the engine builds on exactly that, pulling
    /// it when its own copy is older), else `base` itself.
    pub fn pinned(&self, base: &str) -> String {
        if self.local || base.contains('@') {
            base.to_owned()
        } else {
            format!("{base}@{}", self.digest)
        }
    }
}

impl DepsInputs {
    /// Reads the inputs of `spec`'s deps stage from `broker_tree`;
    /// `base` and `args` override the spec's (from the command line).
    pub fn read(
        spec: &ImageSpec,
        broker_tree: &Path,
        base: Option<&str>,
        args: &BTreeMap<String, String>,
    ) -> Result<Self, DepsError> {
        let dockerfile = spec.dir.join(&spec.deps.dockerfile);
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| DepsError::Read {
                image: spec.name.clone(),
                path: path.to_path_buf(),
                source,
            })
        };
        let dockerfile_bytes = read(&dockerfile)?;
        let base = base.unwrap_or(&spec.deps.base).to_owned();
        let mut all_args = spec.deps.args.clone();
        all_args.extend(args.iter().map(|(k, v)| (k.clone(), v.clone())));
        all_args.insert(BASE_ARG.to_owned(), base.clone());
        let mut files = Vec::new();
        let mut declared = spec.deps.files.clone();
        declared.sort();
        declared.dedup();
        for rel in declared {
            let path = broker_tree.join(&rel);
            let bytes = read(&path)?;
            let executable = executable(&path);
            files.push((rel, bytes, executable));
        }
        Ok(Self {
            image: spec.name.clone(),
            dockerfile,
            dockerfile_bytes,
            base,
            base_digest: None,
            platform: Platform::host(),
            platform_base: None,
            args: all_args,
            files,
        })
    }

    /// The key of these inputs.
    pub fn key(&self) -> DepsKey {
        let mut h = DigestWriter::new();
        let mut line = |s: &str| {
            h.update(s.as_bytes());
            h.update(b"\n");
        };
        line(KEY_RECIPE);
        line(&format!(
            "dockerfile {}",
            broker_oci::Digest::of(&self.dockerfile_bytes)
        ));
        if let Some(base) = &self.base_digest {
            line(&format!("base-digest {}", base.digest));
        }
        // linux/amd64 keys keep the recipe they had before platforms
        // existed: the deps images built then are still found by key.
        if self.platform != Platform::linux_amd64() {
            line(&format!("platform {}", self.platform));
        }
        for (k, v) in &self.args {
            // Length-prefixed so `a=b` + `c` never equals `a` + `b=c`.
            line(&format!("arg {}:{k}={}:{v}", k.len(), v.len()));
        }
        for (path, bytes, exec) in &self.files {
            line(&format!(
                "file {}:{path} {} {}",
                path.len(),
                broker_oci::Digest::of(bytes),
                if *exec { "0755" } else { "0644" }
            ));
        }
        DepsKey(h.finish().0.hex())
    }

    /// The build context: the Dockerfile and the declared files, as a tar
    /// with fixed metadata (the engine hashes context files for its cache).
    pub fn context_tar(&self) -> Result<Vec<u8>, std::io::Error> {
        self.context_tar_with(&self.dockerfile_bytes, None)
    }

    /// The build context with `dockerfile` as its Dockerfile and, when
    /// given, the deps CA bundle beside it (see
    /// [`crate::deps::EngineOptions::ca_bundle`]).
    pub(crate) fn context_tar_with(
        &self,
        dockerfile: &[u8],
        ca_bundle: Option<&[u8]>,
    ) -> Result<Vec<u8>, std::io::Error> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut dirs = std::collections::BTreeSet::new();
        for (path, _, _) in &self.files {
            let mut p = Path::new(path).parent();
            while let Some(dir) = p.filter(|d| !d.as_os_str().is_empty()) {
                dirs.insert(dir.to_string_lossy().into_owned());
                p = dir.parent();
            }
        }
        for dir in &dirs {
            let mut header = fixed_header(tar::EntryType::Directory, 0o755, 0);
            builder.append_data(&mut header, format!("{dir}/"), std::io::empty())?;
        }
        let mut header = fixed_header(tar::EntryType::Regular, 0o644, dockerfile.len() as u64);
        builder.append_data(&mut header, CONTEXT_DOCKERFILE, dockerfile)?;
        if let Some(ca) = ca_bundle {
            let mut header = fixed_header(tar::EntryType::Regular, 0o644, ca.len() as u64);
            builder.append_data(&mut header, CONTEXT_CA, ca)?;
        }
        for (path, bytes, exec) in &self.files {
            let mut header = fixed_header(
                tar::EntryType::Regular,
                if *exec { 0o755 } else { 0o644 },
                bytes.len() as u64,
            );
            builder.append_data(&mut header, path, bytes.as_slice())?;
        }
        builder.into_inner()
    }
}

fn fixed_header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(broker_oci::SourceDateEpoch::DEFAULT.seconds());
    header.set_uid(0);
    header.set_gid(0);
    header
}

fn executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> DepsInputs {
        DepsInputs {
            image: "x".into(),
            dockerfile: PathBuf::from("Dockerfile"),
            dockerfile_bytes: b"ARG BASE\nFROM ${BASE}\n".to_vec(),
            base: "python:3.10".into(),
            base_digest: None,
            platform: Platform::linux_amd64(),
            platform_base: None,
            args: BTreeMap::from([("BASE".to_owned(), "python:3.10".to_owned())]),
            files: vec![(
                "images/restapi/requirements.txt".into(),
                b"fastapi==0.1\n".to_vec(),
                false,
            )],
        }
    }

    #[test]
    fn key_changes_with_every_input_and_nothing_else() {
        let a = inputs();
        assert_eq!(a.key(), inputs().key());
        assert_eq!(a.key().as_str().len(), 64);
        let mut b = inputs();
        b.dockerfile_bytes.push(b'\n');
        assert_ne!(a.key(), b.key());
        let mut b = inputs();
        b.args.insert("BASE".into(), "python:3.11".into());
        assert_ne!(a.key(), b.key());
        let mut b = inputs();
        b.files[0].1 = b"fastapi==0.2\n".to_vec();
        assert_ne!(a.key(), b.key());
        let mut b = inputs();
        b.files[0].2 = true;
        assert_ne!(a.key(), b.key());
        let mut b = inputs();
        b.args.insert("NPM_PACKAGES".into(), String::new());
        assert_ne!(a.key(), b.key());
        // Issue 12: the same base reference re-tagged to new content.
        let mut b = inputs();
        let digest = |bytes: &[u8]| BaseDigest {
            digest: broker_oci::Digest::of(bytes),
            local: false,
        };
        b.base_digest = Some(digest(b"v1"));
        let mut c = inputs();
        c.base_digest = Some(digest(b"v2"));
        assert_ne!(a.key(), b.key());
        assert_ne!(b.key(), c.key());
        assert_eq!(
            digest(b"v1").pinned("python:3.10"),
            format!("python:3.10@{}", broker_oci::Digest::of(b"v1"))
        );
        // Issue 26: one deps image per platform; amd64 keys as before.
        let mut b = inputs();
        b.platform = "linux/arm64".parse().unwrap();
        assert_ne!(a.key(), b.key());
        assert_eq!(
            a.key().as_str(),
            "87437db6a44c3f8892740810cfe0f1de37d7cd715e4c9aa5c0c9a6954abf555c",
            "the linux/amd64 key changed: every deps image built before would be rebuilt"
        );
        // The Dockerfile's path on this machine is not an input.
        let mut b = inputs();
        b.dockerfile = PathBuf::from("/elsewhere/Dockerfile");
        assert_eq!(a.key(), b.key());
    }

    #[test]
    fn context_is_byte_identical_and_holds_only_declared_files() {
        let a = inputs().context_tar().unwrap();
        assert_eq!(a, inputs().context_tar().unwrap());
        let mut archive = tar::Archive::new(a.as_slice());
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "images/",
                "images/restapi/",
                CONTEXT_DOCKERFILE,
                "images/restapi/requirements.txt"
            ]
        );
    }
}
