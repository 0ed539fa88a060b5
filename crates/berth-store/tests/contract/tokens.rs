//! Users by name, API tokens (live until revoked, revoked only by their user) and stream
//! tickets (single use, short lived).

use std::time::Duration;

use berth_store::{NewToken, Principal, User};

use crate::support::*;

on_both_backends!(
    a_user_is_made_once_per_name,
    a_token_authenticates_its_user_until_revoked,
    another_users_token_cannot_be_revoked,
    a_stream_ticket_is_redeemed_once,
    a_stream_ticket_expires,
    a_credential_is_valid_until_revoked_signed_out_or_disabled,
);

/// The principal of a fresh token of `user`'s.
async fn signed_in(store: &dyn berth_store::Store, user: &User, hash: &str) -> Principal {
    store.insert_token(token(user.id, hash)).await.unwrap();
    store.authenticate(hash).await.unwrap().unwrap()
}

fn token(user_id: berth_proto::UserId, hash: &str) -> NewToken {
    NewToken {
        user_id,
        name: "laptop".into(),
        prefix: "berth_ab".into(),
        token_hash: hash.into(),
    }
}

async fn a_user_is_made_once_per_name(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    assert_eq!(store.count_users().await.unwrap(), 0);
    let alice = store.upsert_user("alice").await.unwrap();
    assert_eq!(alice.name, "alice");
    assert_eq!(store.upsert_user("alice").await.unwrap(), alice);
    store.upsert_user("bob").await.unwrap();
    assert_eq!(store.count_users().await.unwrap(), 2);
}

async fn a_token_authenticates_its_user_until_revoked(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let alice = store.upsert_user("alice").await.unwrap();
    let info = store.insert_token(token(alice.id, "hash-1")).await.unwrap();
    assert_eq!((info.user_id, info.name.as_str()), (alice.id, "laptop"));
    assert_eq!((info.prefix.as_str(), info.revoked_at), ("berth_ab", None));
    let principal = Principal {
        user: alice.clone(),
        token_id: info.id,
    };
    let found = store.authenticate("hash-1").await.unwrap();
    assert_eq!(found, Some(principal));
    assert!(store.authenticate("hash-2").await.unwrap().is_none());
    let listed = store.list_tokens(alice.id).await.unwrap();
    assert_eq!(listed.iter().map(|t| t.id).collect::<Vec<_>>(), [info.id]);

    let revoked = store
        .revoke_token(alice.id, info.id)
        .await
        .unwrap()
        .unwrap();
    assert!(revoked.revoked_at.is_some());
    assert!(store.authenticate("hash-1").await.unwrap().is_none());
    let listed = store.list_tokens(alice.id).await.unwrap();
    assert!(
        listed[0].revoked_at.is_some(),
        "a revoked token is listed as revoked"
    );
}

async fn another_users_token_cannot_be_revoked(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let alice = store.upsert_user("alice").await.unwrap();
    let bob = store.upsert_user("bob").await.unwrap();
    let info = store.insert_token(token(alice.id, "hash-1")).await.unwrap();
    assert!(store.revoke_token(bob.id, info.id).await.unwrap().is_none());
    assert!(store.list_tokens(bob.id).await.unwrap().is_empty());
    let found = store.authenticate("hash-1").await.unwrap().unwrap();
    assert_eq!(found.user, alice);
}

async fn a_stream_ticket_is_redeemed_once(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let alice = store.upsert_user("alice").await.unwrap();
    let principal = signed_in(store.as_ref(), &alice, "hash-1").await;
    store
        .insert_stream_ticket(&principal, "ticket-1", 60_000)
        .await
        .unwrap();
    let redeemed = store.redeem_stream_ticket("ticket-1").await.unwrap();
    assert_eq!(
        redeemed,
        Some(principal),
        "the user, and the token it stands for"
    );
    assert!(store
        .redeem_stream_ticket("ticket-1")
        .await
        .unwrap()
        .is_none());
    assert!(store
        .redeem_stream_ticket("unknown")
        .await
        .unwrap()
        .is_none());
}

async fn a_stream_ticket_expires(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let alice = store.upsert_user("alice").await.unwrap();
    let principal = signed_in(store.as_ref(), &alice, "hash-1").await;
    store
        .insert_stream_ticket(&principal, "ticket-1", 1)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(store
        .redeem_stream_ticket("ticket-1")
        .await
        .unwrap()
        .is_none());
}

/// What a stream checks while it is open: its token not revoked, its session not ended or
/// expired, its user not disabled. Each of these tells the user's streams to look again.
async fn a_credential_is_valid_until_revoked_signed_out_or_disabled(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let alice = store.upsert_user("alice").await.unwrap();
    let bob = store.upsert_user("bob").await.unwrap();
    let laptop = signed_in(store.as_ref(), &alice, "hash-1").await;
    let phone = signed_in(store.as_ref(), &alice, "hash-2").await;
    let mut notices = store.subscribe_events();

    assert!(store.still_valid(&laptop).await.unwrap());
    store.revoke_token(alice.id, laptop.token_id).await.unwrap();
    assert!(!store.still_valid(&laptop).await.unwrap(), "revoked");
    assert!(
        store.still_valid(&phone).await.unwrap(),
        "the other token is untouched"
    );
    let notice = notices.recv().await.unwrap();
    assert!(
        notice.is_user_change() && notice.owner_id == alice.id,
        "{notice:?}"
    );

    store
        .insert_session(alice.id, "session-1", 600_000)
        .await
        .unwrap();
    let browser = store
        .authenticate_session("session-1")
        .await
        .unwrap()
        .unwrap();
    assert!(store.still_valid(&browser).await.unwrap());
    store.delete_session("session-1").await.unwrap();
    assert!(!store.still_valid(&browser).await.unwrap(), "signed out");
    let notice = notices.recv().await.unwrap();
    assert!(
        notice.is_user_change() && notice.owner_id == alice.id,
        "{notice:?}"
    );

    let borrowed = Principal {
        user: bob.clone(),
        token_id: phone.token_id,
    };
    assert!(
        !store.still_valid(&borrowed).await.unwrap(),
        "a credential is its own user's"
    );
    let account = store.get_account(alice.id).await.unwrap().unwrap();
    assert!(account.disabled_at.is_none());
    store.disable_user(alice.id).await.unwrap();
    assert!(!store.still_valid(&phone).await.unwrap(), "disabled");
}
