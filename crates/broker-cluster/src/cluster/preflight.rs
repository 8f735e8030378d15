//! The preflight of a start: every object the plan will apply, sent as a
//! server-side dry run (`dryRun=All`) before the first write, so an invalid
//! object, an immutable field, a quota or an admission policy stops the
//! start with nothing of the set changed.

use kube::api::{Patch, PatchParams};

use super::connect::Cluster;
use super::requests::STOP_MANAGER;
use super::start::PlannedStart;
use crate::compare::FIELD_MANAGER;
use crate::error::ClusterError;
use crate::objects::Kind;
use crate::plan::StartStep;
use crate::preflight;

impl Cluster {
    /// Dry-runs each object the plan applies; the first refusal is the
    /// error. `namespace_created` says whether this run created the
    /// namespace so the dry runs could happen, for the message.
    pub(super) async fn preflight(
        &self,
        planned: &PlannedStart,
        force_conflicts: bool,
        namespace_created: bool,
    ) -> Result<(), ClusterError> {
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
        Ok(())
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
