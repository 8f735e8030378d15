//! The deps stage's build output made readable: terminal escapes removed,
//! the full log kept in the store, and on failure an excerpt that shows
//! which package failed — the lines around the first error marker of pip,
//! npm or apt, then the tail — rather than only the last lines, where
//! pip's summary often hides the cause.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Where a line starting with one of these (after leading blanks) is the
/// first sign of what failed: pip (`ERROR:`, `error:` of
/// subprocess-exited-with-error), npm (`npm ERR!`, `npm error` since npm
/// 10), apt (`E: `), and generic tools (`Error:`, `fatal:`).
pub const ERROR_MARKERS: &[&str] = &[
    "ERROR:",
    "error:",
    "npm ERR!",
    "npm error",
    "E: ",
    "Error:",
    "fatal:",
];

/// Lines shown before the first error marker.
const BEFORE_MARKER: usize = 3;
/// Lines shown from the first error marker on.
const FROM_MARKER: usize = 12;
/// Lines shown from the end of the failing step's output.
const TAIL: usize = 15;

/// The line [`excerpt`] puts between the lines around the marker and the
/// tail when lines were left out.
pub const ELLIPSIS: &str = "…";

/// `text` without terminal escape sequences (colours, cursor movement,
/// window titles) and other control characters; in each line only what a
/// terminal would show after the last carriage return is kept, so that
/// progress bars drawn over themselves leave their final state.
pub fn strip_terminal_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.next() {
                // CSI: parameters and intermediates up to a final byte.
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC: up to BEL or ESC \.
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' {
                            break;
                        }
                        if c == '\u{1b}' {
                            chars.next_if_eq(&'\\');
                            break;
                        }
                    }
                }
                // Character set selection takes one more character.
                Some('(' | ')' | '*' | '+') => {
                    chars.next();
                }
                _ => {}
            },
            // C1 CSI.
            '\u{9b}' => {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            '\n' | '\t' | '\r' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.split('\n')
        .map(|line| {
            line.split('\r')
                .rfind(|part| !part.trim().is_empty())
                .unwrap_or("")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether `line` is where a failure shows first (see [`ERROR_MARKERS`]).
pub fn is_error_marker(line: &str) -> bool {
    let line = line.trim_start();
    ERROR_MARKERS.iter().any(|m| line.starts_with(m))
}

/// What to show of a failing step's output `lines`: the lines around the
/// first error marker, then the tail, with [`ELLIPSIS`] where lines were
/// left out; the tail alone when no line is a marker.
pub fn excerpt(lines: &[String]) -> Vec<String> {
    let tail_start = lines.len().saturating_sub(TAIL);
    let Some(marker) = lines.iter().position(|l| is_error_marker(l)) else {
        let mut out = Vec::new();
        if tail_start > 0 {
            out.push(ELLIPSIS.to_owned());
        }
        out.extend_from_slice(&lines[tail_start..]);
        return out;
    };
    let start = marker.saturating_sub(BEFORE_MARKER);
    let end = (marker + FROM_MARKER).min(lines.len());
    let mut out = Vec::new();
    if start > 0 {
        out.push(ELLIPSIS.to_owned());
    }
    if end >= tail_start {
        // The marker's lines run into the tail: one block.
        out.extend_from_slice(&lines[start..]);
        return out;
    }
    out.extend_from_slice(&lines[start..end]);
    out.push(ELLIPSIS.to_owned());
    out.extend_from_slice(&lines[tail_start..]);
    out
}

/// The full output of one deps build, written to a file in the store as it
/// arrives (escapes removed), so that a failure can point at all of it.
#[derive(Debug)]
pub struct DepsLog {
    path: PathBuf,
    file: Option<std::io::BufWriter<std::fs::File>>,
}

impl DepsLog {
    /// The log of the deps image `store_tag` (`NAME:deps-<key>`) under
    /// `<store>/logs/`, replacing an earlier one of the same key. When the
    /// file cannot be created the build goes on without it (the log is an
    /// aid, not a result).
    pub fn create(store_dir: &Path, store_tag: &str) -> Self {
        let name: String = store_tag
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let path = store_dir.join("logs").join(format!("{name}.log"));
        let file = std::fs::create_dir_all(store_dir.join("logs"))
            .and_then(|()| std::fs::File::create(&path))
            .ok()
            .map(std::io::BufWriter::new);
        Self { path, file }
    }

    /// Appends one line.
    pub fn line(&mut self, line: &str) {
        if let Some(file) = &mut self.file
            && writeln!(file, "{line}").is_err()
        {
            self.file = None;
        }
    }

    /// Flushes the log; its path, when it was written.
    pub fn finish(mut self) -> Option<PathBuf> {
        let mut file = self.file.take()?;
        file.flush().ok()?;
        Some(self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_overdrawn_progress_are_removed() {
        let text = "\u{1b}[31mERROR:\u{1b}[0m no \u{1b}[1;33mmatching\u{1b}[0m dist\n\u{1b}]0;title\u{7}plain\n 10%\r 50%\r100%\n\u{1b}(Bdone\u{7}";
        assert_eq!(
            strip_terminal_escapes(text),
            "ERROR: no matching dist\nplain\n100%\ndone"
        );
        assert_eq!(strip_terminal_escapes("done\r\n"), "done\n");
    }

    fn lines(n: usize, marker_at: Option<usize>) -> Vec<String> {
        (0..n)
            .map(|i| {
                if Some(i) == marker_at {
                    "ERROR: No matching distribution found for pandas==9.9".to_owned()
                } else {
                    format!("noise {i}")
                }
            })
            .collect()
    }

    #[test]
    fn excerpt_shows_the_first_marker_and_the_tail() {
        let all = lines(100, Some(20));
        let shown = excerpt(&all);
        assert_eq!(shown[0], ELLIPSIS);
        assert_eq!(shown[1], "noise 17");
        assert!(shown[4].starts_with("ERROR:"));
        assert_eq!(shown[1 + BEFORE_MARKER + FROM_MARKER], ELLIPSIS);
        assert_eq!(shown.last().map(String::as_str), Some("noise 99"));
        assert_eq!(shown.len(), 1 + BEFORE_MARKER + FROM_MARKER + 1 + TAIL);

        // Near the end: one block, nothing repeated.
        let all = lines(30, Some(25));
        let shown = excerpt(&all);
        assert_eq!(shown[0], ELLIPSIS);
        assert_eq!(shown[1], "noise 22");
        assert_eq!(shown.len(), 1 + 8);

        // No marker: the tail.
        let all = lines(100, None);
        let shown = excerpt(&all);
        assert_eq!(shown.len(), 1 + TAIL);
        assert!(is_error_marker("  npm ERR! code E404"));
        assert!(is_error_marker("E: Unable to locate package nope"));
        assert!(!is_error_marker("no ERROR: here"));
    }
}
