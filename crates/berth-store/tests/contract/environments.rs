//! Prepared environments per node and cache key, and setup secrets per owner and repository.

use berth_store::{EnvironmentRecord, SealedToken, SetupSecret, Store};

use crate::support::*;

on_both_backends!(
    environments_are_kept_per_node_and_key_and_can_be_marked_stale,
    setup_secrets_belong_to_their_owner_and_repository,
    a_key_rotation_reseals_setup_secrets,
);

fn record(node: &str, key: &str, repo: &str, state: &str) -> EnvironmentRecord {
    EnvironmentRecord {
        node_id: node.into(),
        key: key.into(),
        repo_url: repo.into(),
        image: format!("berth-env-x:{key}"),
        state: state.into(),
        log: format!("{state} log"),
        size_bytes: 42,
        last_used: 0,
        created_at: 0,
    }
}

async fn environments_are_kept_per_node_and_key_and_can_be_marked_stale(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let repo = "https://example.com/acme/tool.git";
    store
        .put_environment(&record("n1", "k1", repo, "building"))
        .await
        .unwrap();
    store
        .put_environment(&record("n1", "k1", repo, "ready"))
        .await
        .unwrap();
    store
        .put_environment(&record("n2", "k1", repo, "ready"))
        .await
        .unwrap();
    store
        .put_environment(&record(
            "n1",
            "k2",
            "https://example.com/other.git",
            "failed",
        ))
        .await
        .unwrap();
    let listed = store.list_environments(repo).await.unwrap();
    assert_eq!(listed.len(), 2, "one per node: {listed:?}");
    assert!(listed
        .iter()
        .all(|e| e.state == "ready" && e.log == "ready log"));
    assert!(listed.iter().all(|e| e.last_used > 0 && e.created_at > 0));

    assert!(store.mark_environment_stale("k1").await.unwrap());
    assert!(!store.mark_environment_stale("nothing").await.unwrap());
    let stale = store.get_environment("k1").await.unwrap();
    assert_eq!(stale.len(), 2);
    assert!(stale.iter().all(|e| e.state == "stale"));
    assert_eq!(
        store.get_environment("k2").await.unwrap()[0].state,
        "failed"
    );

    store.delete_environment("n1", "k1").await.unwrap();
    let left = store.get_environment("k1").await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].node_id, "n2");
}

fn secret(owner: berth_proto::UserId, repo: &str, name: &str, sealed: &[u8]) -> SetupSecret {
    SetupSecret {
        repo_url: repo.into(),
        name: name.into(),
        sealed: SealedToken {
            user_id: owner,
            key_id: "k0".into(),
            sealed: sealed.to_vec(),
        },
    }
}

async fn setup_secrets_belong_to_their_owner_and_repository(backend: Backend) {
    let db = Db::new(backend).await;
    let store: std::sync::Arc<dyn Store> = db.open().await;
    let alice = user(store.as_ref(), "alice").await;
    let bob = user(store.as_ref(), "bob").await;
    let repo = "https://example.com/acme/tool.git";
    store
        .put_setup_secret(&secret(alice, repo, "NPM_TOKEN", b"one"))
        .await
        .unwrap();
    store
        .put_setup_secret(&secret(alice, repo, "NPM_TOKEN", b"two"))
        .await
        .unwrap();
    store
        .put_setup_secret(&secret(alice, "https://example.com/x.git", "OTHER", b"x"))
        .await
        .unwrap();
    let every = store.list_all_setup_secrets().await.unwrap();
    assert_eq!(every.len(), 2, "{every:?}");
    let alices = store.list_setup_secrets(alice, repo).await.unwrap();
    assert_eq!(
        alices,
        [secret(alice, repo, "NPM_TOKEN", b"two")],
        "replaced"
    );
    assert!(store
        .list_setup_secrets(bob, repo)
        .await
        .unwrap()
        .is_empty());
    assert!(!store
        .delete_setup_secret(bob, repo, "NPM_TOKEN")
        .await
        .unwrap());
    assert!(store
        .delete_setup_secret(alice, repo, "NPM_TOKEN")
        .await
        .unwrap());
    assert!(store
        .list_setup_secrets(alice, repo)
        .await
        .unwrap()
        .is_empty());

    assert!(!store.has_task_on_repo(bob, repo).await.unwrap());
    let task = enqueue(store.as_ref(), bob, "work").await;
    assert!(store.has_task_on_repo(bob, &task.repo_url).await.unwrap());
    assert!(!store.has_task_on_repo(alice, &task.repo_url).await.unwrap());
}

async fn a_key_rotation_reseals_setup_secrets(backend: Backend) {
    use base64::Engine;
    let db = Db::new(backend).await;
    let store = db.open().await;
    let alice = user(store.as_ref(), "alice").await;
    let key = |byte: u8| base64::engine::general_purpose::STANDARD.encode([byte; 32]);
    let old = berth_store::sealing::Settings {
        encryption_key: Some(berth_proto::Secret::new(key(1))),
        encryption_key_id: "old".into(),
        encryption_old_keys: None,
    };
    let old_ring = old.keyring().unwrap().unwrap();
    let repo = "https://example.com/acme/tool.git";
    let sealed = SetupSecret {
        repo_url: repo.into(),
        name: "NPM_TOKEN".into(),
        sealed: old_ring.seal(alice, "npm_live_7"),
    };
    store.put_setup_secret(&sealed).await.unwrap();
    let new = berth_store::sealing::Settings {
        encryption_key: Some(berth_proto::Secret::new(key(2))),
        encryption_key_id: "new".into(),
        encryption_old_keys: Some(berth_proto::Secret::new(format!("old:{}", key(1)))),
    };
    let ring = new.keyring().unwrap().unwrap();
    let count = berth_store::sealing::rotate_keys(store.as_ref(), &ring)
        .await
        .unwrap();
    assert_eq!(count, 1);
    let kept = store.list_setup_secrets(alice, repo).await.unwrap();
    assert_eq!(kept[0].sealed.key_id, "new");
    let new_only = berth_store::sealing::Settings {
        encryption_old_keys: None,
        ..new
    };
    let new_only = new_only.keyring().unwrap().unwrap();
    assert_eq!(new_only.open(&kept[0].sealed).unwrap(), "npm_live_7");
}
