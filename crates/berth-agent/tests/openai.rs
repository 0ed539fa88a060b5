//! The OpenAI-compatible provider against a small fake of `/v1/chat/completions` over HTTP.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use berth_agent::openai::{OpenAiConfig, OpenAiProvider};
use berth_agent::{Block, Message, Provider, ProviderError, RetryPolicy, Role, Tool, TurnRequest};
use serde_json::{json, Value};

#[derive(Default)]
struct Fake {
    answers: VecDeque<(u16, Value)>,
    seen: Vec<(HeaderMap, Value)>,
}

type Shared = Arc<Mutex<Fake>>;

async fn completions(
    State(fake): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut fake = fake.lock().unwrap();
    fake.seen.push((headers, body));
    let (status, answer) = fake.answers.pop_front().expect("a scripted answer");
    let mut response = (StatusCode::from_u16(status).unwrap(), Json(answer)).into_response();
    if status == 429 {
        response
            .headers_mut()
            .insert("retry-after", "0".parse().unwrap());
    }
    response
}

async fn start(answers: Vec<(u16, Value)>) -> (Shared, OpenAiProvider) {
    let fake: Shared = Arc::new(Mutex::new(Fake {
        answers: answers.into(),
        seen: Vec::new(),
    }));
    let app = Router::new()
        .route("/v1/chat/completions", post(completions))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let provider = OpenAiProvider::new(OpenAiConfig {
        base_url: url,
        api_key: Some("local-key-123".into()),
        retry: RetryPolicy {
            attempts: 3,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(10),
        },
        timeout: Duration::from_secs(10),
    });
    (fake, provider)
}

fn answer(message: Value, finish: &str) -> (u16, Value) {
    (
        200,
        json!({"choices": [{"index": 0, "message": message, "finish_reason": finish}],
                 "usage": {"prompt_tokens": 120, "completion_tokens": 15,
                           "prompt_tokens_details": {"cached_tokens": 100}}}),
    )
}

fn conversation() -> Vec<Message> {
    vec![
        Message::user_text("List the files"),
        Message {
            role: Role::Assistant,
            content: vec![
                Block::Text {
                    text: "Looking.".into(),
                },
                Block::ToolUse {
                    id: "call_a".into(),
                    name: "bash".into(),
                    input: json!({"command": "ls"}),
                },
            ],
        },
        Message {
            role: Role::User,
            content: vec![
                Block::ToolResult {
                    tool_use_id: "call_a".into(),
                    content: "README".into(),
                    is_error: false,
                },
                Block::Text {
                    text: "And then stop.".into(),
                },
            ],
        },
        // An empty answer, as models sometimes give, then a follow-up.
        Message {
            role: Role::Assistant,
            content: vec![],
        },
        Message::user_text("Are you there?"),
    ]
}

async fn ask(
    provider: &OpenAiProvider,
    messages: &[Message],
) -> Result<berth_agent::model::Turn, ProviderError> {
    provider
        .turn(&TurnRequest {
            model: "qwen2.5-coder",
            system: "sys",
            messages,
            tools: &Tool::ALL,
            max_tokens: 512,
            on_text: None,
        })
        .await
}

#[tokio::test]
async fn the_transcript_is_translated_both_ways() {
    let (fake, provider) = start(vec![answer(
        json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_b", "type": "function", "function": {"name": "str_replace_based_edit_tool",
             "arguments": "{\"command\":\"view\",\"path\":\"/workspace/README\"}"}}]}),
        "tool_calls",
    )])
    .await;
    let turn = ask(&provider, &conversation()).await.unwrap();
    assert_eq!(
        turn.message.content,
        vec![Block::ToolUse {
            id: "call_b".into(),
            name: "str_replace_based_edit_tool".into(),
            input: json!({"command": "view", "path": "/workspace/README"}),
        }]
    );
    assert_eq!(turn.stop_reason.as_deref(), Some("tool_use"));
    assert_eq!(
        (turn.usage.input, turn.usage.cache_read, turn.usage.output),
        (20, 100, 15)
    );

    let (headers, body) = fake.lock().unwrap().seen[0].clone();
    assert_eq!(headers["authorization"], "Bearer local-key-123");
    assert_eq!(
        body["messages"],
        json!([
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "List the files"},
            {"role": "assistant", "content": "Looking.", "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "bash", "arguments": "{\"command\":\"ls\"}"}}]},
            {"role": "tool", "tool_call_id": "call_a", "content": "README"},
            {"role": "user", "content": "And then stop."},
            {"role": "user", "content": "Are you there?"},
        ])
    );
    assert_eq!(body["tools"][0]["function"]["name"], "bash");
    assert_eq!(
        body["tools"][1]["function"]["name"],
        "str_replace_based_edit_tool"
    );
}

#[tokio::test]
async fn rate_limits_are_retried_and_refusals_are_not() {
    let (fake, provider) = start(vec![
        (429, json!({"error": {"message": "slow down"}})),
        answer(json!({"role": "assistant", "content": "Done."}), "stop"),
        (
            401,
            json!({"error": {"message": "Incorrect API key provided"}}),
        ),
    ])
    .await;
    let turn = ask(&provider, &conversation()).await.unwrap();
    assert_eq!(
        turn.message.content,
        vec![Block::Text {
            text: "Done.".into()
        }]
    );
    assert_eq!(turn.stop_reason.as_deref(), Some("end_turn"));
    let err = ask(&provider, &conversation()).await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::Refused { status: 401, message } if message == "Incorrect API key provided"),
        "{err:?}"
    );
    assert_eq!(fake.lock().unwrap().seen.len(), 3);
}

#[tokio::test]
async fn arguments_that_are_not_json_become_an_input_the_tool_refuses() {
    let (_fake, provider) = start(vec![answer(
        json!({"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": "bash", "arguments": "{\"command\": \"ls"}}]}),
        "tool_calls",
    )])
    .await;
    let turn = ask(&provider, &conversation()).await.unwrap();
    let calls: Vec<_> = turn.message.tool_uses().collect();
    assert_eq!(calls.len(), 1);
    let (id, name, input) = calls[0];
    assert!(id.starts_with("call_"), "an id of its own: {id}");
    assert_eq!(name, "bash");
    assert_eq!(input, &json!({"_invalid_json": "{\"command\": \"ls"}));
}
