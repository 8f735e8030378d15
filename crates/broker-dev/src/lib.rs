//! The dev loop: edit a source file, see it running on the cluster in
//! seconds, still as a pinned, reproducible image. It watches every tree
//! an `image.yaml` layer maps (and the files the catalogue's generators
//! read), and on each save rebuilds only the changed layers from the
//! cache, pushes only the new blobs, renders in memory with the new
//! digests and applies only the objects that differ, with `start`'s field
//! manager, so a later `start` with the release lock takes the cluster
//! back without conflicts.
//!
//! - [`changes`]: which saved paths matter, and to which images, deps
//!   stages and render inputs (pure).
//! - [`watch`]: inotify through `notify-debouncer-full`, and the quiet
//!   period that makes a burst of saves one batch.
//! - [`session`]: the first build, push and start, then one round per
//!   change, with timings.
//! - [`report`]: what a round did, as a line and a `--json` event (pure).
//!
//! The release lock is never written: the digests dev pushes go to its
//! own record ([`session::dev_lock_path`], `images.dev.lock`).
//!
//! ```
//! use broker_dev::changes::WatchPlan;
//! use std::collections::BTreeMap;
//! use std::path::{Path, PathBuf};
//!
//! // Without specs only the render inputs are watched.
//! let plan = WatchPlan::new(&[], &BTreeMap::new(), &[], &[PathBuf::from("/w/env.yaml")])?;
//! assert!(plan.classify([Path::new("/w/env.yaml")]).config);
//! assert!(plan.classify([Path::new("/w/other.yaml")]).is_empty());
//! # Ok::<(), broker_dev::changes::WatchPlanError>(())
//! ```

pub mod changes;
pub mod report;
pub mod session;
pub mod watch;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub use changes::{ChangeSet, WatchPlan};
pub use report::{ChangeReport, Timings};
pub use session::{DevError, DevOptions, DevSession, RegistryDeps, dev_lock_path};
pub use watch::{Batch, Watcher};

/// Where a session tells of its rounds; only the binary prints.
pub trait DevReporter: broker_cluster::Reporter {
    /// A round applied its change.
    fn changed(&self, report: &ChangeReport);

    /// A round failed: nothing of it was applied, the loop goes on.
    fn failed(&self, error: &DevError);
}

/// Runs rounds for every batch the watcher hands on until `stop`
/// completes or the watcher stops, and gives the session back. A round
/// once started is finished (or fails) before `stop` is looked at, so a
/// Ctrl-C never leaves half of a change applied.
pub async fn run(
    mut session: DevSession,
    mut watcher: Watcher,
    reporter: &dyn DevReporter,
    stop: impl std::future::Future<Output = ()>,
) -> DevSession {
    let mut stop = std::pin::pin!(stop);
    loop {
        let batch = tokio::select! {
            () = &mut stop => return session,
            batch = watcher.next() => batch,
        };
        let Some(batch) = batch else {
            return session;
        };
        for error in &batch.errors {
            reporter.line(&format!("watcher: {error}"));
        }
        let changes = session
            .plan()
            .classify(batch.paths.iter().map(PathBuf::as_path));
        if changes.is_empty() {
            continue;
        }
        let written = last_written(&changes.files).unwrap_or(batch.seen);
        match session
            .change(changes, written, (batch.seen, batch.seen_at), reporter)
            .await
        {
            Ok(report) => reporter.changed(&report),
            Err(error) => reporter.failed(&error),
        }
    }
}

/// The latest modification time of the files that still exist: when the
/// developer's save happened.
fn last_written<'a>(files: impl IntoIterator<Item = &'a PathBuf>) -> Option<SystemTime> {
    files
        .into_iter()
        .filter_map(|f| {
            std::fs::symlink_metadata(Path::new(f))
                .ok()?
                .modified()
                .ok()
        })
        .max()
}
