//! Holding the namespace's Lease for the length of a run: taken before
//! the first write, renewed in the background, released at the end.
//! [`crate::lease`] decides; this reads and writes.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};

use super::connect::{Cluster, Target, classify_error};
use super::reporter::Reporter;
use crate::error::ClusterError;
use crate::labels;
use crate::lease::{self, LEASE_DURATION, LEASE_NAME, LeaseDecision};

/// A held Lease; renewed until [`LeaseGuard::release`] (or, if the run is
/// killed, until it lapses by itself).
pub struct LeaseGuard {
    api: Api<Lease>,
    me: String,
    renewal: tokio::task::JoinHandle<()>,
}

impl Cluster {
    /// Takes the namespace's Lease for `command`, waiting up to `wait`
    /// while another run holds it.
    pub(super) async fn hold_lease(
        &self,
        command: &str,
        wait: Duration,
        reporter: &dyn Reporter,
    ) -> Result<LeaseGuard, ClusterError> {
        let mut told = false;
        let api: Api<Lease> = Api::namespaced(self.client.clone(), &self.namespace);
        let me = holder_identity(command);
        let started = Instant::now();
        let error = |e: kube::Error, verb: &str| {
            classify_error(
                e,
                verb,
                Target::new(
                    "leases.coordination.k8s.io",
                    &format!("Lease/{LEASE_NAME}"),
                    Some(&self.namespace),
                ),
            )
        };
        loop {
            let found = api.get_opt(LEASE_NAME).await.map_err(|e| error(e, "get"))?;
            let decision = lease::decide(
                found.as_ref().and_then(|l| l.spec.as_ref()),
                &me,
                Timestamp::now(),
            );
            let written = match decision {
                LeaseDecision::Create => {
                    let lease = Lease {
                        metadata: ObjectMeta {
                            name: Some(LEASE_NAME.into()),
                            namespace: Some(self.namespace.clone()),
                            labels: Some(
                                labels::OURS
                                    .iter()
                                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                                    .collect(),
                            ),
                            ..ObjectMeta::default()
                        },
                        spec: Some(held_spec(&me, None)),
                    };
                    api.create(&PostParams::default(), &lease).await
                }
                LeaseDecision::Take => {
                    let mut lease = found.unwrap_or_default();
                    let before = lease.spec.take();
                    lease.spec = Some(held_spec(&me, before.as_ref()));
                    // The resourceVersion read makes this a compare-and-swap.
                    api.replace(LEASE_NAME, &PostParams::default(), &lease)
                        .await
                }
                LeaseDecision::Held { holder, renewed } => {
                    if !told {
                        reporter.line(&format!(
                            "waiting for {holder} to finish (Lease {LEASE_NAME}; at most {}s)",
                            wait.as_secs()
                        ));
                        told = true;
                    }
                    if started.elapsed() >= wait {
                        return Err(ClusterError::Busy(lease::busy_message(
                            &self.namespace,
                            &holder,
                            renewed,
                            started.elapsed(),
                        )));
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            match written {
                Ok(_) => break,
                // Another run won the race: read again.
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => return Err(error(e, "update")),
            }
        }
        let renewal = tokio::spawn(renew(api.clone(), me.clone()));
        Ok(LeaseGuard { api, me, renewal })
    }
}

impl LeaseGuard {
    /// Stops renewing and deletes the Lease if it is still ours, so the
    /// next run need not wait for it to lapse.
    pub async fn release(self) {
        self.renewal.abort();
        if let Ok(Some(lease)) = self.api.get_opt(LEASE_NAME).await {
            let ours = lease
                .spec
                .as_ref()
                .and_then(|s| s.holder_identity.as_deref())
                == Some(self.me.as_str());
            if ours {
                let params = DeleteParams {
                    preconditions: Some(kube::api::Preconditions {
                        resource_version: lease.metadata.resource_version.clone(),
                        uid: None,
                    }),
                    ..DeleteParams::default()
                };
                let _ = self.api.delete(LEASE_NAME, &params).await;
            }
        }
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.renewal.abort();
    }
}

/// Renews at a third of the duration while the run goes on.
async fn renew(api: Api<Lease>, me: String) {
    loop {
        tokio::time::sleep(LEASE_DURATION / 3).await;
        let Ok(Some(mut lease)) = api.get_opt(LEASE_NAME).await else {
            continue;
        };
        let ours = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            == Some(me.as_str());
        if !ours {
            return;
        }
        if let Some(spec) = lease.spec.as_mut() {
            spec.renew_time = Some(MicroTime(Timestamp::now()));
        }
        let _ = api
            .replace(LEASE_NAME, &PostParams::default(), &lease)
            .await;
    }
}

fn held_spec(me: &str, before: Option<&LeaseSpec>) -> LeaseSpec {
    let now = MicroTime(Timestamp::now());
    let transitions = before.and_then(|s| s.lease_transitions).unwrap_or(0);
    let same_holder = before.and_then(|s| s.holder_identity.as_deref()) == Some(me);
    LeaseSpec {
        holder_identity: Some(me.to_owned()),
        lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
        acquire_time: Some(now.clone()),
        renew_time: Some(now),
        lease_transitions: Some(if same_holder || before.is_none() {
            transitions
        } else {
            transitions + 1
        }),
        ..LeaseSpec::default()
    }
}

/// `broker-images start on HOST (pid N)`: what a waiting run names.
fn holder_identity(command: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "an unknown host".into());
    format!(
        "broker-images {command} on {host} (pid {})",
        std::process::id()
    )
}
