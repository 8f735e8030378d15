//! The preflight of a start: every object the plan will apply, sent as a
//! server-side dry run (`dryRun=All`) before the first write, so an invalid
//! object, an immutable field, a quota or an admission policy stops the
//! start with nothing of the set changed.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::IngressClass;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::Value;

use super::connect::{Cluster, Target, classify_error};
use super::requests::STOP_MANAGER;
use super::start::PlannedStart;
use crate::compare::FIELD_MANAGER;
use crate::credentials::{self, CredentialChange, CredentialPolicy};
use crate::error::ClusterError;
use crate::labels;
use crate::objects::Kind;
use crate::plan::StartStep;
use crate::preflight::{self, Refusal};

impl Cluster {
    /// Dry-runs each object the plan applies; the first refusal is the
    /// error. `namespace_created` says whether this run created the
    /// namespace so the dry runs could happen, for the message.
    pub(super) async fn preflight(
        &self,
        planned: &PlannedStart,
        force_conflicts: bool,
        namespace_created: bool,
        credentials: CredentialPolicy,
    ) -> Result<Vec<CredentialChange>, ClusterError> {
        self.check_pull_secrets(planned, namespace_created).await?;
        self.check_ingress_classes(planned, namespace_created)
            .await?;
        let changes = match credentials {
            CredentialPolicy::ChangedInPlace => Vec::new(),
            policy => self.read_once_changes(planned, policy).await?,
        };
        for step in &planned.plan.steps {
            let StartStep::Apply(key) = step else {
                continue;
            };
            if key.kind == Kind::Namespace {
                continue;
            }
            let object = &planned.prepared.objects[key];
            let mut params = PatchParams::apply(FIELD_MANAGER).dry_run();
            if force_conflicts {
                params = params.force();
            }
            let api = self.api(key.kind);
            let mut answer = api.patch(&key.name, &params, &Patch::Apply(object)).await;
            // What stop owns (the replica count) the real start releases
            // first; the dry run takes it as the start will.
            if let Err(kube::Error::Api(status)) = &answer
                && status.code == 409
                && conflict_only_with_stop(status)
            {
                let forced = PatchParams::apply(FIELD_MANAGER).dry_run().force();
                answer = api.patch(&key.name, &forced, &Patch::Apply(object)).await;
            }
            match answer {
                Ok(_) => {}
                Err(kube::Error::Api(status)) => {
                    if let Some(refusal) = preflight::refusal(key, &status) {
                        return Err(ClusterError::Preflight {
                            refusal,
                            namespace_created,
                        });
                    }
                    return Err(self.error(
                        kube::Error::Api(status),
                        "patch (dry run)",
                        key.kind,
                        Some(&key.name),
                    ));
                }
                Err(other) => {
                    return Err(self.error(other, "patch (dry run)", key.kind, Some(&key.name)));
                }
            }
        }
        Ok(changes)
    }
}

fn conflict_only_with_stop(status: &kube::core::Status) -> bool {
    let causes = status
        .details
        .as_ref()
        .map(|d| d.causes.clone())
        .unwrap_or_default();
    !causes.is_empty()
        && causes.iter().all(|c| {
            c.reason != "FieldManagerConflict" || c.message.contains(&format!("\"{STOP_MANAGER}\""))
        })
}

impl Cluster {
    /// Every `imagePullSecrets` name a workload uses exists, in the set
    /// or in the namespace: otherwise its pods would sit in
    /// ImagePullBackOff minutes later.
    async fn check_pull_secrets(
        &self,
        planned: &PlannedStart,
        namespace_created: bool,
    ) -> Result<(), ClusterError> {
        let in_set: BTreeSet<&str> = planned
            .prepared
            .objects
            .keys()
            .filter(|k| k.kind == Kind::Secret)
            .map(|k| k.name.as_str())
            .collect();
        let mut wanted: BTreeMap<String, String> = BTreeMap::new();
        for (key, object) in &planned.prepared.objects {
            if !key.kind.is_workload() {
                continue;
            }
            let names = object
                .data
                .pointer("/spec/template/spec/imagePullSecrets")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for entry in names {
                if let Some(name) = entry["name"].as_str()
                    && !in_set.contains(name)
                {
                    wanted
                        .entry(name.to_owned())
                        .or_insert_with(|| key.to_string());
                }
            }
        }
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        for (name, user) in wanted {
            let found = secrets
                .get_opt(&name)
                .await
                .map_err(|e| self.error(e, "get", Kind::Secret, Some(&name)))?;
            if found.is_none() {
                return Err(ClusterError::Preflight {
                    refusal: Refusal {
                        object: user,
                        field: Some("spec.template.spec.imagePullSecrets".into()),
                        why: format!(
                            "names Secret {name}, which does not exist in namespace {}",
                            self.namespace
                        ),
                        hint: format!(
                            "create it (kubectl create secret docker-registry {name} -n {} ...) or let render generate one (the environment's pull secret)",
                            self.namespace
                        ),
                    },
                    namespace_created,
                });
            }
        }
        Ok(())
    }
}

