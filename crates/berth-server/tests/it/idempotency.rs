//! `Idempotency-Key`: a phone that retries on a flaky network never creates two tasks.

use berth_client::ListTasks;
use berth_proto::CreateTask;
use reqwest::StatusCode;

use crate::harness::{on_both_backends, Backend, TestDatabase, TestServer};

on_both_backends!(
    same_key_returns_the_same_task,
    same_key_with_another_body_is_refused,
    concurrent_requests_with_one_key_make_one_task,
    keys_belong_to_their_user,
);

fn sample() -> CreateTask {
    CreateTask::new("https://github.com/octo/hello", "fix the flaky test")
}

async fn same_key_returns_the_same_task(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let alice = server.user("alice").await;

    let (first, created) = alice.create_task(&sample(), Some("key-1")).await.unwrap();
    assert!(created, "the first request answers 201");
    let (second, created) = alice.create_task(&sample(), Some("key-1")).await.unwrap();
    assert!(!created, "the retry answers 200");
    assert_eq!(first.id, second.id);
    let (third, created) = alice.create_task(&sample(), Some("key-2")).await.unwrap();
    assert!(created);
    assert_ne!(third.id, first.id);
    assert_eq!(
        alice
            .list_tasks(&ListTasks::default())
            .await
            .unwrap()
            .tasks
            .len(),
        2
    );
    server.stop().await;
}

async fn same_key_with_another_body_is_refused(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let alice = server.user("alice").await;
    let (first, _) = alice.create_task(&sample(), Some("key-1")).await.unwrap();

    let other = CreateTask::new("https://github.com/octo/hello", "something else");
    let err = alice.create_task(&other, Some("key-1")).await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::UNPROCESSABLE_ENTITY));
    assert_eq!(err.code(), Some("idempotency_key_reused"));
    let tasks = alice.list_tasks(&ListTasks::default()).await.unwrap().tasks;
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].id, first.id);
    assert_eq!(tasks[0].prompt, "fix the flaky test");
    server.stop().await;
}

async fn concurrent_requests_with_one_key_make_one_task(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let alice = server.user("alice").await;

    let attempts = (0..16).map(|_| {
        let alice = alice.clone();
        tokio::spawn(async move {
            alice
                .create_task(&sample(), Some("same-key"))
                .await
                .unwrap()
        })
    });
    let results = futures::future::join_all(attempts).await;
    let results: Vec<_> = results.into_iter().map(Result::unwrap).collect();
    let created = results.iter().filter(|(_, created)| *created).count();
    assert_eq!(created, 1, "exactly one request creates the task");
    assert!(results.iter().all(|(task, _)| task.id == results[0].0.id));
    assert_eq!(
        alice
            .list_tasks(&ListTasks::default())
            .await
            .unwrap()
            .tasks
            .len(),
        1
    );
    server.stop().await;
}

async fn keys_belong_to_their_user(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let (a, _) = alice.create_task(&sample(), Some("shared")).await.unwrap();
    let (b, created) = bob.create_task(&sample(), Some("shared")).await.unwrap();
    assert!(created);
    assert_ne!(a.id, b.id);
    server.stop().await;
}
