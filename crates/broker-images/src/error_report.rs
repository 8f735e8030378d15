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

/// The `--json` form of a failure; fields in this order.
#[derive(serde::Serialize)]
struct JsonError {
    /// The outermost message: what failed.
    error: String,
    /// Why, outermost first, the root cause last.
    causes: Vec<String>,
}

/// The final error as printed on stderr: `error: outer: cause: root` (what
/// anyhow's `{:#}` prints), or with `json` one object
/// `{"error": "<outermost>", "causes": ["<next>", …, "<root>"]}`.
pub fn render(err: &anyhow::Error, json: bool) -> String {
    if json {
        let mut chain = err.chain().map(ToString::to_string);
        let report = JsonError {
            error: chain.next().unwrap_or_default(),
            causes: chain.collect(),
        };
        // Two strings and a list of strings always serialise.
        serde_json::to_string(&report).unwrap_or_default()
    } else {
        format!("error: {err:#}")
    }
}

/// A command-line usage error with `--json`: clap's message (its first
/// line, without clap's `error: ` and usage hints) as the error, no causes.
pub fn render_usage(err: &clap::Error) -> String {
    let rendered = err.render().to_string();
    let first = rendered.lines().next().unwrap_or_default();
    let report = JsonError {
        error: first.strip_prefix("error: ").unwrap_or(first).to_owned(),
        causes: Vec::new(),
    };
    serde_json::to_string(&report).unwrap_or_default()
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
