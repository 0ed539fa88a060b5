//! Claims: every task completes exactly once, no task is claimed twice, and a zombie's late
//! writes are refused by fencing.

use std::collections::HashSet;
use std::time::Duration;

use berth_proto::{EventKind, TaskStatus};
use berth_runner::{Outcome, RunnerConfig};
use berth_store::{ClaimLimits, Fence, StoreError, TaskEnd, TaskQuery};

use crate::harness::*;

on_both_backends!(
    ten_thousand_tasks_complete_exactly_once,
    concurrent_claims_never_take_one_task_twice,
    a_zombie_runner_is_fenced_off,
);

async fn ten_thousand_tasks_complete_exactly_once(backend: Backend) {
    const TASKS: usize = 10_000;
    let runners = if matches!(backend, Backend::Postgres(_)) {
        8
    } else {
        4
    };
    let db = TestStore::new(backend).await;
    let store = db.open().await;
    let mut users = Vec::new();
    for n in 0..10 {
        users.push(store.upsert_user(&format!("user{n}")).await.unwrap().id);
    }
    for n in 0..TASKS {
        enqueue(
            store.as_ref(),
            users[n % users.len()],
            &format!("task {n}"),
            None,
        )
        .await;
    }

    let executor = Scripted::new(|_task, ctx: berth_runner::Context| async move {
        ctx.emit(
            EventKind::AssistantText,
            serde_json::json!({"text": "done"}),
        )
        .await
        .unwrap();
        Outcome::succeeded(None)
    });
    let mut running = Vec::new();
    for n in 0..runners {
        // On PostgreSQL each runner has its own pool, as separate machines would; on SQLite
        // they share the process's one writer, as runners on one machine do. The lease is
        // long so that a loaded CI machine tests claims, not heartbeat latency.
        let node_store = match db.db.url {
            Some(_) => db.open().await,
            None => store.clone(),
        };
        let config = RunnerConfig {
            lease: Duration::from_secs(120),
            ..quick_config(&format!("node{n}"))
        };
        running.push(RunningRunner::start(config, node_store, executor.clone()));
    }
    let done = || async {
        let runs = executor.runs();
        runs.len() == TASKS
    };
    eventually(Duration::from_secs(600), "all tasks run", done).await;
    for runner in running {
        runner.stop().await;
    }

    let runs = executor.runs();
    assert_eq!(runs.len(), TASKS);
    assert!(
        runs.values().all(|&count| count == 1),
        "a task was run twice"
    );
    let mut succeeded = 0;
    for user in &users {
        let mut before = None;
        loop {
            let query = TaskQuery {
                status: None,
                before,
                limit: 200,
            };
            let page = store.list_tasks(*user, query).await.unwrap();
            if page.is_empty() {
                break;
            }
            for task in &page {
                assert_eq!(task.status, TaskStatus::Succeeded, "task {}", task.id);
                assert_eq!(task.attempt, 1);
                assert_eq!(task.last_event_seq, 4, "queued, running, text, succeeded");
                succeeded += 1;
            }
            before = page.last().map(|task| task.id);
        }
    }
    assert_eq!(succeeded, TASKS);
}

async fn concurrent_claims_never_take_one_task_twice(backend: Backend) {
    let db = TestStore::new(backend).await;
    let store = db.open().await;
    let owner = store.upsert_user("alice").await.unwrap().id;
    for n in 0..200 {
        enqueue(store.as_ref(), owner, &format!("task {n}"), None).await;
    }
    let claimers = (0..16).map(|n| {
        let store = store.clone();
        tokio::spawn(async move {
            let limits = ClaimLimits {
                node_id: format!("claimer{n}"),
                lease_ms: 60_000,
                node_capacity: 1_000,
                per_user_limit: 1_000,
            };
            let mut claimed = Vec::new();
            while let Some(task) = store.claim_next_task(&limits).await.unwrap() {
                claimed.push(task.id);
            }
            claimed
        })
    });
    let claimed: Vec<_> = futures::future::join_all(claimers)
        .await
        .into_iter()
        .flat_map(Result::unwrap)
        .collect();
    let unique: HashSet<_> = claimed.iter().collect();
    assert_eq!(claimed.len(), 200, "every task claimed");
    assert_eq!(unique.len(), 200, "no task claimed twice");
}

async fn a_zombie_runner_is_fenced_off(backend: Backend) {
    let db = TestStore::new(backend).await;
    let store = db.open().await;
    let owner = store.upsert_user("alice").await.unwrap().id;
    let task = enqueue(store.as_ref(), owner, "contested", None).await;
    let limits = |node: &str, lease_ms| ClaimLimits {
        node_id: node.to_string(),
        lease_ms,
        node_capacity: 10,
        per_user_limit: 10,
    };

    let zombie = store
        .claim_next_task(&limits("zombie", 100))
        .await
        .unwrap()
        .unwrap();
    let zombie = Fence {
        task_id: zombie.id,
        attempt: zombie.attempt,
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reaped = store.reap_expired_leases(&|_| 0).await.unwrap();
    assert_eq!(reaped.len(), 1);
    assert_eq!(reaped[0].status, TaskStatus::Queued);
    let live = store
        .claim_next_task(&limits("live", 60_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(live.attempt, 2);

    let late = store.append_event(
        zombie,
        EventKind::AssistantText,
        serde_json::json!({"text": "late"}),
    );
    assert!(matches!(late.await, Err(StoreError::Fenced(_))));
    let end = TaskEnd {
        status: TaskStatus::Failed,
        reason: Some("zombie".into()),
        diff: Some(b"zombie diff".to_vec()),
        branch: None,
        pull_request_url: None,
    };
    assert!(matches!(
        store.finish_task(zombie, end.clone()).await,
        Err(StoreError::Fenced(_))
    ));
    assert!(matches!(
        store.release_task(zombie, "zombie", Some(0)).await,
        Err(StoreError::Fenced(_))
    ));
    assert_eq!(store.heartbeat(zombie, 60_000).await.unwrap(), None);

    let live_fence = Fence {
        task_id: live.id,
        attempt: live.attempt,
    };
    let live_end = TaskEnd {
        status: TaskStatus::Succeeded,
        reason: None,
        diff: Some(b"live diff".to_vec()),
        ..end
    };
    store.finish_task(live_fence, live_end).await.unwrap();
    let task = store.get_task(owner, task.id).await.unwrap().unwrap();
    assert_eq!(task.status, TaskStatus::Succeeded);
    assert_eq!(task.error, None);
    let diff = store.get_diff(owner, task.id).await.unwrap();
    assert_eq!(
        diff.as_deref(),
        Some(&b"live diff"[..]),
        "the zombie's diff was not kept"
    );
    let (events, _) = store
        .list_events(owner, task.id, 0, 100)
        .await
        .unwrap()
        .unwrap();
    assert!(
        events
            .iter()
            .all(|event| event.payload.get("text").is_none()),
        "no zombie event"
    );
    let seqs: Vec<i64> = events.iter().map(|event| event.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "no gaps");
}
