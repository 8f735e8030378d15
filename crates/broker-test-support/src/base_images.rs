//! Base images made locally (the engine cannot pull from the internet): a
//! busybox-static rootfs and a Debian minbase with python3 and nodejs.
//!
//! Each is made once and shared by every test process (nextest runs each test
//! in its own process) through a cache under [`fixtures_dir`]: one directory
//! per recipe hash, built in a temporary directory and renamed into place
//! only when complete, guarded by an exclusive file lock.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::docker::{docker_cli, docker_host, require_tool, run_ok};
use crate::fixtures_dir;
use crate::registry::TestRegistry;

/// Bump when a recipe changes in a way its inputs do not show.
const RECIPE_VERSION: &str = "1";

/// Packages added to the Debian minbase.
pub const DEBIAN_PACKAGES: &[&str] = &[
    "python3",
    "python3-pip",
    "python-is-python3",
    "nodejs",
    "passwd",
];

/// A base image loaded in the Docker engine and kept as an OCI image layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseImage {
    /// Reference of the image in the engine, e.g. `broker-test/busybox:<key>`.
    pub docker_ref: String,
    /// An OCI image layout directory holding it.
    pub oci_layout: PathBuf,
    /// Its tag in [`oci_layout`](Self::oci_layout).
    pub oci_tag: String,
}

impl BaseImage {
    /// `oci:<dir>:<tag>`, the skopeo reference of the OCI layout copy.
    pub fn oci_ref(&self) -> String {
        format!("oci:{}:{}", self.oci_layout.display(), self.oci_tag)
    }

    /// Copies the image to `registry` as `repo:tag` with skopeo (using the
    /// registry's CA and credentials as needed) and returns
    /// `HOST/repo@sha256:…`.
    pub fn push_to(&self, registry: &TestRegistry, repo: &str, tag: &str) -> String {
        let skopeo = require_tool("skopeo", "apt-get install -y skopeo");
        let tmp = tempfile::tempdir().expect("cannot create a temporary directory");
        let digest_file = tmp.path().join("digest");
        let mut cmd = Command::new(skopeo);
        cmd.args(["--insecure-policy", "copy", "--retry-times", "2"]);
        match registry.cert_dir() {
            Some(dir) => {
                cmd.arg("--dest-cert-dir").arg(dir);
            }
            None => {
                cmd.arg("--dest-tls-verify=false");
            }
        }
        match registry.credentials() {
            Some((user, password)) => {
                cmd.arg("--dest-creds").arg(format!("{user}:{password}"));
            }
            None => {
                cmd.arg("--dest-no-creds");
            }
        }
        cmd.arg("--digestfile")
            .arg(&digest_file)
            .arg(self.oci_ref())
            .arg(format!("docker://{}/{repo}:{tag}", registry.host()));
        run_ok(&mut cmd);
        let digest = fs::read_to_string(&digest_file).expect("skopeo wrote no digest file");
        format!("{}/{repo}@{}", registry.host(), digest.trim())
    }
}

/// Pushes `images`, each with the platform it is for (`linux/arm64`), to
/// `registry` as one OCI image index `repo:tag` — a multi-platform base as
/// Docker Hub serves `python:3.10` — with each platform's config declaring
/// that platform; returns `HOST/repo:tag` and the index digest.
///
/// # Panics
/// When an image's OCI layout is unreadable or skopeo fails.
pub fn push_multi_platform(
    registry: &TestRegistry,
    repo: &str,
    tag: &str,
    images: &[(&BaseImage, &str)],
) -> (String, String) {
    push_multi_platform_to(&registry.host(), registry.cert_dir(), repo, tag, images)
}

