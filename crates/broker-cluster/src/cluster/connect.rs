//! The [`Cluster`] handle and how it is made: the kubeconfig read as
//! kubectl reads it, and kube errors turned into [`ClusterError`]s that say
//! which request on what failed. Lowest of the cluster modules: every
//! request goes through [`classify_error`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::applyset::ApplySet;
use crate::error::ClusterError;
use crate::objects::Kind;

/// The `User-Agent` of every request to the API server.
pub const USER_AGENT: &str = concat!("broker-images/", env!("CARGO_PKG_VERSION"));

/// Where the cluster is and which namespace is ours.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// A kubeconfig file; without it `KUBECONFIG` or `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// A context of the kubeconfig; without it the current context.
    pub context: Option<String>,
    /// The namespace of the broker (and of the ApplySet parent).
    pub namespace: String,
    /// How long to wait for a TCP/TLS connection to the API server.
    pub connect_timeout: Duration,
    /// How long `start`, `stop` and `restart` wait for another run's
    /// hold on the namespace (its Lease) before giving up.
    pub lease_wait: Duration,
}

impl ConnectOptions {
    /// Options for `namespace` with the kubeconfig found as kubectl finds it.
    pub fn new(namespace: &str) -> Self {
        Self {
            kubeconfig: None,
            context: None,
            namespace: namespace.to_owned(),
            connect_timeout: Duration::from_secs(5),
            lease_wait: Duration::from_secs(60),
        }
    }
}

/// A client bound to the broker's namespace and ApplySet.
#[derive(Clone)]
pub struct Cluster {
    pub(super) client: Client,
    pub(super) server: String,
    pub(super) namespace: String,
    pub(super) set: ApplySet,
    pub(super) lease_wait: Duration,
    /// API discovery's answers so far this run, by what was asked.
    pub(super) discovered: std::sync::Arc<std::sync::Mutex<BTreeMap<String, Option<Kind>>>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("server", &self.server)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// Where the kubelet mounts a pod's service account token, CA and
/// namespace (kube reads them from there).
const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Where the connection settings come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigSource {
    /// A kubeconfig file: `--kubeconfig`, `KUBECONFIG` or `~/.kube/config`.
    Kubeconfig,
    /// The pod's service account (token and CA mounted by the kubelet,
    /// `KUBERNETES_SERVICE_HOST`/`_PORT` set): a CI runner pod with no
    /// kubeconfig of its own.
    InCluster,
}

/// What [`ConfigSource::choose`] looks at, so the choice is testable
/// without touching the process environment.
pub trait ConfigEnvironment {
    /// An environment variable, `None` when unset or empty.
    fn var(&self, name: &str) -> Option<String>;
    /// Whether `~/.kube/config` exists.
    fn home_kubeconfig_exists(&self) -> bool;
}

/// The real process environment and home directory.
pub struct ProcessEnvironment;

impl ConfigEnvironment for ProcessEnvironment {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }

    fn home_kubeconfig_exists(&self) -> bool {
        std::env::var_os("HOME")
            .map(|home| PathBuf::from(home).join(".kube").join("config"))
            .is_some_and(|path| path.exists())
    }
}

impl ConfigSource {
    /// kubectl's order, then the in-cluster fallback client libraries use:
    /// a kubeconfig named by flag or `KUBECONFIG`, or found at home, always
    /// wins; without any, inside a pod, the service account. A `--context`
    /// means a kubeconfig was meant, so its absence stays an error.
    pub fn choose(options: &ConnectOptions, env: &dyn ConfigEnvironment) -> Self {
        let kubeconfig_named = options.kubeconfig.is_some()
            || options.context.is_some()
            || env.var("KUBECONFIG").is_some();
        if !kubeconfig_named
            && !env.home_kubeconfig_exists()
            && env.var("KUBERNETES_SERVICE_HOST").is_some()
        {
            ConfigSource::InCluster
        } else {
            ConfigSource::Kubeconfig
        }
    }
}

/// Reads the kubeconfig as kubectl would (`--kubeconfig`, else
/// `KUBECONFIG`, else `~/.kube/config`) and checks the context exists.
pub fn load_kubeconfig(options: &ConnectOptions) -> Result<Kubeconfig, ClusterError> {
    let kubeconfig = match &options.kubeconfig {
        Some(path) => {
            if !path.exists() {
                return Err(ClusterError::Kubeconfig(format!(
                    "{} does not exist; pass --kubeconfig with the cluster's kubeconfig file",
                    path.display()
                )));
            }
            Kubeconfig::read_from(path).map_err(|e| {
                ClusterError::Kubeconfig(format!("{}: {}", path.display(), kubeconfig_why(&e)))
            })?
        }
        None => Kubeconfig::read().map_err(|e| {
            ClusterError::Kubeconfig(format!(
                "cannot use $KUBECONFIG or ~/.kube/config: {}; pass --kubeconfig",
                kubeconfig_why(&e)
            ))
        })?,
    };
    let names: Vec<&str> = kubeconfig
        .contexts
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    let wanted = options
        .context
        .clone()
        .or_else(|| kubeconfig.current_context.clone());
    match wanted {
        None => Err(ClusterError::Kubeconfig(format!(
            "no current context; pass --context (have: {})",
            names.join(", ")
        ))),
        Some(name) if !names.contains(&name.as_str()) => Err(ClusterError::Kubeconfig(format!(
            "context {name} is not in the kubeconfig (have: {}); pass --context with one of them",
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        ))),
        Some(_) => Ok(kubeconfig),
    }
}

