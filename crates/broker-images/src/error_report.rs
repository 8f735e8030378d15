//! How a failure is shown: one line, or with `--json` one JSON object.
//!
//! Every error type in the workspace says what failed in its own message and
//! leaves the cause to its `#[source]`, so walking the chain says each cause
//! once:
//!
//! ```text
//! error: python-base: layer `python-sources`: `…/pipe` is a fifo, which a layer cannot hold: exclude it
//! {"error":"python-base: layer `python-sources`","causes":["`…/pipe` is a fifo, which a layer cannot hold: exclude it"]}
//! ```

/// The final error as printed on stderr: `error: outer: cause: root` (what
/// anyhow's `{:#}` prints), or with `json` one object
/// `{"error": "<outermost>", "causes": ["<next>", …, "<root>"]}`.
pub fn render(err: &anyhow::Error, json: bool) -> String {
    if json {
        let mut chain = err.chain().map(ToString::to_string);
        let outermost = chain.next().unwrap_or_default();
        let causes: Vec<String> = chain.collect();
        serde_json::json!({ "error": outermost, "causes": causes }).to_string()
    } else {
        format!("error: {err:#}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read `x`")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn each_cause_is_said_once_in_both_forms() {
        let err = anyhow::Error::new(Outer(std::io::Error::other("denied")))
            .context("python-base: layer `app`");
        assert_eq!(
            render(&err, false),
            "error: python-base: layer `app`: cannot read `x`: denied"
        );
        let value: serde_json::Value = serde_json::from_str(&render(&err, true)).unwrap();
        assert_eq!(value["error"], "python-base: layer `app`");
        assert_eq!(
            value["causes"],
            serde_json::json!(["cannot read `x`", "denied"])
        );
    }
}
