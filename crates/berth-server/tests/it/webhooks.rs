//! Outgoing webhooks: endpoints refused when they reach the server's own network; deliveries
//! that survive a restart in the middle of their retries, keep their `webhook-id`, stop once
//! acknowledged, and carry signatures that an independent implementation of the Standard
//! Webhooks specification (a few lines of Python's standard library) verifies.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use berth_proto::CreateTask;
use berth_store::TaskEnd;
use berth_testkit::eventually;
use serde_json::{json, Value};

use crate::harness::{on_both_backends, Backend, TestDatabase, TestServer};

on_both_backends!(
    webhooks_reach_a_receiver_across_a_restart_once_each_with_signatures_that_verify,
    webhooks_to_the_servers_own_network_are_refused,
);

#[derive(Clone, Debug)]
struct Received {
    id: String,
    timestamp: String,
    signature: String,
    body: String,
    answered: u16,
    at: Instant,
}

/// A receiver on loopback that answers 500 to its first `failures` requests, then 200.
async fn receiver(failures: usize) -> (String, Arc<Mutex<Vec<Received>>>) {
    let seen: Arc<Mutex<Vec<Received>>> = Arc::default();
    let log = seen.clone();
    let app = axum::Router::new().fallback(move |headers: HeaderMap, body: String| {
        let log = log.clone();
        async move {
            let header = |name: &str| {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string()
            };
            let mut log = log.lock().unwrap();
            let answered = if log.len() < failures { 500 } else { 200 };
            log.push(Received {
                id: header("webhook-id"),
                timestamp: header("webhook-timestamp"),
                signature: header("webhook-signature"),
                body,
                answered,
                at: Instant::now(),
            });
            StatusCode::from_u16(answered).unwrap()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{address}"), seen)
}

async fn token_for(server: &TestServer, name: &str) -> String {
    let user = server.store.upsert_user(name).await.unwrap();
    berth_server::auth::issue_token(server.store.as_ref(), user.id, "t")
        .await
        .unwrap()
        .token
}

async fn register(server: &TestServer, token: &str, body: Value) -> (u16, Value) {
    let answer = reqwest::Client::new()
        .post(format!("{}/v1/webhooks", server.base_url))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap())
}

/// Verifies each delivery as a receiver would, with Python's standard library only.
const VERIFY: &str = r#"
import base64, hashlib, hmac, json, sys
secret, deliveries = json.load(sys.stdin)
key = base64.b64decode(secret.split("_", 1)[1])
for d in deliveries:
    signed = f"{d['id']}.{d['timestamp']}.{d['body']}".encode()
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    given = [s.split(",", 1)[1] for s in d["signature"].split(" ") if s.startswith("v1,")]
    assert any(hmac.compare_digest(expected, g) for g in given), d["id"]
print(len(deliveries), "verified")
"#;

fn verify_with_python(secret: &str, received: &[Received]) {
    use std::io::Write;
    let deliveries: Vec<Value> = received
        .iter()
        .map(|r| json!({"id": r.id, "timestamp": r.timestamp, "signature": r.signature, "body": r.body}))
        .collect();
    let mut python = std::process::Command::new("python3")
        .args(["-c", VERIFY])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let input = serde_json::to_vec(&json!([secret, deliveries])).unwrap();
    python.stdin.take().unwrap().write_all(&input).unwrap();
    let output = python.wait_with_output().unwrap();
    assert!(output.status.success(), "the signatures verify in Python");
    let said = String::from_utf8_lossy(&output.stdout);
    assert_eq!(said.trim(), format!("{} verified", received.len()));
}

async fn webhooks_reach_a_receiver_across_a_restart_once_each_with_signatures_that_verify(
    backend: Backend,
) {
    let (url, seen) = receiver(2).await;
    let mut db = TestDatabase::new(&backend).await;
    db.settings.webhook_allowed_hosts = vec![url.clone()];
    db.settings.webhook_retry_secs = 1;
    let server = TestServer::start(&db).await;
    let token = token_for(&server, "alice").await;
    let (status, hook) = register(&server, &token, json!({"url": format!("{url}/hook")})).await;
    assert_eq!(status, 201, "{hook}");
    let secret = hook["secret"].as_str().unwrap().to_string();
    let client = berth_client::Client::new(&server.base_url, Some(token.clone())).unwrap();
    let (task, _) = client
        .create_task(
            &CreateTask::new("https://github.com/acme/widgets", "Fix it"),
            None,
        )
        .await
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "a first, failed attempt",
        || async { !seen.lock().unwrap().is_empty() },
    )
    .await;
    server.stop().await;

    let server = TestServer::start(&db).await;
    let fence = server.claim().await;
    let end = TaskEnd {
        status: berth_proto::TaskStatus::Succeeded,
        reason: None,
        diff: None,
        branch: Some("berth/x".into()),
        pull_request_url: Some("https://github.com/acme/widgets/pull/1".into()),
    };
    server.store.finish_task(fence, end).await.unwrap();
    let acknowledged = || {
        let seen = seen.lock().unwrap();
        let mut ids: Vec<String> = seen
            .iter()
            .filter(|r| r.answered == 200)
            .map(|r| r.id.clone())
            .collect();
        ids.sort();
        ids
    };
    eventually(
        Duration::from_secs(20),
        "three events acknowledged",
        || async { acknowledged().len() >= 3 },
    )
    .await;
    // Long enough for any resend to show: more than the retry delays used here.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let received = seen.lock().unwrap().clone();
    let ids = acknowledged();
    let mut distinct = ids.clone();
    distinct.dedup();
    assert_eq!(ids, distinct, "each webhook-id acknowledged once");
    for id in &ids {
        let ack = received
            .iter()
            .find(|r| &r.id == id && r.answered == 200)
            .unwrap();
        assert!(
            !received.iter().any(|r| &r.id == id && r.at > ack.at),
            "{id} sent again after its 2xx"
        );
    }
    let created = received
        .iter()
        .find(|r| r.body.contains("task.created"))
        .unwrap();
    let attempts = received.iter().filter(|r| r.id == created.id).count();
    assert!(
        attempts >= 2,
        "task.created was retried under the same webhook-id"
    );
    let types: Vec<String> = ids
        .iter()
        .map(|id| {
            let r = received.iter().find(|r| &r.id == id).unwrap();
            let body: Value = serde_json::from_str(&r.body).unwrap();
            assert_eq!(body["data"]["id"], json!(task.id));
            body["type"].as_str().unwrap().to_string()
        })
        .collect();
    let mut sorted = types.clone();
    sorted.sort();
    assert_eq!(sorted, ["task.created", "task.ended", "task.started"]);
    let ended = received
        .iter()
        .find(|r| r.body.contains("task.ended"))
        .unwrap();
    let ended: Value = serde_json::from_str(&ended.body).unwrap();
    assert_eq!(ended["data"]["status"], "succeeded");
    assert_eq!(
        ended["data"]["pull_request_url"],
        "https://github.com/acme/widgets/pull/1"
    );
    verify_with_python(&secret, &received);
    server.stop().await;
}

async fn webhooks_to_the_servers_own_network_are_refused(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let token = token_for(&server, "alice").await;
    for url in [
        "http://127.0.0.1:9/hook",
        "https://127.0.0.1/hook",
        "https://10.1.2.3/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://localhost/hook",
        "https://[::1]/hook",
        "https://example.com/hook?x=1",
    ] {
        let (status, body) = register(&server, &token, json!({ "url": url })).await;
        assert_eq!(status, 422, "{url}: {body}");
        assert_eq!(body["error"]["code"], "invalid_webhook_url", "{url}");
    }
    let (status, slack) = register(
        &server,
        &token,
        json!({"url": "https://hooks.slack.com/services/T0/B0/x", "format": "slack"}),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(slack["format"], "slack");
    let listed: Value = reqwest::Client::new()
        .get(format!("{}/v1/webhooks", server.base_url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["webhooks"].as_array().unwrap().len(), 1);
    assert!(listed["webhooks"][0].get("secret").is_none(), "shown once");
    server.stop().await;
}
