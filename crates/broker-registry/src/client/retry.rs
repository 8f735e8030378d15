//! Retry policy: which failures may pass (connection errors, timeouts, 408,
//! 429, 5xx), how long to wait between attempts, and the send loop that
//! applies it together with the auth handshake.
//!
//! The command-line defaults live here as constants, so `--jobs`,
//! `--retries` and `--stall-timeout` and [`super::ClientOptions::default`]
//! cannot disagree.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{RequestBuilder, Response, StatusCode};

use super::auth::Authorization;
use super::transport::tls_problem;
use super::{RegistryClient, Scope, error_chain};
use crate::error::RegistryError;
use crate::progress::Reporter;

/// Blobs transferred at once per image unless told otherwise (`--jobs`).
pub const DEFAULT_JOBS: usize = 4;
/// Attempts per request, the first included, unless told otherwise
/// (`--retries`).
pub const DEFAULT_RETRIES: u32 = 6;
/// Seconds without progress after which a request counts as stalled and is
/// abandoned and sent again, unless told otherwise (`--stall-timeout`).
/// Well below [`DEFAULT_GIVE_UP_SECS`]: one hung request is a retry, and
/// only a registry that answers none of them is given up on (issue 20:
/// with 60 s against 30 s, a single stalled HEAD ended the run).
pub const DEFAULT_STALL_TIMEOUT_SECS: u64 = 10;
/// Seconds a registry may answer nothing at all, on any request, while
/// requests wait on it, before the run gives up on it, unless told
/// otherwise (`--give-up-after`). Longer than the stall timeout, so a
/// stalled request is abandoned and retried before the registry is
/// declared dead, and an answer to the retry (or to any other request)
/// starts the silence afresh; a registry that answers none is down, and
/// waiting for every retry's timeout would only delay saying so.
pub const DEFAULT_GIVE_UP_SECS: u64 = 30;

/// How hard to retry a request that failed for a reason that may pass:
/// connection errors, timeouts, 408, 429 and 5xx.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    /// The first backoff delay; later ones grow exponentially, with jitter.
    pub min_delay: Duration,
    /// The longest backoff delay.
    pub max_delay: Duration,
    /// The longest `Retry-After` we honour; longer values are capped so a
    /// registry cannot park a release build for an hour.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: DEFAULT_RETRIES,
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The backoff delays between attempts, with jitter.
    pub(crate) fn delays(&self) -> impl Iterator<Item = Duration> + use<> {
        ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.max_attempts.saturating_sub(1) as usize)
            .with_jitter()
            .build()
    }
}

/// Whether a failed request may be sent again as it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Idempotent {
    /// Safe to resend (GET, HEAD, PUT of a manifest).
    Yes,
    /// Resending could corrupt server state (a PUT into an upload session):
    /// the caller restarts at a higher level instead.
    No,
}

impl RegistryClient {
    /// Sends a request built by `make`, handling the auth handshake and, for
    /// idempotent requests, retrying transient failures with backoff.
    ///
    /// Returns any response that is not a transient failure; the caller
    /// interprets its status.
    pub(crate) async fn send(
        &self,
        what: &str,
        scopes: &[Scope],
        idempotent: Idempotent,
        reporter: &dyn Reporter,
        make: &(dyn Fn(&reqwest::Client) -> RequestBuilder + Sync),
    ) -> Result<Response, RegistryError> {
        let mut scopes = scopes.to_vec();
        scopes.sort();
        let mut delays = self.options.retry.delays();
        let mut attempt = 0u32;
        let mut authenticated_once = false;
        // One silent period for all attempts: retries do not reset it.
        // Uploads are watched by their body's progress instead: one that
        // is sending is not waiting on an answer, and counting it as
        // silence would give up on a registry that answers everything
        // else once a long upload outlasted the budget.
        let _waiting = (idempotent == Idempotent::Yes).then(|| self.silence.begin());
        loop {
            attempt += 1;
            let sent = async {
                let authorization = self.authorization(&scopes).await?;
                let mut request = make(self.http().await?);
                request = match authorization {
                    Some(Authorization::Basic { username, password }) => {
                        request.basic_auth(username, Some(password))
                    }
                    Some(Authorization::Bearer(token)) => request.bearer_auth(token),
                    None => request,
                };
                Ok::<_, RegistryError>(request.send().await)
            };
            // An upload is answered only once its body arrived: its caller
            // watches the body's progress instead of the registry's silence.
            let sent = match idempotent {
                Idempotent::Yes => self.silence.watch(sent).await,
                Idempotent::No if self.silence.gave_up() => None,
                Idempotent::No => Some(sent.await),
            };
            let sent = sent.ok_or_else(|| self.unresponsive())??;
            if sent.is_ok() {
                self.silence.answered();
            }
            let failure = match sent {
                Ok(response) if response.status() == StatusCode::UNAUTHORIZED => {
                    if authenticated_once {
                        return Err(self.refused(&scopes));
                    }
                    authenticated_once = true;
                    // The token service may stall as well as the registry.
                    let challenge = self.handle_challenge(response.headers(), &scopes);
                    let handled = self.silence.watch(challenge).await;
                    handled.ok_or_else(|| self.unresponsive())??;
                    // The handshake is not a failure: do not count it.
                    attempt -= 1;
                    continue;
                }
                Ok(response) if is_transient(response.status()) => {
                    let retry_after = retry_after(response.headers())
                        .map(|d| d.min(self.options.retry.max_retry_after));
                    let status = response.status();
                    (format!("HTTP {status}"), retry_after)
                }
                Ok(response) => return Ok(response),
                Err(err) => {
                    if let Some(tls) = tls_problem(&err) {
                        return Err(RegistryError::Tls {
                            registry: self.registry.clone(),
                            why: tls,
                        });
                    }
                    (error_chain(&err), None)
                }
            };
            let (why, retry_after) = failure;
            let next = if idempotent == Idempotent::Yes {
                delays.next()
            } else {
                None
            };
            match next {
                Some(delay) => {
                    let delay = retry_after.unwrap_or(delay);
                    reporter.retrying(what, attempt, delay, &why);
                    tokio::time::sleep(delay).await;
                    self.silence.slept(delay);
                }
                None => {
                    return Err(RegistryError::Unreachable {
                        registry: self.registry.clone(),
                        what: what.to_owned(),
                        attempts: attempt,
                        why,
                    });
                }
            }
        }
    }
}

fn is_transient(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stalled_request_is_retried_well_before_the_registry_is_given_up() {
        // Issue 20: the stall timeout above the give-up budget turned one
        // stalled request into giving up on a registry that answered
        // everything else. Room for at least two retries of a stalled
        // request within the budget.
        let defaults = super::super::ClientOptions::default();
        assert!(
            defaults.read_timeout * 3 <= defaults.give_up_after,
            "stall timeout {:?}, give up after {:?}",
            defaults.read_timeout,
            defaults.give_up_after
        );
    }

    #[test]
    fn retry_delays_are_bounded() {
        let policy = RetryPolicy {
            max_attempts: 4,
            min_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            max_retry_after: Duration::from_secs(1),
        };
        let delays: Vec<Duration> = policy.delays().collect();
        assert_eq!(delays.len(), 3);
        assert!(
            delays.iter().all(|d| *d <= Duration::from_millis(100)),
            "{delays:?}"
        );
    }
}
