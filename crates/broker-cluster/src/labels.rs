//! Label and annotation keys: broker-pins' [`broker_pins::ownership`],
//! which render writes with, re-exported under the name this crate's
//! modules use.

/// The workload name label render sets.
pub use broker_pins::ownership::NAME_LABEL as NAME;
pub use broker_pins::ownership::{
    APPLIED_HASH, APPLYSET_ADDITIONAL_NAMESPACES, APPLYSET_GROUP_KINDS, APPLYSET_ID,
    APPLYSET_PART_OF, APPLYSET_TOOLING, LEGACY_APPLIED_HASH, OURS, READ_ONCE_CREDENTIALS,
    RESTARTED_AT, ROTATE_CREDENTIALS, START_WAVE, STOPPED_NODE_SELECTOR, WORKLOADS,
};
