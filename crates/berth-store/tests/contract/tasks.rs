//! Tasks as their owner sees them: creating (idempotently), reading, listing by cursor,
//! cancelling and following up, each scoped to the owner.

use std::collections::HashSet;

use berth_proto::{EventKind, TaskId, TaskStatus};
use berth_store::{NewFollowUp, StoreError, TaskQuery};

use crate::support::*;

on_both_backends!(
    a_new_task_is_queued_with_its_first_event,
    an_idempotency_key_gives_back_the_same_task,
    idempotency_keys_are_per_owner,
    tasks_list_newest_first_in_pages,
    changed_tasks_list_oldest_change_first,
    another_users_task_is_none_everywhere,
    cancelling_a_queued_task_ends_it_at_once,
    cancelling_a_running_task_asks_it_to_stop,
    cancelling_an_ended_task_leaves_it_as_it_is,
    a_follow_up_waits_until_the_task_has_ended,
    a_follow_up_queues_the_next_attempt_with_its_prompt,
    a_follow_ups_idempotency_key_queues_it_once,
    tasks_are_counted_by_status_across_owners,
);

fn keyed(mut new: berth_store::NewTask, key: &str, hash: &str) -> berth_store::NewTask {
    new.idempotency = Some((key.into(), hash.into()));
    new
}

fn follow_up(prompt: &str, key: Option<(&str, &str)>) -> NewFollowUp {
    NewFollowUp {
        prompt: prompt.into(),
        max_attempts: 2,
        idempotency: key.map(|(key, hash)| (key.into(), hash.into())),
    }
}

async fn a_new_task_is_queued_with_its_first_event(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let alice = user(store.as_ref(), "alice").await;
    let created = store.create_task(new_task(alice, "fix it")).await.unwrap();
    assert!(created.created);
    let new = created.task;
    assert_eq!(
        (new.status, new.attempt, new.owner_id),
        (TaskStatus::Queued, 0, alice)
    );
    assert_eq!(new.prompt, "fix it");
    assert_eq!(task(store.as_ref(), alice, new.id).await, new);
    let log = events(store.as_ref(), alice, new.id).await;
    assert_eq!(log.len(), 1);
    assert_eq!((log[0].seq, log[0].kind), (1, EventKind::Status));
    assert_eq!(log[0].payload["status"], "queued");
}

async fn an_idempotency_key_gives_back_the_same_task(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let alice = user(store.as_ref(), "alice").await;
    let first = store
        .create_task(keyed(new_task(alice, "one"), "k1", "body-a"))
        .await
        .unwrap();
    let again = store
        .create_task(keyed(new_task(alice, "one"), "k1", "body-a"))
        .await
        .unwrap();
    assert!(first.created);
    assert!(!again.created);
    assert_eq!(again.task.id, first.task.id);
    let other_body = store
        .create_task(keyed(new_task(alice, "two"), "k1", "body-b"))
        .await;
    assert!(matches!(other_body, Err(StoreError::IdempotencyMismatch)));
    let tasks = store.list_tasks(alice, page(10)).await.unwrap();
    assert_eq!(tasks.len(), 1, "one task for one key");
    assert_eq!(events(store.as_ref(), alice, first.task.id).await.len(), 1);
}

async fn idempotency_keys_are_per_owner(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let alice = user(store.as_ref(), "alice").await;
    let bob = user(store.as_ref(), "bob").await;
    let alices = store
        .create_task(keyed(new_task(alice, "one"), "k1", "body-a"))
        .await
        .unwrap();
    let bobs = store
        .create_task(keyed(new_task(bob, "one"), "k1", "body-b"))
        .await
        .unwrap();
    assert!(bobs.created);
    assert_ne!(bobs.task.id, alices.task.id);
    assert_eq!(bobs.task.owner_id, bob);
}

fn page(limit: i64) -> TaskQuery {
    TaskQuery {
        limit,
        ..TaskQuery::default()
    }
}

async fn tasks_list_newest_first_in_pages(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let alice = user(store.as_ref(), "alice").await;
    let bob = user(store.as_ref(), "bob").await;
    let mut made = Vec::new();
    for n in 0..5 {
        made.push(
            enqueue(store.as_ref(), alice, &format!("task {n}"))
                .await
                .id,
        );
    }
    enqueue(store.as_ref(), bob, "bob's").await;

    let mut listed = Vec::new();
    let mut query = page(2);
    loop {
        let tasks = store.list_tasks(alice, query.clone()).await.unwrap();
        assert!(tasks.len() <= 2);
        let Some(last) = tasks.last() else { break };
        query.before = Some(last.id);
        listed.extend(tasks.iter().map(|task| task.id));
    }
    made.reverse();
    assert_eq!(listed, made, "every task once, newest first");

    store.cancel_task(alice, made[1]).await.unwrap();
    let cancelled = TaskQuery {
        status: Some(TaskStatus::Cancelled),
        ..page(10)
    };
    let only: Vec<TaskId> = (store.list_tasks(alice, cancelled).await.unwrap())
        .iter()
        .map(|task| task.id)
        .collect();
    assert_eq!(only, [made[1]]);
}

