//! The committed OpenAPI document is the one the code generates, and the server serves it.

use crate::harness::{Backend, TestDatabase, TestServer};

const COMMITTED: &str = include_str!("../../../../docs/openapi.json");

#[test]
fn committed_document_is_current() {
    let generated = berth_server::openapi::document_json();
    assert!(
        generated == COMMITTED,
        "docs/openapi.json is stale: run `cargo run -p berth -- openapi --output docs/openapi.json`"
    );
}

#[tokio::test]
async fn server_serves_the_document() {
    let db = TestDatabase::new(&Backend::Sqlite).await;
    let server = TestServer::start(&db).await;
    let served: serde_json::Value = reqwest::get(format!("{}/openapi.json", server.base_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let committed: serde_json::Value = serde_json::from_str(COMMITTED).unwrap();
    assert!(
        served == committed,
        "the served document differs from docs/openapi.json"
    );
    assert_eq!(served["openapi"], "3.1.0");
    assert!(served["paths"]["/v1/tasks"]["post"].is_object());
    server.stop().await;
}
