//! An independent check of SBOMs: the CycloneDX project's own Python
//! library validating against the CycloneDX 1.5 JSON schema it bundles
//! (strict: unknown fields are errors). Runs offline.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::docker::require_tool;

const VALIDATE: &str = r"
import sys
try:
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator
except ImportError as e:
    print('MISSING', e)
    sys.exit(3)
error = JsonStrictValidator(SchemaVersion.V1_5).validate_str(sys.stdin.read())
if error is not None:
    print(error)
    sys.exit(1)
";

/// The validator's complaint about the CycloneDX 1.5 JSON `bom`, `None`
/// when it is valid.
///
/// # Panics
/// When `python3` on `PATH` lacks `cyclonedx-python-lib` with its JSON
/// validation extra (what `.ci/run` installs into `.ci/venv`).
pub fn schema_errors(bom: &[u8]) -> Option<String> {
    let python = require_tool("python3", "apt-get install -y python3-venv");
    let mut child = Command::new(python)
        .args(["-c", VALIDATE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("cannot run python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(bom)
        .expect("cannot write the SBOM to python3");
    let out = child.wait_with_output().expect("python3 did not finish");
    let said = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    match out.status.code() {
        Some(0) => None,
        Some(3) => panic!(
            "python3 on PATH lacks cyclonedx-python-lib ({said}): \
             .ci/venv/bin/pip install 'cyclonedx-python-lib[json-validation]' \
             and put .ci/venv/bin first on PATH (bash .ci/run does both)"
        ),
        _ => Some(said),
    }
}
