//! What marks a Kubernetes object as the broker's, in one place for the
//! stage that writes the marks (render) and the one that trusts them
//! (the cluster commands): the labels, the ApplySet's label and
//! annotation names, our own annotations, and the order objects are
//! applied in.
//!
//! Our own annotations carry the domain prefix [`ANNOTATION_DOMAIN`], as a
//! tool's should (kapp writes `kapp.k14s.io/…`); the one older name,
//! [`LEGACY_APPLIED_HASH`], is still read and replaced on the next apply.

/// The label every object carries with its own (base) name.
pub const NAME_LABEL: &str = "app.kubernetes.io/name";
/// The label tying every object to the broker.
pub const PART_OF_LABEL: &str = "app.kubernetes.io/part-of";
/// [`PART_OF_LABEL`]'s value.
pub const PART_OF_VALUE: &str = "broker";
/// The label saying this tool made the object.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// [`MANAGED_BY_LABEL`]'s value.
pub const MANAGED_BY_VALUE: &str = "broker-images";

/// The labels every rendered object carries; objects without them are
/// never applied, pruned, scaled or deleted.
pub const OURS: &[(&str, &str)] = &[
    (PART_OF_LABEL, PART_OF_VALUE),
    (MANAGED_BY_LABEL, MANAGED_BY_VALUE),
];

/// On every ApplySet member: the set's id (KEP-3659).
pub const APPLYSET_PART_OF: &str = "applyset.kubernetes.io/part-of";
/// On the ApplySet parent: its id.
pub const APPLYSET_ID: &str = "applyset.kubernetes.io/id";
/// On the parent: `Kind.group` of every member kind, sorted, comma-separated.
pub const APPLYSET_GROUP_KINDS: &str = "applyset.kubernetes.io/contains-group-kinds";
/// On the parent: `<tool>/<version>` of the tool that manages the set.
pub const APPLYSET_TOOLING: &str = "applyset.kubernetes.io/tooling";
/// On the parent: other namespaces with members; kubectl expects it
/// (empty: only the parent's namespace).
pub const APPLYSET_ADDITIONAL_NAMESPACES: &str = "applyset.kubernetes.io/additional-namespaces";

/// The annotation naming, on a workload with read-once credentials, the
/// shell script that changes one inside its running server:
/// `start --rotate-credentials` runs it with `sh -c` in the workload's
/// first container, once per changed variable, the variable's name as
/// `$1` and its new value on standard input (never in an argument or the
/// environment of the exec request).
pub const ROTATE_CREDENTIALS: &str = "broker-images.io/rotate-credentials";

/// The node-selector key `stop` gives a DaemonSet's pod template (with
/// value `"true"`, which no node carries): a DaemonSet has no replica
/// count, so this is how it runs no pods; start gives the field back.
pub const STOPPED_NODE_SELECTOR: &str = "broker-images.io/stopped";

/// The prefix of every annotation broker-images owns.
pub const ANNOTATION_DOMAIN: &str = "broker-images.io";
/// On every applied object: sha256 of what we applied, so a start can
/// tell "unchanged" from the live object alone, without a write.
pub const APPLIED_HASH: &str = "broker-images.io/applied-hash";
/// [`APPLIED_HASH`]'s name before it took the domain prefix: read, never
/// written (an apply without it removes it, since we own it).
pub const LEGACY_APPLIED_HASH: &str = "broker-images/applied-hash";
/// On the ApplySet parent: the workloads of the set as the last start
/// rendered it, comma-separated, so `status` can name those that were
/// never created (a start that failed half-way).
pub const WORKLOADS: &str = "broker-images.io/workloads";
/// On a workload of the catalogue: the wave it starts in, an integer
/// (default 0). `start` applies and waits wave by wave, lowest first;
/// `stop` scales down highest first. The broker's db and mq are in wave
/// -1, so a new workload starts after them without any code.
pub const START_WAVE: &str = "broker-images.io/start-wave";
/// On a workload of the catalogue: the environment variables (comma
/// separated) its server reads only when it initialises its data, such as
/// postgres' `POSTGRES_PASSWORD`. Once the workload's claims hold data, a
/// changed value would not change the server's password but lock its
/// clients out, so `start` refuses it unless told the change was made
/// inside the server.
pub const READ_ONCE_CREDENTIALS: &str = "broker-images.io/read-once-credentials";
/// The pod template annotation `kubectl rollout restart` sets (kubectl's
/// name, so either tool's restart reads the same).
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

/// Where a kind goes in apply order: the namespace; the identities pods
/// run as; config; storage; Services; anything else; workloads last, so
/// every pod finds what it refers to. Delete order is the reverse.
pub fn apply_rank(kind: &str) -> u8 {
    match kind {
        "Namespace" => 0,
        "ServiceAccount" => 1,
        "ConfigMap" | "Secret" => 2,
        "PersistentVolumeClaim" => 3,
        "Service" => 4,
        "Deployment" | "StatefulSet" | "DaemonSet" | "Job" | "CronJob" => 6,
        _ => 5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_and_storage_go_before_the_workloads_that_use_them() {
        let order = [
            "Namespace",
            "ServiceAccount",
            "Secret",
            "PersistentVolumeClaim",
            "Service",
            "Ingress",
            "Deployment",
        ];
        assert!(
            order
                .windows(2)
                .all(|w| apply_rank(w[0]) < apply_rank(w[1]))
        );
    }

    #[test]
    fn our_annotations_carry_our_domain() {
        for name in [APPLIED_HASH, WORKLOADS] {
            assert!(name.starts_with(&format!("{ANNOTATION_DOMAIN}/")), "{name}");
        }
    }
}
