//! Cancellation of running and orphaned tasks, and timeouts: each ends the task with its
//! work so far kept.

use std::time::Duration;

use berth_proto::TaskStatus;
use berth_runner::{Outcome, StopReason};
use berth_store::ClaimLimits;

use crate::harness::*;

on_both_backends!(
    cancelling_a_running_task_stops_it,
    cancelling_a_task_whose_runner_died_still_ends_it,
    a_task_past_its_timeout_ends_timed_out_with_its_work,
);

/// An executor that works until asked to stop, then returns its partial diff.
fn until_stopped() -> std::sync::Arc<impl berth_runner::Executor> {
    Scripted::new(|_task, ctx: berth_runner::Context| async move {
        ctx.stop.cancelled().await;
        let seen = ctx.stop_reason().expect("a stop has a reason");
        let diff = format!("partial work, stopped because {seen:?}").into_bytes();
        Outcome::Stopped { diff: Some(diff) }
    })
}

async fn cancelling_a_running_task_stops_it(backend: Backend) {
    let db = TestStore::new(backend).await;
    let store = db.open().await;
    let owner = store.upsert_user("alice").await.unwrap().id;
    let runner = RunningRunner::start(quick_config("node"), db.open().await, until_stopped());
    let task = enqueue(store.as_ref(), owner, "long job", None).await;
    eventually(Duration::from_secs(30), "task running", || async {
        status_of(store.as_ref(), owner, task.id).await == TaskStatus::Running
    })
    .await;

    let asked = store.cancel_task(owner, task.id).await.unwrap().unwrap();
    assert_eq!(asked.status, TaskStatus::Cancelling);
    eventually(Duration::from_secs(30), "task cancelled", || async {
        status_of(store.as_ref(), owner, task.id).await == TaskStatus::Cancelled
    })
    .await;
    let diff = store
        .get_diff(owner, task.id)
        .await
        .unwrap()
        .expect("the work is kept");
    assert_eq!(
        String::from_utf8(diff).unwrap(),
        format!("partial work, stopped because {:?}", StopReason::Cancelled)
    );
    runner.stop().await;
}

async fn cancelling_a_task_whose_runner_died_still_ends_it(backend: Backend) {
    let db = TestStore::new(backend).await;
    let store = db.open().await;
    let owner = store.upsert_user("alice").await.unwrap().id;
    let task = enqueue(store.as_ref(), owner, "orphan", None).await;
    // A runner claims it and dies at once: nothing will renew its lease.
    let limits = ClaimLimits {
        node_id: "dead".into(),
        lease_ms: 300,
        node_capacity: 1,
        per_user_limit: 1,
    };
    store.claim_next_task(&limits).await.unwrap().unwrap();
    store.cancel_task(owner, task.id).await.unwrap();

    // Any live runner's reaper ends it.
    let runner = RunningRunner::start(quick_config("survivor"), db.open().await, until_stopped());
    eventually(Duration::from_secs(30), "orphan cancelled", || async {
        status_of(store.as_ref(), owner, task.id).await == TaskStatus::Cancelled
    })
    .await;
    let ended = store.get_task(owner, task.id).await.unwrap().unwrap();
    assert!(ended.error.unwrap().contains("stopped renewing"));
    runner.stop().await;
}

async fn a_task_past_its_timeout_ends_timed_out_with_its_work(backend: Backend) {
    let db = TestStore::new(backend).await;
    let store = db.open().await;
    let owner = store.upsert_user("alice").await.unwrap().id;
    let runner = RunningRunner::start(quick_config("node"), db.open().await, until_stopped());
    let task = enqueue(store.as_ref(), owner, "too slow", Some(1)).await;
    eventually(Duration::from_secs(30), "task timed out", || async {
        status_of(store.as_ref(), owner, task.id).await == TaskStatus::TimedOut
    })
    .await;
    let ended = store.get_task(owner, task.id).await.unwrap().unwrap();
    assert_eq!(
        ended.error.as_deref(),
        Some("ran longer than its timeout of 1 s")
    );
    assert!(ended.result.has_diff);
    let diff = store.get_diff(owner, task.id).await.unwrap().unwrap();
    assert!(String::from_utf8(diff).unwrap().ends_with("TimedOut"));
    runner.stop().await;
}