async fn changed_tasks_list_oldest_change_first(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let alice = user(store.as_ref(), "alice").await;
    let bob = user(store.as_ref(), "bob").await;
    let mut made = HashSet::new();
    for n in 0..5 {
        made.insert(
            enqueue(store.as_ref(), alice, &format!("task {n}"))
                .await
                .id,
        );
    }
    enqueue(store.as_ref(), bob, "bob's").await;

    let mut cursor = (0, TaskId(uuid::Uuid::nil()));
    let mut seen = Vec::new();
    loop {
        let tasks = store.list_tasks_changed(alice, cursor, 2).await.unwrap();
        let Some(last) = tasks.last() else { break };
        cursor = (last.updated_at.timestamp_millis(), last.id);
        seen.extend(tasks);
    }
    let keys: Vec<_> = seen.iter().map(|t| (t.updated_at, t.id)).collect();
    assert!(
        keys.windows(2).all(|pair| pair[0] < pair[1]),
        "oldest change first"
    );
    let ids: HashSet<TaskId> = seen.iter().map(|task| task.id).collect();
    assert_eq!(
        (ids, seen.len()),
        (made.clone(), 5),
        "each of alice's tasks once"
    );

    let changed = *made.iter().next().unwrap();
    store.cancel_task(alice, changed).await.unwrap();
    let missed = store.list_tasks_changed(alice, cursor, 10).await.unwrap();
    assert_eq!(missed.len(), 1, "a change after the cursor is listed");
    assert_eq!(
        (missed[0].id, missed[0].status),
        (changed, TaskStatus::Cancelled)
    );
}

async fn another_users_task_is_none_everywhere(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let alice = user(store.as_ref(), "alice").await;
    let mallory = user(store.as_ref(), "mallory").await;
    let id = enqueue(store.as_ref(), alice, "secret").await.id;
    let (_, fence) = claim(store.as_ref(), &roomy("a")).await;
    store.save_diff(fence, b"diff").await.unwrap();
    store
        .finish_task(fence, ended(TaskStatus::Succeeded))
        .await
        .unwrap();

    assert!(store.get_task(mallory, id).await.unwrap().is_none());
    assert!(store.cancel_task(mallory, id).await.unwrap().is_none());
    assert!(store.get_diff(mallory, id).await.unwrap().is_none());
    assert!(store
        .list_events(mallory, id, 0, 10)
        .await
        .unwrap()
        .is_none());
    let follow = store.continue_task(mallory, id, follow_up("more", None));
    assert!(follow.await.unwrap().is_none());
    assert!(store
        .list_tasks(mallory, page(10))
        .await
        .unwrap()
        .is_empty());
    let changed = store.list_tasks_changed(mallory, (0, TaskId(uuid::Uuid::nil())), 10);
    assert!(changed.await.unwrap().is_empty());
    assert_eq!(
        status(store.as_ref(), alice, id).await,
        TaskStatus::Succeeded
    );
    let unknown = store.get_task(alice, TaskId::new()).await.unwrap();
    assert!(unknown.is_none());
}

async fn cancelling_a_queued_task_ends_it_at_once(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let alice = user(store.as_ref(), "alice").await;
    let id = enqueue(store.as_ref(), alice, "one").await.id;
    let cancelled = store.cancel_task(alice, id).await.unwrap().unwrap();
    assert_eq!(cancelled.status, TaskStatus::Cancelled);
    assert!(cancelled.finished_at.is_some());
    assert!(store.claim_next_task(&roomy("a")).await.unwrap().is_none());
    let last = events(store.as_ref(), alice, id).await.pop().unwrap();
    assert_eq!(last.payload["status"], "cancelled");
}

async fn cancelling_a_running_task_asks_it_to_stop(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let alice = user(store.as_ref(), "alice").await;
    let id = enqueue(store.as_ref(), alice, "one").await.id;
    let (_, fence) = claim(store.as_ref(), &roomy("a")).await;
    let asked = store.cancel_task(alice, id).await.unwrap().unwrap();
    assert_eq!(asked.status, TaskStatus::Cancelling);
    assert_eq!(store.cancelling_on_node("a").await.unwrap(), [fence]);
    assert!(store.cancelling_on_node("b").await.unwrap().is_empty());
    let heartbeat = store.heartbeat(fence, 60_000).await.unwrap();
    assert_eq!(heartbeat, Some(TaskStatus::Cancelling));
    let end = ended(TaskStatus::Cancelled);
    store.finish_task(fence, end).await.unwrap();
    assert_eq!(
        status(store.as_ref(), alice, id).await,
        TaskStatus::Cancelled
    );
    assert!(store.cancelling_on_node("a").await.unwrap().is_empty());
}

