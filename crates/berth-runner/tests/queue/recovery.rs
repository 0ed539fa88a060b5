//! Recovery: infrastructure failures are retried and then fail with a reason; a draining
//! runner hands its tasks back; a lost LISTEN connection does not stop claims.

use std::time::Duration;

use berth_proto::TaskStatus;
use berth_runner::Outcome;

use crate::harness::*;

on_both_backends!(
    a_poison_task_fails_after_its_attempts,
    a_draining_runner_hands_tasks_back
);

async fn a_poison_task_fails_after_its_attempts(backend: Backend) {
    let db = TestStore::new(backend).await;
    let store = db.open().await;
    let owner = store.upsert_user("alice").await.unwrap().id;
    let executor = Scripted::new(|_task, _ctx| async {
        Outcome::Infrastructure {
            reason: "the sandbox could not start: image missing".into(),
        }
    });
    let runner = RunningRunner::start(quick_config("node"), db.open().await, executor.clone());
    let task = enqueue(store.as_ref(), owner, "poison", None).await;
    eventually(Duration::from_secs(30), "poison task failed", || async {
        status_of(store.as_ref(), owner, task.id).await == TaskStatus::Failed
    })
    .await;
    runner.stop().await;
    let ended = store.get_task(owner, task.id).await.unwrap().unwrap();
    assert_eq!(ended.attempt, 3);
    assert_eq!(
        executor.runs()[&task.id],
        3,
        "tried exactly max_attempts times"
    );
    assert_eq!(
        ended.error.as_deref(),
        Some("gave up after 3 attempts: the sandbox could not start: image missing")
    );
}

async fn a_draining_runner_hands_tasks_back(backend: Backend) {
    let db = TestStore::new(backend).await;
    let store = db.open().await;
    let owner = store.upsert_user("alice").await.unwrap().id;
    let stubborn = Scripted::new(|_task, ctx: berth_runner::Context| async move {
        ctx.stop.cancelled().await;
        Outcome::Stopped { diff: None }
    });
    let draining = RunningRunner::start(quick_config("leaving"), db.open().await, stubborn);
    let task = enqueue(store.as_ref(), owner, "handed back", None).await;
    eventually(Duration::from_secs(30), "task running", || async {
        status_of(store.as_ref(), owner, task.id).await == TaskStatus::Running
    })
    .await;
    draining.stop().await;
    let handed_back = store.get_task(owner, task.id).await.unwrap().unwrap();
    assert_eq!(
        handed_back.status,
        TaskStatus::Queued,
        "requeued, not failed"
    );
    assert!(handed_back
        .error
        .unwrap()
        .contains("runner leaving shut down"));

    let quick = Scripted::new(|_task, _ctx| async { Outcome::succeeded(None) });
    let next = RunningRunner::start(quick_config("arriving"), db.open().await, quick);
    eventually(
        Duration::from_secs(30),
        "task finished elsewhere",
        || async { status_of(store.as_ref(), owner, task.id).await == TaskStatus::Succeeded },
    )
    .await;
    next.stop().await;
    assert_eq!(
        store
            .get_task(owner, task.id)
            .await
            .unwrap()
            .unwrap()
            .attempt,
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_go_on_after_the_listen_connection_is_killed() {
    use sqlx::Connection;
    let Some(backend) = Backend::postgres() else {
        return;
    };
    let db = TestStore::new(backend).await;
    let store = db.open().await;
    let owner = store.upsert_user("alice").await.unwrap().id;
    let executor = Scripted::new(|_task, _ctx| async { Outcome::succeeded(None) });
    let runner = RunningRunner::start(quick_config("node"), db.open().await, executor.clone());

    let mut admin = sqlx::PgConnection::connect(db.db.url.as_ref().unwrap())
        .await
        .unwrap();
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND query LIKE 'LISTEN%'",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(
        !killed.is_empty() && killed.iter().all(|ok| *ok),
        "a LISTEN connection was killed"
    );

    for n in 0..5 {
        let task = enqueue(store.as_ref(), owner, &format!("after the kill {n}"), None).await;
        eventually(Duration::from_secs(30), "task claimed and run", || async {
            status_of(store.as_ref(), owner, task.id).await == TaskStatus::Succeeded
        })
        .await;
    }
    runner.stop().await;
}
