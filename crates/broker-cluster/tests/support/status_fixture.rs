//! Recorded API objects in `tests/fixtures/status/`, shaped as the API
//! server returns them, for the tests that classify and report on them.

use std::path::Path;

/// The recorded object in `tests/fixtures/status/<name>`.
pub fn load<T: serde::de::DeserializeOwned>(name: &str) -> T {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/status")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}
