//! The I/O half: a kube client for one namespace, and the start, stop,
//! restart and status runs that walk the plans of [`crate::plan`].
//!
//! Each concern is a module adding its own `impl Cluster` block, so a run
//! can be read without the others; the public names are re-exported here.
//! Each module imports only from those listed before it, so none of them
//! import one another in a circle:
//! - `connect`: the handle, the kubeconfig, kube errors turned into ours.
//! - `requests`: the gets, lists, applies and deletes all runs share.
//! - `discovery`: what the cluster calls kinds outside the fixed table.
//! - `reporter`: how a run tells of its progress.
//! - `wait`: the loop that polls until [`crate::rollout`] says ready.
//! - `lease`: one run at a time per namespace, as [`crate::lease`] decides.
//! - `preflight`: the dry run of a start's writes before the first one.
//! - `revisions`: recorded after a ready start, listed, rolled back to.
//! - `rotate`: read-once credentials changed inside their server.
//! - `start`, `stop`, `restart`, `status`: the runs.
//! - `apply_changed`: the dev loop's apply of only what differs.

mod apply_changed;
mod connect;
mod discovery;
mod lease;
mod preflight;
mod reporter;
mod requests;
mod restart;
mod revisions;
mod rotate;
mod start;
mod status;
mod stop;
mod wait;

pub use apply_changed::ChangedObjects;
pub use connect::{
    Cluster, ConfigEnvironment, ConfigSource, ConnectOptions, ProcessEnvironment, Target,
    USER_AGENT, classify_error, load_kubeconfig,
};
pub use lease::LeaseGuard;
pub use reporter::{Quiet, Reporter};
pub use requests::STOP_MANAGER;
pub use restart::RESTART_MANAGER;
pub use start::{PlannedStart, StartOutcome, StartRun};
