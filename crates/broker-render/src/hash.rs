//! The content-hash suffix kustomize gives generated ConfigMaps and Secrets
//! (`db-init-7fb8m5k2hd`). Render must produce the very same suffix as
//! `kubectl kustomize` for the same generator input, so that output made by
//! either tool names the same objects; the differential test
//! `generated_names_equal_kubectl_kustomize` (in `tests/render.rs`) holds
//! the two together.
//!
//! The suffix is computed from a JSON object with the keys `kind`, `name`,
//! `data` (and `type` for Secrets, `binaryData` for ConfigMaps when present),
//! encoded the way Go's `encoding/json` does (sorted keys, HTML-safe
//! escapes), hashed with SHA-256; the first ten hex digits are then spelled
//! without vowel-looking characters so no accidental words appear.
//!
//! `name` is always empty: that is what kustomize 5.5 (inside kubectl
//! 1.32) hashes for generated objects, as the differential test against
//! `kubectl kustomize` shows — with the generator's name in the JSON every
//! suffix differs from kubectl's. Two generators with the same content
//! therefore get the same suffix (their base names still differ).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use sha2::{Digest as _, Sha256};

/// The suffix for a generated ConfigMap holding `data` (text entries) and
/// `binary_data` (base64 entries, for files that are not UTF-8).
pub fn config_map_suffix(
    data: &BTreeMap<String, String>,
    binary_data: &BTreeMap<String, String>,
) -> String {
    // Keys in Go's map order: sorted bytewise.
    let mut json = String::from("{");
    if !binary_data.is_empty() {
        json.push_str("\"binaryData\":");
        push_map(&mut json, binary_data);
        json.push(',');
    }
    json.push_str("\"data\":");
    push_data(&mut json, data);
    json.push_str(",\"kind\":\"ConfigMap\",\"name\":\"\"}");
    suffix_of(&json)
}

/// The suffix for a generated Secret of `secret_type` (`Opaque`) whose
/// `data` values are already base64-encoded, as they are in the object.
pub fn secret_suffix(secret_type: &str, data: &BTreeMap<String, String>) -> String {
    let mut json = String::from("{\"data\":");
    push_data(&mut json, data);
    json.push_str(",\"kind\":\"Secret\",\"name\":\"\",\"type\":");
    push_string(&mut json, secret_type);
    json.push('}');
    suffix_of(&json)
}

/// An object without a `data` field hashes it as the empty string, not as
/// an empty map: kustomize looks the field up and falls back to `""`.
fn push_data(json: &mut String, data: &BTreeMap<String, String>) {
    if data.is_empty() {
        json.push_str("\"\"");
    } else {
        push_map(json, data);
    }
}

fn push_map(json: &mut String, map: &BTreeMap<String, String>) {
    json.push('{');
    for (i, (key, value)) in map.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        push_string(json, key);
        json.push(':');
        push_string(json, value);
    }
    json.push('}');
}

/// A JSON string as Go's `encoding/json` writes it: besides the usual
/// escapes it turns `<`, `>`, `&`, U+2028 and U+2029 into `\u` escapes —
/// serde_json does not, so SQL with `<` in it would hash differently.
fn push_string(json: &mut String, text: &str) {
    json.push('"');
    for c in text.chars() {
        match c {
            '"' => json.push_str("\\\""),
            '\\' => json.push_str("\\\\"),
            '\n' => json.push_str("\\n"),
            '\r' => json.push_str("\\r"),
            '\t' => json.push_str("\\t"),
            '\u{08}' => json.push_str("\\b"),
            '\u{0c}' => json.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(json, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(json, "\\u{:04x}", c as u32);
            }
            c => json.push(c),
        }
    }
    json.push('"');
}

fn suffix_of(json: &str) -> String {
    let digest = Sha256::digest(json.as_bytes());
    let mut hex = String::with_capacity(10);
    for byte in digest.iter().take(5) {
        let _ = write!(hex, "{byte:02x}");
    }
    // Digits and letters that could spell words are swapped for consonants.
    hex.chars()
        .map(|c| match c {
            '0' => 'g',
            '1' => 'h',
            '3' => 'k',
            'a' => 'm',
            'e' => 't',
            c => c,
        })
        .collect()
}

/// Standard base64 with padding, as Secret `data` values are written.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn go_json_escapes_html_characters() {
        let mut s = String::new();
        push_string(&mut s, "a<b>&\"\\\n\u{1}\u{2028}é");
        assert_eq!(s, r#""a\u003cb\u003e\u0026\"\\\n\u0001\u2028é""#);
    }

    /// The vectors of kustomize's own hasher tests (objects without a name).
    #[test]
    fn matches_kustomize_hasher_vectors() {
        let none = BTreeMap::new();
        let one: BTreeMap<String, String> = [("one".to_owned(), String::new())].into();
        let two: BTreeMap<String, String> = [("two".to_owned(), String::new())].into();
        assert_eq!(config_map_suffix(&none, &none), "6ct58987ht");
        assert_eq!(config_map_suffix(&one, &none), "9g67k2htb6");
        assert_eq!(config_map_suffix(&none, &one), "6mtk2m274t");
        assert_eq!(config_map_suffix(&one, &two), "698h7c7t9m");
        assert_eq!(secret_suffix("my-type", &none), "5gmgkf8578");
        assert_eq!(secret_suffix("my-type", &one), "74bd68bm66");
    }

    #[test]
    fn suffix_has_ten_characters_without_vowel_lookalikes() {
        let mut data = BTreeMap::new();
        data.insert("k".to_owned(), "v".to_owned());
        let s = config_map_suffix(&data, &BTreeMap::new());
        assert_eq!(s.len(), 10);
        assert!(!s.contains(['0', '1', '3', 'a', 'e']), "{s}");
    }
}
