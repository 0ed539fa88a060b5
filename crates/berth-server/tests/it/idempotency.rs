//! `Idempotency-Key`: a phone that retries on a flaky network never creates two tasks.

use berth_client::{Client, ClientError, ListTasks};
use berth_proto::CreateTask;
use berth_testkit::LossyProxy;
use reqwest::StatusCode;

use crate::harness::{on_both_backends, Backend, TestDatabase, TestServer};

on_both_backends!(
    same_key_returns_the_same_task,
    same_key_with_another_body_is_refused,
    concurrent_requests_with_one_key_make_one_task,
    keys_belong_to_their_user,
    answers_lost_on_the_way_are_asked_for_again_with_the_same_key,
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

/// A client whose requests go through a proxy that loses the first `lose` answers.
pub async fn through_lossy_network(
    server: &TestServer,
    user: &Client,
    lose: usize,
) -> (LossyProxy, Client) {
    let upstream = server
        .base_url
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let proxy = LossyProxy::start(upstream, lose).await;
    let client = Client::new(proxy.url(), user.token().map(str::to_string)).unwrap();
    (proxy, client)
}

async fn answers_lost_on_the_way_are_asked_for_again_with_the_same_key(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let alice = server.user("alice").await;
    let count = || async {
        let page = alice.list_tasks(&ListTasks::default()).await.unwrap();
        page.tasks.len()
    };

    let (proxy, flaky) = through_lossy_network(&server, &alice, 2).await;
    let (task, created) = flaky.create_task(&sample(), Some("key-1")).await.unwrap();
    assert_eq!(proxy.lost(), 2, "two answers were lost on the way");
    assert!(
        !created,
        "the first, lost, request made the task; the third found it"
    );
    assert_eq!(task.prompt, "fix the flaky test");
    assert_eq!(count().await, 1);

    // A gateway's 503 is sent again too: that request never reached the server.
    let upstream = server
        .base_url
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let gateway = LossyProxy::unavailable(upstream, 1).await;
    let flaky = Client::new(gateway.url(), alice.token().map(str::to_string)).unwrap();
    let (_, created) = flaky.create_task(&sample(), Some("key-2")).await.unwrap();
    assert_eq!(gateway.lost(), 1);
    assert!(created, "the second try made the task");
    assert_eq!(count().await, 2);
    let back = flaky.create_task(&sample(), None).await;
    assert!(back.is_ok(), "the gateway is back: {back:?}");
    assert_eq!(count().await, 3);

    // Without a key the client cannot know whether to send again, so it does not.
    let (_proxy, flaky) = through_lossy_network(&server, &alice, 1).await;
    let lost = flaky.create_task(&sample(), None).await.unwrap_err();
    assert!(matches!(lost, ClientError::Http(_)), "{lost:?}");
    assert_eq!(count().await, 4, "the server did act on it");
    let gateway = LossyProxy::unavailable(upstream, 1).await;
    let flaky = Client::new(gateway.url(), alice.token().map(str::to_string)).unwrap();
    let refused = flaky.create_task(&sample(), None).await.unwrap_err();
    assert_eq!(
        refused.status(),
        Some(reqwest::StatusCode::SERVICE_UNAVAILABLE)
    );
    assert_eq!(count().await, 4);
    server.stop().await;
}