/// [`push_multi_platform`] to any registry at `host` (plain HTTP, or TLS
/// trusting the certificates in `cert_dir`), e.g. one a benchmark started.
///
/// # Panics
/// When an image's OCI layout is unreadable or skopeo fails.
pub fn push_multi_platform_to(
    host: &str,
    cert_dir: Option<&Path>,
    repo: &str,
    tag: &str,
    images: &[(&BaseImage, &str)],
) -> (String, String) {
    let tmp = tempfile::tempdir().expect("cannot create a temporary directory");
    let layout = tmp.path().join("oci");
    let store = broker_oci::Store::open(&layout).expect("cannot create an OCI layout");
    let mut entries = Vec::new();
    for (image, platform) in images {
        let (os, architecture) = platform
            .split_once('/')
            .unwrap_or_else(|| panic!("platform {platform}: expected os/arch"));
        let blob = |digest: &str| {
            let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
            image.oci_layout.join("blobs/sha256").join(hex)
        };
        let read_json = |path: &Path| -> serde_json::Value {
            let bytes =
                fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
        };
        let index = read_json(&image.oci_layout.join("index.json"));
        let descriptor = index["manifests"]
            .as_array()
            .and_then(|m| {
                m.iter().find(|d| {
                    d["annotations"]["org.opencontainers.image.ref.name"] == image.oci_tag.as_str()
                })
            })
            .unwrap_or_else(|| {
                panic!(
                    "{} has no tag {}",
                    image.oci_layout.display(),
                    image.oci_tag
                )
            })
            .clone();
        let mut manifest = read_json(&blob(descriptor["digest"].as_str().unwrap_or_default()));
        let mut config = read_json(&blob(
            manifest["config"]["digest"].as_str().unwrap_or_default(),
        ));
        config["architecture"] = architecture.into();
        config["os"] = os.into();
        let config_bytes = serde_json::to_vec(&config).expect("a config serialises");
        let config_digest = store
            .write_blob(&config_bytes)
            .expect("cannot store a config");
        manifest["config"]["digest"] = config_digest.to_string().into();
        manifest["config"]["size"] = config_bytes.len().into();
        for layer in manifest["layers"].as_array().cloned().unwrap_or_default() {
            let digest: broker_oci::Digest = layer["digest"]
                .as_str()
                .unwrap_or_default()
                .parse()
                .expect("a layer digest");
            if !store.has_blob(&digest) {
                fs::copy(blob(&digest.to_string()), store.blob_path(&digest))
                    .expect("cannot copy a layer");
            }
        }
        let manifest_bytes = serde_json::to_vec(&manifest).expect("a manifest serialises");
        let manifest_digest = store
            .write_blob(&manifest_bytes)
            .expect("cannot store a manifest");
        entries.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest.to_string(),
            "size": manifest_bytes.len(),
            "platform": {"architecture": architecture, "os": os},
        }));
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries,
    });
    let index_bytes = serde_json::to_vec(&index).expect("an index serialises");
    let index_digest = store
        .write_blob(&index_bytes)
        .expect("cannot store the index");
    let descriptor = oci_spec::image::Descriptor::new(
        oci_spec::image::MediaType::ImageIndex,
        index_bytes.len() as u64,
        broker_oci::oci_digest::to_oci(&index_digest),
    );
    store.tag(tag, &descriptor).expect("cannot tag the index");
    let skopeo = require_tool("skopeo", "apt-get install -y skopeo");
    let target = format!("{host}/{repo}:{tag}");
    let mut cmd = Command::new(skopeo);
    cmd.args([
        "--insecure-policy",
        "copy",
        "--all",
        "--preserve-digests",
        "--retry-times",
        "2",
    ]);
    match cert_dir {
        Some(dir) => {
            cmd.arg("--dest-cert-dir").arg(dir);
        }
        None => {
            cmd.arg("--dest-tls-verify=false");
        }
    }
    cmd.arg(format!("oci:{}:{tag}", layout.display()))
        .arg(format!("docker://{target}"));
    run_ok(&mut cmd);
    (target, index_digest.to_string())
}

