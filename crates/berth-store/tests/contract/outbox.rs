//! The outbox: a message is handed out until it is acknowledged, held by one sender at a time
//! for its lease, never handed out again once acknowledged or given up; and task status events
//! queue their news for the owner's webhook endpoints in the same transaction.

use std::collections::HashSet;
use std::time::Duration;

use berth_proto::TaskStatus;
use berth_store::NewWebhook;
use serde_json::json;
use tokio::task::JoinSet;

use crate::support::*;

on_both_backends!(
    a_message_is_handed_out_until_acknowledged_and_never_after,
    a_claimed_message_is_held_for_its_lease_then_taken_again,
    concurrent_senders_take_each_message_once,
    a_stale_attempt_neither_hands_back_nor_gives_up_a_message,
    a_message_given_up_is_not_handed_out,
    enqueueing_the_same_id_twice_queues_one_message,
    status_events_queue_webhook_news_for_the_owners_endpoints_only,
);

const LONG: i64 = 600_000;

async fn a_message_is_handed_out_until_acknowledged_and_never_after(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    assert!(store
        .enqueue_outbox("m1", "t", json!({"n": 1}))
        .await
        .unwrap());
    let first = store.claim_outbox("t", LONG).await.unwrap().unwrap();
    assert_eq!((first.id.as_str(), first.attempts), ("m1", 1));
    assert_eq!(first.payload, json!({"n": 1}));
    assert!(store.claim_outbox("other", LONG).await.unwrap().is_none());
    store
        .retry_outbox("m1", first.attempts, "HTTP 500", Some(0))
        .await
        .unwrap();
    let second = store.claim_outbox("t", LONG).await.unwrap().unwrap();
    assert_eq!((second.id.as_str(), second.attempts), ("m1", 2));
    store.ack_outbox("m1").await.unwrap();
    // A late hand-back of the acknowledged attempt, and expired leases, change nothing.
    store
        .retry_outbox("m1", second.attempts, "late", Some(0))
        .await
        .unwrap();
    let reopened = db.open().await;
    assert!(reopened.claim_outbox("t", 1).await.unwrap().is_none());
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(reopened.claim_outbox("t", LONG).await.unwrap().is_none());
}

async fn a_claimed_message_is_held_for_its_lease_then_taken_again(backend: Backend) {
    let db = Db::new(backend).await;
    let machines = db.machines(2).await;
    machines[0]
        .enqueue_outbox("m1", "t", json!({}))
        .await
        .unwrap();
    let held = machines[0].claim_outbox("t", 300).await.unwrap().unwrap();
    assert!(machines[1].claim_outbox("t", LONG).await.unwrap().is_none());
    tokio::time::sleep(Duration::from_millis(400)).await;
    let again = machines[1].claim_outbox("t", LONG).await.unwrap().unwrap();
    assert_eq!(again.id, held.id);
    assert_eq!(again.attempts, 2);
}

async fn concurrent_senders_take_each_message_once(backend: Backend) {
    const MESSAGES: usize = 40;
    let db = Db::new(backend).await;
    let machines = db.machines(4).await;
    for n in 0..MESSAGES {
        machines[0]
            .enqueue_outbox(&format!("m{n:02}"), "t", json!({ "n": n }))
            .await
            .unwrap();
    }
    let mut senders = JoinSet::new();
    for store in machines.clone() {
        senders.spawn(async move {
            let mut taken = Vec::new();
            while let Some(message) = store.claim_outbox("t", LONG).await.unwrap() {
                store.ack_outbox(&message.id).await.unwrap();
                taken.push(message.id);
            }
            taken
        });
    }
    let mut all = Vec::new();
    while let Some(taken) = senders.join_next().await {
        all.extend(taken.unwrap());
    }
    let distinct: HashSet<&String> = all.iter().collect();
    assert_eq!(all.len(), MESSAGES, "each message taken once: {all:?}");
    assert_eq!(distinct.len(), MESSAGES);
}

async fn a_stale_attempt_neither_hands_back_nor_gives_up_a_message(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    store.enqueue_outbox("m1", "t", json!({})).await.unwrap();
    let first = store.claim_outbox("t", 1).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = store.claim_outbox("t", LONG).await.unwrap().unwrap();
    // The first sender's late failure does not free the message the second one holds.
    store
        .retry_outbox("m1", first.attempts, "late", None)
        .await
        .unwrap();
    assert!(store.claim_outbox("t", LONG).await.unwrap().is_none());
    store
        .retry_outbox("m1", second.attempts, "HTTP 503", Some(0))
        .await
        .unwrap();
    assert_eq!(
        store
            .claim_outbox("t", LONG)
            .await
            .unwrap()
            .unwrap()
            .attempts,
        3
    );
}

