//! The walk of a source tree: every entry checked (no devices, sockets or
//! fifos; symlinks only inside the tree; secrets refused unless included),
//! excludes applied, and the result sorted into the [`Plan`] of a layer.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::exclude::{PatternList, is_secret_name};
use crate::source_layer::{
    BuildLayerError, FileStat, Kind, LayerMapping, ParentDir, Plan, PlannedEntry,
};

/// Split an absolute image path into its components, refusing `.`, `..`
/// and empty components (a single trailing `/` is allowed).
fn image_components(path: &str) -> Result<Vec<&str>, BuildLayerError> {
    let bad = || BuildLayerError::InvalidImagePath {
        path: path.to_owned(),
    };
    let rest = path.strip_prefix('/').ok_or_else(bad)?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    let parts: Vec<&str> = rest.split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == ".." || p.contains('\0'))
    {
        return Err(bad());
    }
    Ok(parts)
}

/// Walk and validate the tree: the sorted entries of the layer.
pub(crate) fn scan(mapping: &LayerMapping) -> Result<Plan, BuildLayerError> {
    let target = image_components(&mapping.target)?;
    let target_rel = target.join("/");
    let mut parents: HashMap<String, &ParentDir> = HashMap::new();
    for p in &mapping.parents {
        let rel = image_components(&p.path)?.join("/");
        let above = rel == target_rel
            || (!rel.is_empty()
                && target_rel.starts_with(&rel)
                && target_rel.as_bytes()[rel.len()] == b'/');
        if !above {
            return Err(BuildLayerError::NotAParent {
                path: p.path.clone(),
                target: mapping.target.clone(),
            });
        }
        parents.insert(rel, p);
    }

    let root_meta =
        fs::metadata(&mapping.source).map_err(|_| BuildLayerError::SourceNotADirectory {
            path: mapping.source.clone(),
        })?;
    if !root_meta.is_dir() {
        return Err(BuildLayerError::SourceNotADirectory {
            path: mapping.source.clone(),
        });
    }

    let walker = Walker {
        excludes: PatternList::with_defaults(&mapping.excludes)?,
        includes: PatternList::new(&mapping.includes)?,
        uid: mapping.uid,
        gid: mapping.gid,
    };
    let mut found = Vec::new();
    walker.walk(&mapping.source, "", false, &mut found)?;

    let mut entries = Vec::with_capacity(found.len() + target.len());
    // The target and the directories above it.
    for depth in 1..=target.len() {
        let rel = target[..depth].join("/");
        let (uid, gid, mode) = match parents.get(&rel) {
            Some(p) => (p.uid, p.gid, p.mode & 0o7777),
            None if depth == target.len() => (mapping.uid, mapping.gid, 0o755),
            None => (0, 0, 0o755),
        };
        entries.push(PlannedEntry {
            tar_path: rel,
            kind: Kind::Dir,
            mode,
            uid,
            gid,
            source: None,
        });
    }
    for mut e in found {
        if !target_rel.is_empty() {
            e.tar_path = format!("{target_rel}/{}", e.tar_path);
        }
        entries.push(e);
    }
    entries.sort_by(|a, b| a.tar_path.as_bytes().cmp(b.tar_path.as_bytes()));

    // Hard links: every later path of the same inode links to the first.
    let mut first: HashMap<(u64, u64), String> = HashMap::new();
    for e in &mut entries {
        if let (Kind::File, Some((_, st))) = (&e.kind, &e.source)
            && st.nlink > 1
        {
            match first.get(&(st.dev, st.ino)) {
                Some(target) => {
                    e.kind = Kind::HardLink(target.clone());
                    e.source = None;
                }
                None => {
                    first.insert((st.dev, st.ino), e.tar_path.clone());
                }
            }
        }
    }
    Ok(Plan {
        entries,
        epoch: mapping.epoch,
    })
}

struct Walker {
    excludes: PatternList,
    includes: PatternList,
    uid: u32,
    gid: u32,
}

