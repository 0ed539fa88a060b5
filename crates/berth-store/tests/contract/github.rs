//! GitHub as a front door: a delivery is recorded once, by its id and by its body, and queued
//! with it; a task started from GitHub is linked as it is created, found by its link and by its
//! pull request, and its ending is queued for GitHub.

use berth_proto::{TaskStatus, UserId};
use berth_store::{Created, GithubLink, GithubOrigin, NewGithubDelivery};
use serde_json::json;

use crate::support::*;

on_both_backends!(
    a_delivery_is_recorded_once_by_id_and_by_body,
    deliveries_taken_at_once_on_two_nodes_are_recorded_once,
    a_github_task_is_found_by_its_link_and_by_its_pull_request,
    the_ending_of_a_github_task_is_queued_for_github,
    old_deliveries_are_forgotten,
);

const LONG: i64 = 600_000;

fn delivery(id: &str, body: &str) -> NewGithubDelivery {
    NewGithubDelivery {
        delivery_id: id.into(),
        body_sha256: format!("sha-of-{body}"),
        event: "issues".into(),
        payload: json!({ "body": body }),
    }
}

async fn a_delivery_is_recorded_once_by_id_and_by_body(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    assert!(store
        .record_github_delivery(delivery("d1", "a"))
        .await
        .unwrap());
    assert!(!store
        .record_github_delivery(delivery("d1", "a"))
        .await
        .unwrap());
    assert!(!store
        .record_github_delivery(delivery("d1", "b"))
        .await
        .unwrap());
    assert!(!store
        .record_github_delivery(delivery("d2", "a"))
        .await
        .unwrap());
    assert!(store
        .record_github_delivery(delivery("d3", "c"))
        .await
        .unwrap());
    let mut queued = Vec::new();
    while let Some(message) = store.claim_outbox("github", LONG).await.unwrap() {
        store.ack_outbox(&message.id).await.unwrap();
        assert_eq!(message.payload["kind"], "delivery");
        queued.push((message.id, message.payload["payload"]["body"].clone()));
    }
    assert_eq!(
        queued,
        [
            ("github:d1".to_string(), json!("a")),
            ("github:d3".to_string(), json!("c"))
        ]
    );
}

async fn deliveries_taken_at_once_on_two_nodes_are_recorded_once(backend: Backend) {
    let db = Db::new(backend).await;
    let machines = db.machines(2).await;
    let mut takes = tokio::task::JoinSet::new();
    for _ in 0..4 {
        for store in machines.clone() {
            takes.spawn(async move { store.record_github_delivery(delivery("d1", "a")).await });
        }
    }
    let mut recorded = 0;
    while let Some(taken) = takes.join_next().await {
        recorded += usize::from(taken.unwrap().unwrap());
    }
    assert_eq!(recorded, 1);
    assert!(machines[0]
        .claim_outbox("github", LONG)
        .await
        .unwrap()
        .is_some());
    assert!(machines[1]
        .claim_outbox("github", LONG)
        .await
        .unwrap()
        .is_none());
}

fn origin() -> GithubOrigin {
    GithubOrigin {
        installation_id: 7,
        repository: "acme/widgets".into(),
        issue_number: 12,
    }
}

/// A task created from GitHub issue 12, with `key` as its idempotency key.
async fn from_github(store: &dyn berth_store::Store, owner: UserId, key: &str) -> Created {
    let mut new = new_task(owner, "from GitHub");
    new.idempotency = Some((key.into(), "hash".into()));
    new.github = Some(origin());
    store.create_task(new).await.unwrap()
}

async fn a_github_task_is_found_by_its_link_and_by_its_pull_request(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let alice = user(store.as_ref(), "alice").await;
    let task = from_github(store.as_ref(), alice, "github:d1").await.task;
    // Linked as it was created: a runner that claims it at once finds where it came from.
    let linked = store.github_link(task.id).await.unwrap().unwrap();
    let expected = GithubLink {
        task_id: task.id,
        owner_id: alice,
        installation_id: 7,
        repository: "acme/widgets".into(),
        issue_number: 12,
        comment_id: None,
    };
    assert_eq!(linked, expected);
    let again = from_github(store.as_ref(), alice, "github:d1").await;
    assert!(!again.created);
    assert_eq!(again.task.id, task.id);
    store.set_github_comment(task.id, 99).await.unwrap();
    let linked = store.github_link(task.id).await.unwrap().unwrap();
    assert_eq!(linked.comment_id, Some(99));
    let other = enqueue(store.as_ref(), alice, "from the API").await;
    assert_eq!(store.github_link(other.id).await.unwrap(), None);

    let url = "https://github.com/acme/widgets/pull/3";
    for _ in 0..2 {
        let (claimed, fence) = claim(store.as_ref(), &roomy("n1")).await;
        let mut end = ended(TaskStatus::Succeeded);
        end.pull_request_url = Some(url.into());
        if claimed.id == other.id {
            end.pull_request_url = Some("https://github.com/acme/widgets/pull/4".into());
        }
        store.finish_task(fence, end).await.unwrap();
    }
    let found = store.github_task_by_pull_request(url).await.unwrap();
    assert_eq!(found.map(|link| link.task_id), Some(task.id));
    let from_api = "https://github.com/acme/widgets/pull/4";
    assert_eq!(
        store.github_task_by_pull_request(from_api).await.unwrap(),
        None
    );
}

/// The `task_ended` messages queued for GitHub: their task ids.
async fn endings(store: &dyn berth_store::Store) -> Vec<String> {
    let mut found = Vec::new();
    while let Some(message) = store.claim_outbox("github", LONG).await.unwrap() {
        store.ack_outbox(&message.id).await.unwrap();
        assert_eq!(message.payload["kind"], "task_ended");
        found.push(message.payload["task_id"].as_str().unwrap().to_string());
    }
    found
}

async fn the_ending_of_a_github_task_is_queued_for_github(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let alice = user(store.as_ref(), "alice").await;
    let linked = from_github(store.as_ref(), alice, "github:d1").await.task;
    let (_, fence) = claim(store.as_ref(), &roomy("n1")).await;
    assert_eq!(endings(store.as_ref()).await, Vec::<String>::new());
    store
        .finish_task(fence, ended(TaskStatus::Failed))
        .await
        .unwrap();
    assert_eq!(endings(store.as_ref()).await, [linked.id.to_string()]);

    // Cancelled before a runner took it: an ending too.
    let cancelled = from_github(store.as_ref(), alice, "github:d2").await.task;
    store.cancel_task(alice, cancelled.id).await.unwrap();
    assert_eq!(endings(store.as_ref()).await, [cancelled.id.to_string()]);
    // Not from GitHub: nothing for GitHub.
    let plain = enqueue(store.as_ref(), alice, "plain").await;
    store.cancel_task(alice, plain.id).await.unwrap();
    assert_eq!(endings(store.as_ref()).await, Vec::<String>::new());
}

async fn old_deliveries_are_forgotten(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    store
        .record_github_delivery(delivery("d1", "a"))
        .await
        .unwrap();
    assert_eq!(store.forget_github_deliveries(60_000).await.unwrap(), 0);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert_eq!(store.forget_github_deliveries(5).await.unwrap(), 1);
    assert!(store
        .record_github_delivery(delivery("d1", "a"))
        .await
        .unwrap());
}
