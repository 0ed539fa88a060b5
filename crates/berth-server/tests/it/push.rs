//! Web Push, end to end against the fake push service of the test kit: a task's ending reaches
//! each of its owner's devices once, encrypted to the device's keys and signed with the
//! server's VAPID key (the fake verifies the token and decrypts the message as a push service
//! and a browser would); a subscription the push service says is gone is removed; a restart in
//! the middle of the retries loses nothing; nothing is sent to the server's own network.

use std::time::Duration;

use berth_proto::{CreateTask, Secret, TaskStatus};
use berth_store::{NewPushSubscription, TaskEnd};
use berth_testkit::push_service::FakeSubscription;
use berth_testkit::{eventually, FakePushService};
use serde_json::{json, Value};

use crate::harness::{on_both_backends, Backend, TestDatabase, TestServer};

on_both_backends!(
    an_ending_reaches_each_device_once_decrypted_with_its_keys,
    a_gone_subscription_is_removed_and_a_restart_in_the_middle_loses_nothing,
    subscriptions_to_the_servers_own_network_or_with_bad_keys_are_refused,
    no_message_goes_to_the_servers_own_network,
);

/// A VAPID private key made for these tests (`openssl ecparam -name prime256v1 -genkey`).
pub const VAPID_KEY: &str = "eaSZgbvFughNACychZkXiPTJoX249cKaVt69uTPGiB4";
const SUBJECT: &str = "mailto:ops@example.com";

/// Push on, able to reach `fake`, retrying after a second.
pub fn with_push(db: &mut TestDatabase, fake: &FakePushService) {
    db.settings.web_push_vapid_key = Some(Secret::new(VAPID_KEY));
    db.settings.web_push_subject = Some(SUBJECT.into());
    db.settings.webhook_allowed_hosts = vec![fake.origin.clone()];
    db.settings.webhook_retry_secs = 1;
}

struct Phone {
    token: String,
    http: reqwest::Client,
    base: String,
}

