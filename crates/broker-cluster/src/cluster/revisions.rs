//! Revisions on the cluster: recorded after a start ends ready, listed by
//! `history`, applied again by `rollback` (through `start`, so a rollback
//! is preflighted, waited for and recorded like any start).

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::Value;

use super::connect::{Cluster, Target, classify_error};
use super::reporter::Reporter;
use super::start::{StartOutcome, StartRun};
use crate::compare::FIELD_MANAGER;
use crate::error::ClusterError;
use crate::objects::{Kind, RenderedSet};
use crate::revision::{self, Revision, RevisionSummary};

impl Cluster {
    fn revision_api(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The revision ConfigMaps, oldest first, as JSON.
    async fn revision_config_maps(&self) -> Result<Vec<Value>, ClusterError> {
        let list = self
            .revision_api()
            .list(&ListParams::default().labels(revision::REVISION_LABEL))
            .await
            .map_err(|e| {
                classify_error(
                    e,
                    "list",
                    Target::new(
                        "configmaps",
                        "configmaps (revisions)",
                        Some(&self.namespace),
                    ),
                )
            })?;
        let mut found: Vec<(u64, Value)> = list
            .items
            .into_iter()
            .filter_map(|cm| serde_json::to_value(cm).ok())
            .filter_map(|v| revision::summary(&v).ok().map(|s| (s.number, v)))
            .collect();
        found.sort_by_key(|(n, _)| *n);
        Ok(found.into_iter().map(|(_, v)| v).collect())
    }

    /// `history`: the namespace's revisions, oldest first.
    pub async fn revisions(&self) -> Result<Vec<RevisionSummary>, ClusterError> {
        self.revision_config_maps()
            .await?
            .iter()
            .map(|v| revision::summary(v).map_err(revision_error))
            .collect()
    }

    /// One revision in full.
    pub async fn revision(&self, number: u64) -> Result<Revision, ClusterError> {
        let all = self.revision_config_maps().await?;
        let numbers: Vec<u64> = all
            .iter()
            .filter_map(|v| revision::summary(v).ok())
            .map(|s| s.number)
            .collect();
        let Some(found) = all
            .iter()
            .find(|v| revision::summary(v).is_ok_and(|s| s.number == number))
        else {
            return Err(ClusterError::Refused(format!(
                "there is no revision {number} in namespace {} ({}); see broker-images history",
                self.namespace,
                if numbers.is_empty() {
                    "it has none".to_owned()
                } else {
                    format!(
                        "it has {}",
                        numbers
                            .iter()
                            .map(u64::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            )));
        };
        revision::decode(found).map_err(revision_error)
    }

    /// After a start ended ready: records what it applied as a new
    /// revision unless the newest one holds the same objects, and deletes
    /// revisions beyond [`revision::KEEP`]. Returns the new number.
    pub(super) async fn record_revision(
        &self,
        prepared: &RenderedSet,
    ) -> Result<Option<u64>, ClusterError> {
        let stored = revision::stored_objects(prepared);
        let hash = revision::content_hash(&stored);
        let existing = self.revisions().await?;
        if existing.last().is_some_and(|r| r.content_hash == hash) {
            return Ok(None);
        }
        let number = existing.last().map_or(1, |r| r.number + 1);
        let created = Timestamp::now().to_string();
        let body = revision::to_config_map(&self.namespace, number, &created, &stored);
        let name = revision::name(number);
        self.revision_api()
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER),
                &Patch::Apply(&body),
            )
            .await
            .map_err(|e| self.error(e, "patch", Kind::ConfigMap, Some(&name)))?;
        let mut numbers: Vec<u64> = existing.iter().map(|r| r.number).collect();
        numbers.push(number);
        for old in revision::beyond_keep(&numbers) {
            let old_name = revision::name(old);
            match self
                .revision_api()
                .delete(&old_name, &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(self.error(e, "delete", Kind::ConfigMap, Some(&old_name))),
            }
        }
        Ok(Some(number))
    }

    /// The revision a rollback without a number goes to: the one before
    /// the newest (the newest is what runs now).
    pub async fn previous_revision(&self) -> Result<u64, ClusterError> {
        let all = self.revisions().await?;
        match all.as_slice() {
            [.., previous, _] => Ok(previous.number),
            [only] => Err(ClusterError::Refused(format!(
                "namespace {} has only revision {}, the one running; nothing to roll back to",
                self.namespace, only.number
            ))),
            [] => Err(ClusterError::Refused(format!(
                "namespace {} has no revisions yet: a start that ends ready records one",
                self.namespace
            ))),
        }
    }

    /// The objects a rollback to `revision` applies: its own, with the
    /// Secrets the namespace holds now in place of its value-less ones.
    pub async fn rollback_set(&self, revision: &Revision) -> Result<RenderedSet, ClusterError> {
        let live = self.members(&BTreeSet::from([Kind::Secret])).await?;
        let live_secrets: Vec<String> = live.keys().map(|k| k.name.clone()).collect();
        let objects =
            revision::with_current_secrets(&revision.objects, &live_secrets).map_err(|why| {
                ClusterError::Refused(format!(
                    "rollback to revision {}: {why}",
                    revision.summary.number
                ))
            })?;
        revision::to_rendered_set(&self.namespace, objects).map_err(|why| {
            ClusterError::Refused(format!(
                "rollback to revision {}: {why}",
                revision.summary.number
            ))
        })
    }

    /// `rollback`: applies `revision` again, waits like `start`.
    pub async fn rollback(
        &self,
        revision: &Revision,
        run: StartRun,
        reporter: &dyn Reporter,
    ) -> Result<StartOutcome, ClusterError> {
        let set = self.rollback_set(revision).await?;
        reporter.line(&format!(
            "rolling back to revision {} ({})",
            revision.summary.number, revision.summary.created
        ));
        self.start(&set, run, reporter).await
    }
}

fn revision_error(e: revision::RevisionError) -> ClusterError {
    ClusterError::Object {
        object: format!("ConfigMap/{}", e.name),
        why: e.why,
    }
}
