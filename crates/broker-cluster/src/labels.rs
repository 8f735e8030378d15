//! Label and annotation keys, in one place.

/// The labels every rendered object carries; objects without them are
/// never applied, pruned, scaled or deleted.
pub const OURS: &[(&str, &str)] = &[
    ("app.kubernetes.io/part-of", "broker"),
    ("app.kubernetes.io/managed-by", "broker-images"),
];
/// The workload name label render sets.
pub const NAME: &str = "app.kubernetes.io/name";
/// On every member: the ApplySet id it belongs to (KEP-3659).
pub const APPLYSET_PART_OF: &str = "applyset.kubernetes.io/part-of";
/// On the parent: the ApplySet id.
pub const APPLYSET_ID: &str = "applyset.kubernetes.io/id";
/// On the parent: `Kind.group` of every member kind, sorted, comma-separated.
pub const APPLYSET_GROUP_KINDS: &str = "applyset.kubernetes.io/contains-group-kinds";
/// On the parent: `<tool>/<version>` of the tool that manages the set.
pub const APPLYSET_TOOLING: &str = "applyset.kubernetes.io/tooling";
/// On the parent: other namespaces with members; kubectl expects it
/// (empty: only the parent's namespace).
pub const APPLYSET_ADDITIONAL_NAMESPACES: &str = "applyset.kubernetes.io/additional-namespaces";
/// On every applied object: sha256 of what we applied, so a start can
/// tell "unchanged" from the live object alone, without a write.
pub const APPLIED_HASH: &str = "broker-images/applied-hash";
/// The pod template annotation `kubectl rollout restart` sets.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";
/// On the parent: the workloads (Deployments) of the set as the last
/// start rendered it, comma-separated, so `status` can name those that
/// were never created (a start that failed half-way).
pub const WORKLOADS: &str = "broker-images.io/workloads";
