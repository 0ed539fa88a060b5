//! How attempts end: the attempt number fences off every write of an attempt that lost its
//! task; an attempt finishes, is handed back (a drain or a retry), or is reaped when its
//! lease runs out.

use std::sync::{Arc, Mutex};

use berth_proto::{EventKind, TaskStatus, Usage};
use berth_store::{Fence, Released, Store, StoreError, TaskEnd};

use crate::support::*;

on_both_backends!(
    a_new_attempt_after_a_hand_back_fences_off_the_old_one,
    a_new_attempt_after_the_reaper_fences_off_the_old_one,
    finishing_keeps_the_result_and_ends_the_attempt,
    an_expired_lease_is_requeued_as_an_attempt_after_a_backoff,
    a_task_fails_with_a_reason_after_its_last_attempt,
    an_orphaned_cancelling_task_ends_cancelled,
    a_drain_requeues_at_once_without_counting_the_attempt,
    a_hand_back_with_a_retry_counts_the_attempt,
    a_drain_hand_back_uses_no_attempt_when_a_later_one_is_lost,
    a_node_finds_the_attempts_it_holds_and_every_live_attempt_is_listed,
);

/// Every write of the attempt `old` is refused, and its heartbeat finds nothing to renew.
async fn assert_fenced(store: &dyn Store, old: Fence) {
    let fenced = |result: Result<(), StoreError>, what: &str| match result {
        Err(StoreError::Fenced(id)) => assert_eq!(id, old.task_id),
        other => panic!("{what} by a stale attempt gave {other:?}"),
    };
    let text = serde_json::json!({ "text": "late" });
    let appended = store.append_event(old, EventKind::AssistantText, text.clone());
    fenced(appended.await.map(drop), "append_event");
    fenced(store.add_usage(old, &Usage::default()).await, "add_usage");
    let turn = store.record_turn(old, None, text, Vec::new());
    fenced(turn.await, "record_turn");
    fenced(store.save_diff(old, b"late diff").await, "save_diff");
    fenced(store.set_base_commit(old, "late").await, "set_base_commit");
    let finished = store.finish_task(old, ended(TaskStatus::Succeeded)).await;
    fenced(finished, "finish_task");
    let released = store.release_task(old, "late", None).await;
    fenced(released.map(drop), "release_task");
    assert_eq!(store.heartbeat(old, 60_000).await.unwrap(), None);
}

/// The attempt `new` holds the task: each of its writes goes through.
async fn assert_holds(store: &dyn Store, new: Fence) {
    let text = serde_json::json!({ "text": "current" });
    store
        .append_event(new, EventKind::AssistantText, text.clone())
        .await
        .unwrap();
    store.add_usage(new, &Usage::default()).await.unwrap();
    let none = Usage::default();
    store
        .record_turn(new, Some(&none), text, Vec::new())
        .await
        .unwrap();
    store.save_diff(new, b"diff").await.unwrap();
    store.set_base_commit(new, "abc123").await.unwrap();
    let renewed = store.heartbeat(new, 60_000).await.unwrap();
    assert_eq!(renewed, Some(TaskStatus::Running));
    store
        .finish_task(new, ended(TaskStatus::Succeeded))
        .await
        .unwrap();
}

async fn a_new_attempt_after_a_hand_back_fences_off_the_old_one(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let alice = user(store.as_ref(), "alice").await;
    enqueue(store.as_ref(), alice, "one").await;
    let (_, old) = claim(store.as_ref(), &roomy("a")).await;
    store.release_task(old, "node lost", None).await.unwrap();
    let (_, new) = claim(store.as_ref(), &roomy("b")).await;
    assert_eq!((new.task_id, new.attempt), (old.task_id, old.attempt + 1));
    assert_fenced(store.as_ref(), old).await;
    assert_holds(store.as_ref(), new).await;
    assert_fenced(store.as_ref(), new).await;
}

async fn a_new_attempt_after_the_reaper_fences_off_the_old_one(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let alice = user(store.as_ref(), "alice").await;
    enqueue(store.as_ref(), alice, "one").await;
    let (_, old) = claim_and_let_expire(store.as_ref()).await;
    let reaped = store.reap_expired_leases(&no_backoff).await.unwrap();
    let requeued = Released {
        task_id: old.task_id,
        status: TaskStatus::Queued,
    };
    assert_eq!(reaped, [requeued]);
    let (_, new) = claim(store.as_ref(), &roomy("b")).await;
    assert_eq!(new.attempt, old.attempt + 1);
    assert_fenced(store.as_ref(), old).await;
    assert_holds(store.as_ref(), new).await;
}

