//! One user never sees or touches another's task: every endpoint answers 404, as for a task
//! that does not exist.

use berth_client::{ClientError, ListTasks};
use berth_proto::CreateTask;
use reqwest::StatusCode;

use crate::harness::{on_both_backends, Backend, TestDatabase, TestServer};

on_both_backends!(
    another_users_task_is_404_everywhere,
    another_users_token_cannot_be_revoked
);

fn assert_not_found<T: std::fmt::Debug>(result: Result<T, ClientError>, what: &str) {
    let err = result.expect_err(what);
    assert_eq!(err.status(), Some(StatusCode::NOT_FOUND), "{what}: {err}");
    assert_eq!(err.code(), Some("not_found"), "{what}");
}

async fn another_users_task_is_404_everywhere(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let (task, _) = alice
        .create_task(
            &CreateTask::new("https://github.com/o/r", "alice's work"),
            None,
        )
        .await
        .unwrap();

    assert_not_found(bob.get_task(task.id).await, "get");
    assert_not_found(bob.cancel_task(task.id).await, "cancel");
    assert_not_found(bob.list_events(task.id, 0, None).await, "events");
    assert_not_found(bob.get_diff(task.id).await, "diff");
    assert!(bob
        .list_tasks(&ListTasks::default())
        .await
        .unwrap()
        .tasks
        .is_empty());

    let untouched = alice.get_task(task.id).await.unwrap();
    assert_eq!(
        untouched.status,
        berth_proto::TaskStatus::Queued,
        "bob's cancel did nothing"
    );
    assert_eq!(untouched.last_event_seq, 1);
    server.stop().await;
}

async fn another_users_token_cannot_be_revoked(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let alice_token = alice.list_tokens().await.unwrap()[0].id;
    assert_not_found(bob.revoke_token(alice_token).await, "revoke");
    alice.me().await.expect("alice's token still works");
    assert!(bob
        .list_tokens()
        .await
        .unwrap()
        .iter()
        .all(|token| token.id != alice_token));
    server.stop().await;
}
