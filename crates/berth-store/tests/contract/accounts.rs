//! Accounts of people who sign in with GitHub: who becomes admin, renames, sessions, disabling,
//! sign-in states, sealed GitHub tokens and the audit log.

use std::time::Duration;

use berth_proto::UserId;
use berth_store::{GithubIdentity, NewToken, SealedToken};
use tokio::task::JoinSet;

use crate::support::*;

on_both_backends!(
    the_first_github_user_becomes_admin_once_under_concurrent_sign_ins,
    a_rename_on_github_updates_the_login,
    a_session_authenticates_until_deleted,
    a_session_expires,
    a_disabled_user_loses_sessions_and_tokens,
    a_sign_in_state_is_taken_once_before_it_expires,
    sealed_github_tokens_are_kept_per_user,
    the_audit_log_lists_newest_first,
);

fn github(github_id: i64, login: &str) -> GithubIdentity {
    GithubIdentity {
        github_id,
        login: login.into(),
    }
}

async fn the_first_github_user_becomes_admin_once_under_concurrent_sign_ins(backend: Backend) {
    const SIGN_INS: i64 = 8;
    let db = Db::new(backend).await;
    let stores = db.machines(SIGN_INS as usize).await;
    let mut sign_ins = JoinSet::new();
    for (n, store) in (0..).zip(stores.iter().cloned()) {
        sign_ins.spawn(async move {
            let identity = github(1_000 + n, &format!("user{n}"));
            store.upsert_github_user(&identity, true).await.unwrap()
        });
    }
    let mut admins = 0;
    while let Some(account) = sign_ins.join_next().await {
        admins += usize::from(account.unwrap().is_admin);
    }
    assert_eq!(admins, 1, "exactly one first user");
    let later = stores[0].upsert_github_user(&github(1, "late"), true).await;
    assert!(!later.unwrap().is_admin);
    let accounts = stores[0].list_accounts().await.unwrap();
    assert_eq!(accounts.len(), SIGN_INS as usize + 1);
    assert_eq!(
        accounts.iter().filter(|account| account.is_admin).count(),
        1
    );
}

async fn a_rename_on_github_updates_the_login(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let first = store.upsert_github_user(&github(7, "octo"), false).await;
    let first = first.unwrap();
    assert_eq!((first.github_id, first.is_admin), (Some(7), false));
    let renamed = store.upsert_github_user(&github(7, "octocat"), false).await;
    let renamed = renamed.unwrap();
    assert_eq!(renamed.id, first.id, "the same user");
    assert_eq!(renamed.login.as_deref(), Some("octocat"));
    let stored = store.get_account(first.id).await.unwrap();
    assert_eq!(stored, Some(renamed));
    assert_eq!(store.list_accounts().await.unwrap().len(), 1);
    assert!(store.get_account(UserId::new()).await.unwrap().is_none());
}

async fn a_session_authenticates_until_deleted(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let octo = store.upsert_github_user(&github(7, "octo"), false).await;
    let octo = octo.unwrap();
    store
        .insert_session(octo.id, "session-1", 60_000)
        .await
        .unwrap();
    let principal = store
        .authenticate_session("session-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (principal.user.id, principal.user.name),
        (octo.id, octo.name)
    );
    assert!(store.authenticate_session("other").await.unwrap().is_none());
    store.delete_session("session-1").await.unwrap();
    assert!(store
        .authenticate_session("session-1")
        .await
        .unwrap()
        .is_none());
}

async fn a_session_expires(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let octo = store.upsert_github_user(&github(7, "octo"), false).await;
    store
        .insert_session(octo.unwrap().id, "session-1", 1)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(store
        .authenticate_session("session-1")
        .await
        .unwrap()
        .is_none());
}

