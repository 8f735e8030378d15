//! One deployment's settings: the profile and everything that differs
//! between clusters (namespace, registry, pull secret, storage, exposure,
//! the non-secret environment). Unknown keys are errors, so a typo never
//! silently falls back to a default.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::Spanned;

use crate::error::RenderError;
use crate::yaml;

/// How the broker is deployed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// One node: data in hostPath directories at fixed paths, exposed
    /// Services as NodePort with fixed ports (the seed's layout).
    SingleNode,
    /// Any cluster: PersistentVolumeClaims and LoadBalancer Services;
    /// placeholder credentials are refused.
    Cluster,
}

/// An environment file (`environments/*.yaml`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Environment {
    /// The profile.
    pub profile: Profile,
    /// The namespace every object goes into.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// The registry host (`HOST[:PORT]`) nodes pull from, when it differs
    /// from the one the lock records (the build host may push to
    /// `127.0.0.1:5000` while nodes know the registry by another name).
    #[serde(default)]
    pub registry: Option<String>,
    /// A Secret of type `kubernetes.io/dockerconfigjson` in the namespace,
    /// added to every pod as `imagePullSecrets`.
    #[serde(default)]
    pub pull_secret: Option<String>,
    /// Non-secret environment values (TZ, hosts, ports) for the catalogue's
    /// `environment: true` ConfigMaps.
    #[serde(default)]
    pub env: BTreeMap<String, Value>,
    /// Secret generators served by a Secret the operator manages instead
    /// (generator name → existing Secret name); `--env-file` is then not
    /// needed for them.
    #[serde(default)]
    pub existing_secrets: BTreeMap<String, String>,
    /// Per PersistentVolumeClaim of the catalogue, where its data lives.
    #[serde(default)]
    pub storage: BTreeMap<String, Storage>,
    /// Services reachable from outside the cluster, by Service name.
    #[serde(default)]
    pub expose: BTreeMap<String, Exposure>,
}

fn default_namespace() -> String {
    "broker".to_owned()
}

/// Where one claim's data lives.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Storage {
    /// single-node: the node directory.
    #[serde(default)]
    pub host_path: Option<String>,
    /// cluster: the StorageClass (the cluster default when absent).
    #[serde(default)]
    pub storage_class: Option<String>,
    /// cluster: the requested size, e.g. `10Gi`.
    #[serde(default)]
    pub size: Option<String>,
    /// cluster: access modes (`ReadWriteOnce` when absent).
    #[serde(default)]
    pub access_modes: Option<Vec<String>>,
}

/// How one Service is exposed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Exposure {
    /// single-node: fixed node port per Service port name.
    #[serde(default)]
    pub node_ports: BTreeMap<String, Spanned<i64>>,
    /// Annotations for the Service (LoadBalancer settings of the cloud).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// The node port range of a default Kubernetes installation.
pub const NODE_PORTS: std::ops::RangeInclusive<i64> = 30000..=32767;

/// A parsed, self-consistent environment and where it came from.
#[derive(Debug)]
pub struct LoadedEnvironment {
    /// The file.
    pub path: PathBuf,
    /// Its content.
    pub env: Environment,
    /// `env` values as strings.
    pub values: BTreeMap<String, String>,
}

impl LoadedEnvironment {
    /// Reads and checks `path`: the checks that need only this file
    /// (node port ranges and clashes, profile-specific keys).
    pub fn read(path: &Path) -> Result<Self, RenderError> {
        let text = std::fs::read_to_string(path).map_err(|e| RenderError::io("read", path, e))?;
        let env: Environment = yaml::parse(path, &text)?;
        if !is_dns_label(&env.namespace) {
            return Err(RenderError::invalid(
                path,
                format!(
                    "namespace `{}` is not a DNS label (lowercase letters, digits, `-`)",
                    env.namespace
                ),
            ));
        }
        if let Some(registry) = &env.registry
            && (registry.is_empty() || registry.contains(['/', ' ']) || registry.contains("://"))
        {
            return Err(RenderError::invalid(
                path,
                format!(
                    "registry `{registry}` is not a registry host: write HOST or HOST:PORT (the repository comes from the lock)"
                ),
            ));
        }
        for name in env.pull_secret.iter().chain(env.existing_secrets.values()) {
            if !is_dns_subdomain(name) {
                return Err(RenderError::invalid(
                    path,
                    format!(
                        "`{name}` is not a valid Secret name (lowercase letters, digits, `-`, `.`)"
                    ),
                ));
            }
        }
        let mut values = BTreeMap::new();
        for (key, value) in &env.env {
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => {
                    return Err(RenderError::invalid(
                        path,
                        format!("env.{key} must be a string, number or boolean"),
                    ));
                }
            };
            values.insert(key.clone(), text);
        }
        let mut claimed: BTreeMap<i64, String> = BTreeMap::new();
        for (service, exposure) in &env.expose {
            if env.profile == Profile::Cluster && !exposure.node_ports.is_empty() {
                return Err(RenderError::invalid(
                    path,
                    format!(
                        "expose.{service}.nodePorts: the cluster profile exposes Services as LoadBalancer; node ports belong to single-node"
                    ),
                ));
            }
            for (port, number) in &exposure.node_ports {
                let line = number.referenced.line();
                if !NODE_PORTS.contains(&number.value) {
                    return Err(RenderError::at_line(
                        path,
                        line,
                        format!(
                            "node port {} of {service}/{port} is outside {}-{}",
                            number.value,
                            NODE_PORTS.start(),
                            NODE_PORTS.end()
                        ),
                    ));
                }
                let owner = format!("{service}/{port}");
                if let Some(first) = claimed.insert(number.value, owner.clone()) {
                    return Err(RenderError::at_line(
                        path,
                        line,
                        format!(
                            "node port {} is claimed by both {first} and {owner}; give each its own",
                            number.value
                        ),
                    ));
                }
            }
        }
        for (claim, storage) in &env.storage {
            let cluster_keys = storage.storage_class.is_some()
                || storage.size.is_some()
                || storage.access_modes.is_some();
            match env.profile {
                Profile::SingleNode if storage.host_path.is_none() || cluster_keys => {
                    return Err(RenderError::invalid(
                        path,
                        format!(
                            "storage.{claim}: the single-node profile keeps data in a node directory: give `hostPath` only"
                        ),
                    ));
                }
                Profile::Cluster if storage.host_path.is_some() || storage.size.is_none() => {
                    return Err(RenderError::invalid(
                        path,
                        format!(
                            "storage.{claim}: the cluster profile uses PersistentVolumeClaims: give `size` (and optionally `storageClass`, `accessModes`), no `hostPath`"
                        ),
                    ));
                }
                _ => {}
            }
            if let Some(host_path) = &storage.host_path
                && !host_path.starts_with('/')
            {
                return Err(RenderError::invalid(
                    path,
                    format!("storage.{claim}.hostPath `{host_path}` is not an absolute path"),
                ));
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            env,
            values,
        })
    }
}

/// An RFC 1123 label, as namespace and object names must be.
pub(crate) fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// An RFC 1123 subdomain, as Secret names must be.
fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_dns_label)
}
