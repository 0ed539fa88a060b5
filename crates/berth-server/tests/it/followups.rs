//! Follow-ups on finished tasks, and the transcript and usage a runner writes, fenced.

use berth_proto::{CreateTask, TaskStatus, Usage};
use berth_store::{ClaimLimits, Fence, StoreError, TaskEnd};
use reqwest::StatusCode;

use crate::harness::{on_both_backends, Backend, TestDatabase, TestServer};

on_both_backends!(
    follow_up_requeues_a_finished_task,
    transcript_and_usage_are_fenced
);

fn limits() -> ClaimLimits {
    ClaimLimits {
        node_id: "test".into(),
        lease_ms: 60_000,
        node_capacity: 10,
        per_user_limit: 10,
    }
}

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

    let early = alice.follow_up(task.id, "and then?").await.unwrap_err();
    assert_eq!(
        (early.status(), early.code()),
        (Some(StatusCode::CONFLICT), Some("task_not_finished"))
    );

    let claimed = server
        .store
        .claim_next_task(&limits())
        .await
        .unwrap()
        .unwrap();
    let fence = Fence {
        task_id: claimed.id,
        attempt: claimed.attempt,
    };
    server.store.finish_task(fence, succeeded()).await.unwrap();

    assert_eq!(
        bob.follow_up(task.id, "mine now")
            .await
            .unwrap_err()
            .status(),
        Some(StatusCode::NOT_FOUND)
    );
    let empty = alice.follow_up(task.id, "  ").await.unwrap_err();
    assert_eq!(empty.code(), Some("invalid_prompt"));
    let again = alice.follow_up(task.id, "now add tests").await.unwrap();
    assert_eq!(again.status, TaskStatus::Queued);
    assert_eq!(again.finished_at, None);
    let state = server.store.work_state(task.id).await.unwrap();
    assert_eq!(state.pending_prompt.as_deref(), Some("now add tests"));
    let events = alice.list_events(task.id, 0, None).await.unwrap().events;
    let last = events.last().unwrap();
    assert_eq!(last.payload["reason"], "follow-up");

    let second = server
        .store
        .claim_next_task(&limits())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.id, task.id);
    assert_eq!(second.attempt, 2);
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
    let claimed = store.claim_next_task(&limits()).await.unwrap().unwrap();
    let fence = Fence {
        task_id: claimed.id,
        attempt: claimed.attempt,
    };

    let user = serde_json::json!({"role": "user", "content": [{"type": "text", "text": "talk"}]});
    let reply =
        serde_json::json!({"role": "assistant", "content": [{"type": "text", "text": "ok"}]});
    assert_eq!(store.append_message(fence, user.clone()).await.unwrap(), 1);
    assert_eq!(store.append_message(fence, reply.clone()).await.unwrap(), 2);
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
    let late = store.append_message(fence, user).await;
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
