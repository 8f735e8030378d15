//! Reading YAML with file:line errors, and writing it in one fixed style.
//!
//! Objects are held as [`serde_json::Value`]; the writer sorts every
//! mapping's keys itself, so the bytes do not depend on how the value was
//! built or on serde_json's map features. Strings are written plain only
//! when no YAML 1.1 or 1.2 reader could take them for anything else
//! (`yes`, `0755`, `1e3`, `12:30`), as literal blocks when they span lines,
//! and double-quoted otherwise.

use std::fmt::Write as _;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::RenderError;

/// Parses `text` (read from `path`) as one document of `T`; errors name the
/// file, line and column.
pub fn parse<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, RenderError> {
    serde_saphyr::from_str(text).map_err(|e| yaml_error(path, &e))
}

/// Parses every document of `text`, skipping empty ones.
pub fn parse_documents(path: &Path, text: &str) -> Result<Vec<Value>, RenderError> {
    let docs: Vec<Value> =
        serde_saphyr::from_str_multiple(text).map_err(|e| yaml_error(path, &e))?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

fn yaml_error(path: &Path, err: &serde_saphyr::Error) -> RenderError {
    let (line, column) = err
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((0, 0));
    let mut why = err.without_snippet().to_string();
    // The location is reported as file:line:column in front instead.
    if let Some(at) = why.find(" at line ") {
        why.truncate(at);
    }
    let why = why.lines().next().unwrap_or_default().to_owned();
    RenderError::Yaml {
        path: path.to_path_buf(),
        line,
        column,
        why,
    }
}

/// One document, ending with a newline.
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => write_map(&mut out, map, 0),
        Value::Array(items) if !items.is_empty() => write_seq(&mut out, items, 0),
        other => {
            write_inline(&mut out, other, 0);
            out.push('\n');
        }
    }
    out
}

fn indent(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

fn write_map(out: &mut String, map: &serde_json::Map<String, Value>, level: usize) {
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    for key in keys {
        let value = &map[key.as_str()];
        indent(out, level);
        if is_plain_safe(key) {
            out.push_str(key);
        } else {
            write_double_quoted(out, key);
        }
        out.push(':');
        write_value_after_key(out, value, level);
    }
}

fn write_value_after_key(out: &mut String, value: &Value, level: usize) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            write_map(out, map, level + 2);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            write_seq(out, items, level + 2);
        }
        other => {
            out.push(' ');
            write_inline(out, other, level + 2);
            out.push('\n');
        }
    }
}

fn write_seq(out: &mut String, items: &[Value], level: usize) {
    for item in items {
        indent(out, level);
        out.push_str("- ");
        match item {
            Value::Object(map) if !map.is_empty() => {
                // The first key sits on the dash's line, the rest below it.
                let mut first = String::new();
                write_map(&mut first, map, level + 2);
                out.push_str(first.get(level + 2..).unwrap_or_default());
            }
            Value::Array(inner) if !inner.is_empty() => {
                out.push('\n');
                write_seq(out, inner, level + 2);
            }
            other => {
                write_inline(out, other, level + 2);
                out.push('\n');
            }
        }
    }
}

/// Scalars and empty collections; `level` is the indentation a literal
/// block's lines need.
fn write_inline(out: &mut String, value: &Value, level: usize) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_scalar_string(out, s, level),
        Value::Array(_) => out.push_str("[]"),
        Value::Object(_) => out.push_str("{}"),
    }
}

fn write_scalar_string(out: &mut String, s: &str, level: usize) {
    if is_plain_safe(s) {
        out.push_str(s);
    } else if is_literal_safe(s) {
        write_literal(out, s, level);
    } else {
        write_double_quoted(out, s);
    }
}

/// Words YAML 1.1 readers (go-yaml among them) take for booleans or null.
const RESERVED: &[&str] = &[
    "y", "yes", "n", "no", "true", "false", "on", "off", "null", "~",
];

fn is_plain_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    // Anything starting like a number, sign or indicator is quoted: that
    // covers ints, floats, octals, sexagesimals and dates at once. Only
    // quantities (`200m`, `10Gi`) may start with a digit: a non-zero digit
    // run, then letters only, none an exponent.
    if first.is_ascii_digit() {
        return is_quantity(s);
    }
    if !(first.is_ascii_alphabetic() || first == '/' || first == '_') {
        return false;
    }
    if RESERVED.contains(&s.to_ascii_lowercase().as_str()) {
        return false;
    }
    if s.ends_with(':') || s.contains("://") {
        return false;
    }
    s.chars().all(|c| {
        c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-' | '@' | ':' | '=' | '+')
    })
}

fn is_quantity(s: &str) -> bool {
    let unit = s.trim_start_matches(|c: char| c.is_ascii_digit());
    !s.starts_with('0')
        && !unit.is_empty()
        && !unit.starts_with(['e', 'E'])
        && unit.chars().all(|c| c.is_ascii_alphabetic())
}

fn is_literal_safe(s: &str) -> bool {
    s.contains('\n')
        && !s.starts_with([' ', '\n', '\t'])
        && s.chars().all(|c| c == '\n' || c == '\t' || !needs_escape(c))
        // A line of blanks only would be read back as part of the
        // indentation, and trailing blanks of a line are fragile to editors.
        && s.lines().all(|l| l.is_empty() || !l.trim().is_empty())
}

fn write_literal(out: &mut String, s: &str, level: usize) {
    let trailing = s.len() - s.trim_end_matches('\n').len();
    out.push_str(match trailing {
        0 => "|-",
        1 => "|",
        _ => "|+",
    });
    let body = s.strip_suffix('\n').unwrap_or(s);
    for line in body.split('\n') {
        out.push('\n');
        if !line.is_empty() {
            indent(out, level);
            out.push_str(line);
        }
    }
}

/// Characters no YAML reader may see raw: controls, the byte order mark,
/// and the line and paragraph separators YAML 1.1 readers break lines at.
fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{feff}' | '\u{2028}' | '\u{2029}')
}

fn write_double_quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn writes_block_style_with_sorted_keys_and_reads_back() {
        let value = json!({
            "spec": {"containers": [{"name": "a", "args": ["-c", "echo \"$X\""], "ports": []}]},
            "data": {"init.sql": "CREATE TABLE t;\n\nSELECT 1 < 2;\n", "n": "5672", "b": "yes",
                     "empty": "", "two": "a\nb", "lead": " x\ny", "url": "http://x", "ref": "127.0.0.1:5000/b@sha256:ab",
                     "cpu": "200m", "exp": "1e3", "hex": "0xF", "e": "1E", "sep": "a\u{2028}b\nc"},
            "apiVersion": "v1",
            "count": 3,
            "flag": true,
        });
        let text = to_yaml(&value);
        assert!(
            text.starts_with("apiVersion: v1\ncount: 3\ndata:\n"),
            "{text}"
        );
        assert!(
            text.contains("  init.sql: |\n    CREATE TABLE t;\n\n    SELECT 1 < 2;\n"),
            "{text}"
        );
        assert!(text.contains("  \"n\": \"5672\"\n"), "{text}");
        assert!(text.contains("  b: \"yes\"\n"), "{text}");
        assert!(text.contains("  cpu: 200m\n  e: \"1E\"\n"), "{text}");
        assert!(text.contains("  sep: \"a\\u2028b\\nc\"\n"), "{text}");
        assert!(text.contains("  exp: \"1e3\"\n  hex: \"0xF\"\n"), "{text}");
        assert!(text.contains("    - args:\n        - \"-c\"\n"), "{text}");
        let back: Value = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(back, value, "{text}");
    }
}
