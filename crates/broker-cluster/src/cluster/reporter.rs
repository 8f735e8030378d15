//! Progress of a run: the library reports lines, only the binary prints
//! them (or, with `--json`, drops them).

/// Progress a run reports; only the binary prints.
pub trait Reporter: Send + Sync {
    /// One line of progress.
    fn line(&self, text: &str);
}

/// A reporter that drops everything (tests, `--json`).
#[derive(Debug, Default)]
pub struct Quiet;

impl Reporter for Quiet {
    fn line(&self, _text: &str) {}
}
