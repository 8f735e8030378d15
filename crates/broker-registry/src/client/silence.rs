//! Giving up on a registry that answers nothing: the one deadline that
//! bounds how long a run waits on a dead or stalling registry, whatever
//! the retry count and per-request timeouts say (issue 12, item 5: 444 s
//! with the old defaults, a 75 s probe and then 60 s per attempt).
//!
//! Silence is the time since the registry last answered anything (any
//! status), counted only while at least one request of ours is waiting on
//! it: an idle client (a build between two pushes) is not silent. Backoff
//! sleeps we chose are not silence either. Uploads are watched by their
//! body's progress instead (`transfer`), since a registry answers an upload
//! only once its body has arrived.

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// How long one registry may stay silent before a run gives up on it.
#[derive(Debug)]
pub(crate) struct Silence {
    budget: Duration,
    state: Mutex<State>,
    /// Set once the budget ran out: later requests fail at once rather
    /// than each waiting out the budget again.
    gave_up: AtomicBool,
}

#[derive(Debug)]
struct State {
    /// Operations waiting on the registry.
    waiting: usize,
    /// Since when the registry has been silent (meaningful while
    /// `waiting > 0`).
    since: Instant,
}

/// Marks an operation as waiting on the registry while it lives.
pub(crate) struct Waiting<'a>(&'a Silence);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.waiting = state.waiting.saturating_sub(1);
    }
}

impl Silence {
    /// A watch that gives up after `budget` of silence.
    pub(crate) fn new(budget: Duration) -> Self {
        Self {
            budget,
            state: Mutex::new(State {
                waiting: 0,
                since: Instant::now(),
            }),
            gave_up: AtomicBool::new(false),
        }
    }

    /// The budget.
    pub(crate) fn budget(&self) -> Duration {
        self.budget
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Two plain fields: a panic elsewhere cannot leave them torn.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An operation starts waiting on the registry; nested and concurrent
    /// operations share one silent period, which starts with the first.
    pub(crate) fn begin(&self) -> Waiting<'_> {
        let mut state = self.lock();
        if state.waiting == 0 {
            state.since = Instant::now();
        }
        state.waiting += 1;
        Waiting(self)
    }

    /// The registry answered: the silence is over.
    pub(crate) fn answered(&self) {
        self.lock().since = Instant::now();
    }

    /// We slept `delay` by choice (a backoff): not the registry's silence.
    pub(crate) fn slept(&self, delay: Duration) {
        let mut state = self.lock();
        state.since = (state.since + delay).min(Instant::now());
    }

    /// Whether the budget already ran out once.
    pub(crate) fn gave_up(&self) -> bool {
        self.gave_up.load(Ordering::Relaxed)
    }

    /// Runs `work` until it completes (`Some`) or the registry has been
    /// silent for the whole budget (`None`; every later call then returns
    /// `None` at once). The deadline moves whenever the registry answers
    /// any request of this client.
    pub(crate) async fn watch<F: Future>(&self, work: F) -> Option<F::Output> {
        if self.gave_up() {
            return None;
        }
        let _waiting = self.begin();
        let mut work = std::pin::pin!(work);
        loop {
            let deadline = self.lock().since + self.budget;
            tokio::select! {
                out = &mut work => return Some(out),
                () = tokio::time::sleep_until(deadline) => {
                    if Instant::now() >= self.lock().since + self.budget {
                        self.gave_up.store(true, Ordering::Relaxed);
                        return None;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn silence_ends_the_wait_and_answers_extend_it() {
        let silence = Silence::new(Duration::from_secs(30));
        // Work that never completes is cut off after the budget.
        let started = Instant::now();
        let cut = silence.watch(std::future::pending::<()>()).await;
        assert!(cut.is_none());
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        // And everything after fails at once.
        assert!(silence.watch(async { 1 }).await.is_none());

        // Answers keep a long operation alive.
        let silence = Silence::new(Duration::from_secs(30));
        let long = async {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_secs(20)).await;
                silence.answered();
            }
            7
        };
        assert_eq!(silence.watch(long).await, Some(7));

        // Idle time between operations is not silence.
        tokio::time::sleep(Duration::from_secs(100)).await;
        assert_eq!(silence.watch(async { 8 }).await, Some(8));
    }
}
