//! `.dockerignore`-style patterns, the default excludes and the names that
//! look like secrets.
//!
//! Semantics follow Docker's: patterns are relative to the source root (a
//! leading `/` is dropped, `a/../b` is cleaned to `b`), `*` and `?` stop at
//! `/`, `**` crosses directories, a line starting with `!` re-includes, the
//! last matching pattern wins, and a pattern that matches a directory also
//! matches everything inside it. Unlike `.gitignore`, a pattern without `/`
//! matches at the root only: write `**/*.log` to match at any depth.

use std::path::Path;
use std::sync::OnceLock;

use globset::{GlobBuilder, GlobMatcher, GlobSet, GlobSetBuilder};

/// Patterns excluded from every source layer before the mapping's own
/// excludes are applied (so a mapping can re-include one with `!`).
pub const DEFAULT_EXCLUDES: &[&str] = &[
    // Version control.
    "**/.git",
    "**/.hg",
    "**/.svn",
    "**/.bzr",
    // Python byte code.
    "**/__pycache__",
    "**/*.pyc",
    // Editor swap and backup files.
    "**/*.swp",
    "**/*.swo",
    "**/*~",
    "**/.#*",
    "**/#*#",
];

/// File names refused in a layer unless the mapping names them explicitly
/// (see [`PatternList::names`]): they usually hold credentials.
pub const SECRET_NAMES: &[&str] = &[".env", ".env.*", "*.pem", "*.key", "id_rsa*"];

/// A pattern that could not be compiled.
#[derive(Debug, thiserror::Error)]
#[error("invalid pattern `{pattern}` (fix or remove it)")]
pub struct PatternError {
    /// The pattern as written.
    pub pattern: String,
    /// Why globset refused it.
    #[source]
    pub source: globset::Error,
}

/// Read the lines of a `.dockerignore` file: blank lines and `#` comments
/// are dropped, surrounding whitespace is trimmed.
#[must_use]
pub fn parse_dockerignore(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// One compiled pattern.
#[derive(Debug, Clone)]
struct Rule {
    /// The cleaned pattern, without `!`.
    pattern: String,
    matcher: GlobMatcher,
    negated: bool,
    /// No glob metacharacters: names exactly one path.
    literal: bool,
}

/// An ordered list of dockerignore patterns.
#[derive(Debug, Clone, Default)]
pub struct PatternList {
    rules: Vec<Rule>,
    /// All non-negated patterns in one automaton, for the walk's fast path.
    set: GlobSet,
}

impl PatternList {
    /// Compile `patterns` in order.
    ///
    /// # Errors
    /// A pattern globset cannot compile.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, PatternError> {
        let mut rules = Vec::with_capacity(patterns.len());
        let mut set = GlobSetBuilder::new();
        for raw in patterns {
            let raw = raw.as_ref().trim();
            let (negated, body) = match raw.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, raw),
            };
            let pattern = clean(body);
            if pattern.is_empty() {
                continue;
            }
            let glob = GlobBuilder::new(&pattern)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|source| PatternError {
                    pattern: raw.to_owned(),
                    source,
                })?;
            set.add(glob.clone());
            let literal = !pattern.contains(['*', '?', '[', ']', '{', '}', '\\']);
            rules.push(Rule {
                pattern,
                matcher: glob.compile_matcher(),
                negated,
                literal,
            });
        }
        let set = set.build().map_err(|source| PatternError {
            pattern: patterns
                .iter()
                .map(AsRef::as_ref)
                .collect::<Vec<_>>()
                .join(" "),
            source,
        })?;
        Ok(Self { rules, set })
    }

    /// The default excludes followed by `patterns`.
    ///
    /// # Errors
    /// A pattern globset cannot compile.
    pub fn with_defaults<S: AsRef<str>>(patterns: &[S]) -> Result<Self, PatternError> {
        let mut all: Vec<&str> = DEFAULT_EXCLUDES.to_vec();
        all.extend(patterns.iter().map(AsRef::as_ref));
        Self::new(&all)
    }

    /// Whether there are no patterns.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether some pattern starts with `!`: then an excluded directory may
    /// still hold entries that are re-included, and must be walked.
    #[must_use]
    pub fn has_negations(&self) -> bool {
        self.rules.iter().any(|r| r.negated)
    }

    /// Whether `rel` (a `/`-separated path relative to the source root) is
    /// matched: the last pattern matching it or one of its parent
    /// directories decides, and a `!` pattern un-matches.
    #[must_use]
    pub fn matches(&self, rel: &str) -> bool {
        let mut matched = false;
        for rule in &self.rules {
            if rule.matcher.is_match(Path::new(rel))
                || parents(rel).any(|p| rule.matcher.is_match(Path::new(p)))
            {
                matched = !rule.negated;
            }
        }
        matched
    }

    /// [`matches`](Self::matches) for a walk that already knows whether the
    /// parent directory matched: without `!` patterns only the path itself
    /// needs testing, in one pass over all patterns.
    #[must_use]
    pub fn matches_below(&self, rel: &str, parent_matched: bool) -> bool {
        if self.has_negations() {
            self.matches(rel)
        } else {
            parent_matched || self.set.is_match(Path::new(rel))
        }
    }

    /// Whether a non-negated pattern without wildcards is exactly `rel`: the
    /// mapping names this path explicitly (what a secret-looking file needs
    /// to be accepted).
    #[must_use]
    pub fn names(&self, rel: &str) -> bool {
        self.rules
            .iter()
            .any(|r| r.literal && !r.negated && r.pattern == rel)
    }
}

