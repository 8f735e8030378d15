//! The platform of a deps image: before a foreign platform's build, whether
//! this machine can run its binaries at all (QEMU user emulation registered
//! with binfmt_misc); after it, whether what the engine built really holds
//! that platform's binaries. Docker 20.10's legacy builder labels its result
//! with the host's architecture whatever is inside, so its label proves
//! nothing: the ELF machine of a known binary does.

use std::path::Path;

use broker_oci::base::LayerListings;
use broker_oci::{Store, StoredImage};
use broker_pins::Platform;

use crate::deps::error::DepsError;

/// Binaries looked for, in order: the first one the deps image has is
/// checked. Every Debian- or busybox-based image has a `/bin/sh`.
pub const CHECKED_BINARIES: &[&str] = &[
    "/bin/sh",
    "/usr/bin/python3",
    "/usr/local/bin/python3",
    "/usr/bin/node",
    "/usr/local/bin/node",
];

/// Where the kernel lists the registered binary formats.
const BINFMT_MISC: &str = "/proc/sys/fs/binfmt_misc";

/// How to set emulation up, said with every emulation error.
pub(crate) const SET_UP: &str = "mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc (if not mounted), then on Debian apt-get install qemu-user-static binfmt-support";

/// What checking a deps image found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlatformCheck {
    /// This binary is an executable of the platform.
    Matches(&'static str),
    /// The image has none of [`CHECKED_BINARIES`] (or none is ELF).
    Unchecked,
}

/// Checks that the stored deps image `deps` holds executables of
/// `platform`: a wrong-platform image is an error naming the binary and
/// what it is. Layers already in `listings` (a base the run's other
/// images share) are not read again.
///
/// # Errors
/// [`DepsError::WrongPlatform`], or the image's layers cannot be read.
pub fn check_deps_platform(
    store: &Store,
    image: &str,
    deps: &StoredImage,
    platform: &Platform,
    listings: &LayerListings,
) -> Result<PlatformCheck, DepsError> {
    let Some(wanted) = platform.elf_machine() else {
        return Ok(PlatformCheck::Unchecked);
    };
    for binary in CHECKED_BINARIES {
        let head =
            broker_oci::base::file_head(store, deps, binary, 64, listings).map_err(|source| {
                DepsError::Inspect {
                    image: image.to_owned(),
                    source: Box::new(source),
                }
            })?;
        let Some(machine) = head.as_deref().and_then(broker_oci::base::elf_machine) else {
            continue;
        };
        if machine != wanted {
            return Err(DepsError::WrongPlatform {
                image: image.to_owned(),
                platform: platform.to_string(),
                binary,
                found: Platform::elf_machine_name(machine),
            });
        }
        return Ok(PlatformCheck::Matches(binary));
    }
    Ok(PlatformCheck::Unchecked)
}

/// Checks, before a deps build for `platform` on a machine of another
/// platform, that the kernel runs `platform`'s executables through an
/// emulator usable inside containers. Only a local engine is checked (the
/// kernel of a remote engine is not this one's).
///
/// # Errors
/// [`DepsError::NoEmulation`] saying what is missing and how to set it up.
pub fn check_emulation(image: &str, platform: &Platform) -> Result<(), DepsError> {
    if *platform == Platform::host() {
        return Ok(());
    }
    let local = std::env::var("DOCKER_HOST").map_or(true, |h| h.starts_with("unix://"));
    let Some(machine) = platform.elf_machine().filter(|_| local) else {
        return Ok(());
    };
    let why = |why: String| DepsError::NoEmulation {
        image: image.to_owned(),
        platform: platform.to_string(),
        host: Platform::host().to_string(),
        why,
    };
    let dir = Path::new(BINFMT_MISC);
    if !dir.join("status").is_file() {
        return Err(why(format!("binfmt_misc is not mounted at {BINFMT_MISC}")));
    }
    let mut entries = Vec::new();
    if let Ok(listing) = std::fs::read_dir(dir) {
        for entry in listing.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == "status" || name == "register" {
                continue;
            }
            if let Ok(text) = std::fs::read_to_string(entry.path()) {
                entries.push((name, text));
            }
        }
    }
    match emulator_for(&entries, machine) {
        Emulator::Usable => Ok(()),
        Emulator::NotInContainers(name) => Err(why(format!(
            "binfmt_misc entry `{name}` runs {} binaries but lacks the F flag, so containers cannot use it; register it with F (Debian's qemu-user-static does)",
            platform.architecture()
        ))),
        Emulator::None => Err(why(format!(
            "no enabled binfmt_misc entry runs {} binaries",
            platform.architecture()
        ))),
    }
}

/// Whether any of the binfmt_misc entries (`(name, file text)`) runs ELF
/// executables of `machine` inside containers.
#[derive(Debug, PartialEq, Eq)]
enum Emulator {
    Usable,
    /// Enabled, but without the F (fix binary) flag.
    NotInContainers(String),
    None,
}

fn emulator_for(entries: &[(String, String)], machine: u16) -> Emulator {
    let mut found = Emulator::None;
    for (name, text) in entries {
        let mut enabled = false;
        let mut flags = "";
        let mut magic = None;
        let mut offset = 0;
        for line in text.lines() {
            if line == "enabled" {
                enabled = true;
            } else if let Some(f) = line.strip_prefix("flags: ") {
                flags = f;
            } else if let Some(o) = line.strip_prefix("offset ") {
                offset = o.trim().parse().unwrap_or(usize::MAX);
            } else if let Some(m) = line.strip_prefix("magic ") {
                magic = hex::decode(m.trim()).ok();
            }
        }
        let Some(magic) = magic.filter(|_| enabled && offset == 0) else {
            continue;
        };
        // An ELF entry's magic covers the header up to e_machine.
        let runs = magic.starts_with(b"\x7fELF")
            && magic.len() >= 20
            && broker_oci::base::elf_machine(&magic) == Some(machine);
        if !runs {
            continue;
        }
        if flags.contains('F') {
            return Emulator::Usable;
        }
        found = Emulator::NotInContainers(name.clone());
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const QEMU_AARCH64: &str = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: PF\noffset 0\nmagic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00fffffffffffffffffeffffff\n";

    #[test]
    fn an_emulator_counts_only_when_enabled_for_the_machine_and_containers() {
        let entry = |text: &str| vec![("qemu-aarch64".to_owned(), text.to_owned())];
        assert_eq!(emulator_for(&entry(QEMU_AARCH64), 0xb7), Emulator::Usable);
        assert_eq!(emulator_for(&entry(QEMU_AARCH64), 0x28), Emulator::None);
        let disabled = QEMU_AARCH64.replace("enabled\n", "disabled\n");
        assert_eq!(emulator_for(&entry(&disabled), 0xb7), Emulator::None);
        let no_f = QEMU_AARCH64.replace("flags: PF", "flags: P");
        assert_eq!(
            emulator_for(&entry(&no_f), 0xb7),
            Emulator::NotInContainers("qemu-aarch64".to_owned())
        );
        let python =
            "enabled\ninterpreter /usr/bin/python3.11\nflags: \noffset 0\nmagic a70d0d0a\n";
        assert_eq!(emulator_for(&entry(python), 0xb7), Emulator::None);
    }

    #[test]
    fn the_host_platform_needs_no_emulation() {
        assert!(check_emulation("x", &Platform::host()).is_ok());
    }
}
