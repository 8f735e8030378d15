//! API discovery for kinds outside [`Kind`]'s fixed table: a CRD's kind in
//! the manifests (`ServiceMonitor`), or one a previous start recorded on
//! the ApplySet parent. One discovery request per kind asked about, each
//! answer kept for the rest of the run.

use kube::api::GroupVersionKind;
use kube::discovery::{self, Scope};

use super::connect::{Cluster, Target, classify_error};
use crate::error::ClusterError;
use crate::objects::{Kind, RenderedSet, ServedKind};

impl Cluster {
    /// `rendered` with every object of a kind outside the fixed table
    /// given the kind the cluster serves; a kind it does not serve is an
    /// error naming the object and its file, before any write.
    pub(super) async fn resolve_kinds(
        &self,
        rendered: &RenderedSet,
    ) -> Result<RenderedSet, ClusterError> {
        if rendered.unresolved.is_empty() {
            return Ok(rendered.clone());
        }
        let mut answers = Vec::new();
        for unresolved in &rendered.unresolved {
            let kind = self
                .served_kind(&unresolved.api_version, &unresolved.kind)
                .await?;
            answers.push((
                unresolved.api_version.clone(),
                unresolved.kind.clone(),
                kind,
            ));
        }
        rendered.clone().resolve(|api_version, kind| {
            answers
                .iter()
                .find(|(v, k, _)| v == api_version && k == kind)
                .and_then(|(_, _, found)| *found)
        })
    }

    /// The kind `kind` of `api_version` as the cluster serves it, `None`
    /// when it does not (no such group, version or kind).
    pub(super) async fn served_kind(
        &self,
        api_version: &str,
        kind: &str,
    ) -> Result<Option<Kind>, ClusterError> {
        let cache_key = format!("{api_version} {kind}");
        if let Some(known) = self.discovered(&cache_key) {
            return Ok(known);
        }
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let found = match discovery::pinned_kind(&self.client, &gvk).await {
            Ok((resource, capabilities)) => Some(
                ServedKind {
                    api_version: resource.api_version,
                    group: resource.group,
                    kind: resource.kind,
                    plural: resource.plural,
                    namespaced: capabilities.scope == Scope::Namespaced,
                }
                .intern(),
            ),
            Err(e) if not_served(&e) => None,
            Err(e) => {
                return Err(classify_error(
                    e,
                    "discover",
                    Target::new(&format!("{kind} ({api_version})"), kind, None),
                ));
            }
        };
        self.remember(cache_key, found);
        Ok(found)
    }

    /// A `Kind.group` name from the parent's annotation that is outside
    /// the fixed table, at its group's preferred version; `None` when the
    /// cluster no longer serves it (its CRD was removed).
    pub(super) async fn served_group_kind(
        &self,
        group_kind: &str,
    ) -> Result<Option<Kind>, ClusterError> {
        let cache_key = group_kind.to_owned();
        if let Some(known) = self.discovered(&cache_key) {
            return Ok(known);
        }
        let (kind, group) = group_kind.split_once('.').unwrap_or((group_kind, ""));
        let found = match discovery::group(&self.client, group).await {
            Ok(api_group) => api_group.recommended_kind(kind).map(|(resource, caps)| {
                ServedKind {
                    api_version: resource.api_version,
                    group: resource.group,
                    kind: resource.kind,
                    plural: resource.plural,
                    namespaced: caps.scope == Scope::Namespaced,
                }
                .intern()
            }),
            Err(e) if not_served(&e) => None,
            Err(e) => {
                return Err(classify_error(
                    e,
                    "discover",
                    Target::new(group_kind, kind, None),
                ));
            }
        };
        self.remember(cache_key, found);
        Ok(found)
    }

    fn discovered(&self, key: &str) -> Option<Option<Kind>> {
        self.discovered
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(key)
            .copied()
    }

    fn remember(&self, key: String, found: Option<Kind>) {
        self.discovered
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(key, found);
    }
}

/// Whether discovery failed because the kind is not there (rather than
/// because the server could not be asked).
fn not_served(error: &kube::Error) -> bool {
    match error {
        kube::Error::Discovery(_) => true,
        kube::Error::Api(status) => status.code == 404,
        _ => false,
    }
}