/// A busybox image: `/bin/busybox` from Debian's busybox-static with a
/// symlink for every applet (`sh`, `ls`, `cat`, `id`, `wget`, …), `/etc/passwd`
/// and `/etc/group` with root and nobody, `/tmp` mode 1777; `CMD ["/bin/sh"]`.
///
/// # Panics
/// When busybox-static, docker, skopeo or tar is missing, or the build fails.
pub fn busybox() -> BaseImage {
    static IMAGE: OnceLock<BaseImage> = OnceLock::new();
    IMAGE.get_or_init(make_busybox).clone()
}

/// A Debian minbase (`debootstrap --variant=minbase`) of the host's suite
/// with python3, pip, `python` (python-is-python3), nodejs and passwd; apt
/// caches and lists removed; `CMD ["/bin/bash"]`. Takes about a minute the
/// first time; needs root and the host's apt mirror.
///
/// # Panics
/// When debootstrap is missing, not run as root, or the build fails.
pub fn debian_minbase() -> BaseImage {
    static IMAGE: OnceLock<BaseImage> = OnceLock::new();
    IMAGE.get_or_init(make_debian_minbase).clone()
}

pub(crate) fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    hex::encode(h.finalize())
}

fn make_busybox() -> BaseImage {
    let busybox = require_tool(
        "busybox",
        "a static busybox is needed: apt-get install -y busybox-static",
    );
    let busybox = fs::canonicalize(&busybox).unwrap_or(busybox);
    let bytes =
        fs::read(&busybox).unwrap_or_else(|e| panic!("cannot read {}: {e}", busybox.display()));
    assert!(
        !elf_has_interpreter(&bytes),
        "{} is dynamically linked; a static busybox is needed: apt-get install -y busybox-static",
        busybox.display()
    );
    let applets = run_ok(Command::new(&busybox).arg("--list"));
    busybox_image("busybox", &bytes, &applets)
}

/// The busybox image for linux/arm64: Debian's arm64 `busybox-static`
/// binary in the same layout as [`busybox`], an arm64 stand-in base. Its
/// applets are listed by running it, under QEMU user emulation. The
/// engine's copy is labelled amd64 (`docker import` cannot say otherwise);
/// [`push_multi_platform`] gives its config the right architecture.
///
/// # Panics
/// When the package cannot be fetched (`dpkg --add-architecture arm64 &&
/// apt-get update` first) or arm64 binaries do not run here (binfmt_misc
/// mounted and `apt-get install qemu-user-static binfmt-support`).
pub fn busybox_arm64() -> BaseImage {
    static IMAGE: OnceLock<BaseImage> = OnceLock::new();
    IMAGE.get_or_init(make_busybox_arm64).clone()
}

fn make_busybox_arm64() -> BaseImage {
    let binary = debian_arm64_busybox();
    let bytes =
        fs::read(&binary).unwrap_or_else(|e| panic!("cannot read {}: {e}", binary.display()));
    let listed = Command::new(&binary).arg("--list").output();
    let applets = match listed {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        other => panic!(
            "the arm64 busybox {} does not run here ({other:?}): arm64 binaries need QEMU user emulation: mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; apt-get install -y qemu-user-static binfmt-support",
            binary.display()
        ),
    };
    busybox_image("busybox-arm64", &bytes, &applets)
}