impl Phone {
    async fn of(server: &TestServer, name: &str) -> Self {
        let user = server.store.upsert_user(name).await.unwrap();
        let issued = berth_server::auth::issue_token(server.store.as_ref(), user.id, "t")
            .await
            .unwrap();
        Self {
            token: issued.token,
            http: reqwest::Client::new(),
            base: server.base_url.clone(),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer = request.send().await.unwrap();
        let status = answer.status().as_u16();
        let text = answer.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn subscribe(&self, subscription: &FakeSubscription) -> (u16, Value) {
        let body = Some(subscription.to_json());
        self.call(reqwest::Method::POST, "/v1/push/subscriptions", body)
            .await
    }

    async fn endpoints(&self) -> Vec<String> {
        let (status, list) = self
            .call(reqwest::Method::GET, "/v1/push/subscriptions", None)
            .await;
        assert_eq!(status, 200, "{list}");
        let subscriptions = list["subscriptions"].as_array().unwrap();
        let endpoint = |s: &Value| s["endpoint"].as_str().unwrap().to_string();
        subscriptions.iter().map(endpoint).collect()
    }

    async fn task(&self, prompt: &str) -> berth_proto::Task {
        let client = berth_client::Client::new(&self.base, Some(self.token.clone())).unwrap();
        let request = CreateTask::new("https://github.com/acme/widgets", prompt);
        client.create_task(&request, None).await.unwrap().0
    }
}

async fn server_key(server: &TestServer) -> String {
    let answer: Value = reqwest::get(format!("{}/v1/push/key", server.base_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["public_key"].as_str().unwrap().to_string()
}

/// Ends the oldest queued task as a runner would.
async fn finish(server: &TestServer, status: TaskStatus) {
    let fence = server.claim().await;
    let end = TaskEnd {
        status,
        reason: None,
        diff: None,
        branch: None,
        pull_request_url: None,
    };
    server.store.finish_task(fence, end).await.unwrap();
}

/// Long enough for a resend or a retry to show: more than the retry delays used here.
async fn let_retries_show() {
    tokio::time::sleep(Duration::from_secs(3)).await;
}

async fn an_ending_reaches_each_device_once_decrypted_with_its_keys(backend: Backend) {
    let fake = FakePushService::start().await;
    let mut db = TestDatabase::new(&backend).await;
    with_push(&mut db, &fake);
    let server = TestServer::start(&db).await;
    let alice = Phone::of(&server, "alice").await;
    let bob = Phone::of(&server, "bob").await;
    let key = server_key(&server).await;
    let (phone, tablet) = (fake.subscribe(&key), fake.subscribe(&key));
    let (status, first) = alice.subscribe(&phone).await;
    assert_eq!(status, 201, "{first}");
    let (status, again) = alice.subscribe(&phone).await;
    assert_eq!(
        status, 200,
        "the same endpoint again is the same subscription"
    );
    assert_eq!(again["id"], first["id"]);
    assert_eq!(alice.subscribe(&tablet).await.0, 201);
    assert_eq!(
        alice.endpoints().await,
        [phone.endpoint.clone(), tablet.endpoint.clone()]
    );
    assert!(
        bob.endpoints().await.is_empty(),
        "a user sees only their own"
    );
    let unsubscribe = Some(json!({ "endpoint": phone.endpoint }));
    let (status, body) = bob
        .call(
            reqwest::Method::DELETE,
            "/v1/push/subscriptions",
            unsubscribe,
        )
        .await;
    assert_eq!((status, &body["error"]["code"]), (404, &json!("not_found")));

    let task = alice
        .task("Fix the flaky test\n\nIt fails on Tuesdays.")
        .await;
    finish(&server, TaskStatus::Succeeded).await;
    eventually(Duration::from_secs(20), "both devices told", || async {
        fake.received().len() >= 2
    })
    .await;
    let_retries_show().await;
    let received = fake.received();
    assert_eq!(received.len(), 2, "once each: {received:?}");
    assert!(fake.refused().is_empty(), "{:?}", fake.refused());
    let mut reached: Vec<&str> = received.iter().map(|m| m.endpoint.as_str()).collect();
    reached.sort();
    let mut devices = [phone.endpoint.as_str(), tablet.endpoint.as_str()];
    devices.sort();
    assert_eq!(reached, devices);
    for message in &received {
        assert_eq!(
            message.payload,
            json!({
                "task_id": task.id,
                "status": "succeeded",
                "title": "Task succeeded",
                "body": "Fix the flaky test",
                "url": format!("/#/task/{}", task.id),
            })
        );
        assert_eq!(message.ttl, 86_400);
        assert_eq!(
            message.topic.as_deref(),
            Some(&*task.id.0.simple().to_string())
        );
        assert_eq!(message.subject, SUBJECT);
    }

    let unsubscribe = Some(json!({ "endpoint": phone.endpoint }));
    let (status, _) = alice
        .call(
            reqwest::Method::DELETE,
            "/v1/push/subscriptions",
            unsubscribe,
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(alice.endpoints().await, vec![tablet.endpoint.clone()]);
    server.stop().await;
}

async fn a_gone_subscription_is_removed_and_a_restart_in_the_middle_loses_nothing(
    backend: Backend,
) {
    let fake = FakePushService::start().await;
    let mut db = TestDatabase::new(&backend).await;
    with_push(&mut db, &fake);
    let server = TestServer::start(&db).await;
    let alice = Phone::of(&server, "alice").await;
    let key = server_key(&server).await;
    let (gone, kept) = (fake.subscribe(&key), fake.subscribe(&key));
    for device in [&gone, &kept] {
        assert_eq!(alice.subscribe(device).await.0, 201);
    }
    fake.make_gone(&gone);
    fake.fail_next(2);
    let task = alice.task("Bump the version").await;
    let first_attempts = fake.posts();
    finish(&server, TaskStatus::Failed).await;
    eventually(
        Duration::from_secs(10),
        "a first, failed attempt",
        || async { fake.posts() > first_attempts },
    )
    .await;
    server.stop().await;

    let server = TestServer::start(&db).await;
    let alice = Phone {
        base: server.base_url.clone(),
        ..alice
    };
    eventually(Duration::from_secs(30), "the ending delivered", || async {
        !fake.received().is_empty()
    })
    .await;
    eventually(
        Duration::from_secs(30),
        "the gone device removed",
        || async { alice.endpoints().await == [kept.endpoint.clone()] },
    )
    .await;
    let_retries_show().await;
    let received = fake.received();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0].endpoint, kept.endpoint);
    assert_eq!(received[0].payload["task_id"], json!(task.id));
    assert_eq!(received[0].payload["status"], "failed");
    assert_eq!(received[0].payload["title"], "Task failed");
    server.stop().await;
}

async fn subscriptions_to_the_servers_own_network_or_with_bad_keys_are_refused(backend: Backend) {
    let fake = FakePushService::start().await;
    let mut db = TestDatabase::new(&backend).await;
    with_push(&mut db, &fake);
    let server = TestServer::start(&db).await;
    let alice = Phone::of(&server, "alice").await;
    let good = fake.subscribe(&server_key(&server).await);
    let with = |endpoint: &str, p256dh: &str, auth: &str| FakeSubscription {
        endpoint: endpoint.into(),
        p256dh: p256dh.into(),
        auth: auth.into(),
    };
    let off_curve = format!("BA{}", "A".repeat(85));
    let refused = [
        with("http://127.0.0.1:9/push/x", &good.p256dh, &good.auth),
        with("https://127.0.0.1/push/x", &good.p256dh, &good.auth),
        with("https://10.0.0.7/push/x", &good.p256dh, &good.auth),
        with("https://169.254.169.254/latest", &good.p256dh, &good.auth),
        with("https://localhost/push/x", &good.p256dh, &good.auth),
        with("https://[::1]/push/x", &good.p256dh, &good.auth),
        with("http://push.example.com/x", &good.p256dh, &good.auth),
        with("https://push.example.com", &good.p256dh, &good.auth),
        with("not a url", &good.p256dh, &good.auth),
        with(&good.endpoint, "BAAA", &good.auth),
        with(&good.endpoint, &off_curve, &good.auth),
        with(&good.endpoint, &good.p256dh, "c2hvcnQ"),
        with(&good.endpoint, "not base64!", &good.auth),
    ];
    for subscription in refused {
        let (status, body) = alice.subscribe(&subscription).await;
        assert_eq!(status, 422, "{subscription:?}: {body}");
        assert_eq!(body["error"]["code"], "invalid_push_subscription", "{body}");
    }
    assert!(alice.endpoints().await.is_empty());
    assert_eq!(alice.subscribe(&good).await.0, 201);
    server.stop().await;
}

async fn no_message_goes_to_the_servers_own_network(backend: Backend) {
    let listed = FakePushService::start().await;
    let inside = FakePushService::start().await;
    let mut db = TestDatabase::new(&backend).await;
    with_push(&mut db, &listed);
    let server = TestServer::start(&db).await;
    let alice = Phone::of(&server, "alice").await;
    let key = server_key(&server).await;
    // Stored behind the API's back, as if the server's network had changed since: the sender
    // checks the address again before it connects.
    let owner = server.store.upsert_user("alice").await.unwrap().id;
    let hidden = inside.subscribe(&key);
    let stored = NewPushSubscription {
        owner_id: owner,
        endpoint: hidden.endpoint.clone(),
        p256dh: hidden.p256dh.clone(),
        auth: hidden.auth.clone(),
    };
    server.store.put_push_subscription(stored).await.unwrap();
    assert_eq!(alice.subscribe(&listed.subscribe(&key)).await.0, 201);
    alice.task("Tidy up").await;
    finish(&server, TaskStatus::Cancelled).await;
    eventually(
        Duration::from_secs(20),
        "the listed device told",
        || async { !listed.received().is_empty() },
    )
    .await;
    let_retries_show().await;
    assert_eq!(listed.received()[0].payload["title"], "Task cancelled");
    assert_eq!(
        inside.posts(),
        0,
        "nothing reached the unlisted loopback address"
    );
    server.stop().await;
}
