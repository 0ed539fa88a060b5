//! A restarted server finds everything where it left it.

use berth_proto::{CreateTask, TaskStatus};

use crate::harness::{on_both_backends, Backend, TestDatabase, TestServer};

on_both_backends!(data_survives_a_restart);

async fn data_survives_a_restart(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let alice = server.user("alice").await;
    let (kept, _) = alice
        .create_task(
            &CreateTask::new("https://github.com/o/r", "survive"),
            Some("k"),
        )
        .await
        .unwrap();
    let (gone, _) = alice
        .create_task(
            &CreateTask::new("https://github.com/o/r", "cancel me"),
            None,
        )
        .await
        .unwrap();
    alice.cancel_task(gone.id).await.unwrap();
    server.stop().await;

    let server = TestServer::start(&db).await;
    let alice = berth_client::Client::new(&server.base_url, None)
        .unwrap()
        .with_token(alice_token(&alice));
    assert_eq!(alice.get_task(kept.id).await.unwrap(), kept);
    assert_eq!(
        alice.get_task(gone.id).await.unwrap().status,
        TaskStatus::Cancelled
    );
    let (again, created) = alice
        .create_task(
            &CreateTask::new("https://github.com/o/r", "survive"),
            Some("k"),
        )
        .await
        .unwrap();
    assert!(!created, "idempotency keys survive a restart too");
    assert_eq!(again.id, kept.id);
    assert_eq!(
        alice
            .list_events(gone.id, 0, None)
            .await
            .unwrap()
            .events
            .len(),
        2
    );
    server.stop().await;
}

fn alice_token(client: &berth_client::Client) -> String {
    client.token().expect("the client has a token").to_string()
}
