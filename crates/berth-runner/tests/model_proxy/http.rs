//! The proxy's contract with a plain HTTP client.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use berth_proto::Budget;
use berth_runner::model_proxy::Reach;
use berth_testkit::anthropic::Reply;
use berth_testkit::{eventually, FakeAnthropic};
use serde_json::{json, Value};

use super::{loopback_reach, start_proxy, Attempt, REAL_KEY};

/// A request as Claude Code sends it: fields Berth's own client does not know, and a
/// system-role message inside `messages`.
fn cli_request() -> String {
    let body = json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 512,
        "stream": true,
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Read the README"}]},
            {"role": "system", "content": "The working directory is /workspace."}
        ],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "context_management": {"edits": []},
        "metadata": {"user_id": "someone"}
    });
    // Spacing no serializer would write: it must arrive as it was sent.
    body.to_string().replacen('{', "{ ", 1)
}

async fn post_messages(url: &str, token: &str, body: String) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{url}/v1/messages?beta=true"))
        .header("x-api-key", token)
        .header("anthropic-version", "2023-06-01")
        .header(
            "anthropic-beta",
            "claude-code-20250219,interleaved-thinking-2025-05-14",
        )
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_streamed_turn_passes_through_unchanged_with_the_real_key_and_is_counted() {
    let fake = FakeAnthropic::start(REAL_KEY).await;
    let events = vec![
        (
            "message_start".to_string(),
            json!({"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "content": [],
            "model": "claude-sonnet-4-5-20250929", "stop_reason": null,
            "usage": {"input_tokens": 1000, "output_tokens": 1,
                      "cache_creation_input_tokens": 200, "cache_read_input_tokens": 5000}}}),
        ),
        (
            "content_block_start".to_string(),
            json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {}}}),
        ),
        (
            "content_block_delta".to_string(),
            json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "input_json_delta", "partial_json": "{\"file_path\":\"README.md\"}"}}),
        ),
        (
            "content_block_stop".to_string(),
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "message_delta".to_string(),
            json!({"type": "message_delta",
            "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 400}}),
        ),
        ("message_stop".to_string(), json!({"type": "message_stop"})),
    ];
    let expected: String = events
        .iter()
        .map(|(name, data)| format!("event: {name}\ndata: {data}\n\n"))
        .collect();
    fake.push([Reply::Events { events, chunk: 7 }]);
    let attempt = Attempt::start(Budget::default()).await;
    let (proxy, url) = start_proxy(&fake, "http://127.0.0.1:9/v1", loopback_reach()).await;
    let pass = proxy.admit(attempt.admission());

    let sent = cli_request();
    let answer = post_messages(&url, pass.token(), sent.clone()).await;
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["content-type"], "text/event-stream");
    assert_eq!(
        answer.text().await.unwrap(),
        expected,
        "the stream comes back unchanged"
    );

    let seen = fake.requests();
    assert_eq!(seen, vec![serde_json::from_str::<Value>(&sent).unwrap()]);
    let headers = &fake.headers()[0];
    assert_eq!(headers["x-api-key"], REAL_KEY);
    assert_eq!(
        headers["anthropic-beta"],
        "claude-code-20250219,interleaved-thinking-2025-05-14"
    );
    assert!(
        headers
            .values()
            .all(|v| !v.to_str().unwrap().contains(pass.token())),
        "the proxy token goes no further than the proxy: {headers:?}"
    );

    eventually(
        Duration::from_secs(10),
        "the turn's usage and its event are stored",
        // Two writes: the task's counts, then the event.
        || async {
            attempt.task().await.usage.output_tokens == 400
                && !attempt.usage_events().await.is_empty()
        },
    )
    .await;
    let usage = attempt.task().await.usage;
    assert_eq!(
        (
            usage.input_tokens,
            usage.cache_write_tokens,
            usage.cache_read_tokens
        ),
        (1000, 200, 5000)
    );
    let dollars = (1000.0 * 3.0 + 400.0 * 15.0 + 200.0 * 3.75 + 5000.0 * 0.3) / 1e6;
    assert!((usage.cost_usd - dollars).abs() < 1e-9, "{usage:?}");
    let events = attempt.usage_events().await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["model"], "claude-sonnet-4-5");
    assert_eq!(events[0]["total_tokens"], 6600);
    let log = serde_json::to_string(&attempt.events().await).unwrap();
    assert!(!log.contains(pass.token()) && !log.contains(REAL_KEY));
}

#[tokio::test]
async fn the_turn_after_the_budget_is_spent_is_refused_with_an_anthropic_error() {
    let fake = FakeAnthropic::start(REAL_KEY).await;
    fake.respond_with(|_| Reply::text("Done."));
    let budget = Budget {
        max_tokens: Some(150),
        ..Budget::default()
    };
    let attempt = Attempt::start(budget).await;
    let (proxy, url) = start_proxy(&fake, "http://127.0.0.1:9/v1", loopback_reach()).await;
    let pass = proxy.admit(attempt.admission());

    // The fake's turn takes 200 tokens: the first one crosses the limit and finishes.
    let first = post_messages(&url, pass.token(), cli_request()).await;
    assert_eq!(first.status(), 200);
    first.text().await.unwrap();
    eventually(
        Duration::from_secs(10),
        "the first turn is counted",
        || async { attempt.task().await.usage.output_tokens > 0 },
    )
    .await;
    let second = post_messages(&url, pass.token(), cli_request()).await;
    assert_eq!(second.status(), 402);
    let error: Value = second.json().await.unwrap();
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "billing_error");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("budget of 150 tokens is spent"),
        "{message}"
    );
    assert_eq!(
        fake.requests().len(),
        1,
        "a refused turn never reaches the model"
    );
}

