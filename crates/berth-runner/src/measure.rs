//! The runner's metrics, through the `metrics` facade: the binary decides whether and where
//! they are exported (docs/operations.md lists them).

use std::time::Duration;

use berth_proto::Task;

/// A task was claimed: how long its first attempt waited in the queue, and whether this is a
/// retry. Later attempts' waits are left out: they began at a requeue this row no longer says.
pub(crate) fn claimed(task: &Task) {
    if task.attempt == 1 {
        let waited = (chrono::Utc::now() - task.created_at)
            .to_std()
            .unwrap_or_default();
        metrics::histogram!("berth_queue_wait_seconds").record(waited);
    } else {
        metrics::counter!("berth_retries_total").increment(1);
    }
}

/// An attempt ended, `outcome` in a word (succeeded, failed, …), after `took`.
pub(crate) fn ended(outcome: &'static str, took: Duration) {
    metrics::counter!("berth_attempts_total", "outcome" => outcome).increment(1);
    metrics::histogram!("berth_attempt_duration_seconds", "outcome" => outcome).record(took);
}

/// A sandbox was created and started for an attempt.
pub(crate) fn sandbox_started(took: Duration) {
    metrics::histogram!("berth_sandbox_start_seconds").record(took);
}
