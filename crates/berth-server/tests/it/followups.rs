//! Follow-ups on finished tasks, and the transcript and usage a runner writes, fenced.

use berth_client::FollowUpQueued;
use berth_proto::{CreateTask, TaskStatus, Usage};
use berth_store::{StoreError, TaskEnd};
use reqwest::StatusCode;

use crate::harness::{on_both_backends, Backend, TestDatabase, TestServer};
use crate::idempotency::through_lossy_network;

on_both_backends!(
    follow_up_requeues_a_finished_task,
    a_retried_follow_up_is_queued_once,
    a_follow_up_whose_answer_is_lost_is_queued_once,
    transcript_and_usage_are_fenced
);

fn succeeded() -> TaskEnd {
    TaskEnd {
        status: TaskStatus::Succeeded,
        reason: None,
        diff: None,
        branch: None,
        pull_request_url: None,
    }
}

async fn follow_up_requeues_a_finished_task(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let (task, _) = alice
        .create_task(&CreateTask::new("https://github.com/o/r", "first"), None)
        .await
        .unwrap();

    let early = alice
        .follow_up(task.id, "and then?", None)
        .await
        .unwrap_err();
    assert_eq!(
        (early.status(), early.code()),
        (Some(StatusCode::CONFLICT), Some("task_not_finished"))
    );

    run_to_the_end(&server).await;

    assert_eq!(
        bob.follow_up(task.id, "mine now", None)
            .await
            .unwrap_err()
            .status(),
        Some(StatusCode::NOT_FOUND)
    );
    let empty = alice.follow_up(task.id, "  ", None).await.unwrap_err();
    assert_eq!(empty.code(), Some("invalid_prompt"));
    let FollowUpQueued {
        task: again,
        created: queued,
        ..
    } = alice
        .follow_up(task.id, "now add tests", None)
        .await
        .unwrap();
    assert!(queued);
    assert_eq!(again.status, TaskStatus::Queued);
    assert_eq!(again.finished_at, None);
    let state = server.store.work_state(task.id).await.unwrap();
    assert_eq!(state.pending_prompt.as_deref(), Some("now add tests"));
    let events = alice.list_events(task.id, 0, None).await.unwrap().events;
    let last = events.last().unwrap();
    assert_eq!(last.payload["reason"], "follow-up");

    let second = server.claim().await;
    assert_eq!(second.task_id, task.id);
    assert_eq!(second.attempt, 2);
    server.stop().await;
}

/// Claims the task and ends it as succeeded, as a runner would.
async fn run_to_the_end(server: &TestServer) {
    let fence = server.claim().await;
    server.store.finish_task(fence, succeeded()).await.unwrap();
}

/// A task of `client`'s that has run and ended.
async fn finished_task(server: &TestServer, client: &berth_client::Client) -> berth_proto::Task {
    let (task, _) = client
        .create_task(&CreateTask::new("https://github.com/o/r", "first"), None)
        .await
        .unwrap();
    run_to_the_end(server).await;
    task
}

async fn follow_up_events(client: &berth_client::Client, id: berth_proto::TaskId) -> usize {
    let events = client.list_events(id, 0, None).await.unwrap().events;
    events
        .iter()
        .filter(|event| event.payload["reason"] == "follow-up")
        .count()
}

