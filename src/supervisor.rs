//! Long-lived tasks are watched: none may end, or panic, unnoticed while the process says
//! it is healthy ("dead but ready").
//!
//! Each task has one policy:
//! - [`Supervisor::spawn`] (*exit*): the task must run until shutdown. Ending earlier — a
//!   panic, an error or a plain return — turns readiness false at once, is logged and
//!   counted, and starts the graceful drain; [`Supervisor::failure`] then makes the process
//!   exit non-zero so the orchestrator restarts it. Housekeeping loops, the HTTP servers and
//!   the Redis links have this policy: they hold no state worth keeping alive half-broken.
//! - [`Supervisor::spawn_restarting`] (*restart*): the component is rebuilt in process after
//!   a pause (1 s doubling to 30 s, reset after a minute of good running); meanwhile the
//!   failure is reported by the `on_failure` hook (the consumer turns not ready until its
//!   replacement has joined the group and resumes from the last committed offsets).

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::health::Health;
use crate::retry::Backoff;
use crate::stats::Stats;

const RESTART_BACKOFF_MIN: Duration = Duration::from_secs(1);
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A run this long counts as healthy: the next failure restarts after the shortest pause.
const STABLE_RUN: Duration = Duration::from_secs(60);

/// Watches the process's long-lived tasks.
pub(crate) struct Supervisor {
    health: Arc<Health>,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
    failure: Mutex<Option<String>>,
}

impl Supervisor {
    /// A supervisor that starts `shutdown` when a task with the exit policy fails.
    pub fn new(health: Arc<Health>, stats: Arc<Stats>, shutdown: CancellationToken) -> Arc<Self> {
        Arc::new(Supervisor {
            health,
            stats,
            shutdown,
            failure: Mutex::new(None),
        })
    }

    /// Runs `task` until shutdown; its ending before that is fatal (see the module docs).
    pub fn spawn<F>(self: &Arc<Self>, name: &'static str, task: F) -> JoinHandle<()>
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let me = self.clone();
        tokio::spawn(async move {
            let outcome = AssertUnwindSafe(task).catch_unwind().await;
            if me.shutdown.is_cancelled() {
                if let Some(reason) = unexpected(outcome) {
                    tracing::warn!(task = name, %reason, "task failed while shutting down");
                }
                return;
            }
            let reason = unexpected(outcome).unwrap_or_else(|| "ended unexpectedly".to_owned());
            me.fatal(name, reason);
        })
    }

    /// Runs the component `make` builds until `stop` fires, building a fresh one whenever
    /// it ends before that (see the module docs); `on_failure` runs after each failure.
    pub(crate) fn spawn_restarting<M, F>(
        self: &Arc<Self>,
        name: &'static str,
        stop: CancellationToken,
        mut make: M,
        on_failure: impl Fn() + Send + 'static,
    ) -> JoinHandle<()>
    where
        M: FnMut() -> F + Send + 'static,
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let me = self.clone();
        tokio::spawn(async move {
            let mut backoff = Backoff::new(RESTART_BACKOFF_MIN, RESTART_BACKOFF_MAX);
            loop {
                let started = Instant::now();
                let outcome = AssertUnwindSafe(make()).catch_unwind().await;
                if stop.is_cancelled() {
                    return;
                }
                let reason = unexpected(outcome).unwrap_or_else(|| "ended unexpectedly".to_owned());
                me.stats.task_failed(name);
                on_failure();
                if started.elapsed() >= STABLE_RUN {
                    backoff.reset();
                }
                tracing::error!(task = name, %reason, restart_in = ?backoff.upcoming(), "task failed; restarting it (not ready meanwhile)");
                if !backoff.pause(&stop).await {
                    return;
                }
                tracing::info!(task = name, "restarting task");
            }
        })
    }

    /// The first fatal failure, if any: the process should exit non-zero after its drain.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn fatal(&self, name: &'static str, reason: String) {
        self.health.fail(name);
        self.stats.task_failed(name);
        tracing::error!(task = name, %reason, "task failed; not ready, draining, then exiting non-zero so the process is restarted");
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert_with(|| format!("task {name} failed: {reason}"));
        self.shutdown.cancel();
    }
}

