//! Bad input gets a JSON error a person can act on, with the right status, and changes nothing.

use berth_client::{checked, Client, ClientError, ListTasks};
use berth_proto::{CreateTask, ErrorBody, Task};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::harness::{on_both_backends, Backend, TestDatabase, TestServer};

on_both_backends!(
    malformed_bodies_are_refused,
    bad_fields_are_refused,
    repo_urls_outside_the_allowed_hosts_are_refused,
    oversized_bodies_are_refused_with_413,
    unknown_things_are_404,
    missing_and_bad_tokens_are_401,
    pull_requests_need_a_github_repository_and_a_token,
);

/// Sends a raw body to `POST /v1/tasks` and returns the status and the error code.
async fn post_raw(
    client: &Client,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> (StatusCode, String) {
    let response = client
        .request(Method::POST, "/v1/tasks")
        .unwrap()
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: ErrorBody = response.json().await.expect("every error has a JSON body");
    assert!(!body.error.message.is_empty());
    (status, body.error.code)
}

async fn assert_refused(client: &Client, body: serde_json::Value, status: StatusCode, code: &str) {
    let got = post_raw(client, "application/json", body.to_string()).await;
    assert_eq!(got, (status, code.to_string()), "body: {body}");
}

async fn task_count(client: &Client) -> usize {
    client
        .list_tasks(&ListTasks::default())
        .await
        .unwrap()
        .tasks
        .len()
}

async fn malformed_bodies_are_refused(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let alice = server.user("alice").await;
    alice
        .create_task(&CreateTask::new("https://github.com/o/r", "keep me"), None)
        .await
        .unwrap();

    let bad_json = post_raw(&alice, "application/json", "{\"repo_url\": ").await;
    assert_eq!(bad_json, (StatusCode::BAD_REQUEST, "invalid_json".into()));
    let not_json = post_raw(&alice, "text/plain", "hello").await;
    assert_eq!(
        not_json,
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type".into()
        )
    );
    assert_refused(
        &alice,
        json!({"prompt": "x"}),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    )
    .await;
    assert_refused(
        &alice,
        json!({"repo_url": "https://github.com/o/r", "prompt": "x", "colour": "blue"}),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    )
    .await;
    assert_refused(
        &alice,
        json!({"repo_url": "https://github.com/o/r", "prompt": "x", "network": "some"}),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    )
    .await;

    let tasks = alice.list_tasks(&ListTasks::default()).await.unwrap().tasks;
    assert_eq!(tasks.len(), 1, "refused requests store nothing");
    assert_eq!(tasks[0].prompt, "keep me");
    server.stop().await;
}

async fn bad_fields_are_refused(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let alice = server.user("alice").await;
    let url = "https://github.com/o/r";
    let cases = [
        (json!({"repo_url": url, "prompt": "   "}), "invalid_prompt"),
        (
            json!({"repo_url": url, "prompt": "x", "ref": "--upload-pack=evil"}),
            "invalid_field",
        ),
        (
            json!({"repo_url": url, "prompt": "x", "ref": "a b"}),
            "invalid_field",
        ),
        (
            json!({"repo_url": url, "prompt": "x", "timeout_secs": 0}),
            "invalid_timeout",
        ),
        (
            json!({"repo_url": url, "prompt": "x", "timeout_secs": 999_999_999}),
            "invalid_timeout",
        ),
        (
            json!({"repo_url": url, "prompt": "x", "budget": {"max_turns": 0}}),
            "invalid_budget",
        ),
        (
            json!({"repo_url": url, "prompt": "x", "budget": {"max_usd": -1.0}}),
            "invalid_budget",
        ),
    ];
    for (body, code) in cases {
        assert_refused(&alice, body, StatusCode::UNPROCESSABLE_ENTITY, code).await;
    }
    let too_long = "x".repeat(64 * 1024 + 1);
    assert_refused(
        &alice,
        json!({"repo_url": url, "prompt": too_long}),
        StatusCode::PAYLOAD_TOO_LARGE,
        "prompt_too_large",
    )
    .await;
    let bad_key = alice
        .request(Method::POST, "/v1/tasks")
        .unwrap()
        .header("Idempotency-Key", "k".repeat(300))
        .json(&CreateTask::new(url, "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_key.status(), StatusCode::BAD_REQUEST);
    assert_eq!(task_count(&alice).await, 0);
    server.stop().await;
}

async fn repo_urls_outside_the_allowed_hosts_are_refused(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let alice = server.user("alice").await;
    for url in [
        "file:///etc/passwd",
        "/srv/git/repo",
        "https://gitlab.com/o/r",
        "https://alice:hunter2@github.com/o/r",
        "https://ghp_secret@github.com/o/r",
        "http://github.com/o/r",
        "ssh://-oProxyCommand=id/x",
        "git://github.com/o/r",
        "https://github.com",
        // Read as github.com by a WHATWG parser, as another host by git and curl.
        "https://github.com\\@10.0.0.5:8443/x.git",
        "https://github.com@10.0.0.5:8443/x.git",
        "https://github.com#@10.0.0.5/x.git",
        "https://git%68ub.com/o/r",
        "https://github.com./o/r",
        "https://github.com/o/r ",
        "git@github.com:22:o/r",
    ] {
        assert_refused(
            &alice,
            json!({"repo_url": url, "prompt": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_repo_url",
        )
        .await;
    }
    // The host the harness lists as http:// may be used over plain HTTP; the others may not.
    let request = CreateTask::new("http://127.0.0.1:9/repo.git", "x");
    alice.create_task(&request, None).await.unwrap();
    // What is stored, and used from then on, is the normalised URL.
    for (url, stored) in [
        ("git@github.com:o/r.git", "ssh://git@github.com/o/r.git"),
        (
            "ssh://git@github.com/o/r.git",
            "ssh://git@github.com/o/r.git",
        ),
        (
            "HTTPS://GitHub.com/Owner/Repo",
            "https://github.com/Owner/Repo",
        ),
    ] {
        let (task, _) = alice
            .create_task(&CreateTask::new(url, "x"), None)
            .await
            .unwrap();
        assert_eq!(task.repo_url, stored);
        assert_eq!(alice.get_task(task.id).await.unwrap().repo_url, stored);
    }
    // A form that is not plain is refused with the form to write instead.
    let err = alice
        .create_task(&CreateTask::new("https://github.com:443/o/r", "x"), None)
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("write it as https://github.com/o/r"),
        "{message}"
    );
    assert_eq!(task_count(&alice).await, 4);
    server.stop().await;
}

async fn oversized_bodies_are_refused_with_413(backend: Backend) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let alice = server.user("alice").await;
    // Announce 2 MiB but send none of it: the answer must come from the headers alone.
    let address = server.base_url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST /v1/tasks HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        alice.token().unwrap(),
        2 * 1024 * 1024
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut answer),
    );
    read.await
        .expect("the server answers without waiting for the body")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"code\":\"body_too_large\""), "{answer}");
    assert_eq!(task_count(&alice).await, 0);
    server.stop().await;
}