async fn a_retried_follow_up_is_queued_once(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let alice = server.user("alice").await;
    let task = finished_task(&server, &alice).await;

    let first = alice
        .follow_up(task.id, "add tests", Some("reply-1"))
        .await
        .unwrap();
    let (queued, fresh) = (first.task, first.created);
    assert!(fresh, "the first one answers 202");
    let starts_at = first
        .first_seq
        .expect("the answer says where the follow-up begins");
    let events = alice
        .list_events(task.id, starts_at - 1, Some(1))
        .await
        .unwrap();
    assert_eq!(events.events[0].payload["reason"], "follow-up");
    assert_eq!(queued.status, TaskStatus::Queued);
    // The retry comes while the follow-up waits: it is answered, not refused as a conflict.
    let FollowUpQueued {
        task: again,
        created: fresh,
        ..
    } = alice
        .follow_up(task.id, "add tests", Some("reply-1"))
        .await
        .unwrap();
    assert!(!fresh, "the retry answers 200");
    assert_eq!((again.id, again.status), (task.id, TaskStatus::Queued));
    let reused = alice
        .follow_up(task.id, "something else", Some("reply-1"))
        .await
        .unwrap_err();
    assert_eq!(
        (reused.status(), reused.code()),
        (
            Some(StatusCode::UNPROCESSABLE_ENTITY),
            Some("idempotency_key_reused")
        )
    );
    assert_eq!(follow_up_events(&alice, task.id).await, 1);

    // Once the follow-up has run, a late retry still does not queue it again, and still says
    // where the follow-up's events begin: a watcher misses none of them.
    run_to_the_end(&server).await;
    let retried = alice
        .follow_up(task.id, "add tests", Some("reply-1"))
        .await
        .unwrap();
    let (late, fresh) = (retried.task, retried.created);
    assert!(!fresh);
    assert_eq!(retried.first_seq, Some(starts_at));
    assert!(
        late.last_event_seq > starts_at,
        "the task moved on meanwhile"
    );
    assert_eq!(late.status, TaskStatus::Succeeded);
    assert_eq!(follow_up_events(&alice, task.id).await, 1);

    // Another user's key finds nothing of alice's; a new key is a new follow-up.
    let bob = server.user("bob").await;
    let hidden = bob
        .follow_up(task.id, "add tests", Some("reply-1"))
        .await
        .unwrap_err();
    assert_eq!(hidden.status(), Some(StatusCode::NOT_FOUND));
    let FollowUpQueued {
        task: _,
        created: fresh,
        ..
    } = alice
        .follow_up(task.id, "and docs", Some("reply-2"))
        .await
        .unwrap();
    assert!(fresh);
    assert_eq!(follow_up_events(&alice, task.id).await, 2);
    server.stop().await;
}

async fn a_follow_up_whose_answer_is_lost_is_queued_once(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let alice = server.user("alice").await;
    let task = finished_task(&server, &alice).await;

    let (proxy, flaky) = through_lossy_network(&server, &alice, 1).await;
    let FollowUpQueued {
        task: queued,
        created: fresh,
        ..
    } = flaky
        .follow_up(task.id, "add tests", Some("reply-1"))
        .await
        .unwrap();
    assert_eq!(proxy.lost(), 1);
    assert!(!fresh, "the lost request queued it; the retry was answered");
    assert_eq!(queued.status, TaskStatus::Queued);
    assert_eq!(follow_up_events(&alice, task.id).await, 1);
    server.stop().await;
}

async fn transcript_and_usage_are_fenced(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let alice = server.user("alice").await;
    let (task, _) = alice
        .create_task(&CreateTask::new("https://github.com/o/r", "talk"), None)
        .await
        .unwrap();
    let store = &server.store;
    let fence = server.claim().await;

    let user = serde_json::json!({"role": "user", "content": [{"type": "text", "text": "talk"}]});
    let reply =
        serde_json::json!({"role": "assistant", "content": [{"type": "text", "text": "ok"}]});
    for message in [&user, &reply] {
        let turn = store.record_turn(fence, None, message.clone(), Vec::new());
        turn.await.unwrap();
    }
    assert_eq!(
        store.list_messages(task.id).await.unwrap(),
        vec![user.clone(), reply]
    );

    let turn = Usage {
        input_tokens: 1000,
        output_tokens: 50,
        cache_write_tokens: 900,
        cache_read_tokens: 0,
        cost_usd: 0.0045,
    };
    store.add_usage(fence, &turn).await.unwrap();
    store.add_usage(fence, &turn).await.unwrap();
    let seen = alice.get_task(task.id).await.unwrap().usage;
    assert_eq!(
        (
            seen.input_tokens,
            seen.output_tokens,
            seen.cache_write_tokens
        ),
        (2000, 100, 1800)
    );
    assert!((seen.cost_usd - 0.009).abs() < 1e-9);

    store.set_base_commit(fence, "abc123").await.unwrap();
    store.set_base_commit(fence, "def456").await.unwrap();
    assert_eq!(
        store
            .work_state(task.id)
            .await
            .unwrap()
            .base_commit
            .as_deref(),
        Some("abc123"),
        "set once"
    );

    store.finish_task(fence, succeeded()).await.unwrap();
    let late = store.record_turn(fence, None, user, Vec::new()).await;
    assert!(
        matches!(late, Err(StoreError::Fenced(_))),
        "no writes after the attempt ended"
    );
    assert!(matches!(
        store.add_usage(fence, &turn).await,
        Err(StoreError::Fenced(_))
    ));
    server.stop().await;
}