/// `/bin/busybox` of Debian's arm64 busybox-static, downloaded once into
/// the fixture cache (the host's own packages are not touched).
fn debian_arm64_busybox() -> PathBuf {
    let dir = fixtures_dir().join("debian-arm64");
    let binary = dir.join("busybox");
    if binary.is_file() {
        return binary;
    }
    fs::create_dir_all(&dir).expect("cannot create the fixture cache");
    let apt = require_tool(
        "apt-get",
        "apt-get (Debian) is needed for the arm64 stand-in base",
    );
    let dpkg_deb = require_tool(
        "dpkg-deb",
        "dpkg-deb (Debian) is needed for the arm64 stand-in base",
    );
    let work = tempfile::tempdir_in(&dir).expect("cannot create a temporary directory");
    let downloaded = Command::new(apt)
        .args(["download", "busybox-static:arm64"])
        .current_dir(work.path())
        .output()
        .expect("cannot run apt-get download");
    assert!(
        downloaded.status.success(),
        "apt-get download busybox-static:arm64 failed: {}\nthe arm64 stand-in base needs Debian's arm64 packages: dpkg --add-architecture arm64 && apt-get update",
        String::from_utf8_lossy(&downloaded.stderr).trim()
    );
    let deb = fs::read_dir(work.path())
        .expect("cannot list the download directory")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("apt-get download left no .deb");
    let root = work.path().join("root");
    run_ok(Command::new(dpkg_deb).arg("-x").arg(&deb).arg(&root));
    let unpacked = root.join("bin/busybox");
    let temp = dir.join(format!("busybox.{}", std::process::id()));
    fs::copy(&unpacked, &temp).expect("the package holds no bin/busybox");
    fs::set_permissions(&temp, fs::Permissions::from_mode(0o755)).expect("cannot chmod busybox");
    fs::rename(&temp, &binary).expect("cannot move busybox into the cache");
    binary
}

/// A busybox rootfs image from the `busybox` binary `bytes` and its
/// `--list` output, cached as `name`.
fn busybox_image(name: &str, bytes: &[u8], applets: &str) -> BaseImage {
    let mut applets: Vec<&str> = applets
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/'))
        .collect();
    applets.sort_unstable();
    applets.dedup();
    let key = sha256_hex(&[
        b"busybox",
        RECIPE_VERSION.as_bytes(),
        bytes,
        applets.join("\n").as_bytes(),
    ]);
    cached_image(name, &key[..16], &["CMD [\"/bin/sh\"]"], |work| {
        let root = work.join("rootfs");
        for d in [
            "bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "home", "var", "dev", "proc",
            "sys",
        ] {
            fs::create_dir_all(root.join(d)).expect("cannot create a rootfs directory");
        }
        fs::create_dir(root.join("tmp")).expect("cannot create /tmp");
        fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777))
            .expect("cannot chmod /tmp");
        fs::set_permissions(root.join("root"), fs::Permissions::from_mode(0o700))
            .expect("cannot chmod /root");
        fs::write(root.join("bin/busybox"), bytes).expect("cannot copy busybox");
        fs::set_permissions(root.join("bin/busybox"), fs::Permissions::from_mode(0o755))
            .expect("cannot chmod busybox");
        for applet in &applets {
            symlink("busybox", root.join("bin").join(applet)).expect("cannot link an applet");
        }
        symlink("/bin/busybox", root.join("usr/bin/env")).expect("cannot link /usr/bin/env");
        fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        )
        .expect("cannot write /etc/passwd");
        fs::write(root.join("etc/group"), "root:x:0:\nnobody:x:65534:\n")
            .expect("cannot write /etc/group");
        root
    })
}

/// Whether an ELF file has a `PT_INTERP` program header (dynamically linked).
fn elf_has_interpreter(elf: &[u8]) -> bool {
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 || elf[5] != 1 {
        // Not a 64-bit little-endian ELF: cannot tell, assume fine.
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap_or([0; 8])) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        elf.get(o..o + 4) == Some(&3u32.to_le_bytes()[..])
    })
}

/// The host's Debian suite: `VERSION_CODENAME` from `/etc/os-release`, else
/// the first suite of the apt sources.
fn host_suite() -> String {
    let os_release = fs::read_to_string("/etc/os-release").unwrap_or_default();
    if let Some(codename) = os_release.lines().find_map(|l| {
        l.strip_prefix("VERSION_CODENAME=")
            .map(|v| v.trim().trim_matches('"').to_string())
            .filter(|v| !v.is_empty())
    }) {
        return codename;
    }
    apt_sources()
        .into_iter()
        .next()
        .map(|(_, suite)| suite)
        .expect("cannot tell the host's Debian suite from /etc/os-release or the apt sources")
}

