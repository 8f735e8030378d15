//! The Pod Security Standards (kubernetes.io, "Pod Security Standards",
//! the policy the built-in Pod Security admission enforces), written out as
//! a checker over one pod spec: every control of the baseline level and
//! every further control of the restricted level, with the fields and the
//! allowed values the published spec lists (Kubernetes 1.33). Windows-only
//! exemptions are left out: the broker runs on Linux nodes.
//!
//! Issue 23 item 6: every rendered pod template of the cluster profile must
//! pass "restricted"; this is what the test holds it to.

use serde_json::Value;

/// Which standard a control belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Baseline,
    Restricted,
}

/// One field of a pod spec that breaks one control.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Violation {
    pub level: Level,
    /// The control's name as the published spec titles it.
    pub control: &'static str,
    /// Where, e.g. `containers[db].securityContext.runAsUser`.
    pub field: String,
}

/// Capabilities baseline allows to be added.
const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// The "safe" sysctls baseline allows.
const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

/// SELinux types baseline allows (besides none).
const SELINUX_TYPES: &[&str] = &[
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];

/// The only volume sources restricted allows.
const RESTRICTED_VOLUMES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// Every violation of `template` (a pod template: `metadata` and `spec`).
pub fn check(template: &Value) -> Vec<Violation> {
    let mut found = Vec::new();
    let mut violate = |level, control, field: String| {
        found.push(Violation {
            level,
            control,
            field,
        });
    };
    let spec = &template["spec"];
    let pod_sc = &spec["securityContext"];
    let containers: Vec<(String, &Value)> = ["initContainers", "containers", "ephemeralContainers"]
        .into_iter()
        .flat_map(|list| {
            spec[list]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |c| (format!("{list}[{}]", c["name"].as_str().unwrap_or("?")), c))
        })
        .collect();

    // ---- baseline ----
    if pod_sc["windowsOptions"]["hostProcess"] == true {
        violate(
            Level::Baseline,
            "HostProcess",
            "securityContext.windowsOptions.hostProcess".into(),
        );
    }
    for key in ["hostNetwork", "hostPID", "hostIPC"] {
        if spec[key] == true {
            violate(Level::Baseline, "Host Namespaces", key.into());
        }
    }
    for (name, c) in &containers {
        let sc = &c["securityContext"];
        if sc["windowsOptions"]["hostProcess"] == true {
            violate(
                Level::Baseline,
                "HostProcess",
                format!("{name}.securityContext.windowsOptions.hostProcess"),
            );
        }
        if sc["privileged"] == true {
            violate(
                Level::Baseline,
                "Privileged Containers",
                format!("{name}.securityContext.privileged"),
            );
        }
        for cap in strings(&sc["capabilities"]["add"]) {
            if !BASELINE_CAPABILITIES.contains(&cap) {
                violate(
                    Level::Baseline,
                    "Capabilities",
                    format!("{name}.securityContext.capabilities.add: {cap}"),
                );
            }
        }
        for port in c["ports"].as_array().into_iter().flatten() {
            if port["hostPort"].as_i64().is_some_and(|p| p != 0) {
                violate(
                    Level::Baseline,
                    "Host Ports",
                    format!("{name}.ports.hostPort"),
                );
            }
        }
        if !apparmor_ok(&sc["appArmorProfile"]["type"]) {
            violate(
                Level::Baseline,
                "AppArmor",
                format!("{name}.securityContext.appArmorProfile.type"),
            );
        }
        if !selinux_ok(&sc["seLinuxOptions"]) {
            violate(
                Level::Baseline,
                "SELinux",
                format!("{name}.securityContext.seLinuxOptions"),
            );
        }
        if !(sc["procMount"].is_null() || sc["procMount"] == "Default") {
            violate(
                Level::Baseline,
                "/proc Mount Type",
                format!("{name}.securityContext.procMount"),
            );
        }
        if sc["seccompProfile"]["type"] == "Unconfined" {
            violate(
                Level::Baseline,
                "Seccomp",
                format!("{name}.securityContext.seccompProfile.type"),
            );
        }
    }
    for volume in spec["volumes"].as_array().into_iter().flatten() {
        if !volume["hostPath"].is_null() {
            violate(
                Level::Baseline,
                "HostPath Volumes",
                format!(
                    "volumes[{}].hostPath",
                    volume["name"].as_str().unwrap_or("?")
                ),
            );
        }
    }
    if !apparmor_ok(&pod_sc["appArmorProfile"]["type"]) {
        violate(
            Level::Baseline,
            "AppArmor",
            "securityContext.appArmorProfile.type".into(),
        );
    }
    for (key, value) in template["metadata"]["annotations"]
        .as_object()
        .into_iter()
        .flatten()
    {
        if key.starts_with("container.apparmor.security.beta.kubernetes.io/") {
            let value = value.as_str().unwrap_or_default();
            if !(value == "runtime/default" || value.starts_with("localhost/")) {
                violate(Level::Baseline, "AppArmor", format!("annotation {key}"));
            }
        }
    }
    if !selinux_ok(&pod_sc["seLinuxOptions"]) {
        violate(
            Level::Baseline,
            "SELinux",
            "securityContext.seLinuxOptions".into(),
        );
    }
    if pod_sc["seccompProfile"]["type"] == "Unconfined" {
        violate(
            Level::Baseline,
            "Seccomp",
            "securityContext.seccompProfile.type".into(),
        );
    }
    for sysctl in pod_sc["sysctls"].as_array().into_iter().flatten() {
        let name = sysctl["name"].as_str().unwrap_or_default();
        if !SAFE_SYSCTLS.contains(&name) {
            violate(
                Level::Baseline,
                "Sysctls",
                format!("securityContext.sysctls: {name}"),
            );
        }
    }

    // ---- restricted ----
    for volume in spec["volumes"].as_array().into_iter().flatten() {
        let name = volume["name"].as_str().unwrap_or("?");
        for source in volume.as_object().into_iter().flatten().map(|(k, _)| k) {
            if source != "name" && !RESTRICTED_VOLUMES.contains(&source.as_str()) {
                violate(
                    Level::Restricted,
                    "Volume Types",
                    format!("volumes[{name}].{source}"),
                );
            }
        }
    }
    let pod_non_root = pod_sc["runAsNonRoot"] == true;
    if pod_sc["runAsUser"] == 0 {
        violate(
            Level::Restricted,
            "Running as Non-root user",
            "securityContext.runAsUser".into(),
        );
    }
    if !pod_sc["runAsNonRoot"].is_null() && !pod_non_root {
        violate(
            Level::Restricted,
            "Running as Non-root",
            "securityContext.runAsNonRoot".into(),
        );
    }
    let seccomp_ok = |v: &Value| v == "RuntimeDefault" || v == "Localhost";
    let pod_seccomp = seccomp_ok(&pod_sc["seccompProfile"]["type"]);
    if !pod_sc["seccompProfile"]["type"].is_null() && !pod_seccomp {
        violate(
            Level::Restricted,
            "Seccomp",
            "securityContext.seccompProfile.type".into(),
        );
    }
    for (name, c) in &containers {
        let sc = &c["securityContext"];
        if sc["allowPrivilegeEscalation"] != false {
            violate(
                Level::Restricted,
                "Privilege Escalation",
                format!("{name}.securityContext.allowPrivilegeEscalation"),
            );
        }
        let non_root = match &sc["runAsNonRoot"] {
            Value::Null => pod_non_root,
            v => v == true,
        };
        if !non_root {
            violate(
                Level::Restricted,
                "Running as Non-root",
                format!("{name}.securityContext.runAsNonRoot"),
            );
        }
        if sc["runAsUser"] == 0 {
            violate(
                Level::Restricted,
                "Running as Non-root user",
                format!("{name}.securityContext.runAsUser"),
            );
        }
        let seccomp = match &sc["seccompProfile"]["type"] {
            Value::Null => pod_seccomp,
            v => seccomp_ok(v),
        };
        if !seccomp {
            violate(
                Level::Restricted,
                "Seccomp",
                format!("{name}.securityContext.seccompProfile.type"),
            );
        }
        if !strings(&sc["capabilities"]["drop"]).contains(&"ALL") {
            violate(
                Level::Restricted,
                "Capabilities",
                format!("{name}.securityContext.capabilities.drop"),
            );
        }
        for cap in strings(&sc["capabilities"]["add"]) {
            if cap != "NET_BIND_SERVICE" {
                violate(
                    Level::Restricted,
                    "Capabilities",
                    format!("{name}.securityContext.capabilities.add: {cap}"),
                );
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

fn strings(list: &Value) -> Vec<&str> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

fn apparmor_ok(kind: &Value) -> bool {
    kind.is_null() || kind == "RuntimeDefault" || kind == "Localhost"
}

fn selinux_ok(options: &Value) -> bool {
    let kind_ok = match options["type"].as_str() {
        None | Some("") => true,
        Some(t) => SELINUX_TYPES.contains(&t),
    };
    let empty = |v: &Value| v.is_null() || v == "";
    kind_ok && empty(&options["user"]) && empty(&options["role"])
}

/// The checker itself must catch what it claims to: one pod breaking every
/// control, one field each, and a compliant pod with nothing to report.
#[test]
fn the_checker_finds_every_control_and_passes_a_compliant_pod() {
    let compliant = serde_json::json!({
        "metadata": {"annotations": {"container.apparmor.security.beta.kubernetes.io/a": "runtime/default"}},
        "spec": {
            "securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "a",
                "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}},
            }],
            "volumes": [{"name": "c", "configMap": {"name": "x"}}, {"name": "d", "persistentVolumeClaim": {"claimName": "y"}}],
        },
    });
    assert_eq!(check(&compliant), vec![]);

    let bad = serde_json::json!({
        "metadata": {"annotations": {"container.apparmor.security.beta.kubernetes.io/a": "unconfined"}},
        "spec": {
            "hostNetwork": true, "hostPID": true, "hostIPC": true,
            "securityContext": {
                "runAsNonRoot": false, "runAsUser": 0,
                "seccompProfile": {"type": "Unconfined"},
                "windowsOptions": {"hostProcess": true},
                "appArmorProfile": {"type": "Unconfined"},
                "seLinuxOptions": {"type": "spc_t"},
                "sysctls": [{"name": "kernel.msgmax", "value": "1"}],
            },
            "initContainers": [{"name": "i", "securityContext": {"runAsUser": 0}}],
            "containers": [{
                "name": "a",
                "ports": [{"containerPort": 80, "hostPort": 80}],
                "securityContext": {
                    "privileged": true, "procMount": "Unmasked",
                    "seLinuxOptions": {"user": "root"},
                    "capabilities": {"add": ["SYS_ADMIN", "CHOWN"]},
                },
            }],
            "volumes": [{"name": "h", "hostPath": {"path": "/"}}, {"name": "n", "nfs": {"server": "s", "path": "/"}}],
        },
    });
    let found = check(&bad);
    let controls: std::collections::BTreeSet<(Level, &str)> =
        found.iter().map(|v| (v.level, v.control)).collect();
    let expected: std::collections::BTreeSet<(Level, &str)> = [
        (Level::Baseline, "HostProcess"),
        (Level::Baseline, "Host Namespaces"),
        (Level::Baseline, "Privileged Containers"),
        (Level::Baseline, "Capabilities"),
        (Level::Baseline, "HostPath Volumes"),
        (Level::Baseline, "Host Ports"),
        (Level::Baseline, "AppArmor"),
        (Level::Baseline, "SELinux"),
        (Level::Baseline, "/proc Mount Type"),
        (Level::Baseline, "Seccomp"),
        (Level::Baseline, "Sysctls"),
        (Level::Restricted, "Volume Types"),
        (Level::Restricted, "Privilege Escalation"),
        (Level::Restricted, "Running as Non-root"),
        (Level::Restricted, "Running as Non-root user"),
        (Level::Restricted, "Seccomp"),
        (Level::Restricted, "Capabilities"),
    ]
    .into_iter()
    .collect();
    assert_eq!(controls, expected, "{found:#?}");
    // Field by field where one control covers several.
    for field in [
        "hostNetwork",
        "hostPID",
        "hostIPC",
        "initContainers[i].securityContext.runAsUser",
        "initContainers[i].securityContext.allowPrivilegeEscalation",
        "containers[a].securityContext.capabilities.drop",
        "containers[a].securityContext.capabilities.add: SYS_ADMIN",
        "volumes[n].nfs",
        "annotation container.apparmor.security.beta.kubernetes.io/a",
    ] {
        assert!(
            found.iter().any(|v| v.field == field),
            "{field}: {found:#?}"
        );
    }
    // CHOWN is baseline's, not restricted's.
    assert!(found.iter().any(|v| v.level == Level::Restricted
        && v.field == "containers[a].securityContext.capabilities.add: CHOWN"));
    assert!(!found.iter().any(|v| v.level == Level::Baseline
        && v.field == "containers[a].securityContext.capabilities.add: CHOWN"));

    // Container-level settings may stand in for the pod's, and the
    // container's own value wins.
    let per_container = serde_json::json!({"spec": {
        "containers": [{"name": "a", "securityContext": {
            "runAsNonRoot": true, "seccompProfile": {"type": "Localhost", "localhostProfile": "p"},
            "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]},
        }}],
    }});
    assert_eq!(check(&per_container), vec![]);
    let overridden = serde_json::json!({"spec": {
        "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "a", "securityContext": {
            "runAsNonRoot": false, "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]},
        }}],
    }});
    assert_eq!(
        check(&overridden)
            .iter()
            .map(|v| v.field.as_str())
            .collect::<Vec<_>>(),
        ["containers[a].securityContext.runAsNonRoot"]
    );
}