async fn finishing_keeps_the_result_and_ends_the_attempt(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let alice = user(store.as_ref(), "alice").await;
    let id = enqueue(store.as_ref(), alice, "one").await.id;
    let (_, fence) = claim(store.as_ref(), &roomy("a")).await;
    let end = TaskEnd {
        status: TaskStatus::Failed,
        reason: Some("the tests fail".into()),
        diff: Some(b"the change".to_vec()),
        branch: Some("berth/one".into()),
        pull_request_url: Some("https://github.com/octo/hello/pull/1".into()),
    };
    store.finish_task(fence, end).await.unwrap();
    let done = task(store.as_ref(), alice, id).await;
    assert_eq!(done.status, TaskStatus::Failed);
    assert_eq!(done.error.as_deref(), Some("the tests fail"));
    assert!(done.finished_at.is_some());
    assert!(done.result.has_diff);
    assert_eq!(done.result.branch.as_deref(), Some("berth/one"));
    let url = done.result.pull_request_url.as_deref();
    assert_eq!(url, Some("https://github.com/octo/hello/pull/1"));
    let diff = store.get_diff(alice, id).await.unwrap();
    assert_eq!(diff.as_deref(), Some(&b"the change"[..]));
    let last = events(store.as_ref(), alice, id).await.pop().unwrap();
    assert_eq!(last.payload["status"], "failed");
    assert_eq!(last.payload["reason"], "the tests fail");
    assert_fenced(store.as_ref(), fence).await;
}

async fn an_expired_lease_is_requeued_as_an_attempt_after_a_backoff(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let alice = user(store.as_ref(), "alice").await;
    let id = enqueue(store.as_ref(), alice, "one").await.id;
    let (_, fence) = claim_and_let_expire(store.as_ref()).await;
    let asked = Arc::new(Mutex::new(Vec::new()));
    let backoff = {
        let asked = asked.clone();
        move |attempt: i64| {
            asked.lock().unwrap().push(attempt);
            600_000
        }
    };
    let reaped = store.reap_expired_leases(&backoff).await.unwrap();
    assert_eq!(reaped.len(), 1);
    assert_eq!(
        (reaped[0].task_id, reaped[0].status),
        (id, TaskStatus::Queued)
    );
    assert_eq!(
        *asked.lock().unwrap(),
        [fence.attempt],
        "the backoff is per attempt"
    );
    let requeued = task(store.as_ref(), alice, id).await;
    assert_eq!((requeued.status, requeued.attempt), (TaskStatus::Queued, 1));
    let last = events(store.as_ref(), alice, id).await.pop().unwrap();
    assert_eq!(last.payload["status"], "queued");
    assert!(last.payload["reason"].is_string());
    let early = store.claim_next_task(&roomy("b")).await.unwrap();
    assert!(early.is_none(), "claimed before its backoff");
    assert!(store
        .reap_expired_leases(&no_backoff)
        .await
        .unwrap()
        .is_empty());
}

async fn a_task_fails_with_a_reason_after_its_last_attempt(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let alice = user(store.as_ref(), "alice").await;
    let mut new = new_task(alice, "poison");
    new.max_attempts = 2;
    let id = store.create_task(new).await.unwrap().task.id;
    claim_and_let_expire(store.as_ref()).await;
    let first = store.reap_expired_leases(&no_backoff).await.unwrap();
    assert_eq!(first[0].status, TaskStatus::Queued);
    claim_and_let_expire(store.as_ref()).await;
    let last = store.reap_expired_leases(&no_backoff).await.unwrap();
    let failed = Released {
        task_id: id,
        status: TaskStatus::Failed,
    };
    assert_eq!(last, [failed]);
    let gone = task(store.as_ref(), alice, id).await;
    assert_eq!((gone.status, gone.attempt), (TaskStatus::Failed, 2));
    assert!(gone.error.is_some_and(|reason| !reason.is_empty()));
    assert!(gone.finished_at.is_some());
    assert!(store.claim_next_task(&roomy("b")).await.unwrap().is_none());
}

async fn an_orphaned_cancelling_task_ends_cancelled(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let alice = user(store.as_ref(), "alice").await;
    let id = enqueue(store.as_ref(), alice, "one").await.id;
    claim_and_let_expire(store.as_ref()).await;
    store.cancel_task(alice, id).await.unwrap();
    let reaped = store.reap_expired_leases(&no_backoff).await.unwrap();
    let cancelled = Released {
        task_id: id,
        status: TaskStatus::Cancelled,
    };
    assert_eq!(reaped, [cancelled]);
    assert_eq!(
        status(store.as_ref(), alice, id).await,
        TaskStatus::Cancelled
    );
}

