//! API tokens: listed without their secrets, made over the API, revoked at once.

use reqwest::StatusCode;

use crate::harness::{on_both_backends, Backend, TestDatabase, TestServer};

on_both_backends!(
    tokens_are_listed_created_and_revoked,
    tokens_are_stored_only_as_hashes
);

async fn tokens_are_listed_created_and_revoked(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let alice = server.user("alice").await;

    let created = alice.create_token("laptop").await.unwrap();
    assert!(created.token.starts_with("berth_"));
    assert!(created.token.len() >= 6 + 43, "at least 32 random bytes");
    assert!(created.token.starts_with(&created.info.prefix));
    let laptop = alice.with_token(created.token.clone());
    assert_eq!(laptop.me().await.unwrap().name, "alice");

    let listed = alice.list_tokens().await.unwrap();
    assert_eq!(listed.len(), 2);
    let json = serde_json::to_string(&listed).unwrap();
    assert!(
        !json.contains(&created.token),
        "a list never shows a secret"
    );

    let revoked = alice.revoke_token(created.info.id).await.unwrap();
    assert!(revoked.revoked_at.is_some());
    let err = laptop.me().await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::UNAUTHORIZED));
    alice.me().await.expect("the other token still works");
    server.stop().await;
}

async fn tokens_are_stored_only_as_hashes(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let alice = server.user("alice").await;
    let created = alice.create_token("ci").await.unwrap();
    server.stop().await;
    if let Backend::Sqlite = backend {
        // Look in the database file itself, the WAL included.
        let mut bytes = Vec::new();
        for entry in std::fs::read_dir(db.data_dir()).unwrap() {
            bytes.extend(std::fs::read(entry.unwrap().path()).unwrap());
        }
        let secret_part = &created.token[12..];
        assert!(
            !bytes
                .windows(secret_part.len())
                .any(|window| window == secret_part.as_bytes()),
            "the token's secret part is not in the database files"
        );
    }
}
