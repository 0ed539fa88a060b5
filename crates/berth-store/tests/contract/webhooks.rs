//! Webhook endpoints: each user sees and removes only their own.

use berth_store::NewWebhook;

use crate::support::*;

on_both_backends!(endpoints_are_kept_per_user_and_removed_by_their_owner_only,);

async fn endpoints_are_kept_per_user_and_removed_by_their_owner_only(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let alice = user(store.as_ref(), "alice").await;
    let bob = user(store.as_ref(), "bob").await;
    let hook = store
        .create_webhook(NewWebhook {
            owner_id: alice,
            url: "https://hooks.example.com/a".into(),
            secret: "whsec_YWJj".into(),
            format: "slack".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        store.list_webhooks(alice).await.unwrap(),
        vec![hook.clone()]
    );
    assert!(store.list_webhooks(bob).await.unwrap().is_empty());
    assert_eq!(
        store.get_webhook(hook.id).await.unwrap(),
        Some(hook.clone())
    );
    assert!(!store.delete_webhook(bob, hook.id).await.unwrap());
    assert!(store.delete_webhook(alice, hook.id).await.unwrap());
    assert!(!store.delete_webhook(alice, hook.id).await.unwrap());
    assert!(store.list_webhooks(alice).await.unwrap().is_empty());
    assert_eq!(store.get_webhook(hook.id).await.unwrap(), None);
}