impl Cluster {
    /// The read-once credentials (postgres' `POSTGRES_PASSWORD`) whose
    /// value changes while the workload's claims already hold data: that
    /// would not change the server's password but lock its clients out.
    /// Refused before any write, unless `policy` is to rotate them and the
    /// catalogue says how; then they are returned, to be changed inside
    /// the server before the first apply.
    async fn read_once_changes(
        &self,
        planned: &PlannedStart,
        policy: CredentialPolicy,
    ) -> Result<Vec<CredentialChange>, ClusterError> {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let mut changes = Vec::new();
        for (key, object) in &planned.prepared.objects {
            if !key.kind.is_workload() {
                continue;
            }
            let Some(live) = planned.live.get(key) else {
                continue;
            };
            let desired = serde_json::to_value(object).unwrap_or_default();
            let live = serde_json::to_value(live).unwrap_or_default();
            // Its data: claims that exist, and (single-node) the node
            // directories of a workload that already ran on them.
            let mut initialised: Vec<String> = credentials::claims(&desired)
                .into_iter()
                .filter(|claim| {
                    planned
                        .live
                        .keys()
                        .any(|k| k.kind == Kind::PersistentVolumeClaim && &k.name == claim)
                })
                .map(|claim| format!("claim {claim}"))
                .collect();
            initialised.extend(
                credentials::node_directories(&live)
                    .into_iter()
                    .map(|path| format!("node directory {path}")),
            );
            if initialised.is_empty() {
                continue;
            }
            let before = credentials::read_once_sources(&live);
            for source in credentials::read_once_sources(&desired) {
                let Some(old) = before.iter().find(|b| b.variable == source.variable) else {
                    continue;
                };
                if old.secret == source.secret && old.key == source.key {
                    continue;
                }
                let new_value = planned
                    .prepared
                    .objects
                    .iter()
                    .find(|(k, _)| k.kind == Kind::Secret && k.name == source.secret)
                    .and_then(|(_, o)| serde_json::to_value(o).ok())
                    .and_then(|o| credentials::secret_value(&o, &source.key));
                let old_value = secrets
                    .get_opt(&old.secret)
                    .await
                    .map_err(|e| self.error(e, "get", Kind::Secret, Some(&old.secret)))?
                    .and_then(|s| serde_json::to_value(s).ok())
                    .and_then(|o| credentials::secret_value(&o, &old.key));
                let (Some(new_value), Some(old_value)) = (new_value, old_value) else {
                    continue;
                };
                if new_value == old_value {
                    continue;
                }
                let script = credentials::rotate_script(&desired);
                if policy == CredentialPolicy::Refuse || script.is_none() {
                    let rotate = if script.is_some() {
                        format!(
                            ", or pass --rotate-credentials to have start change it inside the running {} first",
                            key.name
                        )
                    } else if policy == CredentialPolicy::Rotate {
                        format!(
                            "; --rotate-credentials cannot: the catalogue gives {key} no {} script",
                            labels::ROTATE_CREDENTIALS
                        )
                    } else {
                        String::new()
                    };
                    return Err(ClusterError::Refused(format!(
                        "{key}: {} changed, but its server read the old value only when {} was first initialised and ignores it since; the new value would lock its clients out. Change the password inside the running {} first, then start with --credentials-changed-in-place (or keep the old value){rotate}",
                        source.variable,
                        initialised.join(", "),
                        key.name
                    )));
                }
                changes.push(CredentialChange {
                    workload: key.clone(),
                    variable: source.variable.clone(),
                    claims: initialised.clone(),
                    new_value,
                });
            }
        }
        Ok(changes)
    }
}

impl Cluster {
    /// An Ingress whose class the cluster lacks (or without a class where
    /// no IngressClass is the default) is accepted by the API server and
    /// then served by no controller: said before any write instead.
    async fn check_ingress_classes(
        &self,
        planned: &PlannedStart,
        namespace_created: bool,
    ) -> Result<(), ClusterError> {
        let ingresses: Vec<(String, Option<String>)> = planned
            .prepared
            .objects
            .iter()
            .filter(|(k, _)| k.kind == Kind::Ingress)
            .map(|(k, o)| {
                let class = o
                    .data
                    .pointer("/spec/ingressClassName")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                (k.to_string(), class)
            })
            .collect();
        if ingresses.is_empty() {
            return Ok(());
        }
        let classes: Api<IngressClass> = Api::all(self.client.clone());
        let listed = match classes.list(&ListParams::default()).await {
            Ok(list) => list.items,
            // Namespace-limited credentials may not list cluster-scoped
            // classes: the server's own checks stand.
            Err(kube::Error::Api(status)) if status.code == 403 => return Ok(()),
            Err(e) => {
                return Err(classify_error(
                    e,
                    "list",
                    Target::new("ingressclasses.networking.k8s.io", "ingressclasses", None),
                ));
            }
        };
        let names: Vec<String> = listed
            .iter()
            .filter_map(|c| c.metadata.name.clone())
            .collect();
        let has_default = listed.iter().any(|c| {
            c.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("ingressclass.kubernetes.io/is-default-class"))
                .is_some_and(|v| v == "true")
        });
        let have = if names.is_empty() {
            "the cluster has none".to_owned()
        } else {
            format!("the cluster has {}", names.join(", "))
        };
        for (object, class) in ingresses {
            let why = match &class {
                Some(class) if !names.contains(class) => {
                    format!("names IngressClass {class}, which does not exist ({have})")
                }
                None if !has_default => {
                    format!("has no class and no IngressClass is the default ({have})")
                }
                _ => continue,
            };
            return Err(ClusterError::Preflight {
                refusal: Refusal {
                    object,
                    field: Some("spec.ingressClassName".into()),
                    why,
                    hint: "set the environment's ingress.className to a class the cluster has, or install an ingress controller first".into(),
                },
                namespace_created,
            });
        }
        Ok(())
    }
}
