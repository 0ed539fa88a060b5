//! Web Push subscriptions: kept per user and endpoint, removed by their owner only (or, for
//! every owner at once, when the push service says the endpoint is gone); and each ending of a
//! task queues one `push` message per subscription of its owner.

use berth_proto::TaskStatus;
use berth_store::{NewPushSubscription, Store};

use crate::support::*;

on_both_backends!(
    subscriptions_are_kept_per_user_and_endpoint_and_removed_by_their_owner_only,
    a_gone_endpoint_and_a_disabled_user_lose_their_subscriptions,
    each_ending_queues_one_push_message_per_subscription_of_the_owner,
);

const LONG: i64 = 600_000;

fn subscription(owner: berth_proto::UserId, endpoint: &str, p256dh: &str) -> NewPushSubscription {
    NewPushSubscription {
        owner_id: owner,
        endpoint: endpoint.into(),
        p256dh: p256dh.into(),
        auth: "YXV0aC1zZWNyZXQtMTY".into(),
    }
}

async fn subscriptions_are_kept_per_user_and_endpoint_and_removed_by_their_owner_only(
    backend: Backend,
) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let alice = user(store.as_ref(), "alice").await;
    let bob = user(store.as_ref(), "bob").await;
    let phone = "https://push.example.com/p/1";
    let (first, created) = store
        .put_push_subscription(subscription(alice, phone, "key-1"))
        .await
        .unwrap();
    assert!(created);
    let (again, created) = store
        .put_push_subscription(subscription(alice, phone, "key-2"))
        .await
        .unwrap();
    assert!(!created, "the same endpoint again is the same subscription");
    assert_eq!(again.id, first.id);
    assert_eq!(again.p256dh, "key-2", "with the keys the browser sent last");
    let (bobs, created) = store
        .put_push_subscription(subscription(bob, phone, "key-3"))
        .await
        .unwrap();
    assert!(created, "another user on the same browser has their own");
    assert_eq!(
        store.list_push_subscriptions(alice).await.unwrap(),
        vec![again.clone()]
    );
    assert_eq!(
        store.list_push_subscriptions(bob).await.unwrap(),
        vec![bobs.clone()]
    );
    assert_eq!(
        store.get_push_subscription(first.id).await.unwrap(),
        Some(again)
    );

    assert!(!store
        .delete_push_subscription(bob, "https://push.example.com/p/2")
        .await
        .unwrap());
    assert!(store.delete_push_subscription(bob, phone).await.unwrap());
    assert!(!store.delete_push_subscription(bob, phone).await.unwrap());
    assert_eq!(store.list_push_subscriptions(alice).await.unwrap().len(), 1);
    assert_eq!(store.get_push_subscription(bobs.id).await.unwrap(), None);
}

async fn a_gone_endpoint_and_a_disabled_user_lose_their_subscriptions(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let alice = user(store.as_ref(), "alice").await;
    let bob = user(store.as_ref(), "bob").await;
    let gone = "https://push.example.com/gone";
    let kept = "https://push.example.com/kept";
    for owner in [alice, bob] {
        for endpoint in [gone, kept] {
            let new = subscription(owner, endpoint, "key");
            store.put_push_subscription(new).await.unwrap();
        }
    }
    assert_eq!(store.forget_push_endpoint(gone).await.unwrap(), 2);
    assert_eq!(store.forget_push_endpoint(gone).await.unwrap(), 0);
    for owner in [alice, bob] {
        let left = store.list_push_subscriptions(owner).await.unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].endpoint, kept);
    }
    store.disable_user(bob).await.unwrap();
    assert!(store.list_push_subscriptions(bob).await.unwrap().is_empty());
    assert_eq!(store.list_push_subscriptions(alice).await.unwrap().len(), 1);
}

/// Every due `push` message, acknowledged: `(subscription id, task id, status, title)`.
async fn push_news(store: &dyn Store) -> Vec<(String, String, String, String)> {
    let mut news = Vec::new();
    while let Some(message) = store.claim_outbox("push", LONG).await.unwrap() {
        store.ack_outbox(&message.id).await.unwrap();
        let field = |name: &str| message.payload[name].as_str().unwrap().to_string();
        news.push((
            field("subscription_id"),
            field("task_id"),
            field("status"),
            field("title"),
        ));
    }
    news.sort();
    news
}

async fn each_ending_queues_one_push_message_per_subscription_of_the_owner(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let alice = user(store.as_ref(), "alice").await;
    let bob = user(store.as_ref(), "bob").await;
    let mut phones = Vec::new();
    for endpoint in ["https://push.example.com/a1", "https://push.example.com/a2"] {
        let new = subscription(alice, endpoint, "key");
        phones.push(
            store
                .put_push_subscription(new)
                .await
                .unwrap()
                .0
                .id
                .to_string(),
        );
    }
    let removed = subscription(alice, "https://push.example.com/a3", "key");
    store.put_push_subscription(removed).await.unwrap();
    store
        .delete_push_subscription(alice, "https://push.example.com/a3")
        .await
        .unwrap();
    let bobs = subscription(bob, "https://push.example.com/b1", "key");
    store.put_push_subscription(bobs).await.unwrap();

    let task = enqueue(store.as_ref(), alice, "\n  Fix the parser\nin detail").await;
    assert!(
        push_news(store.as_ref()).await.is_empty(),
        "nothing until an ending"
    );
    let (_, fence) = claim(store.as_ref(), &roomy("n1")).await;
    assert!(
        push_news(store.as_ref()).await.is_empty(),
        "a start is no ending"
    );
    store
        .finish_task(fence, ended(TaskStatus::Failed))
        .await
        .unwrap();
    let expected: Vec<(String, String, String, String)> = phones
        .iter()
        .map(|phone| {
            let title = "Fix the parser".to_string();
            (phone.clone(), task.id.to_string(), "failed".into(), title)
        })
        .collect();
    assert_eq!(push_news(store.as_ref()).await, expected);

    let queued = enqueue(store.as_ref(), alice, "Another").await;
    store.cancel_task(alice, queued.id).await.unwrap();
    let cancelled = push_news(store.as_ref()).await;
    assert_eq!(cancelled.len(), 2, "a queued task cancelled ends too");
    assert!(cancelled
        .iter()
        .all(|(_, id, status, _)| { *id == queued.id.to_string() && status == "cancelled" }));
}