async fn cancelling_an_ended_task_leaves_it_as_it_is(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let alice = user(store.as_ref(), "alice").await;
    let id = enqueue(store.as_ref(), alice, "one").await.id;
    let (_, fence) = claim(store.as_ref(), &roomy("a")).await;
    store
        .finish_task(fence, ended(TaskStatus::Succeeded))
        .await
        .unwrap();
    let before = task(store.as_ref(), alice, id).await;
    let after = store.cancel_task(alice, id).await.unwrap().unwrap();
    assert_eq!(after, before);
}

async fn a_follow_up_waits_until_the_task_has_ended(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let alice = user(store.as_ref(), "alice").await;
    let id = enqueue(store.as_ref(), alice, "one").await.id;
    let queued = store
        .continue_task(alice, id, follow_up("more", None))
        .await;
    assert!(matches!(queued, Err(StoreError::Conflict(_))), "{queued:?}");
    claim(store.as_ref(), &roomy("a")).await;
    let running = store
        .continue_task(alice, id, follow_up("more", None))
        .await;
    assert!(
        matches!(running, Err(StoreError::Conflict(_))),
        "{running:?}"
    );
    let unknown = store.continue_task(alice, TaskId::new(), follow_up("more", None));
    assert!(unknown.await.unwrap().is_none());
}

async fn a_follow_up_queues_the_next_attempt_with_its_prompt(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let alice = user(store.as_ref(), "alice").await;
    let id = enqueue(store.as_ref(), alice, "one").await.id;
    let (_, first) = claim(store.as_ref(), &roomy("a")).await;
    store
        .finish_task(first, ended(TaskStatus::Succeeded))
        .await
        .unwrap();

    let queued = store.continue_task(alice, id, follow_up("and the tests", None));
    let queued = queued.await.unwrap().unwrap();
    assert!(queued.created);
    assert_eq!(queued.task.status, TaskStatus::Queued);
    let last = events(store.as_ref(), alice, id).await.pop().unwrap();
    assert_eq!(last.payload["status"], "queued");

    let (next, second) = claim(store.as_ref(), &roomy("a")).await;
    assert_eq!((next.id, second.attempt), (id, 2));
    let state = store.work_state(id).await.unwrap();
    assert_eq!(state.pending_prompt.as_deref(), Some("and the tests"));
}

async fn a_follow_ups_idempotency_key_queues_it_once(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let alice = user(store.as_ref(), "alice").await;
    let id = enqueue(store.as_ref(), alice, "one").await.id;
    let other = enqueue(store.as_ref(), alice, "two").await.id;
    for _ in 0..2 {
        let (_, fence) = claim(store.as_ref(), &roomy("a")).await;
        store
            .finish_task(fence, ended(TaskStatus::Succeeded))
            .await
            .unwrap();
    }
    let key = Some(("f1", "body-a"));
    let first = store.continue_task(alice, id, follow_up("more", key));
    assert!(first.await.unwrap().unwrap().created);
    let (_, fence) = claim(store.as_ref(), &roomy("a")).await;
    store
        .finish_task(fence, ended(TaskStatus::Succeeded))
        .await
        .unwrap();

    let again = store.continue_task(alice, id, follow_up("more", key));
    let again = again.await.unwrap().unwrap();
    assert!(!again.created);
    assert_eq!(
        again.task.status,
        TaskStatus::Succeeded,
        "nothing queued again"
    );
    let mismatch = store
        .continue_task(alice, id, follow_up("other", Some(("f1", "body-b"))))
        .await;
    assert!(matches!(mismatch, Err(StoreError::IdempotencyMismatch)));
    let elsewhere = store.continue_task(alice, other, follow_up("more", key));
    assert!(
        elsewhere.await.unwrap().unwrap().created,
        "keys are per task"
    );
}

async fn tasks_are_counted_by_status_across_owners(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    assert!(store.count_tasks_by_status().await.unwrap().is_empty());
    let alice = user(store.as_ref(), "alice").await;
    let bob = user(store.as_ref(), "bob").await;
    let mut made = Vec::new();
    for (owner, prompt) in [(alice, "a"), (alice, "b"), (bob, "c")] {
        made.push(
            store
                .create_task(new_task(owner, prompt))
                .await
                .unwrap()
                .task
                .id,
        );
    }
    store.cancel_task(alice, made[0]).await.unwrap();
    let mut counts = store.count_tasks_by_status().await.unwrap();
    counts.sort_by_key(|(status, _)| status.as_str());
    assert_eq!(
        counts,
        [(TaskStatus::Cancelled, 1), (TaskStatus::Queued, 2)]
    );
}
