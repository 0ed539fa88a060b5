//! Environments and setup secrets over the API: a repository's environments are seen by users
//! who have had a task on it and by admins, and by no one else; a rebuild marks them stale;
//! setup secrets are sealed, listed by name to their owner only, and never shown.

use berth_proto::{CreateTask, Secret};
use berth_store::EnvironmentRecord;

use crate::accounts::test_key;
use crate::harness::{on_both_backends, Backend, TestDatabase, TestServer};

on_both_backends!(
    environments_are_seen_by_the_repositorys_users_and_admins_only,
    setup_secrets_are_sealed_and_shown_by_name_to_their_owner_only,
);

const REPO: &str = "https://github.com/acme/tool";

fn record(node: &str) -> EnvironmentRecord {
    EnvironmentRecord {
        node_id: node.into(),
        key: "ab".repeat(32),
        repo_url: REPO.into(),
        image: "berth-env-x:abab".into(),
        state: "ready".into(),
        log: "installed 12 packages".into(),
        size_bytes: 3 << 20,
        last_used: 0,
        created_at: 0,
    }
}

async fn environments_are_seen_by_the_repositorys_users_and_admins_only(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    let mallory = server.user("mallory").await;
    alice
        .create_task(&CreateTask::new(REPO, "work"), None)
        .await
        .unwrap();
    server.store.put_environment(&record("n1")).await.unwrap();
    let key = "ab".repeat(32);

    let listed = alice.list_environments(REPO).await.unwrap().environments;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, "ready");
    assert_eq!(listed[0].log, None, "the list leaves logs out");
    let shown = alice.get_environment(&key).await.unwrap().environments;
    assert_eq!(shown[0].log.as_deref(), Some("installed 12 packages"));
    assert_eq!(
        admin
            .list_environments(REPO)
            .await
            .unwrap()
            .environments
            .len(),
        1
    );

    // To anyone else the environment does not exist.
    assert!(mallory
        .list_environments(REPO)
        .await
        .unwrap()
        .environments
        .is_empty());
    let hidden = mallory.get_environment(&key).await.unwrap_err();
    assert_eq!(hidden.status().map(|s| s.as_u16()), Some(404));
    let refused = mallory.rebuild_environment(&key).await.unwrap_err();
    assert_eq!(refused.status().map(|s| s.as_u16()), Some(404));
    assert_eq!(
        server.store.get_environment(&key).await.unwrap()[0].state,
        "ready"
    );

    let rebuilt = alice.rebuild_environment(&key).await.unwrap().environments;
    assert_eq!(rebuilt[0].state, "stale");
    let unknown = alice.get_environment(&"cd".repeat(32)).await.unwrap_err();
    assert_eq!(unknown.status().map(|s| s.as_u16()), Some(404));
}

async fn setup_secrets_are_sealed_and_shown_by_name_to_their_owner_only(backend: Backend) {
    let mut db = TestDatabase::new(&backend).await;
    let without_key = TestServer::start(&db).await;
    let early = without_key.user("alice").await;
    let refused = early
        .put_setup_secret(REPO, "NPM_TOKEN", "npm_live_1")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some("sealing_disabled"));
    without_key.stop().await;

    let keys = berth_store::sealing::Settings {
        encryption_key: Some(Secret::new(test_key(1))),
        ..Default::default()
    };
    db.shared.keyring = keys.keyring().unwrap();
    let server = TestServer::start(&db).await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    alice
        .put_setup_secret(REPO, "NPM_TOKEN", "npm_live_1")
        .await
        .unwrap();
    let bad = alice
        .put_setup_secret(REPO, "1BAD-NAME", "x")
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Some("invalid_setup_secret"));

    assert_eq!(
        alice.list_setup_secrets(REPO).await.unwrap().names,
        ["NPM_TOKEN"]
    );
    assert!(bob.list_setup_secrets(REPO).await.unwrap().names.is_empty());
    let not_bobs = bob
        .delete_setup_secret(REPO, "NPM_TOKEN")
        .await
        .unwrap_err();
    assert_eq!(not_bobs.status().map(|s| s.as_u16()), Some(404));

    let alice_id = server.store.upsert_user("alice").await.unwrap().id;
    let kept = server
        .store
        .list_setup_secrets(alice_id, REPO)
        .await
        .unwrap();
    assert!(!String::from_utf8_lossy(&kept[0].sealed.sealed).contains("npm_live_1"));
    let ring = db.shared.keyring.as_ref().unwrap();
    assert_eq!(ring.open(&kept[0].sealed).unwrap(), "npm_live_1");

    alice.delete_setup_secret(REPO, "NPM_TOKEN").await.unwrap();
    assert!(alice
        .list_setup_secrets(REPO)
        .await
        .unwrap()
        .names
        .is_empty());
}