/// Runs `work` every `period` until `stop` fires: the housekeeping tasks below. Returns
/// only then (a supervised task that returns earlier has failed).
pub(crate) async fn every<F, Fut>(period: Duration, stop: CancellationToken, mut work: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tick.tick() => work().await,
        }
    }
}

/// Why a task ended, or `None` when it returned `Ok`.
fn unexpected(outcome: Result<anyhow::Result<()>, Box<dyn Any + Send>>) -> Option<String> {
    match outcome {
        Ok(Ok(())) => None,
        Ok(Err(error)) => Some(format!("{error:#}")),
        Err(panic) => Some(format!("panicked: {}", panic_message(panic.as_ref()))),
    }
}

/// The text of a panic payload (`panic!` gives a `&str` or a `String`).
pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn supervisor() -> (Arc<Supervisor>, Arc<Health>, CancellationToken) {
        let health = Arc::new(Health::new(false));
        health.kafka_assigned(vec![]);
        let shutdown = CancellationToken::new();
        (
            Supervisor::new(health.clone(), Arc::new(Stats::default()), shutdown.clone()),
            health,
            shutdown,
        )
    }

    #[tokio::test]
    async fn a_panicking_task_makes_the_process_unready_and_starts_the_drain() {
        let (sup, health, shutdown) = supervisor();
        assert!(health.is_ready());
        sup.spawn("housekeeping", async { panic!("injected fault") }).await.unwrap();
        assert!(!health.is_ready());
        assert!(shutdown.is_cancelled());
        let failure = sup.failure().unwrap();
        assert!(failure.contains("housekeeping") && failure.contains("injected fault"), "{failure}");
        assert_eq!(health.report(&Stats::default()).failed_task.as_deref(), Some("housekeeping"));
    }

    #[tokio::test]
    async fn a_task_that_returns_early_or_fails_is_fatal_too() {
        let (sup, _, _) = supervisor();
        sup.spawn("loop", async { Ok(()) }).await.unwrap();
        assert!(sup.failure().unwrap().contains("ended unexpectedly"));
        let (sup, _, _) = supervisor();
        sup.spawn("server", async { anyhow::bail!("address in use") }).await.unwrap();
        assert!(sup.failure().unwrap().contains("address in use"));
    }

    #[tokio::test]
    async fn ending_after_shutdown_is_expected() {
        let (sup, health, shutdown) = supervisor();
        shutdown.cancel();
        sup.spawn("loop", async { Ok(()) }).await.unwrap();
        assert!(sup.failure().is_none());
        assert_eq!(health.report(&Stats::default()).failed_task, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_restarting_component_is_rebuilt_after_each_failure_until_stopped() {
        let (sup, _, shutdown) = supervisor();
        let stop = CancellationToken::new();
        let (runs, failures) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
        let (r, f, s) = (runs.clone(), failures.clone(), stop.clone());
        let handle = sup.spawn_restarting(
            "consumer",
            stop.clone(),
            move || {
                let run = r.fetch_add(1, Ordering::SeqCst);
                let s = s.clone();
                async move {
                    match run {
                        0 => panic!("injected fault"),
                        1 => anyhow::bail!("broken"),
                        _ => {
                            s.cancelled().await;
                            Ok(())
                        }
                    }
                }
            },
            move || {
                f.fetch_add(1, Ordering::SeqCst);
            },
        );
        while runs.load(Ordering::SeqCst) < 3 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(failures.load(Ordering::SeqCst), 2);
        stop.cancel();
        handle.await.unwrap();
        assert!(sup.failure().is_none(), "a restarted component is not fatal");
        assert!(!shutdown.is_cancelled());
    }
}
