//! [`Platform`]: the `os/architecture[/variant]` an image runs on, in OCI
//! spelling (`linux/amd64`, `linux/arm64`, `linux/arm/v7`), as image specs,
//! `--platform`, image indexes and `images.lock` write it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An operating system and CPU architecture (and variant), OCI spelling.
/// Always normalised: `linux/arm64/v8` is `linux/arm64` (v8 is the only
/// arm64 variant), so two spellings of one platform compare equal.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Platform {
    os: String,
    architecture: String,
    variant: Option<String>,
}

/// A platform string that is not `os/architecture[/variant]`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("platform `{given}`: {why}")]
pub struct ParsePlatformError {
    /// The text as given.
    pub given: String,
    /// What is wrong, and what is expected instead.
    pub why: String,
}

/// Architectures the tool knows the ELF machine of, so it can check that a
/// deps image really holds binaries for its platform.
const KNOWN: &[(&str, Option<&str>, u16)] = &[
    ("amd64", None, 0x3e),
    ("arm64", None, 0xb7),
    ("arm", Some("v7"), 0x28),
    ("arm", Some("v6"), 0x28),
    ("ppc64le", None, 0x15),
    ("s390x", None, 0x16),
    ("riscv64", None, 0xf3),
    ("386", None, 0x03),
];

impl Platform {
    /// `linux/amd64`.
    #[must_use]
    pub fn linux_amd64() -> Self {
        Self {
            os: "linux".to_owned(),
            architecture: "amd64".to_owned(),
            variant: None,
        }
    }

    /// The Linux platform of this machine's CPU.
    #[must_use]
    pub fn host() -> Self {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", None),
            "arm" => ("arm", Some("v7")),
            "powerpc64" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            "x86" => ("386", None),
            other => (other, None),
        };
        Self {
            os: "linux".to_owned(),
            architecture: architecture.to_owned(),
            variant: variant.map(str::to_owned),
        }
    }

    /// The operating system (`linux`).
    #[must_use]
    pub fn os(&self) -> &str {
        &self.os
    }

    /// The architecture (`amd64`, `arm64`, `arm`).
    #[must_use]
    pub fn architecture(&self) -> &str {
        &self.architecture
    }

    /// The variant (`v7` for `linux/arm/v7`), if any.
    #[must_use]
    pub fn variant(&self) -> Option<&str> {
        self.variant.as_deref()
    }

    /// The ELF `e_machine` value of this platform's executables.
    #[must_use]
    pub fn elf_machine(&self) -> Option<u16> {
        KNOWN
            .iter()
            .find(|(arch, variant, _)| {
                *arch == self.architecture && (variant.is_none() || *variant == self.variant())
            })
            .map(|(_, _, machine)| *machine)
    }

    /// What `uname -m` says on this platform (`x86_64`, `aarch64`).
    #[must_use]
    pub fn uname_machine(&self) -> &str {
        match self.architecture.as_str() {
            "amd64" => "x86_64",
            "arm64" => "aarch64",
            "arm" => "armv7l",
            "386" => "i686",
            other => other,
        }
    }

    /// The name of the architecture an ELF `e_machine` value stands for.
    #[must_use]
    pub fn elf_machine_name(machine: u16) -> String {
        match machine {
            0x3e => "x86-64".to_owned(),
            0xb7 => "aarch64".to_owned(),
            0x28 => "arm".to_owned(),
            0x15 => "ppc64".to_owned(),
            0x16 => "s390".to_owned(),
            0xf3 => "riscv".to_owned(),
            0x03 => "i386".to_owned(),
            other => format!("ELF machine {other:#x}"),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = ParsePlatformError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why: &str| ParsePlatformError {
            given: s.to_owned(),
            why: why.to_owned(),
        };
        let parts: Vec<&str> = s.split('/').collect();
        let valid = |p: &&str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        };
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(valid) {
            return Err(err(
                "expected os/architecture[/variant] in lowercase, e.g. linux/amd64 or linux/arm64",
            ));
        }
        let (os, architecture) = (parts[0], parts[1]);
        let architecture = match architecture {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        let mut variant = parts.get(2).map(|v| (*v).to_owned());
        if architecture == "arm64" && variant.as_deref() == Some("v8") {
            variant = None;
        }
        if architecture == "arm" && variant.is_none() {
            variant = Some("v7".to_owned());
        }
        Ok(Self {
            os: os.to_owned(),
            architecture: architecture.to_owned(),
            variant,
        })
    }
}

impl Serialize for Platform {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Platform {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_platform_are_equal() {
        let arm64: Platform = "linux/arm64".parse().unwrap();
        assert_eq!("linux/arm64/v8".parse::<Platform>().unwrap(), arm64);
        assert_eq!("linux/aarch64".parse::<Platform>().unwrap(), arm64);
        assert_eq!(arm64.to_string(), "linux/arm64");
        assert_eq!(arm64.variant(), None);
        let arm: Platform = "linux/arm".parse().unwrap();
        assert_eq!(arm.to_string(), "linux/arm/v7");
        assert_eq!(
            "linux/x86_64".parse::<Platform>().unwrap(),
            Platform::linux_amd64()
        );
    }

    #[test]
    fn bad_platforms_say_what_is_expected() {
        for bad in ["amd64", "linux/", "Linux/AMD64", "linux/arm64/v8/x", ""] {
            let err = bad.parse::<Platform>().unwrap_err().to_string();
            assert!(err.contains("os/architecture"), "{bad}: {err}");
        }
    }

    #[test]
    fn elf_machines_of_the_shipped_platforms() {
        let machine = |p: &str| p.parse::<Platform>().unwrap().elf_machine();
        assert_eq!(machine("linux/amd64"), Some(0x3e));
        assert_eq!(machine("linux/arm64"), Some(0xb7));
        assert_eq!(machine("linux/mips64le"), None);
        assert_eq!(Platform::elf_machine_name(0xb7), "aarch64");
        assert_eq!(
            "linux/arm64".parse::<Platform>().unwrap().uname_machine(),
            "aarch64"
        );
    }

    #[test]
    fn serialises_as_its_string() {
        let p: Platform = serde_json::from_str("\"linux/arm64/v8\"").unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), "\"linux/arm64\"");
        assert!(serde_json::from_str::<Platform>("\"arm64\"").is_err());
    }
}
