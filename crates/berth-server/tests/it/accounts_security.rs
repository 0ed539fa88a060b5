//! What keeps users apart and the server safe: tenancy for signed-in users, GitHub tokens
//! sealed at rest and re-sealed on rotation, repository hosts on the internal network
//! refused, and per-user rate limits.

use berth_guard::{resolve_repo_host, AllowedHost};
use berth_proto::{CreateTask, Secret};
use berth_store::sealing::{self, rotate_keys};
use berth_testkit::github_oauth::FakeGitHubOAuth;
use reqwest::header::{AUTHORIZATION, COOKIE, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::accounts::{device_sign_in, github_database, test_key, web_sign_in};
use crate::harness::{on_both_backends, Backend, TestDatabase, TestServer};

on_both_backends!(
    signed_in_users_never_see_each_others_tasks,
    key_rotation_keeps_tokens_usable,
    internal_repository_hosts_are_refused,
    task_creation_is_rate_limited,
    sign_in_attempts_are_rate_limited,
    sessions_expire,
);

async fn signed_in_users_never_see_each_others_tasks(backend: Backend) {
    let fake = FakeGitHubOAuth::start().await;
    fake.add_user(1, "alice", &[]);
    fake.add_user(2, "bob", &[]);
    let db = github_database(&backend, &fake).await;
    let server = TestServer::start(&db).await;
    let alice = device_sign_in(&server, &fake, 1).await;
    let (task, _) = alice
        .create_task(&CreateTask::new("https://github.com/o/r", "mine"), None)
        .await
        .unwrap();
    let bob_token = berth_client::device::login(&server.base_url, "b", |code| {
        fake.approve_device(&code.user_code, 2)
    })
    .await
    .unwrap()
    .token;
    let bob_session = web_sign_in(&server, &fake, 2).await;

    let id = task.id;
    let endpoints = [
        (Method::GET, format!("/v1/tasks/{id}"), None),
        (Method::POST, format!("/v1/tasks/{id}/cancel"), None),
        (Method::GET, format!("/v1/tasks/{id}/events"), None),
        (Method::GET, format!("/v1/tasks/{id}/diff"), None),
        (
            Method::POST,
            format!("/v1/tasks/{id}/messages"),
            Some(json!({"prompt": "more"})),
        ),
        (Method::GET, format!("/v1/tasks/{id}/stream"), None),
    ];
    let http = reqwest::Client::new();
    for (method, path, body) in &endpoints {
        for (header, value) in [
            (AUTHORIZATION, format!("Bearer {bob_token}")),
            (COOKIE, format!("berth_session={bob_session}")),
        ] {
            let mut url = format!("{}{path}", server.base_url);
            if path.ends_with("/stream") && header == COOKIE {
                // Browsers open streams with a ticket, which the session can get.
                let ticket: serde_json::Value = http
                    .post(format!("{}/v1/stream-tickets", server.base_url))
                    .header(COOKIE, &value)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                url = format!("{url}?ticket={}", ticket["ticket"].as_str().unwrap());
            }
            let mut request = http
                .request(method.clone(), url)
                .header(header.clone(), value)
                .header("accept", "text/event-stream");
            if let Some(body) = body {
                request = request.json(body);
            }
            let answer = request.send().await.unwrap();
            assert_eq!(
                answer.status(),
                StatusCode::NOT_FOUND,
                "{method} {path} with {header}"
            );
        }
    }
    let listed: serde_json::Value = http
        .get(format!("{}/v1/tasks", server.base_url))
        .bearer_auth(&bob_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["tasks"], json!([]));
    let untouched = alice.get_task(id).await.unwrap();
    assert_eq!(untouched.status, berth_proto::TaskStatus::Queued);
    server.stop().await;
}

/// Whether `needle` occurs in the SQLite database or its write-ahead log.
fn in_sqlite_files(db: &TestDatabase, needle: &str) -> bool {
    ["berth.db", "berth.db-wal"].iter().any(|name| {
        std::fs::read(db.data_dir().join(name))
            .map(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
            .unwrap_or(false)
    })
}

async fn key_rotation_keeps_tokens_usable(backend: Backend) {
    let fake = FakeGitHubOAuth::start().await;
    fake.add_user(1, "alice", &[]);
    let db = github_database(&backend, &fake).await;
    let server = TestServer::start(&db).await;
    web_sign_in(&server, &fake, 1).await;
    let github_token = fake.issued_tokens().pop().unwrap();
    let user = server.store.list_accounts().await.unwrap()[0].id;
    if matches!(backend, Backend::Sqlite) {
        assert!(
            !in_sqlite_files(&db, &github_token),
            "token stored in the clear"
        );
        assert!(in_sqlite_files(&db, "alice"), "the search itself works");
    }
    let old_ring = db.shared.keyring.clone().unwrap();
    let sealed = server.store.get_github_token(user).await.unwrap().unwrap();
    assert_eq!(sealed.key_id, "k1");
    assert_eq!(old_ring.open(&sealed).unwrap(), github_token);
    server.stop().await;

    // A new key, with the old one kept to open what it sealed until rotation.
    let mut keys = sealing::Settings {
        encryption_key: Some(Secret::new(test_key(2))),
        encryption_key_id: "k2".into(),
        encryption_old_keys: Some(Secret::new(format!("k1:{}", test_key(1)))),
    };
    keys.validate().unwrap();
    let store = db.open_store().await;
    let ring = keys.keyring().unwrap().unwrap();
    assert_eq!(rotate_keys(store.as_ref(), &ring).await.unwrap(), 1);
    assert_eq!(
        rotate_keys(store.as_ref(), &ring).await.unwrap(),
        0,
        "idempotent"
    );
    let resealed = store.get_github_token(user).await.unwrap().unwrap();
    assert_eq!(resealed.key_id, "k2");
    keys.encryption_old_keys = None;
    let new_only = keys.keyring().unwrap().unwrap();
    assert_eq!(new_only.open(&resealed).unwrap(), github_token);
    assert!(old_ring.open(&resealed).is_err());
    store.close().await;
}

async fn internal_repository_hosts_are_refused(backend: Backend) {
    let mut db = TestDatabase::new(&backend).await;
    let localhost = AllowedHost::parse("localhost").unwrap();
    db.shared.git_allowed_hosts.push(localhost);
    let server = TestServer::start(&db).await;
    let alice = server.user("alice").await;
    for url in [
        "https://127.0.0.1/o/r",
        "https://10.0.0.1/o/r",
        "https://169.254.169.254/latest/meta-data",
        "https://localhost/o/r",
        "https://[::1]/o/r",
        "git@localhost:o/r.git",
    ] {
        let err = alice
            .create_task(&CreateTask::new(url, "x"), None)
            .await
            .expect_err(url);
        assert_eq!(
            err.status(),
            Some(StatusCode::UNPROCESSABLE_ENTITY),
            "{url}"
        );
        assert_eq!(err.code(), Some("invalid_repo_url"), "{url}");
    }
    // What a runner calls before cloning: a listed name that resolves inside is refused...
    let allowed = db.shared.git_allowed_hosts.clone();
    let err = resolve_repo_host("https://localhost/o/r", &allowed)
        .await
        .unwrap_err();
    assert!(err.contains("internal address"), "{err}");
    // ...an IP listed exactly is what it says, and nothing else is resolved.
    let addrs = resolve_repo_host("http://127.0.0.1:9/o/r", &allowed)
        .await
        .unwrap();
    assert_eq!(addrs, ["127.0.0.1:9".parse().unwrap()]);
    assert!(resolve_repo_host("https://10.0.0.1/o/r", &allowed)
        .await
        .is_err());
    server.stop().await;
}

async fn task_creation_is_rate_limited(backend: Backend) {
    let mut db = TestDatabase::new(&backend).await;
    db.settings.rate_limit_task_burst = 2;
    db.settings.rate_limit_tasks_per_minute = 1;
    let server = TestServer::start(&db).await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let task = CreateTask::new("https://github.com/o/r", "x");
    alice.create_task(&task, None).await.unwrap();
    alice.create_task(&task, None).await.unwrap();
    let limited = alice
        .request(Method::POST, "/v1/tasks")
        .unwrap()
        .json(&task)
        .send()
        .await
        .unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = limited.headers()[RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    let body: serde_json::Value = limited.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    // Another user has their own bucket; reading is not limited.
    bob.create_task(&task, None).await.unwrap();
    alice.list_tasks(&Default::default()).await.unwrap();
    server.stop().await;
}

async fn sign_in_attempts_are_rate_limited(backend: Backend) {
    let fake = FakeGitHubOAuth::start().await;
    let mut db = github_database(&backend, &fake).await;
    db.settings.rate_limit_sign_in_burst = 1;
    db.settings.rate_limit_sign_ins_per_minute = 1;
    let server = TestServer::start(&db).await;
    let http = reqwest::Client::new();
    let start: serde_json::Value = http
        .post(format!("{}/v1/auth/device", server.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let poll = || {
        http.post(format!("{}/v1/auth/device/token", server.base_url))
            .json(&json!({"device_code": start["device_code"], "name": "x"}))
            .send()
    };
    let first = poll().await.unwrap();
    assert_eq!(first.status(), StatusCode::BAD_REQUEST);
    let second = poll().await.unwrap();
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(second.headers().contains_key(RETRY_AFTER));
    server.stop().await;
}

async fn sessions_expire(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let user = server.store.upsert_user("alice").await.unwrap();
    let store = server.store.as_ref();
    // No assertion here depends on how fast the machine is: the short session is only
    // looked at once it has surely expired, and the long one never could have.
    store.insert_session(user.id, "short", 50).await.unwrap();
    store
        .insert_session(user.id, "long", 600_000)
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(120)).await;
    assert!(store.authenticate_session("short").await.unwrap().is_none());
    assert!(store.authenticate_session("long").await.unwrap().is_some());
    let me = reqwest::Client::new()
        .get(format!("{}/v1/me", server.base_url))
        .header(COOKIE, "berth_session=not-a-session")
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::UNAUTHORIZED);
    server.stop().await;
}
