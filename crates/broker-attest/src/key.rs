//! Signing keys (ECDSA P-256, what cosign, Kyverno and policy-controller
//! verify with a public key) read from PEM: PKCS#8 (`PRIVATE KEY`, what
//! `openssl genpkey` writes), encrypted PKCS#8 (`ENCRYPTED PRIVATE KEY`)
//! and SEC1 (`EC PRIVATE KEY`, what `openssl ecparam -genkey` writes);
//! public keys as `PUBLIC KEY` (SubjectPublicKeyInfo).
//!
//! Neither the key nor the passphrase is ever part of an error or of
//! `Debug` output: errors name the file and the cause only.

use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey as EcdsaSigningKey, VerifyingKey};
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey, LineEnding};

/// Why a key could not be used; every variant names the file (`key`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The file could not be read.
    #[error("cannot read the key {key}: {why}")]
    Unreadable {
        /// The key file.
        key: String,
        /// The I/O error.
        why: String,
    },
    /// No PEM block of a kind this tool reads.
    #[error(
        "the key {key} is not a PEM private key ({found}): make one with `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out {key}`"
    )]
    NotPem {
        /// The key file.
        key: String,
        /// What was found instead.
        found: String,
    },
    /// A key file format this tool does not read.
    #[error("the key {key} is {what}: convert it to PKCS#8 PEM ({how})")]
    Unsupported {
        /// The key file.
        key: String,
        /// What it is.
        what: String,
        /// How to get a usable one.
        how: String,
    },
    /// PEM, but not an ECDSA P-256 key.
    #[error("the key {key} is not an ECDSA P-256 key (cosign and Kyverno verify P-256): {why}")]
    NotP256 {
        /// The key file.
        key: String,
        /// The decoder's reason.
        why: String,
    },
    /// The key is encrypted and no passphrase was given.
    #[error("the key {key} is encrypted: give its passphrase in {env} or with --passphrase-stdin")]
    PassphraseNeeded {
        /// The key file.
        key: String,
        /// The environment variable that carries the passphrase.
        env: &'static str,
    },
    /// The passphrase does not decrypt the key.
    #[error("the key {key} does not decrypt with the passphrase given (wrong passphrase)")]
    WrongPassphrase {
        /// The key file.
        key: String,
    },
    /// The key is encrypted with a scheme this tool does not decrypt.
    #[error(
        "the key {key} is encrypted with a scheme this tool does not read ({why}): re-encrypt it with `openssl pkcs8 -topk8 -v2 aes-256-cbc`"
    )]
    UnsupportedEncryption {
        /// The key file.
        key: String,
        /// The decoder's reason.
        why: String,
    },
}

/// The environment variable an encrypted key's passphrase is read from.
pub const PASSPHRASE_ENV: &str = "BROKER_IMAGES_SIGN_PASSPHRASE";

/// An ECDSA P-256 private key. Signing is deterministic (RFC 6979): the
/// same key and message always give the same signature.
#[derive(Clone)]
pub struct SigningKey(EcdsaSigningKey);

/// Shows nothing of the key.
impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(P-256)")
    }
}

impl SigningKey {
    /// Reads the key in `pem` (from the file named `key`, for errors),
    /// decrypting it with `passphrase` when it is encrypted.
    pub fn from_pem(pem: &str, passphrase: Option<&str>, key: &str) -> Result<Self, KeyError> {
        let label = pem_label(pem).ok_or_else(|| KeyError::NotPem {
            key: key.to_owned(),
            found: "no `-----BEGIN …-----` line".to_owned(),
        })?;
        let not_p256 = |why: String| KeyError::NotP256 {
            key: key.to_owned(),
            why,
        };
        let secret = match label {
            "PRIVATE KEY" => {
                p256::SecretKey::from_pkcs8_pem(pem).map_err(|e| not_p256(e.to_string()))?
            }
            "EC PRIVATE KEY" => {
                p256::SecretKey::from_sec1_pem(pem).map_err(|e| not_p256(e.to_string()))?
            }
            "ENCRYPTED PRIVATE KEY" => decrypt(pem, passphrase, key)?,
            "ENCRYPTED SIGSTORE PRIVATE KEY" | "ENCRYPTED COSIGN PRIVATE KEY" => {
                return Err(KeyError::Unsupported {
                    key: key.to_owned(),
                    what: "a cosign key (scrypt and secretbox, not PKCS#8)".to_owned(),
                    how:
                        "make a PKCS#8 key with openssl and `cosign import-key-pair` it for cosign"
                            .to_owned(),
                });
            }
            "PUBLIC KEY" => {
                return Err(KeyError::Unsupported {
                    key: key.to_owned(),
                    what: "a public key; signing needs the private key".to_owned(),
                    how: "pass the private key; the public key is for verify".to_owned(),
                });
            }
            other => {
                return Err(KeyError::NotPem {
                    key: key.to_owned(),
                    found: format!("a `{other}` block"),
                });
            }
        };
        Ok(Self(EcdsaSigningKey::from(secret)))
    }