async fn a_message_given_up_is_not_handed_out(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    store.enqueue_outbox("m1", "t", json!({})).await.unwrap();
    let claimed = store.claim_outbox("t", 1).await.unwrap().unwrap();
    store
        .retry_outbox("m1", claimed.attempts, "gone", None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(store.claim_outbox("t", LONG).await.unwrap().is_none());
}

async fn enqueueing_the_same_id_twice_queues_one_message(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    assert!(store
        .enqueue_outbox("m1", "t", json!({"v": 1}))
        .await
        .unwrap());
    assert!(!store
        .enqueue_outbox("m1", "t", json!({"v": 2}))
        .await
        .unwrap());
    let claimed = store.claim_outbox("t", LONG).await.unwrap().unwrap();
    assert_eq!(claimed.payload, json!({"v": 1}));
    store.ack_outbox("m1").await.unwrap();
    assert!(!store
        .enqueue_outbox("m1", "t", json!({"v": 3}))
        .await
        .unwrap());
    assert!(store.claim_outbox("t", LONG).await.unwrap().is_none());
}

/// Every due `webhook` message: `(endpoint id, type, task status)`.
async fn webhook_news(store: &dyn berth_store::Store) -> Vec<(String, String, String)> {
    let mut news = Vec::new();
    while let Some(message) = store.claim_outbox("webhook", LONG).await.unwrap() {
        store.ack_outbox(&message.id).await.unwrap();
        let body = &message.payload["body"];
        assert!(message.id.starts_with("msg_"), "{}", message.id);
        assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
        news.push((
            message.payload["endpoint_id"].as_str().unwrap().to_string(),
            body["type"].as_str().unwrap().to_string(),
            body["data"]["status"].as_str().unwrap().to_string(),
        ));
    }
    news
}

async fn status_events_queue_webhook_news_for_the_owners_endpoints_only(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let alice = user(store.as_ref(), "alice").await;
    let bob = user(store.as_ref(), "bob").await;
    let endpoint = |owner| NewWebhook {
        owner_id: owner,
        url: "https://hooks.example.com/berth".into(),
        secret: "whsec_c2VjcmV0".into(),
        format: "standard".into(),
    };
    let hook = store.create_webhook(endpoint(alice)).await.unwrap();
    let removed = store.create_webhook(endpoint(alice)).await.unwrap();
    assert!(store.delete_webhook(alice, removed.id).await.unwrap());
    let task = enqueue(store.as_ref(), alice, "Fix the parser\nin detail").await;
    let (_, fence) = claim(store.as_ref(), &roomy("n1")).await;
    let mut end = ended(TaskStatus::Succeeded);
    end.pull_request_url = Some("https://github.com/o/r/pull/1".into());
    store.finish_task(fence, end).await.unwrap();

    let id = hook.id.to_string();
    let expected = [
        (id.clone(), "task.created".to_string(), "queued".to_string()),
        (
            id.clone(),
            "task.started".to_string(),
            "running".to_string(),
        ),
        (
            id.clone(),
            "task.ended".to_string(),
            "succeeded".to_string(),
        ),
    ];
    assert_eq!(webhook_news(store.as_ref()).await, expected);
    // The same news, in full, is what a receiver gets.
    let follow_up = berth_store::NewFollowUp {
        prompt: "again".into(),
        max_attempts: 3,
        idempotency: None,
    };
    store
        .continue_task(alice, task.id, follow_up)
        .await
        .unwrap();
    let none: Vec<(String, String, String)> = Vec::new();
    assert_eq!(
        webhook_news(store.as_ref()).await,
        none,
        "a follow-up queued is no news"
    );
    let (_, fence) = claim(store.as_ref(), &roomy("n1")).await;
    store
        .finish_task(fence, ended(TaskStatus::Failed))
        .await
        .unwrap();
    let news = webhook_news(store.as_ref()).await;
    assert_eq!(
        news.iter().map(|n| n.1.as_str()).collect::<Vec<_>>(),
        ["task.started", "task.ended"]
    );
    enqueue(store.as_ref(), bob, "bob's task").await;
    assert_eq!(webhook_news(store.as_ref()).await, none, "not alice's");
}
