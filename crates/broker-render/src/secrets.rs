//! Credentials from an env file (`KEY=VALUE` lines, as kustomize's
//! `secretGenerator.envs` reads them). Values are kept only to be encoded
//! into the Secret: no error message ever contains one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::error::RenderError;

/// The parsed env file: key → value.
pub type Credentials = BTreeMap<String, String>;

/// Reads `path`, accepting only `allowed` keys. Lines are `KEY=VALUE`;
/// blank lines and `#` comments are skipped; the value is taken verbatim
/// (no quotes removed, as kustomize does).
pub fn read_env_file(path: &Path, allowed: &BTreeSet<String>) -> Result<Credentials, RenderError> {
    let text = std::fs::read_to_string(path).map_err(|e| RenderError::io("read", path, e))?;
    let mut out = Credentials::new();
    for (index, line) in text.lines().enumerate() {
        let line_no = index as u64 + 1;
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let Some((key, value)) = trimmed.split_once('=') else {
            return Err(RenderError::at_line(path, line_no, "expected KEY=VALUE"));
        };
        let key = key.trim();
        if !allowed.contains(key) {
            return Err(RenderError::at_line(
                path,
                line_no,
                format!(
                    "`{key}` is not a credential the catalogue knows (expected {})",
                    join(allowed)
                ),
            ));
        }
        if out.insert(key.to_owned(), value.to_owned()).is_some() {
            return Err(RenderError::at_line(
                path,
                line_no,
                format!("`{key}` is set twice"),
            ));
        }
    }
    let missing: Vec<&String> = allowed.iter().filter(|k| !out.contains_key(*k)).collect();
    if !missing.is_empty() {
        return Err(RenderError::invalid(
            path,
            format!(
                "missing {}; see environments/env.sample",
                missing
                    .iter()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    Ok(out)
}

/// The keys whose values are placeholders: empty, `CHANGEME` (any case,
/// anywhere in the value) or `<…>`.
pub fn placeholders(credentials: &Credentials) -> Vec<&str> {
    credentials
        .iter()
        .filter(|(_, v)| {
            let v = v.trim();
            v.is_empty()
                || v.to_ascii_lowercase().contains("changeme")
                || (v.starts_with('<') && v.ends_with('>'))
        })
        .map(|(k, _)| k.as_str())
        .collect()
}

fn join(keys: &BTreeSet<String>) -> String {
    keys.iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}