#[tokio::test]
async fn a_turn_budget_counts_requests() {
    let fake = FakeAnthropic::start(REAL_KEY).await;
    fake.respond_with(|_| Reply::text("Done."));
    let budget = Budget {
        max_turns: Some(2),
        ..Budget::default()
    };
    let attempt = Attempt::start(budget).await;
    let (proxy, url) = start_proxy(&fake, "http://127.0.0.1:9/v1", loopback_reach()).await;
    let pass = proxy.admit(attempt.admission());
    for _ in 0..2 {
        let answer = post_messages(&url, pass.token(), cli_request()).await;
        assert_eq!(answer.status(), 200);
        answer.text().await.unwrap();
    }
    let third = post_messages(&url, pass.token(), cli_request()).await;
    assert_eq!(third.status(), 402);
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn a_token_dies_with_its_attempt_and_a_made_up_one_never_works() {
    let fake = FakeAnthropic::start(REAL_KEY).await;
    fake.respond_with(|_| Reply::text("Done."));
    let attempt = Attempt::start(Budget::default()).await;
    let (proxy, url) = start_proxy(&fake, "http://127.0.0.1:9/v1", loopback_reach()).await;
    let pass = proxy.admit(attempt.admission());
    let token = pass.token().to_string();
    let live = post_messages(&url, &token, cli_request()).await;
    assert_eq!(live.status(), 200);
    live.text().await.unwrap();

    drop(pass);
    for stolen in [token.as_str(), REAL_KEY, "berth-proxy-00"] {
        let refused = post_messages(&url, stolen, cli_request()).await;
        assert_eq!(refused.status(), 401, "{stolen}");
        let error: Value = refused.json().await.unwrap();
        assert_eq!(error["error"]["type"], "authentication_error");
    }
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn requests_from_outside_the_sandbox_network_are_refused() {
    let fake = FakeAnthropic::start(REAL_KEY).await;
    fake.respond_with(|_| Reply::text("Done."));
    let attempt = Attempt::start(Budget::default()).await;
    let elsewhere = Reach {
        network: "10.99.0.0/16".parse().unwrap(),
        host: "10.99.0.1".parse().unwrap(),
    };
    // The host itself: the client's address is the address the proxy answers on.
    let the_host = Reach {
        network: "127.0.0.0/8".parse().unwrap(),
        host: "127.0.0.1".parse().unwrap(),
    };
    for reach in [elsewhere, the_host] {
        let (proxy, url) = start_proxy(&fake, "http://127.0.0.1:9/v1", reach).await;
        let pass = proxy.admit(attempt.admission());
        let refused = post_messages(&url, pass.token(), cli_request()).await;
        assert_eq!(refused.status(), 403, "{reach:?}");
        let error: Value = refused.json().await.unwrap();
        assert_eq!(error["error"]["type"], "permission_error");
    }
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn the_openai_chat_api_is_passed_through_with_the_real_key_and_counted() {
    type Seen = Arc<Mutex<Vec<(HeaderMap, Value)>>>;
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let app = Router::new().route(
        "/v1/chat/completions",
        post(
            move |headers: HeaderMap, Json(body): Json<Value>| async move {
                record.lock().unwrap().push((headers, body));
                Json(json!({"model": "local-llama", "choices": [{"index": 0,
                "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 120, "completion_tokens": 15,
                          "prompt_tokens_details": {"cached_tokens": 100}}}))
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let openai_url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let fake = FakeAnthropic::start(REAL_KEY).await;
    let attempt = Attempt::start(Budget::default()).await;
    let (proxy, url) = start_proxy(&fake, &openai_url, loopback_reach()).await;
    let pass = proxy.admit(attempt.admission());

    let answer = reqwest::Client::new()
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(pass.token())
        .json(&json!({"model": "local-llama", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "hi");
    let (headers, _) = seen.lock().unwrap()[0].clone();
    assert_eq!(headers["authorization"], "Bearer sk-openai-real-9090");

    eventually(
        Duration::from_secs(10),
        "the answer's usage and its event are stored",
        || async {
            attempt.task().await.usage.output_tokens == 15
                && !attempt.usage_events().await.is_empty()
        },
    )
    .await;
    let usage = attempt.task().await.usage;
    assert_eq!((usage.input_tokens, usage.cache_read_tokens), (20, 100));
    let events = attempt.usage_events().await;
    assert_eq!(
        events[0]["priced"], false,
        "a model without a price is said to be"
    );
}