async fn unknown_things_are_404(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let alice = server.user("alice").await;
    let missing = berth_proto::TaskId::new();
    let err = alice.get_task(missing).await.unwrap_err();
    assert_eq!(
        (err.status(), err.code()),
        (Some(StatusCode::NOT_FOUND), Some("not_found"))
    );
    assert_eq!(
        alice.cancel_task(missing).await.unwrap_err().status(),
        Some(StatusCode::NOT_FOUND)
    );
    assert_eq!(
        alice
            .list_events(missing, 0, None)
            .await
            .unwrap_err()
            .status(),
        Some(StatusCode::NOT_FOUND)
    );
    for path in ["/v1/tasks/not-a-uuid", "/v1/nothing-here"] {
        let response = alice
            .request(Method::GET, path)
            .unwrap()
            .send()
            .await
            .unwrap();
        let err = checked(response).await.unwrap_err();
        assert_eq!(
            (err.status(), err.code()),
            (Some(StatusCode::NOT_FOUND), Some("not_found"))
        );
    }
    let response = alice
        .request(Method::PUT, "/v1/tasks")
        .unwrap()
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    server.stop().await;
}

async fn missing_and_bad_tokens_are_401(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let nobody = server.anonymous();
    let request = CreateTask::new("https://github.com/o/r", "x");
    for client in [nobody.clone(), nobody.with_token("berth_not-a-real-token")] {
        match client.create_task(&request, None).await.unwrap_err() {
            ClientError::Api { status, code, .. } => {
                assert_eq!(
                    (status, code.as_str()),
                    (StatusCode::UNAUTHORIZED, "unauthorized")
                )
            }
            other => panic!("expected an API error, got {other}"),
        }
        assert_eq!(
            client
                .list_tasks(&ListTasks::default())
                .await
                .unwrap_err()
                .status(),
            Some(StatusCode::UNAUTHORIZED)
        );
    }
    let response = nobody
        .request(Method::GET, "/v1/tasks")
        .unwrap()
        .header("authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let _: Option<Task> = None;
    server.stop().await;
}

fn pull_request_of(repo_url: &str) -> CreateTask {
    let mut request = CreateTask::new(repo_url, "fix it");
    request.open_pull_request = true;
    request
}

async fn pull_requests_need_a_github_repository_and_a_token(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let alice = server.user("alice").await;
    // Refused when the task is made, not after its work is done.
    for url in ["git@github.com:o/r.git", "http://127.0.0.1:9/o/r"] {
        let refused = alice
            .create_task(&pull_request_of(url), None)
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Some("invalid_field"), "{url}: {refused}");
        assert!(refused
            .to_string()
            .contains("https://github.com/OWNER/NAME"));
    }
    let github_repo = pull_request_of("https://github.com/o/r");
    let refused = alice.create_task(&github_repo, None).await.unwrap_err();
    assert_eq!(refused.code(), Some("no_github_token"));
    assert_eq!(task_count(&alice).await, 0);

    // A user signed in with GitHub has a token of their own.
    let user = server.store.upsert_user("alice").await.unwrap();
    let sealed = berth_store::SealedToken {
        user_id: user.id,
        key_id: "k1".into(),
        sealed: vec![1, 2, 3],
    };
    server.store.put_github_token(&sealed).await.unwrap();
    let (task, _) = alice.create_task(&github_repo, None).await.unwrap();
    assert!(task.open_pull_request);
    server.stop().await;

    // The server's own token serves everyone.
    let mut db = db;
    db.shared.server_github_token = true;
    let server = TestServer::start(&db).await;
    let bob = server.user("bob").await;
    bob.create_task(&github_repo, None).await.unwrap();
    server.stop().await;
}