/// `(uri, suite)` for every `deb` source of the machine, in file order:
/// one-line `deb [opts] URI SUITE …` entries of `/etc/apt/sources.list` and
/// `sources.list.d/*.list`, and deb822 stanzas of `sources.list.d/*.sources`.
pub fn apt_sources() -> Vec<(String, String)> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(entries) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    let mut out = Vec::new();
    for file in files {
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        match file.extension().and_then(|e| e.to_str()) {
            Some("sources") => out.extend(parse_deb822_sources(&text)),
            _ if file.file_name().is_some_and(|n| n == "sources.list")
                || file.extension().is_some_and(|e| e == "list") =>
            {
                out.extend(parse_one_line_sources(&text))
            }
            _ => {}
        }
    }
    out
}

fn parse_one_line_sources(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut rest = match line
            .strip_prefix("deb ")
            .or_else(|| line.strip_prefix("deb\t"))
        {
            Some(r) => r.trim_start(),
            None => continue,
        };
        if rest.starts_with('[') {
            match rest.find(']') {
                Some(i) => rest = rest[i + 1..].trim_start(),
                None => continue,
            }
        }
        let mut words = rest.split_whitespace();
        if let (Some(uri), Some(suite)) = (words.next(), words.next()) {
            out.push((uri.to_string(), suite.to_string()));
        }
    }
    out
}

fn parse_deb822_sources(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let mut types = Vec::new();
        let mut uris = Vec::new();
        let mut suites = Vec::new();
        let mut enabled = true;
        for line in stanza.lines() {
            if line.starts_with('#') || line.starts_with(char::is_whitespace) {
                continue;
            }
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let words = || v.split_whitespace().map(str::to_string).collect::<Vec<_>>();
            match k.trim().to_ascii_lowercase().as_str() {
                "types" => types = words(),
                "uris" => uris = words(),
                "suites" => suites = words(),
                "enabled" => enabled = !v.trim().eq_ignore_ascii_case("no"),
                _ => {}
            }
        }
        if enabled && types.iter().any(|t| t == "deb") {
            for uri in &uris {
                for suite in &suites {
                    out.push((uri.clone(), suite.clone()));
                }
            }
        }
    }
    out
}

fn make_debian_minbase() -> BaseImage {
    let debootstrap = require_tool("debootstrap", "apt-get install -y debootstrap");
    let uid = run_ok(Command::new("id").arg("-u"));
    assert_eq!(
        uid.trim(),
        "0",
        "debian_minbase() runs debootstrap, which needs root; run the tests as root"
    );
    let suite = host_suite();
    let mirror = apt_sources()
        .into_iter()
        .find(|(_, s)| *s == suite)
        .map(|(uri, _)| uri)
        .unwrap_or_else(|| {
            panic!("no apt source for suite {suite} in /etc/apt/sources.list(.d): debootstrap needs a mirror")
        });
    let arch = run_ok(Command::new("dpkg").arg("--print-architecture"));
    let arch = arch.trim().to_string();
    let packages = DEBIAN_PACKAGES.join(",");
    let key = sha256_hex(&[
        b"debian-minbase",
        RECIPE_VERSION.as_bytes(),
        suite.as_bytes(),
        arch.as_bytes(),
        packages.as_bytes(),
    ]);
    cached_image(
        "debian-minbase",
        &key[..16],
        &["CMD [\"/bin/bash\"]"],
        |work| {
            let root = work.join("rootfs");
            let log = work.join("debootstrap.log");
            let started = Instant::now();
            let status = Command::new(&debootstrap)
                .args(["--variant=minbase", &format!("--include={packages}")])
                .arg(format!("--arch={arch}"))
                .arg(&suite)
                .arg(&root)
                .arg(&mirror)
                .stdin(Stdio::null())
                .stdout(Stdio::from(
                    fs::File::create(&log).expect("cannot create the log"),
                ))
                .stderr(Stdio::from(
                    fs::File::options()
                        .append(true)
                        .open(&log)
                        .expect("cannot open the log"),
                ))
                .status()
                .expect("cannot run debootstrap");
            if !status.success() {
                let text = fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                let debootstrap_log = fs::read_to_string(root.join("debootstrap/debootstrap.log"))
                    .unwrap_or_default();
                panic!(
                    "debootstrap {suite} from {mirror} failed ({status}):\n{}\n--- debootstrap/debootstrap.log ---\n{debootstrap_log}",
                    tail.join("\n")
                );
            }
            eprintln!(
                "broker-test-support: debootstrap {suite} took {:.0?}",
                started.elapsed()
            );
            for dir in ["var/cache/apt/archives", "var/lib/apt/lists"] {
                let d = root.join(dir);
                if let Ok(entries) = fs::read_dir(&d) {
                    for e in entries.flatten() {
                        let p = e.path();
                        if p.is_dir() && !p.is_symlink() {
                            let _ = fs::remove_dir_all(&p);
                            // Keep the directories apt expects.
                            let _ = fs::create_dir(&p);
                        } else {
                            let _ = fs::remove_file(&p);
                        }
                    }
                }
            }
            let _ = fs::remove_dir_all(root.join("var/log/apt"));
            root
        },
    )
}

