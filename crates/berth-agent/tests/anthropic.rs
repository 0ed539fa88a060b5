//! The Anthropic client against the fake Messages API over real HTTP and SSE.

use std::time::{Duration, Instant};

use berth_agent::anthropic::{AnthropicConfig, AnthropicProvider};
use berth_agent::model::TokenUsage;
use berth_agent::{Block, Message, Provider, ProviderError, RetryPolicy, Tool, TurnRequest};
use berth_testkit::anthropic::{FakeAnthropic, Reply, ScriptBlock};
use serde_json::json;

fn provider(fake: &FakeAnthropic, key: &str) -> AnthropicProvider {
    AnthropicProvider::new(AnthropicConfig {
        base_url: fake.url.clone(),
        api_key: key.to_string(),
        version: "2023-06-01".into(),
        retry: RetryPolicy {
            attempts: 4,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_secs(5),
        },
        idle_timeout: Duration::from_secs(10),
    })
}

async fn ask(provider: &AnthropicProvider) -> Result<berth_agent::model::Turn, ProviderError> {
    let messages = [Message::user_text("Fix the bug")];
    provider
        .turn(&TurnRequest {
            model: "claude-test",
            system: "You are in a sandbox.",
            messages: &messages,
            tools: &Tool::ALL,
            max_tokens: 1024,
            on_text: None,
        })
        .await
}

#[tokio::test]
async fn tool_input_streamed_one_character_at_a_time_is_assembled() {
    let fake = FakeAnthropic::start("sk-test").await;
    let input = json!({"command": "str_replace", "path": "/workspace/a.txt",
                       "old_str": "héllo \"wörld\"\n", "new_str": "bye"});
    fake.push([Reply::turn(
        vec![
            ScriptBlock::Text("Let me edit.".into()),
            ScriptBlock::ToolUse {
                id: "toolu_1".into(),
                name: "str_replace_based_edit_tool".into(),
                input: input.clone(),
                piece: 1,
            },
        ],
        "tool_use",
    )]);
    let turn = ask(&provider(&fake, "sk-test")).await.unwrap();
    assert_eq!(
        turn.message.content,
        vec![
            Block::Text {
                text: "Let me edit.".into()
            },
            Block::ToolUse {
                id: "toolu_1".into(),
                name: "str_replace_based_edit_tool".into(),
                input
            },
        ]
    );
    assert_eq!(turn.stop_reason.as_deref(), Some("tool_use"));
    assert_eq!(
        turn.usage,
        TokenUsage {
            input: 100,
            output: 30,
            cache_write: 20,
            cache_read: 50
        }
    );
    let headers = &fake.headers()[0];
    assert_eq!(headers["anthropic-version"], "2023-06-01");
    let body = &fake.requests()[0];
    assert_eq!(body["stream"], true);
    assert_eq!(body["tools"][0]["type"], "bash_20250124");
}

#[tokio::test]
async fn an_empty_answer_in_the_transcript_is_left_out_of_the_request() {
    let fake = FakeAnthropic::start("sk-test").await;
    fake.push([Reply::text("Still here.")]);
    // Models do answer with nothing at times; the API refuses such a message before the last.
    let messages = [
        Message::user_text("Fix the bug"),
        Message {
            role: berth_agent::Role::Assistant,
            content: vec![],
        },
        Message::user_text("Are you there?"),
    ];
    let request = TurnRequest {
        model: "claude-test",
        system: "You are in a sandbox.",
        messages: &messages,
        tools: &Tool::ALL,
        max_tokens: 1024,
        on_text: None,
    };
    let turn = provider(&fake, "sk-test").turn(&request).await;
    assert!(turn.is_ok(), "{turn:?} {:?}", fake.rejections());
    let sent = &fake.requests()[0]["messages"];
    assert_eq!(sent.as_array().unwrap().len(), 2);
    assert_eq!(sent[1]["content"][0]["text"], "Are you there?");
}

#[tokio::test]
async fn an_error_event_after_http_200_is_retried() {
    let fake = FakeAnthropic::start("sk-test").await;
    fake.push([
        Reply::error_event("overloaded_error", "Overloaded"),
        Reply::text("done"),
    ]);
    let turn = ask(&provider(&fake, "sk-test")).await.unwrap();
    assert_eq!(
        turn.message.content,
        vec![Block::Text {
            text: "done".into()
        }]
    );
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn overloaded_and_dropped_streams_are_retried_until_success() {
    let fake = FakeAnthropic::start("sk-test").await;
    fake.push([Reply::overloaded(), Reply::dropped(), Reply::text("done")]);
    let turn = ask(&provider(&fake, "sk-test")).await.unwrap();
    assert_eq!(turn.message.content.len(), 1);
    assert_eq!(fake.requests().len(), 3);
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let fake = FakeAnthropic::start("sk-test").await;
    fake.push([Reply::rate_limited(1), Reply::text("done")]);
    let started = Instant::now();
    ask(&provider(&fake, "sk-test")).await.unwrap();
    // The backoff alone is a millisecond; only retry-after makes it wait a second.
    assert!(started.elapsed() >= Duration::from_millis(950));
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn a_bad_key_is_refused_at_once_with_the_apis_message() {
    let fake = FakeAnthropic::start("sk-test").await;
    let err = ask(&provider(&fake, "sk-wrong")).await.unwrap_err();
    match err {
        ProviderError::Refused { status, message } => {
            assert_eq!(status, 401);
            assert_eq!(message, "invalid x-api-key");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(fake.requests().len(), 1, "401 is not retried");
}

#[tokio::test]
async fn a_refusal_inside_the_stream_is_not_retried() {
    let fake = FakeAnthropic::start("sk-test").await;
    fake.push([Reply::error_event(
        "invalid_request_error",
        "prompt is too long",
    )]);
    let err = ask(&provider(&fake, "sk-test")).await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::Refused { status: 400, message } if message == "prompt is too long"),
        "{err:?}"
    );
}

#[tokio::test]
async fn failures_past_the_last_attempt_say_what_happened() {
    let fake = FakeAnthropic::start("sk-test").await;
    fake.push([
        Reply::overloaded(),
        Reply::overloaded(),
        Reply::overloaded(),
        Reply::overloaded(),
    ]);
    let err = ask(&provider(&fake, "sk-test")).await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::Unavailable(reason) if reason.contains("529") && reason.contains("Overloaded")),
        "{err:?}"
    );
    assert_eq!(fake.requests().len(), 4);
}
