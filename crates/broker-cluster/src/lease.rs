//! Who may change the broker now: one `start`, `stop` or `restart` per
//! namespace at a time, through a `coordination.k8s.io` Lease. This is the
//! decision over a Lease as read; [`crate::cluster`] reads, writes and
//! renews it.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::LeaseSpec;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// The Lease's name in the broker's namespace.
pub const LEASE_NAME: &str = "broker-images";

/// How long a holder's claim lasts without renewal. A holder killed with
/// `-9` blocks the next run at most this long; the holder renews at a
/// third of it, so a slow API server does not lose it.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);

/// What a run may do with the Lease as it found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseDecision {
    /// No Lease yet: create it.
    Create,
    /// Free, expired or already ours: take it (an update guarded by the
    /// resourceVersion read, so two runs cannot both win).
    Take,
    /// Another run holds it and renewed it in time.
    Held {
        /// Its holder identity (command, host and pid).
        holder: String,
        /// When it was last renewed.
        renewed: Option<Timestamp>,
    },
}

/// Decides for `me` over the Lease spec read (`None`: no Lease).
pub fn decide(spec: Option<&LeaseSpec>, me: &str, now: Timestamp) -> LeaseDecision {
    let Some(spec) = spec else {
        return LeaseDecision::Create;
    };
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder.is_empty() || holder == me {
        return LeaseDecision::Take;
    }
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0);
    let duration = spec
        .lease_duration_seconds
        .map_or(LEASE_DURATION.as_secs() as i64, i64::from);
    let expired =
        renewed.is_none_or(|at| now.duration_since(at) > SignedDuration::from_secs(duration));
    if expired {
        LeaseDecision::Take
    } else {
        LeaseDecision::Held { holder, renewed }
    }
}

/// The one line a run that gave up waiting prints.
pub fn busy_message(
    namespace: &str,
    holder: &str,
    renewed: Option<Timestamp>,
    waited: Duration,
) -> String {
    let renewed = renewed.map_or_else(String::new, |t| format!(", last renewed {t}"));
    format!(
        "namespace {namespace} is being changed by {holder} (Lease {LEASE_NAME}{renewed}); waited {}s: let it finish and run again (a killed run's claim lapses within {}s)",
        waited.as_secs(),
        LEASE_DURATION.as_secs()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    fn spec(holder: &str, renewed_secs_ago: i64, now: Timestamp) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(now - SignedDuration::from_secs(renewed_secs_ago))),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_missing_lease_is_created() {
        assert_eq!(decide(None, "me", Timestamp::now()), LeaseDecision::Create);
    }

    #[test]
    fn a_lease_renewed_in_time_by_another_run_is_held() {
        let now = Timestamp::now();
        let decision = decide(
            Some(&spec("broker-images start on a (pid 1)", 5, now)),
            "me",
            now,
        );
        assert!(matches!(decision, LeaseDecision::Held { holder, .. } if holder.contains("pid 1")));
    }

    /// A holder killed with -9 never releases: its claim lapses.
    #[test]
    fn a_lease_not_renewed_for_its_duration_is_taken() {
        let now = Timestamp::now();
        assert_eq!(
            decide(Some(&spec("other", 16, now)), "me", now),
            LeaseDecision::Take
        );
    }

    #[test]
    fn a_released_or_own_lease_is_taken() {
        let now = Timestamp::now();
        assert_eq!(
            decide(Some(&spec("", 1, now)), "me", now),
            LeaseDecision::Take
        );
        assert_eq!(
            decide(Some(&spec("me", 1, now)), "me", now),
            LeaseDecision::Take
        );
    }

    #[test]
    fn the_busy_line_names_the_holder_and_how_long_a_dead_one_blocks() {
        let line = busy_message(
            "broker",
            "broker-images start on host (pid 7)",
            None,
            Duration::from_secs(30),
        );
        assert_eq!(
            line,
            "namespace broker is being changed by broker-images start on host (pid 7) (Lease broker-images); waited 30s: let it finish and run again (a killed run's claim lapses within 15s)"
        );
    }
}
