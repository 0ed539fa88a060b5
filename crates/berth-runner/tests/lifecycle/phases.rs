//! What every work phase gets from the lifecycle: its work kept when it fails, its container
//! removed when it panics, and its reasons redacted.

use async_trait::async_trait;
use berth_proto::{EventKind, TaskStatus};
use berth_runner::attempt::{Ending, Job, Work};
use berth_sandbox::ExecRequest;
use berth_testkit::docker::containers_labelled;

use crate::{run_to_end, SECRET};

/// Leaves a file in the workspace, then gives up, naming a secret.
struct GivesUp;

#[async_trait]
impl Work for GivesUp {
    async fn run(&self, job: Job<'_>) -> Ending {
        let write = ExecRequest::new("echo kept > notes.txt");
        job.sandbox.exec(&write, &mut |_, _| {}).await.unwrap();
        Ending::Failed(format!("gave up: the key {SECRET} was refused"))
    }
}

/// Panics in the middle of its work, naming a secret.
struct Panics;

#[async_trait]
impl Work for Panics {
    async fn run(&self, job: Job<'_>) -> Ending {
        panic!("lost hold of {SECRET} in container {}", job.sandbox.id());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_work_phase_keeps_its_diff_and_its_reason_is_redacted() {
    let (task, events) = run_to_end(GivesUp, 3).await;
    assert_eq!(task.status, TaskStatus::Failed, "not retried");
    assert_eq!(
        task.error.as_deref(),
        Some("gave up: the key [REDACTED] was refused")
    );
    assert!(task.result.has_diff, "the work so far is kept");
    let error = events.iter().find(|e| e.kind == EventKind::Error).unwrap();
    assert_eq!(
        error.payload["message"],
        "gave up: the key [REDACTED] was refused"
    );
    let all = serde_json::to_string(&events).unwrap();
    assert!(!all.contains(SECRET), "{all}");
    assert!(containers_labelled(&format!("berth.task={}", task.id)).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_work_phase_that_panics_still_has_its_container_removed() {
    let (task, events) = run_to_end(Panics, 1).await;
    assert_eq!(task.status, TaskStatus::Failed);
    let reason = task.error.unwrap();
    assert!(
        reason.contains("the attempt crashed: lost hold of [REDACTED]"),
        "{reason}"
    );
    assert!(!serde_json::to_string(&events).unwrap().contains(SECRET));
    assert!(
        containers_labelled(&format!("berth.task={}", task.id)).is_empty(),
        "removed by the attempt, not by a sweep"
    );
}
