//! Keys made by openssl, signatures checked by openssl: the independent
//! verifier for everything this crate signs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use broker_attest::{
    KeyError, PublicKey, SignatureProblem, SigningKey, check_signatures, sign_image,
    signature_manifest, signature_tag,
};
use broker_pins::Digest;
use broker_test_support::{require_tool, run_ok};

fn openssl() -> Command {
    Command::new(require_tool("openssl", "apt-get install -y openssl"))
}

/// `openssl ARGS…` in `dir`.
fn openssl_in(dir: &Path, args: &[&str]) -> String {
    run_ok(openssl().current_dir(dir).args(args))
}

/// A fresh P-256 key in `dir/name` (PKCS#8, as `openssl genpkey` writes).
fn p256_key(dir: &Path, name: &str) -> PathBuf {
    let args = [
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        name,
    ];
    openssl_in(dir, &args);
    dir.join(name)
}

/// Whether openssl says `signature` (DER) by the public key `public` is
/// valid over `message`.
fn openssl_verifies(dir: &Path, public: &Path, message: &[u8], signature: &[u8]) -> bool {
    std::fs::write(dir.join("message"), message).unwrap();
    std::fs::write(dir.join("signature.der"), signature).unwrap();
    let out = openssl()
        .current_dir(dir)
        .args(["dgst", "-sha256", "-verify"])
        .arg(public)
        .args(["-signature", "signature.der", "message"])
        .output()
        .unwrap();
    out.status.success()
}

fn public_of(dir: &Path, key: &Path, name: &str) -> PathBuf {
    openssl_in(
        dir,
        &[
            "pkey",
            "-in",
            key.to_str().unwrap(),
            "-pubout",
            "-out",
            name,
        ],
    );
    dir.join(name)
}

#[test]
fn openssl_verifies_what_a_pkcs8_key_signs_and_our_public_key_matches_its() {
    let tmp = tempfile::tempdir().unwrap();
    let key_path = p256_key(tmp.path(), "cosign.key");
    let public = public_of(tmp.path(), &key_path, "cosign.pub");
    let key = SigningKey::from_file(&key_path, None).unwrap();

    let signature = key.sign_der(b"hello");
    assert!(openssl_verifies(tmp.path(), &public, b"hello", &signature));
    assert!(!openssl_verifies(tmp.path(), &public, b"hellO", &signature));
    // Deterministic: signing again gives the same bytes.
    assert_eq!(key.sign_der(b"hello"), signature);

    let ours = key.public_key().to_pem();
    assert_eq!(ours, std::fs::read_to_string(&public).unwrap());
    assert!(
        PublicKey::from_file(&public)
            .unwrap()
            .verifies(b"hello", &signature)
    );
}

#[test]
fn sec1_and_encrypted_keys_read_and_sign_like_the_plain_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let plain = p256_key(dir, "plain.key");
    openssl_in(dir, &["ec", "-in", "plain.key", "-out", "sec1.key"]);
    openssl_in(
        dir,
        &[
            "pkcs8",
            "-topk8",
            "-v2",
            "aes-256-cbc",
            "-in",
            "plain.key",
            "-out",
            "enc.key",
            "-passout",
            "pass:s3cret-phrase",
        ],
    );
    assert!(
        std::fs::read_to_string(dir.join("sec1.key"))
            .unwrap()
            .starts_with("-----BEGIN EC PRIVATE KEY-----")
    );
    let want = SigningKey::from_file(&plain, None).unwrap().sign_der(b"m");
    let sec1 = SigningKey::from_file(&dir.join("sec1.key"), None).unwrap();
    assert_eq!(sec1.sign_der(b"m"), want);
    let enc = SigningKey::from_file(&dir.join("enc.key"), Some("s3cret-phrase")).unwrap();
    assert_eq!(enc.sign_der(b"m"), want);

    // Encrypted without or with a wrong passphrase: one line naming the
    // file and the cause, never the passphrase.
    let none = SigningKey::from_file(&dir.join("enc.key"), None).unwrap_err();
    assert!(matches!(none, KeyError::PassphraseNeeded { .. }), "{none}");
    assert!(none.to_string().contains("enc.key is encrypted"), "{none}");
    assert!(none.to_string().contains("BROKER_IMAGES_SIGN_PASSPHRASE"));
    let wrong = SigningKey::from_file(&dir.join("enc.key"), Some("guess")).unwrap_err();
    assert!(matches!(wrong, KeyError::WrongPassphrase { .. }), "{wrong}");
    assert!(!wrong.to_string().contains("guess"));
    assert!(!format!("{wrong:?}").contains("guess"));
}

