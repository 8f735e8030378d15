//! Stand-ins for the official `postgres` and `rabbitmq` images, which the
//! engine here cannot pull: Debian's `postgresql-15` and `rabbitmq-server`
//! on the [`debian_minbase`](crate::debian_minbase) image, with entrypoints
//! that keep the official images' contract (see the Dockerfiles and
//! entrypoints in this crate's `standins/` directory, and its README for
//! pushing them to a registry and into a lock).
//!
//! Each is built once (about a minute, apt from the Debian archive inside
//! the build container) and shared by every test process and later runs
//! through the fixture cache, like the base images.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::base_images::{BaseImage, cached_engine_image, debian_minbase, sha256_hex};
use crate::docker::{docker_cli, run_ok};
use crate::registry::TestRegistry;

/// Bump when the build changes in a way the recipe files do not show.
const RECIPE_VERSION: &str = "1";

/// The tag a pushed postgres stand-in takes: the catalogue's `postgres:14.2`
/// marked as a stand-in (it is Debian's PostgreSQL 15).
pub const POSTGRES_TAG: &str = "14.2-standin";
/// The tag a pushed rabbitmq stand-in takes: the catalogue's
/// `rabbitmq:3.9-management` marked as a stand-in (Debian's RabbitMQ 3.10).
pub const RABBITMQ_TAG: &str = "3.9-management-standin";

/// One stand-in: its recipe directory and what the catalogue calls it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standin {
    /// `standins/postgres`, for the catalogue's `postgres:14.2`.
    Postgres,
    /// `standins/rabbitmq`, for the catalogue's `rabbitmq:3.9-management`.
    Rabbitmq,
}

impl Standin {
    /// Both stand-ins.
    pub const ALL: [Standin; 2] = [Standin::Postgres, Standin::Rabbitmq];

    /// The image's name (and its directory under `standins/`).
    pub fn name(self) -> &'static str {
        match self {
            Standin::Postgres => "postgres",
            Standin::Rabbitmq => "rabbitmq",
        }
    }

    /// The reference `manifests/catalogue.yaml` maps the image to, which
    /// keys the image in a lock's `mirrors`.
    pub fn catalogue_reference(self) -> &'static str {
        match self {
            Standin::Postgres => "postgres:14.2",
            Standin::Rabbitmq => "rabbitmq:3.9-management",
        }
    }

    /// The repository path a registry keeps it under, as `mirror` would
    /// the official image's (`library/postgres`).
    pub fn repository(self) -> String {
        format!("library/{}", self.name())
    }

    /// The tag of a pushed copy.
    pub fn tag(self) -> &'static str {
        match self {
            Standin::Postgres => POSTGRES_TAG,
            Standin::Rabbitmq => RABBITMQ_TAG,
        }
    }

    /// The recipe: a Dockerfile and its entrypoint.
    pub fn recipe_dir(self) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("standins")
            .join(self.name())
    }

    /// The image, built once per machine and loaded in the engine.
    ///
    /// # Panics
    /// When the Debian minbase cannot be made, or the build fails (with
    /// its output).
    pub fn image(self) -> BaseImage {
        static POSTGRES: OnceLock<BaseImage> = OnceLock::new();
        static RABBITMQ: OnceLock<BaseImage> = OnceLock::new();
        let cell = match self {
            Standin::Postgres => &POSTGRES,
            Standin::Rabbitmq => &RABBITMQ,
        };
        cell.get_or_init(|| build(self)).clone()
    }

    /// Pushes the stand-in to `registry` as
    /// `HOST/PREFIX/library/NAME:TAG` (`prefix`: a repository path below
    /// the registry's host) and records it in the lock file `lock`
    /// under the catalogue's reference (`postgres:14.2`), where
    /// `broker-images mirror` records the official image, so render pins
    /// the workload to it. Returns the pinned reference.
    ///
    /// # Panics
    /// When the push fails or the lock cannot be read or written.
    pub fn mirror_into_lock(self, registry: &TestRegistry, prefix: &str, lock: &Path) -> String {
        let repository = format!("{prefix}/{}", self.repository());
        let pinned = self.image().push_to(registry, &repository, self.tag());
        record_mirror(self, &pinned, lock);
        pinned
    }
}

/// Records `pinned` (a pushed stand-in) in the lock file `lock` under the
/// stand-in's catalogue reference.
///
/// # Panics
/// When `pinned` is not pinned by digest or the lock cannot be written.
pub fn record_mirror(standin: Standin, pinned: &str, lock: &Path) {
    let reference: broker_pins::PinnedRef = pinned
        .parse()
        .unwrap_or_else(|e| panic!("{pinned} is not a pinned reference: {e}"));
    let mut file = broker_pins::Lock::read_or_new(lock)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", lock.display()));
    file.record_mirror(standin.catalogue_reference(), &reference, &reference);
    file.write(lock)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", lock.display()));
}

/// The postgres stand-in (see [`Standin::Postgres`]).
pub fn postgres() -> BaseImage {
    Standin::Postgres.image()
}

/// The rabbitmq stand-in (see [`Standin::Rabbitmq`]).
pub fn rabbitmq() -> BaseImage {
    Standin::Rabbitmq.image()
}

fn build(standin: Standin) -> BaseImage {
    let base = debian_minbase();
    let dir = standin.recipe_dir();
    let mut parts: Vec<Vec<u8>> = vec![
        b"standin".to_vec(),
        RECIPE_VERSION.as_bytes().to_vec(),
        standin.name().as_bytes().to_vec(),
        base.oci_tag.as_bytes().to_vec(),
    ];
    for (name, mode, bytes) in recipe_files(&dir) {
        parts.push(name.into_bytes());
        parts.push(mode.to_le_bytes().to_vec());
        parts.push(bytes);
    }
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    let key = sha256_hex(&refs);
    let name = format!("{}-standin", standin.name());
    cached_engine_image(&name, &key[..16], |_work, docker_ref| {
        run_ok(
            docker_cli()
                .args(["build", "--quiet", "--build-arg"])
                .arg(format!("BASE={}", base.docker_ref))
                .arg("--tag")
                .arg(docker_ref)
                .arg(&dir),
        );
    })
}

/// Every file of a recipe directory, sorted, with its executable bit (the
/// entrypoint's mode is part of the image).
fn recipe_files(dir: &Path) -> Vec<(String, u32, Vec<u8>)> {
    let mut out: Vec<(String, u32, Vec<u8>)> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read the stand-in recipe {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("cannot read a recipe entry").path();
            let meta = fs::metadata(&path)
                .unwrap_or_else(|e| panic!("cannot stat {}: {e}", path.display()));
            let bytes =
                fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name, meta.permissions().mode() & 0o111, bytes)
        })
        .collect();
    out.sort();
    out
}
