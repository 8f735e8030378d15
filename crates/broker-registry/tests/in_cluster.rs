//! The in-cluster registry manifests (`registry/`): kubectl builds them,
//! kubernetes-validate accepts them strictly, and the paths the shipped
//! config names are the ones the Deployment mounts.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::process::Command;

use broker_test_support::{repo_root, require_tool, run_ok};

fn rendered() -> String {
    let kubectl = require_tool(
        "kubectl",
        "install kubectl (it ships with the machine image)",
    );
    run_ok(
        Command::new(kubectl)
            .arg("kustomize")
            .arg(repo_root().join("registry")),
    )
}

#[test]
fn registry_manifests_validate_strictly() {
    let validate = require_tool("kubernetes-validate", "pip install kubernetes-validate");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("registry.yaml");
    std::fs::write(&file, rendered()).unwrap();
    let out = Command::new(validate)
        .args(["--strict", "-k", "1.33.0"])
        .arg(&file)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    for kind in [
        "namespace/broker-registry",
        "deployment/registry",
        "service/registry",
        "persistentvolumeclaim/registry-data",
    ] {
        assert!(text.contains(kind), "{kind} missing: {text}");
    }
}

#[test]
fn deployment_mounts_what_the_shipped_config_names_and_holds_no_secret() {
    let yaml = rendered();
    let config = std::fs::read_to_string(repo_root().join("registry/config.yml")).unwrap();
    for path in [
        "/etc/registry/tls.crt",
        "/etc/registry/tls.key",
        "/etc/registry/htpasswd",
        "/var/lib/registry",
    ] {
        assert!(config.contains(path), "config.yml no longer names {path}");
    }
    assert!(
        yaml.contains("mountPath: /etc/registry\n"),
        "credentials not mounted where config.yml expects them"
    );
    for item in ["path: tls.crt", "path: tls.key", "path: htpasswd"] {
        assert!(yaml.contains(item), "{item} missing");
    }
    assert!(yaml.contains("mountPath: /var/lib/registry"));
    assert!(
        yaml.contains("type: Recreate"),
        "two registries must never share the volume"
    );
    assert!(
        !yaml.contains("kind: Secret"),
        "credentials must be created by the operator, not shipped"
    );
    assert!(
        !config.contains("secret:"),
        "the upload secret belongs in REGISTRY_HTTP_SECRET"
    );
}