async fn a_drain_requeues_at_once_without_counting_the_attempt(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let alice = user(store.as_ref(), "alice").await;
    let mut new = new_task(alice, "one");
    new.max_attempts = 1;
    let id = store.create_task(new).await.unwrap().task.id;
    for attempt in 1..=3 {
        let (_, fence) = claim(store.as_ref(), &roomy("a")).await;
        assert_eq!(fence.attempt, attempt);
        let released = store.release_task(fence, "draining", None).await.unwrap();
        assert_eq!(
            (released.task_id, released.status),
            (id, TaskStatus::Queued)
        );
    }
    let (_, fence) = claim(store.as_ref(), &roomy("a")).await;
    store.cancel_task(alice, id).await.unwrap();
    let released = store.release_task(fence, "draining", None).await.unwrap();
    assert_eq!(
        released.status,
        TaskStatus::Cancelled,
        "a cancelled task ends"
    );
}

async fn a_hand_back_with_a_retry_counts_the_attempt(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let alice = user(store.as_ref(), "alice").await;
    let mut new = new_task(alice, "one");
    new.max_attempts = 2;
    let id = store.create_task(new).await.unwrap().task.id;
    let (_, fence) = claim(store.as_ref(), &roomy("a")).await;
    let released = store.release_task(fence, "sandbox died", Some(600_000));
    assert_eq!(released.await.unwrap().status, TaskStatus::Queued);
    let early = store.claim_next_task(&roomy("a")).await.unwrap();
    assert!(early.is_none(), "claimed before its retry time");

    let mut other = new_task(alice, "two");
    other.max_attempts = 1;
    let other = store.create_task(other).await.unwrap().task.id;
    let (_, fence) = claim(store.as_ref(), &roomy("a")).await;
    assert_eq!(fence.task_id, other);
    let released = store.release_task(fence, "sandbox died", Some(0)).await;
    assert_eq!(released.unwrap().status, TaskStatus::Failed);
    let failed = task(store.as_ref(), alice, other).await;
    assert!(failed
        .error
        .is_some_and(|reason| reason.contains("sandbox died")));
    assert_eq!(status(store.as_ref(), alice, id).await, TaskStatus::Queued);
}

/// With two attempts allowed, a task handed back by a draining runner and then lost to a
/// crashed one still has an attempt left: the hand-back moved the fence on, and used nothing.
async fn a_drain_hand_back_uses_no_attempt_when_a_later_one_is_lost(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let alice = user(store.as_ref(), "alice").await;
    let mut new = new_task(alice, "one");
    new.max_attempts = 2;
    let id = store.create_task(new).await.unwrap().task.id;
    let (_, drained) = claim(store.as_ref(), &roomy("a")).await;
    store
        .release_task(drained, "runner a shut down", None)
        .await
        .unwrap();
    let reason = task(store.as_ref(), alice, id).await.error.unwrap();
    assert!(
        reason.contains("without using an attempt (0 of 2 used)"),
        "{reason}"
    );

    let (_, lost) = claim_and_let_expire(store.as_ref()).await;
    assert_eq!(lost.attempt, drained.attempt + 1, "the fence moved on");
    let reaped = store.reap_expired_leases(&no_backoff).await.unwrap();
    assert_eq!(reaped[0].status, TaskStatus::Queued, "one attempt is left");
    let reason = task(store.as_ref(), alice, id).await.error.unwrap();
    assert!(reason.contains("attempt 1 of 2 used"), "{reason}");

    let (_, last) = claim_and_let_expire(store.as_ref()).await;
    let reaped = store.reap_expired_leases(&no_backoff).await.unwrap();
    assert_eq!(reaped[0].status, TaskStatus::Failed);
    let reason = task(store.as_ref(), alice, id).await.error.unwrap();
    assert!(reason.starts_with("gave up after 2 attempts"), "{reason}");
    assert_eq!(last.attempt, 3);
}

async fn a_node_finds_the_attempts_it_holds_and_every_live_attempt_is_listed(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let alice = user(store.as_ref(), "alice").await;
    for prompt in ["one", "two", "three", "four"] {
        enqueue(store.as_ref(), alice, prompt).await;
    }
    let (_, a1) = claim(store.as_ref(), &roomy("a")).await;
    let (_, a2) = claim(store.as_ref(), &roomy("a")).await;
    let (_, b1) = claim(store.as_ref(), &roomy("b")).await;
    let (_, done) = claim(store.as_ref(), &roomy("a")).await;
    store
        .finish_task(done, ended(TaskStatus::Succeeded))
        .await
        .unwrap();
    store.cancel_task(alice, a2.task_id).await.unwrap();

    let sorted = |mut fences: Vec<Fence>| {
        fences.sort_by_key(|fence| fence.task_id);
        fences
    };
    let held = sorted(store.held_by_node("a").await.unwrap());
    assert_eq!(
        held,
        sorted(vec![a1, a2]),
        "running and cancelling, not ended"
    );
    assert!(store.held_by_node("c").await.unwrap().is_empty());
    let live = sorted(store.live_attempts().await.unwrap());
    assert_eq!(live, sorted(vec![a1, a2, b1]));
}
