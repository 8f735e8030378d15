//! The broker on a Kubernetes cluster: `start`, `stop`, `restart` and
//! `status` over what `render` wrote, through the Kubernetes API (kube-rs),
//! never through kubectl.
//!
//! - [`objects`]: a rendered directory → checked dynamic objects
//!   ([`RenderedSet`]); objects without our labels are refused.
//! - [`applyset`]: the KEP-3659 ApplySet (parent Secret, member label) that
//!   kubectl understands.
//! - [`plan`]: what start and stop will do, as data ([`StartPlan`],
//!   [`stop_plan`]), including pruning and old-config collection.
//! - [`compare`]: "unchanged" without a write; diffs with Secret values
//!   masked.
//! - [`rollout`]: whether a workload has rolled out, and if it cannot,
//!   why, in messages a person can act on (pure; the polling loop is in
//!   [`cluster`]).
//! - [`preflight`]: a refused server-side dry run, said in one line.
//! - [`revision`]: what a ready start applied, stored to roll back to.
//! - [`credentials`]: credentials a server reads only on its first start.
//! - [`lease`]: one start, stop or restart per namespace at a time.
//! - [`health`]: the status report and what counts as healthy (pure).
//! - [`cluster`]: the I/O — server-side apply with field manager
//!   `broker-images`, lists, waits, deletes.
//!
//! ```
//! use broker_cluster::{ApplySet, RenderedSet, StartOptions, StartPlan};
//! use std::collections::BTreeMap;
//!
//! let objects = serde_json::from_value(serde_json::json!([{
//!     "apiVersion": "v1", "kind": "Namespace",
//!     "metadata": {"name": "broker", "labels": {
//!         "app.kubernetes.io/part-of": "broker",
//!         "app.kubernetes.io/managed-by": "broker-images"}}
//! }]))?;
//! let rendered = RenderedSet::new("broker", objects)?;
//! let prepared = broker_cluster::plan::prepare(&rendered, &ApplySet::new("broker"));
//! let plan = StartPlan::new(&prepared, &BTreeMap::new(), None, StartOptions::default());
//! assert!(plan.writes());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod applyset;
pub mod cluster;
pub mod compare;
pub mod credentials;
mod error;
pub mod health;
pub mod labels;
pub mod lease;
pub mod objects;
pub mod plan;
pub mod preflight;
pub mod revision;
pub mod rollout;

pub use applyset::{ApplySet, applyset_id};
pub use cluster::{
    ChangedObjects, Cluster, ConnectOptions, LeaseGuard, PlannedStart, Quiet, Reporter,
    StartOutcome, StartRun,
};
pub use compare::FIELD_MANAGER;
pub use error::ClusterError;
pub use health::StatusReport;
pub use objects::{Kind, ObjectKey, RenderedSet};
pub use plan::{StartOptions, StartPlan, StartStep, StopOptions, StopStep, stop_plan};