    /// Reads the key file at `path`.
    pub fn from_file(path: &std::path::Path, passphrase: Option<&str>) -> Result<Self, KeyError> {
        let key = path.display().to_string();
        let pem = read_pem_file(path)?;
        Self::from_pem(&pem, passphrase, &key)
    }

    /// The DER-encoded ECDSA signature (SHA-256) over `message`, the form
    /// cosign stores base64-encoded and `openssl dgst -verify` reads.
    #[must_use]
    pub fn sign_der(&self, message: &[u8]) -> Vec<u8> {
        let signature: Signature = self.0.sign(message);
        signature.to_der().as_bytes().to_vec()
    }

    /// The matching public key.
    #[must_use]
    pub fn public_key(&self) -> PublicKey {
        PublicKey(*self.0.verifying_key())
    }
}

/// Decrypts an `ENCRYPTED PRIVATE KEY` block.
fn decrypt(pem: &str, passphrase: Option<&str>, key: &str) -> Result<p256::SecretKey, KeyError> {
    use pkcs8::der::Decode;
    let passphrase = passphrase.ok_or_else(|| KeyError::PassphraseNeeded {
        key: key.to_owned(),
        env: PASSPHRASE_ENV,
    })?;
    let (_, der) = pkcs8::der::pem::decode_vec(pem.as_bytes()).map_err(|e| KeyError::NotPem {
        key: key.to_owned(),
        found: format!("a PEM block that does not decode: {e}"),
    })?;
    let info = pkcs8::EncryptedPrivateKeyInfo::from_der(&der).map_err(|e| KeyError::NotP256 {
        key: key.to_owned(),
        why: e.to_string(),
    })?;
    let plain = match info.decrypt(passphrase) {
        Ok(plain) => plain,
        // pkcs5 0.7 reports bad padding after decryption (what a wrong
        // passphrase gives) as `EncryptFailed`; either means "wrong".
        Err(pkcs8::Error::EncryptedPrivateKey(
            pkcs8::pkcs5::Error::DecryptFailed | pkcs8::pkcs5::Error::EncryptFailed,
        )) => {
            return Err(KeyError::WrongPassphrase {
                key: key.to_owned(),
            });
        }
        Err(e) => {
            return Err(KeyError::UnsupportedEncryption {
                key: key.to_owned(),
                why: e.to_string(),
            });
        }
    };
    // A wrong passphrase can still yield valid padding (1 in 256): the
    // plaintext is then no key at all, and that is what it says.
    p256::SecretKey::from_pkcs8_der(plain.as_bytes()).map_err(|_| KeyError::WrongPassphrase {
        key: key.to_owned(),
    })
}

/// Reads a PEM file, naming it in the error.
fn read_pem_file(path: &std::path::Path) -> Result<String, KeyError> {
    let key = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| KeyError::Unreadable {
        key: key.clone(),
        why: e.to_string(),
    })?;
    String::from_utf8(bytes).map_err(|_| KeyError::NotPem {
        key,
        found: "binary data (a DER file?)".to_owned(),
    })
}

/// The label of the first PEM block (`PRIVATE KEY`).
fn pem_label(pem: &str) -> Option<&str> {
    let start = pem.find("-----BEGIN ")? + "-----BEGIN ".len();
    let rest = &pem[start..];
    let end = rest.find("-----")?;
    Some(&rest[..end])
}

/// An ECDSA P-256 public key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PublicKey(P-256)")
    }
}

impl PublicKey {
    /// Reads a `PUBLIC KEY` PEM block (from the file named `key`).
    pub fn from_pem(pem: &str, key: &str) -> Result<Self, KeyError> {
        match pem_label(pem) {
            Some("PUBLIC KEY") => VerifyingKey::from_public_key_pem(pem)
                .map(Self)
                .map_err(|e| KeyError::NotP256 {
                    key: key.to_owned(),
                    why: e.to_string(),
                }),
            Some(label) if label.contains("PRIVATE KEY") => Err(KeyError::Unsupported {
                key: key.to_owned(),
                what: "a private key; verifying takes the public key".to_owned(),
                how: format!("`openssl pkey -in {key} -pubout -out KEY.pub`"),
            }),
            found => Err(KeyError::NotPem {
                key: key.to_owned(),
                found: found.map_or_else(
                    || "no `-----BEGIN PUBLIC KEY-----` line".to_owned(),
                    |l| format!("a `{l}` block"),
                ),
            }),
        }
    }

    /// Reads the public key file at `path`.
    pub fn from_file(path: &std::path::Path) -> Result<Self, KeyError> {
        let key = path.display().to_string();
        Self::from_pem(&read_pem_file(path)?, &key)
    }

    /// Whether `der` is this key's ECDSA SHA-256 signature over `message`.
    #[must_use]
    pub fn verifies(&self, message: &[u8], der: &[u8]) -> bool {
        Signature::from_der(der).is_ok_and(|signature| self.0.verify(message, &signature).is_ok())
    }

    /// The key as a `PUBLIC KEY` PEM block.
    #[must_use]
    pub fn to_pem(&self) -> String {
        self.0.to_public_key_pem(LineEnding::LF).unwrap_or_default()
    }
}
