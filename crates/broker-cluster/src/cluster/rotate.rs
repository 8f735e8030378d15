//! `start --rotate-credentials`: a read-once credential changed in the
//! environment is changed inside its running server first (the catalogue's
//! [`labels::ROTATE_CREDENTIALS`] script, run through the API server's
//! exec), so the new Secret the start then applies matches what the
//! server holds. Runs after the preflight and before the first apply: a
//! failed change leaves the whole set as it was.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::connect::Cluster;
use super::reporter::Reporter;
use super::start::PlannedStart;
use crate::credentials::{self, CredentialChange};
use crate::error::ClusterError;
use crate::labels;
use crate::rollout;

/// How long a rotation script may run: a password change takes a second.
const ROTATION_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

impl Cluster {
    /// Runs each change's script in a ready pod of its workload, the new
    /// value on standard input; the first failure is the error.
    pub(super) async fn rotate_credentials(
        &self,
        changes: &[CredentialChange],
        planned: &PlannedStart,
        reporter: &dyn Reporter,
    ) -> Result<(), ClusterError> {
        for change in changes {
            let workload = &change.workload;
            let desired =
                serde_json::to_value(&planned.prepared.objects[workload]).unwrap_or_default();
            let Some(script) = credentials::rotate_script(&desired) else {
                // The preflight refused this already.
                continue;
            };
            let live = planned.live.get(workload);
            let selector = live
                .and_then(|l| l.data.pointer("/spec/selector"))
                .and_then(|s| serde_json::from_value(s.clone()).ok());
            let container = live
                .and_then(|l| l.data.pointer("/spec/template/spec/containers/0/name"))
                .and_then(|n| n.as_str())
                .unwrap_or_default()
                .to_owned();
            let pod = self
                .pods()
                .await?
                .into_iter()
                .find(|p| rollout::matches_selector(selector.as_ref(), p) && ready(p))
                .and_then(|p| p.metadata.name)
                .ok_or_else(|| {
                    ClusterError::Refused(format!(
                        "{workload}: --rotate-credentials changes {} inside a running {}, and none is ready; start it with the old value first, or change it yourself and pass --credentials-changed-in-place",
                        change.variable, workload.name
                    ))
                })?;
            reporter.line(&format!(
                "rotate {} inside pod {pod} ({workload}, data in {})",
                change.variable,
                change.claims.join(", ")
            ));
            self.run_rotation(&pod, &container, &script, change).await?;
        }
        Ok(())
    }

    async fn run_rotation(
        &self,
        pod: &str,
        container: &str,
        script: &str,
        change: &CredentialChange,
    ) -> Result<(), ClusterError> {
        let failed = |why: String| {
            ClusterError::Refused(format!(
                "{}: changing {} inside pod {pod} failed ({why}); nothing was applied, the server keeps the old value",
                change.workload, change.variable
            ))
        };
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let params = AttachParams::default()
            .container(container)
            .stdin(true)
            .stdout(true)
            .stderr(true);
        let command = vec![
            "sh".to_owned(),
            "-c".to_owned(),
            script.to_owned(),
            "rotate".to_owned(),
            change.variable.clone(),
        ];
        let mut attached = api
            .exec(pod, command, &params)
            .await
            .map_err(|e| failed(format!("the exec request was refused: {}", first_line(&e))))?;
        // The script reads one line; stdin stays open until the exit
        // status is in: closing it early closes the whole exec on servers
        // without the v5 stream protocol (before Kubernetes 1.29), and the
        // status with it.
        let mut stdin = attached.stdin();
        if let Some(stdin) = stdin.as_mut() {
            let mut input = change.new_value.clone();
            input.push(b'\n');
            stdin
                .write_all(&input)
                .await
                .map_err(|e| failed(format!("writing the new value: {e}")))?;
            stdin.flush().await.ok();
        }
        let (mut stdout, mut stderr) = (attached.stdout(), attached.stderr());
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let read_out = async {
            if let Some(s) = stdout.as_mut() {
                s.read_to_end(&mut out).await.ok();
            }
        };
        let read_err = async {
            if let Some(s) = stderr.as_mut() {
                s.read_to_end(&mut err).await.ok();
            }
        };
        let status_future = attached.take_status();
        let status = async {
            match status_future {
                Some(status) => status.await,
                None => None,
            }
        };
        let Ok(((), (), status)) = tokio::time::timeout(ROTATION_LIMIT, async {
            tokio::join!(read_out, read_err, status)
        })
        .await
        else {
            return Err(failed(format!(
                "the {} script did not finish within {} s",
                labels::ROTATE_CREDENTIALS,
                ROTATION_LIMIT.as_secs()
            )));
        };
        drop(stdin);
        let mut output = out;
        output.extend(err);
        attached.join().await.ok();
        let success = status
            .as_ref()
            .is_some_and(|s| s.status.as_deref() == Some("Success"));
        if success {
            return Ok(());
        }
        let new_value = String::from_utf8_lossy(&change.new_value).into_owned();
        let last = String::from_utf8_lossy(&output)
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| rollout::mask(l, &Some(vec![new_value])))
            .unwrap_or_default();
        let why = status
            .and_then(|s| s.message)
            .unwrap_or_else(|| "no exit status".into());
        Err(failed(if last.is_empty() {
            format!("{} script: {why}", labels::ROTATE_CREDENTIALS)
        } else {
            format!(
                "{} script: {why}; it said: {last}",
                labels::ROTATE_CREDENTIALS
            )
        }))
    }
}

fn ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn first_line(error: &kube::Error) -> String {
    error
        .to_string()
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}
