//! The file watcher: inotify through `notify-debouncer-full`, whose file-id
//! cache turns an editor's atomic save (write a temp file, rename it over)
//! into one event on the saved path, and a quiet period on top, so a burst
//! of saves becomes one batch.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use notify_debouncer_full::notify::{RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use tokio::sync::mpsc;

use crate::changes::WatchRoot;

/// How long the debouncer holds an event to merge it with the ones after
/// it (notify-debouncer-full's own timeout).
pub const DEBOUNCE: Duration = Duration::from_millis(25);

/// How long no further event may arrive before a batch is handed on: 20
/// saves within this window are one rebuild.
pub const QUIET: Duration = Duration::from_millis(40);

/// The watcher could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WatchError {
    /// inotify refused (too many watches, a missing directory).
    #[error("cannot watch {}", path.display())]
    Watch {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: notify_debouncer_full::notify::Error,
    },
}

/// Saved files, gathered until the tree was quiet.
#[derive(Clone, Debug)]
pub struct Batch {
    /// Every path an event named.
    pub paths: BTreeSet<PathBuf>,
    /// When the first event of the batch was delivered.
    pub seen: SystemTime,
    /// The same instant, for durations.
    pub seen_at: Instant,
    /// Errors the watcher reported (e.g. the inotify queue overflowed).
    pub errors: Vec<String>,
}

/// Watches the roots of a [`crate::WatchPlan`] until dropped.
pub struct Watcher {
    _debouncer: Debouncer<RecommendedWatcher, RecommendedCache>,
    events: mpsc::UnboundedReceiver<DebounceEventResult>,
    /// The roots that do not exist (nothing to watch there yet).
    pub missing: Vec<PathBuf>,
}

impl Watcher {
    /// Starts watching `roots`. A root that does not exist is listed in
    /// [`Watcher::missing`] rather than failing the session.
    pub fn start(roots: &[WatchRoot]) -> Result<Self, WatchError> {
        let (sender, events) = mpsc::unbounded_channel();
        let mut debouncer = new_debouncer(DEBOUNCE, None, move |result| {
            let _ = sender.send(result);
        })
        .map_err(|source| WatchError::Watch {
            path: PathBuf::from("(inotify)"),
            source,
        })?;
        let mut missing = Vec::new();
        for root in roots {
            if !root.path.is_dir() {
                missing.push(root.path.clone());
                continue;
            }
            let mode = if root.recursive {
                RecursiveMode::Recursive
            } else {
                RecursiveMode::NonRecursive
            };
            debouncer
                .watch(&root.path, mode)
                .map_err(|source| WatchError::Watch {
                    path: root.path.clone(),
                    source,
                })?;
        }
        Ok(Self {
            _debouncer: debouncer,
            events,
            missing,
        })
    }

    /// The next batch: waits for an event, then gathers every event until
    /// [`QUIET`] passes without one. `None` when the watcher stopped.
    pub async fn next(&mut self) -> Option<Batch> {
        let first = self.events.recv().await?;
        let mut batch = Batch {
            paths: BTreeSet::new(),
            seen: SystemTime::now(),
            seen_at: Instant::now(),
            errors: Vec::new(),
        };
        add(&mut batch, first);
        while let Ok(Some(more)) = tokio::time::timeout(QUIET, self.events.recv()).await {
            add(&mut batch, more);
        }
        Some(batch)
    }
}

fn add(batch: &mut Batch, result: DebounceEventResult) {
    match result {
        Ok(events) => {
            for event in events {
                // Access events (a build reading the file) change nothing.
                if event.event.kind.is_access() {
                    continue;
                }
                batch.paths.extend(event.event.paths);
            }
        }
        Err(errors) => batch.errors.extend(errors.iter().map(ToString::to_string)),
    }
}
