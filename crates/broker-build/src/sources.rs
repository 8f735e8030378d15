//! The source trees images are built from: the broker tree (`--source`) and
//! ttn-formatters (a path, or a git URL pinned to a commit and cloned into a
//! cache), with the revisions recorded in labels and the lock.

use std::path::{Path, PathBuf};
use std::process::Command;

use broker_oci::{ParseEpochError, SourceDateEpoch};

/// The name specs use for the broker tree.
pub const BROKER_TREE: &str = "broker";
/// The name specs use for the ttn-formatters tree.
pub const FORMATTERS_TREE: &str = "ttn-formatters";

/// A directory the layers are read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceTree {
    /// `broker` or `ttn-formatters`.
    pub name: String,
    /// The directory.
    pub root: PathBuf,
    /// The git commit, with `-dirty` when the checkout has local changes.
    pub revision: Option<String>,
    /// That commit's time (seconds since the epoch).
    pub commit_time: Option<u64>,
    /// Where it came from, for the `org.opencontainers.image.source` label:
    /// the git URL when cloned, else the remote `origin` if any.
    pub origin: Option<String>,
}

/// A source tree could not be found or checked out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The directory does not exist.
    #[error(
        "{name} tree {path} does not exist or is not a directory; pass the right path with {flag}"
    )]
    Missing {
        /// Which tree.
        name: String,
        /// The path given.
        path: PathBuf,
        /// The flag that sets it.
        flag: &'static str,
    },
    /// git failed.
    #[error("{name}: `git {args}` failed{}", in_dir(dir.as_deref()))]
    Git {
        /// Which tree.
        name: String,
        /// The git arguments.
        args: String,
        /// The checkout it ran in, when that helps.
        dir: Option<PathBuf>,
        /// Why.
        #[source]
        source: GitFailure,
    },
    /// The wanted commit is not in the repository.
    #[error("{name}: commit `{rev}` not found in {url}; check the commit or push it")]
    NoCommit {
        /// Which tree.
        name: String,
        /// The commit asked for.
        rev: String,
        /// The repository.
        url: String,
    },
    /// The cache directory could not be made.
    #[error("cannot create {path}")]
    Cache {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Why one git command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GitFailure {
    /// git could not be started.
    #[error("cannot run git; install git")]
    NotRunnable(#[source] std::io::Error),
    /// git ran and failed.
    #[error("{first_line}")]
    Failed {
        /// The first non-empty line git wrote to stderr.
        first_line: String,
    },
}

/// ` in DIR`, or nothing.
fn in_dir(dir: Option<&Path>) -> String {
    dir.map(|d| format!(" in {}", d.display()))
        .unwrap_or_default()
}

fn git(dir: Option<&Path>, args: &[&str]) -> Result<String, GitFailure> {
    git_output(git_command(dir, args).output())
}

/// `git [-C dir] args`, never prompting: a private URL without
/// credentials must fail, not hang.
fn git_command(dir: Option<&Path>, args: &[&str]) -> Command {
    let mut cmd = Command::new("git");
    if let Some(dir) = dir {
        cmd.arg("-C").arg(dir);
    }
    cmd.args(args).env("GIT_TERMINAL_PROMPT", "0");
    cmd
}

/// What a finished git process printed, or why it failed.
fn git_output(out: std::io::Result<std::process::Output>) -> Result<String, GitFailure> {
    let out = out.map_err(GitFailure::NotRunnable)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first_line = stderr
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no message")
            .trim()
            .to_owned();
        Err(GitFailure::Failed { first_line })
    }
}

/// Several git queries on `dir`, run at once: each costs a process start,
/// and a no-change build is mostly waiting for them.
fn git_at_once<const N: usize>(
    dir: &Path,
    queries: [&[&str]; N],
) -> [Result<String, GitFailure>; N] {
    let children = queries.map(|args| {
        git_command(Some(dir), args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
    });
    children.map(|child| git_output(child.and_then(std::process::Child::wait_with_output)))
}

/// What git says of a local tree: the last commit that touched it (with
/// `-dirty` when files under it changed), that commit's time, and the
/// checkout's `origin` URL; `None` outside git.
struct Checkout {
    revision: String,
    commit_time: u64,
    origin: Option<String>,
}

fn checkout(dir: &Path) -> Option<Checkout> {
    // Asking git costs a process each time: first see whether there is a
    // checkout at all (a copy of a tree usually is not one).
    let absolute = std::path::absolute(dir).ok()?;
    absolute.ancestors().find(|a| a.join(".git").exists())?;
    // The last commit that touched this tree, not HEAD: commits elsewhere in
    // a larger repository must not change the image's revision label.
    let [log, status, origin] = git_at_once(
        dir,
        [
            &["log", "-1", "--format=%H %ct", "--", "."],
            &["status", "--porcelain", "--", "."],
            &["remote", "get-url", "origin"],
        ],
    );
    let log = log.ok()?;
    let (head, time) = log.split_once(' ')?;
    let commit_time = time.parse().ok()?;
    let dirty = status.map(|s| !s.is_empty()).unwrap_or(false);
    let revision = if dirty {
        format!("{head}-dirty")
    } else {
        head.to_owned()
    };
    Some(Checkout {
        revision,
        commit_time,
        origin: origin.ok(),
    })
}

/// Opens a tree given as a local directory.
pub fn local_tree(name: &str, path: &Path, flag: &'static str) -> Result<SourceTree, SourceError> {
    if !path.is_dir() {
        return Err(SourceError::Missing {
            name: name.to_owned(),
            path: path.to_path_buf(),
            flag,
        });
    }
    let checkout = checkout(path);
    Ok(SourceTree {
        name: name.to_owned(),
        root: path.to_path_buf(),
        revision: checkout.as_ref().map(|c| c.revision.clone()),
        commit_time: checkout.as_ref().map(|c| c.commit_time),
        origin: checkout.and_then(|c| c.origin),
    })
}

/// Whether `spec` names a git repository to clone rather than a directory.
fn is_git_url(spec: &str) -> bool {
    spec.contains("://") || spec.starts_with("git@") || spec.ends_with(".git")
}

/// Resolves the ttn-formatters tree: a directory, or a git URL (or local
/// repository) checked out at `rev` in `cache_dir`. `spec` may carry the
/// commit as `URL#REV`.
pub fn formatters_tree(
    spec: &str,
    rev: Option<&str>,
    cache_dir: &Path,
) -> Result<SourceTree, SourceError> {
    let (location, rev_in_spec) = match spec.rsplit_once('#') {
        Some((l, r)) if !r.is_empty() => (l, Some(r)),
        _ => (spec, None),
    };
    let rev = rev.or(rev_in_spec);
    if !is_git_url(location) && rev.is_none() {
        return local_tree(FORMATTERS_TREE, Path::new(location), "--formatters");
    }
    if !is_git_url(location) && !Path::new(location).is_dir() {
        return Err(SourceError::Missing {
            name: FORMATTERS_TREE.to_owned(),
            path: PathBuf::from(location),
            flag: "--formatters",
        });
    }
    clone_at(FORMATTERS_TREE, location, rev, cache_dir)
}

/// Clones `url` into the cache (once) and checks out `rev` (default: the
/// remote's HEAD), returning the checkout.
fn clone_at(
    name: &str,
    url: &str,
    rev: Option<&str>,
    cache_dir: &Path,
) -> Result<SourceTree, SourceError> {
    let git_err = |args: &[&str], dir: Option<&Path>, source| SourceError::Git {
        name: name.to_owned(),
        args: args.join(" "),
        dir: dir.map(Path::to_path_buf),
        source,
    };
    let key = broker_oci::Digest::of(url.as_bytes()).hex();
    let dir = cache_dir.join("git").join(&key[..16]);
    std::fs::create_dir_all(cache_dir.join("git")).map_err(|source| SourceError::Cache {
        path: cache_dir.join("git"),
        source,
    })?;
    if !dir.join(".git").is_dir() {
        // Clone into a temporary name, then rename: a killed clone never
        // looks like a finished one.
        let partial = cache_dir
            .join("git")
            .join(format!("{}.partial", &key[..16]));
        let _ = std::fs::remove_dir_all(&partial);
        let partial_text = partial.to_string_lossy().into_owned();
        let args = ["clone", "--quiet", "--no-checkout", url, &partial_text];
        git(None, &args).map_err(|e| git_err(&args, None, e))?;
        std::fs::rename(&partial, &dir).map_err(|source| SourceError::Cache {
            path: dir.clone(),
            source,
        })?;
    }
    let wanted = rev.unwrap_or("origin/HEAD");
    let commit = match git(
        Some(&dir),
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{wanted}^{{commit}}"),
        ],
    ) {
        Ok(c) if rev.is_some() => c,
        _ => {
            // Not known yet (or following the remote's HEAD): fetch.
            let args = [
                "fetch",
                "--quiet",
                "--tags",
                "origin",
                "+refs/heads/*:refs/remotes/origin/*",
            ];
            git(Some(&dir), &args).map_err(|e| git_err(&args, None, e))?;
            let _ = git(Some(&dir), &["remote", "set-head", "origin", "--auto"]);
            git(
                Some(&dir),
                &[
                    "rev-parse",
                    "--verify",
                    "--quiet",
                    &format!("{wanted}^{{commit}}"),
                ],
            )
            .map_err(|_| SourceError::NoCommit {
                name: name.to_owned(),
                rev: wanted.to_owned(),
                url: url.to_owned(),
            })?
        }
    };
    let args = [
        "-c",
        "advice.detachedHead=false",
        "checkout",
        "--quiet",
        "--force",
        "--detach",
        &commit,
    ];
    git(Some(&dir), &args).map_err(|e| git_err(&args, Some(&dir), e))?;
    let args = ["clean", "--quiet", "-fdx"];
    git(Some(&dir), &args).map_err(|e| git_err(&args, None, e))?;
    Ok(SourceTree {
        name: name.to_owned(),
        commit_time: git(Some(&dir), &["log", "-1", "--format=%ct", &commit])
            .ok()
            .and_then(|t| t.parse().ok()),
        root: dir,
        revision: Some(commit),
        origin: Some(url.to_owned()),
    })
}

/// The timestamp for layers and configs: `SOURCE_DATE_EPOCH` when set,
/// else the time of the last commit that touched the broker tree (not the
/// whole repository, so unrelated commits leave digests alone), else a
/// fixed constant.
pub fn source_date_epoch(broker: &SourceTree) -> Result<SourceDateEpoch, ParseEpochError> {
    if std::env::var_os(SourceDateEpoch::ENV).is_some() {
        return SourceDateEpoch::from_env();
    }
    Ok(broker
        .commit_time
        .map_or(SourceDateEpoch::DEFAULT, SourceDateEpoch::new))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(dir: &Path, args: &[&str]) -> String {
        git(Some(dir), args).unwrap()
    }

    fn repo_with_commit(dir: &Path) -> String {
        std::fs::create_dir_all(dir.join("uplink")).unwrap();
        std::fs::write(dir.join("uplink/a.js"), "module.exports = 1;\n").unwrap();
        run(dir, &["init", "--quiet", "-b", "main"]);
        run(
            dir,
            &["-c", "user.name=t", "-c", "user.email=t@e", "add", "."],
        );
        run(
            dir,
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@e",
                "commit",
                "--quiet",
                "-m",
                "one",
            ],
        );
        run(dir, &["rev-parse", "HEAD"])
    }

    #[test]
    fn pinned_commits_are_checked_out_and_missing_ones_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("formatters");
        let first = repo_with_commit(&repo);
        std::fs::write(repo.join("uplink/a.js"), "module.exports = 2;\n").unwrap();
        run(
            &repo,
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@e",
                "commit",
                "--quiet",
                "-am",
                "two",
            ],
        );
        let url = format!("file://{}", repo.display());
        let cache = tmp.path().join("cache");

        let tree = formatters_tree(&url, Some(&first), &cache).unwrap();
        assert_eq!(tree.revision.as_deref(), Some(first.as_str()));
        assert_eq!(
            std::fs::read_to_string(tree.root.join("uplink/a.js")).unwrap(),
            "module.exports = 1;\n"
        );
        // URL#REV spelling, the newest commit, reusing the cache.
        let head = run(&repo, &["rev-parse", "HEAD"]);
        let tree = formatters_tree(&format!("{url}#{head}"), None, &cache).unwrap();
        assert_eq!(
            std::fs::read_to_string(tree.root.join("uplink/a.js")).unwrap(),
            "module.exports = 2;\n"
        );

        let err = formatters_tree(
            &url,
            Some("0123456789abcdef0123456789abcdef01234567"),
            &cache,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("commit `0123456789abcdef0123456789abcdef01234567` not found"),
            "{err}"
        );
    }

    #[test]
    fn local_trees_report_revision_and_missing_paths() {
        let tmp = tempfile::tempdir().unwrap();
        let err = local_tree("broker", &tmp.path().join("nope"), "--source")
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope") && err.contains("--source"), "{err}");
        let plain = local_tree("broker", tmp.path(), "--source").unwrap();
        assert_eq!(plain.revision, None);
        let repo = tmp.path().join("r");
        let head = repo_with_commit(&repo);
        assert_eq!(
            local_tree("broker", &repo, "--source").unwrap().revision,
            Some(head.clone())
        );
        std::fs::write(repo.join("new.txt"), "x").unwrap();
        assert_eq!(
            local_tree("broker", &repo, "--source").unwrap().revision,
            Some(format!("{head}-dirty"))
        );
    }
}
