//! Credentials from an env file, read as Docker Compose reads `.env`
//! files (through `dotenvy`): `KEY=value`, `export KEY=value`, `"double"`
//! quotes with escapes, `'single'` quotes taken literally, `#` comments,
//! CRLF line ends, a leading byte-order mark. Values are kept only to be
//! encoded into the Secret: no error message ever contains one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::error::RenderError;

/// The parsed env file: key → value.
pub type Credentials = BTreeMap<String, String>;

/// Reads `path`, accepting only `allowed` keys, each exactly once.
pub fn read_env_file(path: &Path, allowed: &BTreeSet<String>) -> Result<Credentials, RenderError> {
    let text = std::fs::read_to_string(path).map_err(|e| RenderError::io("read", path, e))?;
    parse_env(&text, allowed).map_err(|(line, why)| match line {
        Some(line) => RenderError::at_line(path, line, why),
        None => RenderError::invalid(path, why),
    })
}

/// Parses env-file text; an error is `(line, why)`, never quoting a value.
pub fn parse_env(
    text: &str,
    allowed: &BTreeSet<String>,
) -> Result<Credentials, (Option<u64>, String)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Credentials::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for item in dotenvy::from_read_iter(text.as_bytes()) {
        let (key, value) = item.map_err(|e| match e {
            // dotenvy's message quotes the line, which may hold a value.
            dotenvy::Error::LineParse(line, _) => (
                // A quoted value may span lines: its first line is the one.
                line.lines().next().and_then(|first| {
                    let first = first.trim_end_matches('\r');
                    line_of(text, |l| l.trim_end_matches('\r') == first)
                }),
                "cannot parse this line: expected KEY=value (an unclosed quote? quote a value with spaces or #)".to_owned(),
            ),
            _ => (None, "cannot read it as an env file".to_owned()),
        })?;
        let occurrence = seen.entry(key.clone()).or_default();
        *occurrence += 1;
        let line = nth_definition(text, &key, *occurrence);
        if !allowed.contains(&key) {
            return Err((
                line,
                format!(
                    "`{key}` is not a credential the catalogue knows (expected {})",
                    join(allowed)
                ),
            ));
        }
        if out.insert(key.clone(), value).is_some() {
            return Err((line, format!("`{key}` is set twice")));
        }
    }
    let missing: Vec<&String> = allowed.iter().filter(|k| !out.contains_key(*k)).collect();
    if !missing.is_empty() {
        return Err((
            None,
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

/// The 1-based number of the first line matching `wanted`.
fn line_of(text: &str, wanted: impl Fn(&str) -> bool) -> Option<u64> {
    text.lines().position(wanted).map(|i| i as u64 + 1)
}

/// The line of the `n`th definition of `key` (`KEY=` or `export KEY=`).
fn nth_definition(text: &str, key: &str, n: usize) -> Option<u64> {
    let defines = |line: &str| {
        let line = line.trim_start();
        let line = line.strip_prefix("export ").map_or(line, str::trim_start);
        line.strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with('='))
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| defines(l))
        .nth(n.saturating_sub(1))
        .map(|(i, _)| i as u64 + 1)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|k| (*k).to_owned()).collect()
    }

    fn parse(text: &str) -> Result<Credentials, (Option<u64>, String)> {
        parse_env(text, &keys(&["A", "B"]))
    }

    /// Issue 22 item 8: env files as users write them, read as Docker
    /// Compose reads `.env` files.
    #[test]
    fn env_files_as_users_write_them() {
        let table: &[(&str, &str, &str)] = &[
            ("plain", "A=one\nB=two\n", "one|two"),
            ("export", "export A=one\nexport B=two\n", "one|two"),
            (
                "double quotes keep spaces",
                "A=\"with spaces\"\nB=x\n",
                "with spaces|x",
            ),
            (
                "single quotes are literal",
                "A='a \\n $B'\nB=x\n",
                "a \\n $B|x",
            ),
            (
                "escapes in double quotes",
                "A=\"l1\\nl2 \\\"q\\\"\"\nB=x\n",
                "l1\nl2 \"q\"|x",
            ),
            (
                "comments",
                "# creds\nA=one # trailing\n\n  # indented\nB=two\n",
                "one|two",
            ),
            ("a # inside quotes stays", "A=\"p#ss\"\nB=x\n", "p#ss|x"),
            ("empty values", "A=\nB=\"\"\n", "|"),
            ("CRLF", "A=one\r\nB=two\r\n", "one|two"),
            ("byte-order mark", "\u{feff}A=one\nB=two\n", "one|two"),
            ("spaces around =", "A = one\nB= two\n", "one|two"),
        ];
        for (case, text, expected) in table {
            let parsed = parse(text).unwrap_or_else(|e| panic!("{case}: {e:?}"));
            let got = format!("{}|{}", parsed["A"], parsed["B"]);
            assert_eq!(&got, expected, "{case}");
        }
    }

    #[test]
    fn bad_lines_are_named_by_number_without_their_value() {
        let cases: &[(&str, Option<u64>, &str)] = &[
            (
                "A=one\nB=\"unclosed s3cret\n",
                Some(2),
                "cannot parse this line",
            ),
            (
                "A=one\nexport C=s3cret\nB=x\n",
                Some(2),
                "`C` is not a credential",
            ),
            ("A=one\nB=x\nexport A=s3cret\n", Some(3), "`A` is set twice"),
            ("A=one\n", None, "missing B"),
        ];
        for (text, line, why) in cases {
            let (got_line, got_why) = parse(text).unwrap_err();
            assert_eq!(got_line, *line, "{text:?}: {got_why}");
            assert!(got_why.contains(why), "{text:?}: {got_why}");
            assert!(!got_why.contains("s3cret"), "{got_why}");
        }
    }
}
