//! What every work phase gets from the lifecycle: its work kept when it fails, its container
//! removed when it panics, and its reasons redacted.

use async_trait::async_trait;
use berth_proto::{EventKind, TaskStatus};
use berth_runner::attempt::{Ending, Job, Work};
use berth_sandbox::ExecRequest;
use berth_testkit::docker::containers_labelled;

use crate::{run_to_end, run_with, Setup, SECRET};

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

/// Counts the execs its container has run before the work phase began, from the engine's
/// events (an exec that has ended is no longer listed on its container).
#[derive(Default)]
struct CountsExecs {
    before_work: std::sync::Mutex<Option<usize>>,
}

#[async_trait]
impl Work for &'static CountsExecs {
    async fn run(&self, job: Job<'_>) -> Ending {
        use futures::StreamExt;
        let docker = berth_sandbox::connect().await.expect("the Docker engine");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let filters = [("container".to_string(), vec![job.sandbox.id().to_string()])];
        let options = bollard::query_parameters::EventsOptionsBuilder::new()
            .since(&(now - 600).to_string())
            .until(&(now + 1).to_string())
            .filters(&filters.into_iter().collect())
            .build();
        let events: Vec<_> = docker.events(Some(options)).collect().await;
        let execs = events
            .into_iter()
            .map(|event| event.expect("the engine's events"))
            .filter(|event| {
                let action = event.action.as_deref().unwrap_or_default();
                action.starts_with("exec_create")
            })
            .count();
        *self.before_work.lock().unwrap() = Some(execs);
        Ending::Done {
            summary: String::new(),
        }
    }
}

/// A task with no setup, in the default image, has nothing of a setup's to keep out of its
/// diff: its sandbox runs no command before the work (the look for the setup's files costs a
/// round trip). With a setup, the setup runs and its files are looked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_without_a_setup_runs_nothing_in_its_sandbox_before_the_work() {
    let plain: &'static CountsExecs = Box::leak(Box::default());
    let (task, _) = run_with(plain, Setup::default()).await;
    assert_eq!(task.status, TaskStatus::Succeeded, "{:?}", task.error);
    assert_eq!(*plain.before_work.lock().unwrap(), Some(0));

    let with_setup: &'static CountsExecs = Box::leak(Box::default());
    let setup = Setup {
        setup_command: Some("true".into()),
        ..Setup::default()
    };
    let (task, _) = run_with(with_setup, setup).await;
    assert_eq!(task.status, TaskStatus::Succeeded, "{:?}", task.error);
    assert_eq!(
        *with_setup.before_work.lock().unwrap(),
        Some(2),
        "the setup, and the look for its files"
    );
}
