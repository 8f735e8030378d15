//! Canonical JSON: the bytes that get hashed into config and manifest digests.
//!
//! oci-spec keeps labels and annotations in `HashMap`s, whose iteration order
//! changes from run to run; serialising them directly would give a different
//! digest for the same image. Every object's keys are sorted here instead,
//! whatever serde_json's map type is in this build.

use serde::Serialize;
use serde_json::{Map, Value};

/// Compact JSON of `value` with every object's keys sorted bytewise.
///
/// # Errors
/// `value` cannot be represented as JSON (e.g. a map with non-string keys).
pub fn canonical_json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    let v = sort_keys(serde_json::to_value(value)?);
    serde_json::to_vec(&v)
}

fn sort_keys(v: Value) -> Value {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            let mut sorted = Map::new();
            for (k, v) in entries {
                sorted.insert(k, sort_keys(v));
            }
            Value::Object(sorted)
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sort_keys).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn keys_are_sorted_at_every_level() {
        let mut inner = HashMap::new();
        for k in ["zeta", "alpha", "mid", "Beta"] {
            inner.insert(k.to_owned(), 1);
        }
        let mut outer = HashMap::new();
        outer.insert("b".to_owned(), vec![inner.clone()]);
        outer.insert("a".to_owned(), vec![inner]);
        let json = String::from_utf8(canonical_json(&outer).unwrap()).unwrap();
        assert_eq!(
            json,
            r#"{"a":[{"Beta":1,"alpha":1,"mid":1,"zeta":1}],"b":[{"Beta":1,"alpha":1,"mid":1,"zeta":1}]}"#
        );
    }
}
