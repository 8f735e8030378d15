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
    /// A `kubernetes.io/dockerconfigjson` Secret to generate (this name
    /// plus a content hash) from the credentials the push used, holding
    /// only the registry hosts the rendered pods pull from; added to every
    /// pod as `imagePullSecrets` beside `pullSecret` and the catalogue's.
    #[serde(default)]
    pub generated_pull_secret: Option<String>,
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
    pub expose: Keyed<Exposure>,
    /// Per workload (the catalogue's Deployment names), what this
    /// deployment sets differently from the catalogue.
    #[serde(default)]
    pub workloads: Keyed<WorkloadSettings>,
    /// Ingresses for the HTTP Services.
    #[serde(default)]
    pub ingress: Option<IngressSettings>,
}

/// A mapping whose keys keep the line they were written on, in file order,
/// so that a key naming nothing of the catalogue is reported at its line.
#[derive(Debug)]
pub struct Keyed<T>(pub Vec<(Spanned<String>, T)>);

impl<T> Default for Keyed<T> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<T> Keyed<T> {
    /// The entry for `name`.
    pub fn get(&self, name: &str) -> Option<&T> {
        self.0.iter().find(|(k, _)| k.value == name).map(|(_, v)| v)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Keyed<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Visit<T> {
            type Value = Keyed<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut entries: Vec<(Spanned<String>, T)> = Vec::new();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    if entries.iter().any(|(k, _)| k.value == key.value) {
                        return Err(serde::de::Error::custom(format!(
                            "`{}` is given twice",
                            key.value
                        )));
                    }
                    let value = map.next_value()?;
                    entries.push((key, value));
                }
                Ok(Keyed(entries))
            }
        }
        deserializer.deserialize_map(Visit(std::marker::PhantomData))
    }
}

/// What one workload sets differently in this deployment. Every field
/// replaces the catalogue's (`resources` per `requests`/`limits` key).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadSettings {
    /// `spec.replicas`.
    #[serde(default)]
    pub replicas: Option<Spanned<i64>>,
    /// Requests and limits of the workload's containers (not its init
    /// containers), key by key over the catalogue's.
    #[serde(default)]
    pub resources: Option<Resources>,
    /// The pod's `nodeSelector`.
    #[serde(default)]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// The pod's `tolerations`, as Kubernetes writes them.
    #[serde(default)]
    pub tolerations: Option<Vec<Value>>,
    /// The pod's `affinity`, as Kubernetes writes it.
    #[serde(default)]
    pub affinity: Option<Value>,
    /// Extra environment variables of the workload's containers (a name
    /// the catalogue sets is replaced); never a credential.
    #[serde(default)]
    pub env: Keyed<Value>,
}

/// Container requests and limits (`cpu`, `memory`, …).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// `resources.requests`.
    #[serde(default)]
    pub requests: BTreeMap<String, Value>,
    /// `resources.limits`.
    #[serde(default)]
    pub limits: BTreeMap<String, Value>,
}

/// The Ingresses of this deployment: one per Service named.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IngressSettings {
    /// `spec.ingressClassName` (the cluster's default class when absent).
    #[serde(default)]
    pub class_name: Option<String>,
    /// Annotations of every Ingress (the controller's settings).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// By Service name: how it is reached.
    pub services: Keyed<IngressRoute>,
}

/// How one Service is reached through an Ingress.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IngressRoute {
    /// The host name clients use.
    pub host: String,
    /// A `kubernetes.io/tls` Secret in the namespace holding the host's
    /// certificate; plain HTTP when absent.
    #[serde(default)]
    pub tls_secret: Option<String>,
    /// The Service port by name (default `http`).
    #[serde(default)]
    pub port: Option<Spanned<String>>,
    /// The path prefix (default `/`).
    #[serde(default)]
    pub path: Option<String>,
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
    /// Only these ports (by name) leave the cluster: the catalogue's
    /// Service stays in-cluster with all its ports, and a Service
    /// `<name>-external` of the profile's type carries these. All ports
    /// when absent.
    #[serde(default)]
    pub ports: Option<Vec<Spanned<String>>>,
}

/// The suffix of the Service that exposes only some ports of another.
pub const EXTERNAL_SUFFIX: &str = "-external";

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
        for name in env
            .pull_secret
            .iter()
            .chain(&env.generated_pull_secret)
            .chain(env.existing_secrets.values())
        {
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
            let Some(text) = scalar(value) else {
                return Err(RenderError::invalid(
                    path,
                    format!("env.{key} must be a string, number or boolean"),
                ));
            };
            values.insert(key.clone(), text);
        }
        for (name, settings) in &env.workloads.0 {
            let line = name.referenced.line();
            let name = &name.value;
            if let Some(replicas) = &settings.replicas
                && replicas.value < 0
            {
                return Err(RenderError::at_line(
                    path,
                    replicas.referenced.line(),
                    format!("workloads.{name}.replicas must be 0 or more"),
                ));
            }
            for (key, value) in &settings.env.0 {
                if !is_env_name(&key.value) {
                    return Err(RenderError::at_line(
                        path,
                        key.referenced.line(),
                        format!(
                            "workloads.{name}.env.{}: not an environment variable name (letters, digits, `_`, `-`, `.`; no leading digit)",
                            key.value
                        ),
                    ));
                }
                if scalar(value).is_none() {
                    return Err(RenderError::at_line(
                        path,
                        key.referenced.line(),
                        format!(
                            "workloads.{name}.env.{} must be a string, number or boolean",
                            key.value
                        ),
                    ));
                }
            }
            if let Some(resources) = &settings.resources {
                for (field, map) in [
                    ("requests", &resources.requests),
                    ("limits", &resources.limits),
                ] {
                    if let Some((key, _)) = map.iter().find(|(_, v)| scalar(v).is_none()) {
                        return Err(RenderError::at_line(
                            path,
                            line,
                            format!(
                                "workloads.{name}.resources.{field}.{key} must be a quantity such as 500m or 1Gi"
                            ),
                        ));
                    }
                }
            }
        }
        if let Some(ingress) = &env.ingress {
            for (service, route) in &ingress.services.0 {
                let line = service.referenced.line();
                let service = &service.value;
                let host = route.host.strip_prefix("*.").unwrap_or(&route.host);
                if !is_dns_subdomain(host) {
                    return Err(RenderError::at_line(
                        path,
                        line,
                        format!(
                            "ingress.services.{service}.host `{}` is not a host name (no scheme, port or path)",
                            route.host
                        ),
                    ));
                }
                if let Some(secret) = &route.tls_secret
                    && !is_dns_subdomain(secret)
                {
                    return Err(RenderError::at_line(
                        path,
                        line,
                        format!(
                            "ingress.services.{service}.tlsSecret `{secret}` is not a valid Secret name"
                        ),
                    ));
                }
                if let Some(prefix) = &route.path
                    && !prefix.starts_with('/')
                {
                    return Err(RenderError::at_line(
                        path,
                        line,
                        format!("ingress.services.{service}.path `{prefix}` must start with `/`"),
                    ));
                }
            }
        }
        let mut claimed: BTreeMap<i64, String> = BTreeMap::new();
        for (service, exposure) in &env.expose.0 {
            let service = &service.value;
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

/// A YAML scalar as the string Kubernetes wants (env values, quantities).
pub(crate) fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// What Kubernetes accepts as an environment variable name.
fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
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
pub(crate) fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_dns_label)
}
