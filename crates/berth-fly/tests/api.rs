//! The Machines API client's own behaviour over real HTTP, against a small server of the
//! test's that answers the way Fly documents for the awkward cases: its rate limit (429 with
//! `Retry-After`), a wait that runs out (408), and errors as `{"error": "…"}`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use berth_fly::api::{CreateMachine, MachineConfig};
use berth_fly::MachinesClient;
use berth_proto::Secret;
use serde_json::json;

#[derive(Default)]
struct Calls {
    creates: AtomicUsize,
    waits: AtomicUsize,
}

async fn serve(calls: Arc<Calls>) -> String {
    let creates = calls.clone();
    let waits = calls.clone();
    let router = Router::new()
        .route(
            "/v1/apps/sbx/machines",
            post(move |headers: HeaderMap| async move {
                assert_eq!(headers["authorization"], "Bearer fo1_token");
                match creates.creates.fetch_add(1, Ordering::SeqCst) {
                    0 => (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "0")]).into_response(),
                    _ => Json(json!({"id": "m1", "state": "created"})).into_response(),
                }
            })
            .get(|| async {
                let body = json!({"error": "internal: the placement service is down"});
                (StatusCode::INTERNAL_SERVER_ERROR, Json(body))
            }),
        )
        .route(
            "/v1/apps/sbx/machines/m1/wait",
            get(move || async move {
                match waits.waits.fetch_add(1, Ordering::SeqCst) {
                    0 => (
                        StatusCode::REQUEST_TIMEOUT,
                        Json(json!({"error": "deadline_exceeded"})),
                    )
                        .into_response(),
                    _ => Json(json!({"ok": true})).into_response(),
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    url
}

#[tokio::test]
async fn rate_limited_calls_and_short_waits_are_tried_again_and_errors_keep_flys_message() {
    let calls = Arc::new(Calls::default());
    let url = serve(calls.clone()).await;
    let client = MachinesClient::new(&url, "sbx", Secret::new("fo1_token"));
    let request = CreateMachine {
        name: None,
        region: None,
        config: MachineConfig {
            image: "registry.fly.io/sbx:sandbox".into(),
            ..Default::default()
        },
    };
    let machine = client.create(&request).await.unwrap();
    assert_eq!(machine.id, "m1");
    assert_eq!(
        calls.creates.load(Ordering::SeqCst),
        2,
        "the 429 was tried again"
    );
    client
        .wait_started("m1", Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(
        calls.waits.load(Ordering::SeqCst),
        2,
        "the 408 was waited again"
    );
    let err = client.list().await.unwrap_err().to_string();
    assert!(
        err.contains("500") && err.contains("the placement service is down"),
        "{err}"
    );
    assert!(
        !format!("{client:?}").contains("fo1_token"),
        "the token never shows"
    );
}