/// What is wrong with a kubeconfig, on one line without kube's own
/// repetition of the path or its YAML excerpt.
fn kubeconfig_why(error: &kube::config::KubeconfigError) -> String {
    use kube::config::KubeconfigError as E;
    match error {
        E::ReadConfig(io, _) => io.to_string(),
        E::Parse(yaml) => {
            let first = yaml.to_string();
            let first = first.lines().next().unwrap_or("").trim();
            let first = first.strip_prefix("error: ").unwrap_or(first);
            format!(
                "not a valid kubeconfig (YAML {first}); fix the file or pass another --kubeconfig"
            )
        }
        other => {
            let text = other.to_string();
            text.lines().next().unwrap_or("").to_owned()
        }
    }
}

/// What happened below HTTP, in words that say what to check; kube's and
/// hyper's type names (`ServiceError: client error (Connect)`) left out.
pub fn explain_transport(error: &(dyn std::error::Error + 'static)) -> String {
    let causes = broker_pins::transport::TransportCauses::of(error);
    if causes.refused() {
        "connection refused: nothing listens there; check the server address in the kubeconfig and that the cluster is running".into()
    } else if causes.timed_out() {
        "no answer in time: check the address and any firewall or VPN in between".into()
    } else if causes.cut() {
        "the connection was cut: check for a proxy or load balancer in between".into()
    } else if causes.unresolved() {
        "the server's host name does not resolve: check the address in the kubeconfig".into()
    } else if let Some(tls) = causes.tls() {
        format!("TLS failed ({tls}): check the kubeconfig's certificate-authority data")
    } else {
        causes.innermost().to_owned()
    }
}

/// What a failed request was about, for its error message.
#[derive(Clone, Debug)]
pub struct Target {
    /// `plural[.group]`, as RBAC names it (`deployments.apps`).
    pub resource: String,
    /// `Kind/name`, or the plural for a list.
    pub object: String,
    /// `in namespace NAME` or `cluster-wide`.
    pub scope: String,
}

impl Target {
    /// A request on `kind` (an object when `name` is given, else a list).
    pub fn of(kind: Kind, name: Option<&str>, namespace: &str) -> Self {
        let resource = match kind.group() {
            "" => kind.plural().to_owned(),
            g => format!("{}.{g}", kind.plural()),
        };
        Self::new(
            &resource,
            &match name {
                Some(n) => format!("{}/{n}", kind.name()),
                None => kind.plural().to_owned(),
            },
            kind.namespaced().then_some(namespace),
        )
    }

    /// A request on a resource that is not one of the applied kinds
    /// (pods, replicasets).
    pub fn new(resource: &str, object: &str, namespace: Option<&str>) -> Self {
        Self {
            resource: resource.to_owned(),
            object: object.to_owned(),
            scope: match namespace {
                Some(ns) => format!("in namespace {ns}"),
                None => "cluster-wide".to_owned(),
            },
        }
    }
}

/// Maps a kube error of `verb` on `target` to one of ours.
pub fn classify_error(error: kube::Error, verb: &str, target: Target) -> ClusterError {
    let Target {
        resource,
        object,
        scope,
    } = target;
    match error {
        kube::Error::Api(status) if status.code == 403 => ClusterError::Forbidden {
            verb: verb.to_owned(),
            resource,
            scope,
            message: status.message.clone(),
        },
        kube::Error::Api(status) if status.code == 409 => {
            let causes: Vec<_> = status
                .details
                .as_ref()
                .map(|d| d.causes.clone())
                .unwrap_or_default()
                .into_iter()
                .filter(|c| c.reason == "FieldManagerConflict")
                .collect();
            if causes.is_empty() {
                return ClusterError::Api {
                    verb: verb.to_owned(),
                    object,
                    code: status.code,
                    reason: status.reason.clone(),
                    message: status.message.clone(),
                };
            }
            // `conflict with "kubectl-edit" using apps/v1`: the quoted part.
            let managers: BTreeSet<String> = causes
                .iter()
                .map(|c| {
                    c.message
                        .split('"')
                        .nth(1)
                        .unwrap_or(c.message.as_str())
                        .to_owned()
                })
                .collect();
            let fields: Vec<String> = causes.iter().map(|c| c.field.clone()).collect();
            ClusterError::Conflict {
                object,
                manager: managers.into_iter().collect::<Vec<_>>().join(", "),
                field: fields.join(", "),
            }
        }
        kube::Error::Api(status) => ClusterError::Api {
            verb: verb.to_owned(),
            object,
            code: status.code,
            reason: status.reason.clone(),
            message: status.message.clone(),
        },
        other => ClusterError::Transport {
            verb: verb.to_owned(),
            object,
            why: explain_transport(&other),
        },
    }
}

/// An error and its causes on one line.
pub(super) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

impl Cluster {
    /// Connects as the kubeconfig says. Makes no request yet.
    pub async fn connect(options: &ConnectOptions) -> Result<Self, ClusterError> {
        let mut config = match ConfigSource::choose(options, &ProcessEnvironment) {
            ConfigSource::Kubeconfig => {
                let kubeconfig = load_kubeconfig(options)?;
                let kube_options = KubeConfigOptions {
                    context: options.context.clone(),
                    ..KubeConfigOptions::default()
                };
                Config::from_custom_kubeconfig(kubeconfig, &kube_options)
                    .await
                    .map_err(|e| ClusterError::Kubeconfig(chain(&e)))?
            }
            ConfigSource::InCluster => Config::incluster().map_err(|e| {
                ClusterError::Kubeconfig(format!(
                    "no kubeconfig, and the pod's service account in {SERVICE_ACCOUNT_DIR} cannot be used ({}); mount its token or pass --kubeconfig",
                    chain(&e)
                ))
            })?,
        };
        config.connect_timeout = Some(options.connect_timeout);
        config.read_timeout = Some(Duration::from_secs(60));
        config.default_namespace = options.namespace.clone();
        // API server audit logs name the client by it.
        config.headers.push((
            http::header::USER_AGENT,
            http::HeaderValue::from_static(USER_AGENT),
        ));
        let server = config.cluster_url.to_string();
        let client = Client::try_from(config).map_err(|e| ClusterError::Kubeconfig(chain(&e)))?;
        let mut cluster = Self::from_client(client, &server, &options.namespace);
        cluster.lease_wait = options.lease_wait;
        Ok(cluster)
    }

    /// Wraps an existing client (tests point one at a scripted server).
    pub fn from_client(client: Client, server: &str, namespace: &str) -> Self {
        Self {
            client,
            server: server.to_owned(),
            namespace: namespace.to_owned(),
            set: ApplySet::new(namespace),
            lease_wait: ConnectOptions::new(namespace).lease_wait,
            discovered: Default::default(),
        }
    }

    /// The same handle, waiting at most `wait` for another run's Lease.
    pub fn with_lease_wait(mut self, wait: Duration) -> Self {
        self.lease_wait = wait;
        self
    }

    /// The ApplySet this cluster handle works on.
    pub fn applyset(&self) -> &ApplySet {
        &self.set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Env {
        vars: &'static [(&'static str, &'static str)],
        home_config: bool,
    }

    impl ConfigEnvironment for Env {
        fn var(&self, name: &str) -> Option<String> {
            self.vars
                .iter()
                .find(|(k, v)| *k == name && !v.is_empty())
                .map(|(_, v)| (*v).to_owned())
        }
        fn home_kubeconfig_exists(&self) -> bool {
            self.home_config
        }
    }

    const IN_POD: &[(&str, &str)] = &[
        ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
        ("KUBERNETES_SERVICE_PORT", "443"),
    ];

    #[test]
    fn a_pod_without_a_kubeconfig_uses_its_service_account() {
        let options = ConnectOptions::new("broker");
        let env = Env {
            vars: IN_POD,
            home_config: false,
        };
        assert_eq!(
            ConfigSource::choose(&options, &env),
            ConfigSource::InCluster
        );
    }

    #[test]
    fn any_kubeconfig_wins_over_the_service_account() {
        let in_pod_with_kubeconfig_var = Env {
            vars: &[
                ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
                ("KUBECONFIG", "/ci/kubeconfig"),
            ],
            home_config: false,
        };
        let in_pod_with_home_config = Env {
            vars: IN_POD,
            home_config: true,
        };
        let options = ConnectOptions::new("broker");
        for env in [&in_pod_with_kubeconfig_var, &in_pod_with_home_config] {
            assert_eq!(
                ConfigSource::choose(&options, env),
                ConfigSource::Kubeconfig
            );
        }
        let mut flag = ConnectOptions::new("broker");
        flag.kubeconfig = Some(PathBuf::from("kc"));
        let mut context = ConnectOptions::new("broker");
        context.context = Some("prod".into());
        let in_pod = Env {
            vars: IN_POD,
            home_config: false,
        };
        for options in [&flag, &context] {
            assert_eq!(
                ConfigSource::choose(options, &in_pod),
                ConfigSource::Kubeconfig
            );
        }
    }

    #[test]
    fn outside_a_pod_the_kubeconfig_error_stands() {
        let options = ConnectOptions::new("broker");
        let env = Env {
            vars: &[("KUBERNETES_SERVICE_HOST", "")],
            home_config: false,
        };
        assert_eq!(
            ConfigSource::choose(&options, &env),
            ConfigSource::Kubeconfig
        );
    }
}