async fn a_disabled_user_loses_sessions_and_tokens(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let octo = store.upsert_github_user(&github(7, "octo"), false).await;
    let octo = octo.unwrap();
    let other = store.upsert_github_user(&github(8, "other"), false).await;
    let other = other.unwrap();
    for (user_id, hash) in [(octo.id, "octo"), (other.id, "other")] {
        store.insert_session(user_id, hash, 60_000).await.unwrap();
        let token = NewToken {
            user_id,
            name: "cli".into(),
            prefix: "berth_ab".into(),
            token_hash: hash.into(),
        };
        store.insert_token(token).await.unwrap();
    }
    let disabled = store.disable_user(octo.id).await.unwrap().unwrap();
    assert!(disabled.disabled_at.is_some());
    assert!(store.authenticate_session("octo").await.unwrap().is_none());
    assert!(store.authenticate("octo").await.unwrap().is_none());
    store
        .insert_session(octo.id, "octo-again", 60_000)
        .await
        .unwrap();
    let again = store.authenticate_session("octo-again").await.unwrap();
    assert!(
        again.is_none(),
        "a disabled user's new session does not work"
    );
    assert!(store.authenticate_session("other").await.unwrap().is_some());
    assert!(store.authenticate("other").await.unwrap().is_some());
    assert!(store.disable_user(UserId::new()).await.unwrap().is_none());
}

async fn a_sign_in_state_is_taken_once_before_it_expires(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    store
        .insert_sign_in_state("state-1", "verifier-1", 60_000)
        .await
        .unwrap();
    let taken = store.take_sign_in_state("state-1").await.unwrap();
    assert_eq!(taken.as_deref(), Some("verifier-1"));
    assert!(store.take_sign_in_state("state-1").await.unwrap().is_none());
    store
        .insert_sign_in_state("state-2", "verifier-2", 1)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(store.take_sign_in_state("state-2").await.unwrap().is_none());
}

async fn sealed_github_tokens_are_kept_per_user(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let octo = store.upsert_github_user(&github(7, "octo"), false).await;
    let other = store.upsert_github_user(&github(8, "other"), false).await;
    let (octo, other) = (octo.unwrap().id, other.unwrap().id);
    let sealed = |user_id, key_id: &str, bytes: &[u8]| SealedToken {
        user_id,
        key_id: key_id.into(),
        sealed: bytes.to_vec(),
    };
    assert!(store.get_github_token(octo).await.unwrap().is_none());
    store
        .put_github_token(&sealed(octo, "k1", b"one"))
        .await
        .unwrap();
    store
        .put_github_token(&sealed(other, "k1", b"two"))
        .await
        .unwrap();
    let rekeyed = sealed(octo, "k2", b"three");
    store.put_github_token(&rekeyed).await.unwrap();
    let found = store.get_github_token(octo).await.unwrap();
    assert_eq!(
        found.as_ref(),
        Some(&rekeyed),
        "a put replaces the user's token"
    );
    let mut all = store.list_github_tokens().await.unwrap();
    all.sort_by_key(|token| token.user_id);
    let mut expected = vec![rekeyed, sealed(other, "k1", b"two")];
    expected.sort_by_key(|token| token.user_id);
    assert_eq!(all, expected);
}

async fn the_audit_log_lists_newest_first(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let admin = store.upsert_github_user(&github(7, "admin"), true).await;
    let admin = admin.unwrap().id;
    let subject = UserId::new();
    for n in 0..3 {
        let detail = serde_json::json!({ "n": n });
        store
            .append_audit(Some(admin), &format!("action{n}"), Some(subject), detail)
            .await
            .unwrap();
    }
    store
        .append_audit(None, "system", None, serde_json::Value::Null)
        .await
        .unwrap();
    let newest = store.list_audit(3).await.unwrap();
    let actions: Vec<&str> = newest.iter().map(|entry| entry.action.as_str()).collect();
    assert_eq!(actions, ["system", "action2", "action1"]);
    assert!(newest.windows(2).all(|pair| pair[0].seq > pair[1].seq));
    assert_eq!((newest[0].actor_id, newest[0].subject_id), (None, None));
    let action2 = &newest[1];
    assert_eq!(
        (action2.actor_id, action2.subject_id),
        (Some(admin), Some(subject))
    );
    assert_eq!(action2.detail, serde_json::json!({ "n": 2 }));
}