#[test]
fn keys_of_another_kind_are_refused_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    openssl_in(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "rsa.key",
        ],
    );
    openssl_in(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
            "-out",
            "p384.key",
        ],
    );
    std::fs::write(dir.join("junk.key"), "not a key\n").unwrap();
    let p256 = p256_key(dir, "p256.key");
    let public = public_of(dir, &p256, "p256.pub");

    for (name, kind) in [
        ("rsa.key", "P-256"),
        ("p384.key", "P-256"),
        ("junk.key", "PEM"),
    ] {
        let err = SigningKey::from_file(&dir.join(name), None).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(name) && text.contains(kind), "{text}");
        assert!(!text.contains('\n'), "{text}");
    }
    let err = SigningKey::from_file(&public, None).unwrap_err();
    assert!(err.to_string().contains("a public key"), "{err}");
    let err = PublicKey::from_file(&p256).unwrap_err();
    assert!(err.to_string().contains("a private key"), "{err}");
    let err = SigningKey::from_file(&dir.join("absent.key"), None).unwrap_err();
    assert!(err.to_string().starts_with("cannot read the key"), "{err}");
}

#[test]
fn a_signature_manifest_holds_a_cosign_payload_openssl_verifies() {
    use base64::Engine as _;
    let tmp = tempfile::tempdir().unwrap();
    let key_path = p256_key(tmp.path(), "cosign.key");
    let public = public_of(tmp.path(), &key_path, "cosign.pub");
    let key = SigningKey::from_file(&key_path, None).unwrap();
    let image = Digest::of(b"manifest");
    let repository = "127.0.0.1:5000/broker/python-base";

    let signed = sign_image(&key, repository, &image);
    let payload: serde_json::Value = serde_json::from_slice(&signed.payload).unwrap();
    assert_eq!(
        payload,
        serde_json::json!({
            "critical": {
                "identity": { "docker-reference": repository },
                "image": { "docker-manifest-digest": image.to_string() },
                "type": "cosign container image signature",
            },
            "optional": null,
        })
    );
    let artifact = signature_manifest(None, &signed).unwrap().unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&artifact.manifest).unwrap();
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let layer = &manifest["layers"][0];
    assert_eq!(
        layer["mediaType"],
        "application/vnd.dev.cosign.simplesigning.v1+json"
    );
    assert_eq!(layer["digest"], Digest::of(&signed.payload).to_string());
    let der = base64::engine::general_purpose::STANDARD
        .decode(
            layer["annotations"]["dev.cosignproject.cosign/signature"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    assert!(openssl_verifies(tmp.path(), &public, &signed.payload, &der));
    assert_eq!(signature_tag(&image), format!("sha256-{}.sig", image.hex()));
    // Both blobs the manifest names are in the artifact.
    assert_eq!(artifact.blobs.len(), 2);
    assert_eq!(Digest::of(&artifact.blobs[1]), Digest::of(&signed.payload));
    assert_eq!(
        manifest["config"]["digest"],
        Digest::of(&artifact.blobs[0]).to_string()
    );
}

#[test]
fn another_signature_is_kept_and_tampering_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let ours = SigningKey::from_file(&p256_key(tmp.path(), "ours.key"), None).unwrap();
    let theirs = SigningKey::from_file(&p256_key(tmp.path(), "theirs.key"), None).unwrap();
    let repository = "r.example/broker/app";
    let image = Digest::of(b"image");
    let other_image = Digest::of(b"another image");

    let their_signature = sign_image(&theirs, repository, &image);
    let first = signature_manifest(None, &their_signature).unwrap().unwrap();
    let our_signature = sign_image(&ours, repository, &image);
    let both = signature_manifest(Some(&first.manifest), &our_signature)
        .unwrap()
        .unwrap();
    let kept: Vec<Digest> = both.kept.iter().map(|l| l.digest).collect();
    assert_eq!(kept, vec![Digest::of(&their_signature.payload)]);

    let payloads = [
        their_signature.payload.clone(),
        our_signature.payload.clone(),
    ];
    let payload = |d: &Digest| payloads.iter().find(|p| Digest::of(p) == *d).cloned();
    let public = ours.public_key();
    check_signatures(&both.manifest, &payload, &public, repository, &image).unwrap();
    // Only their signature: not by our key.
    let problem =
        check_signatures(&first.manifest, &payload, &public, repository, &image).unwrap_err();
    assert_eq!(problem, SignatureProblem::NotByKey { found: 1 });

    // Our valid signature of another image put under this image's tag.
    let elsewhere = sign_image(&ours, repository, &other_image);
    let moved = signature_manifest(None, &elsewhere).unwrap().unwrap();
    let payload = |_: &Digest| Some(elsewhere.payload.clone());
    let problem =
        check_signatures(&moved.manifest, &payload, &public, repository, &image).unwrap_err();
    assert!(
        problem.to_string().contains(&other_image.to_string()),
        "{problem}"
    );
    // The same image signed for another repository.
    let problem = check_signatures(
        &signature_manifest(None, &sign_image(&ours, "r.example/x", &image))
            .unwrap()
            .unwrap()
            .manifest,
        &|_: &Digest| Some(sign_image(&ours, "r.example/x", &image).payload),
        &public,
        repository,
        &image,
    )
    .unwrap_err();
    assert!(matches!(problem, SignatureProblem::OtherImage { .. }));
}