/// Whether a file's base name looks like it holds a secret.
#[must_use]
pub fn is_secret_name(name: &str) -> bool {
    static SECRETS: OnceLock<GlobSet> = OnceLock::new();
    SECRETS
        .get_or_init(|| {
            let mut set = GlobSetBuilder::new();
            for p in SECRET_NAMES {
                if let Ok(g) = GlobBuilder::new(p).literal_separator(true).build() {
                    set.add(g);
                }
            }
            // The patterns are constants that compile; an empty set would
            // only ever be the result of a typo caught by the tests.
            set.build().unwrap_or_else(|_| GlobSet::empty())
        })
        .is_match(name)
}

/// The proper ancestors of a relative path: `a/b/c` → `a`, `a/b`.
fn parents(rel: &str) -> impl Iterator<Item = &str> {
    rel.match_indices('/').map(move |(i, _)| &rel[..i])
}

/// Docker's cleaning of a pattern: `/`-separated, no leading `/`, `.` and
/// `..` resolved lexically, no trailing `/`.
fn clean(pattern: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in pattern.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(p: &[&str]) -> PatternList {
        PatternList::new(p).unwrap()
    }

    #[test]
    fn patterns_are_anchored_at_the_root() {
        let l = list(&["*.log", "/build", "docs/*.md"]);
        assert!(l.matches("a.log"));
        assert!(!l.matches("sub/a.log"));
        assert!(l.matches("build"));
        assert!(l.matches("build/x/y.o"));
        assert!(l.matches("docs/a.md"));
        assert!(!l.matches("docs/sub/a.md"));
        assert!(!l.matches("README.md"));
    }

    #[test]
    fn double_star_crosses_directories() {
        let l = list(&["**/*.log", "node_modules/**/test"]);
        assert!(l.matches_below("x/y/z.log", false));
        assert!(l.matches_below("x/y", true));
        assert!(!l.matches_below("x/y", false));
        assert!(l.matches("a.log"));
        assert!(l.matches("x/y/z.log"));
        assert!(l.matches("node_modules/a/b/test"));
        assert!(l.matches("node_modules/a/b/test/file.js"));
        assert!(!l.matches("src/test"));
    }

    #[test]
    fn last_match_wins_and_bang_re_includes() {
        let l = list(&["dir", "!dir/keep.txt", "*.md", "!README.md", "README.md"]);
        assert!(l.matches("dir"));
        assert!(l.matches("dir/other"));
        assert!(!l.matches("dir/keep.txt"));
        assert!(l.matches("CHANGES.md"));
        assert!(l.matches("README.md"));
        assert!(l.has_negations());
    }

    #[test]
    fn patterns_are_cleaned_like_docker() {
        let l = list(&["./a/../b/", "  !b/c  "]);
        assert!(l.matches("b"));
        assert!(!l.matches("b/c"));
        assert!(!l.matches("a"));
    }

    #[test]
    fn names_requires_a_literal_pattern_for_exactly_that_path() {
        let l = list(&["config/.env", "*.pem", "!other/.env"]);
        assert!(l.names("config/.env"));
        assert!(!l.names("x.pem"));
        assert!(!l.names("other/.env"));
        assert!(!l.names("config"));
    }

    #[test]
    fn defaults_exclude_vcs_pycache_and_swap_files_anywhere() {
        let l = PatternList::with_defaults::<&str>(&[]).unwrap();
        for p in [
            ".git",
            ".git/config",
            "sub/.hg/x",
            "pkg/__pycache__/m.cpython-311.pyc",
            "m.pyc",
            "a/.b.py.swp",
            "notes~",
            "a/.#lock",
            "#x#",
        ] {
            assert!(l.matches(p), "{p} not excluded");
        }
        for p in ["src/app.py", ".gitignore", "pycache.txt"] {
            assert!(!l.matches(p), "{p} excluded");
        }
        let l = PatternList::with_defaults(&["!.git"]).unwrap();
        assert!(!l.matches(".git/config"));
    }

    #[test]
    fn secret_names() {
        for n in [
            ".env",
            ".env.local",
            "server.pem",
            "tls.key",
            "id_rsa",
            "id_rsa.pub",
        ] {
            assert!(is_secret_name(n), "{n}");
        }
        for n in ["env", "x.env", "keys.py", "pem.txt", "monkey"] {
            assert!(!is_secret_name(n), "{n}");
        }
    }

    #[test]
    fn dockerignore_files_drop_comments_and_blanks() {
        assert_eq!(
            parse_dockerignore("# c\n\n  *.log \n!keep.log\n"),
            vec!["*.log", "!keep.log"]
        );
    }

    #[test]
    fn bad_patterns_are_reported() {
        let e = PatternList::new(&["a[b"]).unwrap_err();
        assert!(e.to_string().contains("`a[b`"), "{e}");
    }
}