impl Walker {
    /// Walk `dir` (relative path `rel`, "" for the root) and push the
    /// entries to take, with paths relative to the source root. Returns
    /// whether anything below `dir` was taken.
    fn walk(
        &self,
        dir: &Path,
        rel: &str,
        dir_excluded: bool,
        out: &mut Vec<PlannedEntry>,
    ) -> Result<bool, BuildLayerError> {
        let unreadable = |path: &Path| {
            let path = path.to_path_buf();
            move |source| BuildLayerError::Unreadable { path, source }
        };
        let mut children = Vec::new();
        for entry in fs::read_dir(dir).map_err(unreadable(dir))? {
            let entry = entry.map_err(unreadable(dir))?;
            children.push(entry.file_name());
        }
        // Sorted for deterministic error reporting; the layer is sorted later.
        children.sort();
        let mut took_any = false;
        for name in children {
            let path = dir.join(&name);
            let Some(name) = name.to_str() else {
                return Err(BuildLayerError::NonUtf8Name { path });
            };
            let child_rel = if rel.is_empty() {
                name.to_owned()
            } else {
                format!("{rel}/{name}")
            };
            let meta = fs::symlink_metadata(&path).map_err(unreadable(&path))?;
            let excluded = self.excludes.matches_below(&child_rel, dir_excluded);
            let included = self.includes.is_empty() || self.includes.matches(&child_rel);
            let selected = !excluded && included;
            let ft = meta.file_type();

            if ft.is_dir() {
                if excluded && !self.excludes.has_negations() {
                    continue;
                }
                let below = self.walk(&path, &child_rel, excluded, out)?;
                if selected || below {
                    out.push(self.entry(child_rel, Kind::Dir, 0o755, None));
                    took_any = true;
                }
                continue;
            }
            if !selected {
                continue;
            }
            if is_secret_name(name) && !self.includes.names(&child_rel) {
                return Err(BuildLayerError::SecretRefused {
                    path,
                    rel: child_rel,
                });
            }
            let special = if ft.is_fifo() {
                Some("fifo")
            } else if ft.is_socket() {
                Some("socket")
            } else if ft.is_block_device() {
                Some("block device")
            } else if ft.is_char_device() {
                Some("character device")
            } else {
                None
            };
            if let Some(kind) = special {
                return Err(BuildLayerError::SpecialFile { path, kind });
            }
            if ft.is_symlink() {
                let target = fs::read_link(&path).map_err(unreadable(&path))?;
                let Some(target) = target.to_str() else {
                    return Err(BuildLayerError::NonUtf8Name { path });
                };
                if !stays_inside(rel, target) {
                    return Err(BuildLayerError::SymlinkEscapes {
                        path,
                        target: target.to_owned(),
                    });
                }
                out.push(self.entry(child_rel, Kind::Symlink(target.to_owned()), 0o777, None));
            } else {
                let mode = if meta.mode() & 0o111 != 0 {
                    0o755
                } else {
                    0o644
                };
                let stat = FileStat::of(&meta);
                out.push(self.entry(child_rel, Kind::File, mode, Some((path, stat))));
            }
            took_any = true;
        }
        Ok(took_any)
    }

    fn entry(
        &self,
        rel: String,
        kind: Kind,
        mode: u32,
        source: Option<(PathBuf, FileStat)>,
    ) -> PlannedEntry {
        PlannedEntry {
            tar_path: rel,
            kind,
            mode,
            uid: self.uid,
            gid: self.gid,
            source,
        }
    }
}

/// Whether a symlink in directory `dir_rel` (relative to the source root)
/// pointing at `target` resolves, lexically, to a path inside the root.
/// Absolute targets never do: on this machine they point outside the
/// checkout, and in the image they would mean something else.
fn stays_inside(dir_rel: &str, target: &str) -> bool {
    if target.starts_with('/') || target.is_empty() {
        return false;
    }
    let mut depth: usize = dir_rel.split('/').filter(|p| !p.is_empty()).count();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return false,
            },
            _ => depth += 1,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlink_containment_is_lexical() {
        assert!(stays_inside("", "a/b"));
        assert!(stays_inside("a", "../b"));
        assert!(stays_inside("a/b", "../../c"));
        assert!(stays_inside("a", "x/../../b"));
        assert!(!stays_inside("", "../x"));
        assert!(!stays_inside("a", "../../x"));
        assert!(!stays_inside("a", "/etc/passwd"));
        assert!(!stays_inside("a", ""));
    }

    #[test]
    fn image_paths_must_be_clean_and_absolute() {
        assert_eq!(image_components("/").unwrap(), Vec::<&str>::new());
        assert_eq!(image_components("/opt/app/").unwrap(), ["opt", "app"]);
        for bad in ["opt", "/opt/../x", "/opt//x", "/./x"] {
            assert!(image_components(bad).is_err(), "{bad}");
        }
    }
}