/// Serialises builds inside one process (file locks already do across
/// processes; this keeps two threads of one process from racing too).
static BUILD: Mutex<()> = Mutex::new(());

/// Returns the cached image `name` with recipe hash `key`, building it with
/// `make_rootfs` (which fills a rootfs directory inside the given work dir and
/// returns it) when the cache lacks it, and loading it into the engine when
/// the engine lost it.
fn cached_image(
    name: &str,
    key: &str,
    changes: &[&str],
    make_rootfs: impl FnOnce(&Path) -> PathBuf,
) -> BaseImage {
    cached_engine_image(name, key, |work, docker_ref| {
        let rootfs = make_rootfs(work);
        let tarball = work.join("rootfs.tar");
        let tar = require_tool("tar", "apt-get install -y tar");
        run_ok(
            Command::new(tar)
                .args([
                    "--sort=name",
                    "--mtime=@0",
                    "--numeric-owner",
                    "--exclude=./dev/*",
                ])
                .arg("-C")
                .arg(&rootfs)
                .arg("-cf")
                .arg(&tarball)
                .arg("."),
        );
        let mut import = docker_cli();
        import.arg("import");
        for change in changes {
            import.arg("--change").arg(change);
        }
        run_ok(import.arg(&tarball).arg(docker_ref));
        remove_tree(&rootfs);
        let _ = fs::remove_file(&tarball);
    })
}

/// Returns the cached image `name` with recipe hash `key`: when the cache
/// lacks it, `load` (given a work directory and the reference to give the
/// image) puts it into the engine and it is kept as an OCI layout; when
/// only the engine lost it, it is loaded back from that layout. One build
/// at a time across processes (an exclusive file lock per image).
pub(crate) fn cached_engine_image(
    name: &str,
    key: &str,
    load: impl FnOnce(&Path, &str),
) -> BaseImage {
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let cache = fixtures_dir();
    fs::create_dir_all(&cache)
        .unwrap_or_else(|e| panic!("cannot create the fixture cache {}: {e}", cache.display()));
    let lock_path = cache.join(format!("{name}-{key}.lock"));
    let lock = fs::File::create(&lock_path)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", lock_path.display()));
    lock.lock()
        .unwrap_or_else(|e| panic!("cannot lock {}: {e}", lock_path.display()));

    let skopeo = require_tool("skopeo", "apt-get install -y skopeo");
    let final_dir = cache.join(format!("{name}-{key}"));
    let image = BaseImage {
        docker_ref: format!("broker-test/{name}:{key}"),
        oci_layout: final_dir.join("oci"),
        oci_tag: key.to_string(),
    };
    let daemon = format!("docker-daemon:{}", image.docker_ref);

    if !final_dir.join("oci/index.json").is_file() {
        // Anything named tmp-<name>-* is left over from a killed build: we
        // hold the lock, so nobody else is building it.
        remove_stale_builds(&cache, name);
        let work = cache.join(format!("tmp-{name}-{key}-{}", std::process::id()));
        fs::create_dir_all(&work).expect("cannot create the build directory");
        let started = Instant::now();
        load(&work, &image.docker_ref);
        run_ok(
            Command::new(&skopeo)
                .args(["--insecure-policy", "copy", "--src-daemon-host"])
                .arg(docker_host())
                .arg(&daemon)
                .arg(format!("oci:{}:{key}", work.join("oci").display())),
        );
        if final_dir.exists() {
            remove_tree(&final_dir);
        }
        fs::rename(&work, &final_dir).unwrap_or_else(|e| {
            panic!(
                "cannot move {} to {}: {e}",
                work.display(),
                final_dir.display()
            )
        });
        eprintln!(
            "broker-test-support: made image {} in {:.1?}",
            image.docker_ref,
            started.elapsed()
        );
    } else if !engine_has(&image.docker_ref) {
        run_ok(
            Command::new(&skopeo)
                .args(["--insecure-policy", "copy", "--dest-daemon-host"])
                .arg(docker_host())
                .arg(image.oci_ref())
                .arg(&daemon),
        );
    }
    drop(lock);
    image
}

fn engine_has(docker_ref: &str) -> bool {
    docker_cli()
        .args(["image", "inspect", "--format", "{{.Id}}", docker_ref])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn remove_stale_builds(cache: &Path, name: &str) {
    let prefix = format!("tmp-{name}-");
    if let Ok(entries) = fs::read_dir(cache) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                remove_tree(&e.path());
            }
        }
    }
}

/// Removes a directory tree, first unmounting anything a killed debootstrap
/// may have left mounted inside it (`/proc`, `/sys` of the chroot).
fn remove_tree(dir: &Path) {
    let Ok(dir) = fs::canonicalize(dir) else {
        return;
    };
    let mut mounts = String::new();
    if let Ok(mut f) = fs::File::open("/proc/self/mounts") {
        let _ = f.read_to_string(&mut mounts);
    }
    let mut inside: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|m| Path::new(m).starts_with(&dir))
        .collect();
    // Deepest first.
    inside.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in inside {
        let _ = Command::new("umount").args(["-l", m]).status();
    }
    if let Err(e) = fs::remove_dir_all(&dir)
        && dir.exists()
    {
        panic!("cannot remove {}: {e}", dir.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_apt_sources() {
        let deb822 = "Types: deb\n# comment\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n\nTypes: deb\nEnabled: no\nURIs: http://off.example/debian\nSuites: bookworm\n";
        assert_eq!(
            parse_deb822_sources(deb822),
            vec![
                (
                    "http://mirror.example/debian".to_string(),
                    "bookworm".to_string()
                ),
                (
                    "http://mirror.example/debian".to_string(),
                    "bookworm-updates".to_string()
                ),
            ]
        );
        let one_line = "# x\ndeb [arch=amd64 signed-by=/k.gpg] http://a.example/debian trixie main\ndeb-src http://b.example/debian trixie main\ndeb http://c.example/debian trixie-security main # c\n";
        assert_eq!(
            parse_one_line_sources(one_line),
            vec![
                ("http://a.example/debian".to_string(), "trixie".to_string()),
                (
                    "http://c.example/debian".to_string(),
                    "trixie-security".to_string()
                ),
            ]
        );
    }

    #[test]
    fn tells_static_from_dynamic_elf() {
        let sh = fs::read("/bin/sh").unwrap();
        assert!(
            elf_has_interpreter(&sh),
            "/bin/sh is expected to be dynamic"
        );
    }
}
