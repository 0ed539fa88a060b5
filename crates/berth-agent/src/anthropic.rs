//! A small client of the Anthropic Messages API: one streamed turn at a time, with the
//! Anthropic-defined tools, prompt caching on the stable prefix, token accounting and retries.
//! The stream is assembled here into a whole assistant message; a turn that fails halfway
//! (an `error` event after HTTP 200, a dropped connection) is asked for again from the start.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde::Serialize;
use serde_json::{json, Value};

use crate::model::{
    retry_after, Block, Message, OnText, Provider, ProviderError, RetryPolicy, Role, TokenUsage,
    Tool, Turn, TurnRequest,
};

pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
pub const DEFAULT_VERSION: &str = "2023-06-01";

#[derive(Clone)]
pub struct AnthropicConfig {
    pub base_url: String,
    pub api_key: String,
    /// The `anthropic-version` header.
    pub version: String,
    pub retry: RetryPolicy,
    /// A stream silent for this long (no event, not even a `ping`) counts as dropped.
    pub idle_timeout: Duration,
}

impl std::fmt::Debug for AnthropicConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnthropicConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &"[redacted]")
            .field("version", &self.version)
            .finish()
    }
}

pub struct AnthropicProvider {
    config: AnthropicConfig,
    http: reqwest::Client,
}

/// Why one request did not give a turn.
enum Failure {
    /// Worth another try, after `retry_after` if the server said so.
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
    Refused {
        status: u16,
        message: String,
    },
}

impl AnthropicProvider {
    pub fn new(config: AnthropicConfig) -> Self {
        let http = reqwest::Client::builder()
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            .build()
            .expect("an HTTP client with rustls");
        Self { config, http }
    }

    async fn attempt(
        &self,
        body: bytes::Bytes,
        on_text: Option<OnText<'_>>,
    ) -> Result<Turn, Failure> {
        let url = format!("{}/v1/messages", self.config.base_url.trim_end_matches('/'));
        let response = self
            .http
            .post(url)
            .header("x-api-key", &self.config.api_key)
            .header("anthropic-version", &self.config.version)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|err| Failure::Retry {
                reason: format!("cannot reach the model API: {}", without_url(&err)),
                retry_after: None,
            })?;
        let status = response.status().as_u16();
        if status != 200 {
            let wait = retry_after(response.headers());
            let text = response.text().await.unwrap_or_default();
            let message = error_message(&text);
            return Err(if RetryPolicy::is_retryable(status) {
                Failure::Retry {
                    reason: format!("HTTP {status}: {message}"),
                    retry_after: wait,
                }
            } else {
                Failure::Refused { status, message }
            });
        }
        let mut events = response.bytes_stream().eventsource();
        let mut turn = TurnAssembly::default();
        loop {
            let next = tokio::time::timeout(self.config.idle_timeout, events.next()).await;
            let event = match next {
                Err(_) => return Err(dropped("the stream went silent")),
                Ok(None) => return Err(dropped("the stream ended before message_stop")),
                Ok(Some(Err(err))) => return Err(dropped(&err.to_string())),
                Ok(Some(Ok(event))) => event,
            };
            let data: Value = match serde_json::from_str(&event.data) {
                Ok(data) => data,
                Err(_) if event.event == "ping" => continue,
                Err(err) => return Err(dropped(&format!("unreadable event: {err}"))),
            };
            match event.event.as_str() {
                "message_stop" => return Ok(turn.finish()),
                "error" => return Err(stream_error(&data)),
                _ => turn.apply(&event.event, &data, on_text),
            }
        }
    }
}

#[async_trait]
impl Provider for AnthropicProvider {
    async fn turn(&self, request: &TurnRequest<'_>) -> Result<Turn, ProviderError> {
        // Serialised once, straight from the conversation, and sent again as it is on a retry
        // (a clone of `Bytes` shares the buffer).
        let body = serde_json::to_vec(&RequestBody::new(request)).expect("requests serialise");
        let body = bytes::Bytes::from(body);
        let policy = self.config.retry;
        let mut retry = 0;
        loop {
            match self.attempt(body.clone(), request.on_text).await {
                Ok(turn) => return Ok(turn),
                Err(Failure::Refused { status, message }) => {
                    return Err(ProviderError::Refused { status, message })
                }
                Err(Failure::Retry {
                    reason,
                    retry_after,
                }) => {
                    retry += 1;
                    if retry >= policy.attempts {
                        return Err(ProviderError::Unavailable(reason));
                    }
                    let wait = policy.delay(retry, retry_after);
                    tracing::info!(%reason, retry, wait_ms = wait.as_millis() as u64, "model API failed; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// The request: system prompt and tool definitions first (they never change within a task),
/// then the conversation. Cache breakpoints go on the system prompt, the last tool and the
/// newest message, so each turn reads the conversation so far from the cache.
///
/// It borrows the conversation and is serialised straight into the body: the transcript is
/// sent whole on every turn, and building a JSON value of it first doubled that cost, which
/// grows with the conversation (the loop bench, issue 17).
#[derive(Serialize)]
struct RequestBody<'r> {
    model: &'r str,
    max_tokens: u32,
    stream: bool,
    system: [SystemText<'r>; 1],
    tools: Vec<Value>,
    messages: Vec<WireMessage<'r>>,
}

#[derive(Serialize)]
struct SystemText<'r> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'r str,
    cache_control: CacheControl,
}

/// A cache breakpoint: the API caches the request's prefix up to and including this part.
#[derive(Serialize, Clone, Copy)]
struct CacheControl {
    #[serde(rename = "type")]
    kind: &'static str,
}

const CACHED: CacheControl = CacheControl { kind: "ephemeral" };

#[derive(Serialize)]
struct WireMessage<'r> {
    role: Role,
    content: Vec<WireBlock<'r>>,
}

#[derive(Serialize)]
struct WireBlock<'r> {
    #[serde(flatten)]
    block: &'r Block,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_control: Option<CacheControl>,
}

impl<'r> RequestBody<'r> {
    fn new(request: &'r TurnRequest<'r>) -> Self {
        let mut tools: Vec<Value> = request
            .tools
            .iter()
            .map(|tool| tool_definition(*tool))
            .collect();
        if let Some(last) = tools.last_mut() {
            last["cache_control"] = json!(CACHED);
        }
        // Blocks Berth does not know are left out. The API refuses an empty message before
        // the last; an empty answer (which models do give) is left out, and the user
        // messages around it are read as one.
        let mut messages: Vec<WireMessage<'r>> = request
            .messages
            .iter()
            .map(|message| WireMessage {
                role: message.role,
                content: message
                    .content
                    .iter()
                    .filter(|block| !matches!(block, Block::Other))
                    .map(|block| WireBlock {
                        block,
                        cache_control: None,
                    })
                    .collect(),
            })
            .filter(|message| !message.content.is_empty())
            .collect();
        if let Some(block) = messages
            .last_mut()
            .and_then(|message| message.content.last_mut())
        {
            block.cache_control = Some(CACHED);
        }
        RequestBody {
            model: request.model,
            max_tokens: request.max_tokens,
            stream: true,
            system: [SystemText {
                kind: "text",
                text: request.system,
                cache_control: CACHED,
            }],
            tools,
            messages,
        }
    }
}

/// The request's body as JSON, as it is sent.
pub fn request_body(request: &TurnRequest<'_>) -> Value {
    serde_json::to_value(RequestBody::new(request)).expect("requests serialise")
}

fn tool_definition(tool: Tool) -> Value {
    match tool {
        Tool::Bash => json!({"type": "bash_20250124", "name": tool.name()}),
        Tool::Editor => json!({"type": "text_editor_20250728", "name": tool.name()}),
    }
}

/// Builds the assistant message from stream events, by block index.
#[derive(Default)]
struct TurnAssembly {
    blocks: BTreeMap<u64, Partial>,
    stop_reason: Option<String>,
    usage: TokenUsage,
}

enum Partial {
    Text(String),
    ToolUse {
        id: String,
        name: String,
        json: String,
    },
    /// A block type Berth does not know: its deltas are ignored.
    Ignored,
}

impl TurnAssembly {
    fn apply(&mut self, event: &str, data: &Value, on_text: Option<OnText<'_>>) {
        let index = data["index"].as_u64().unwrap_or(0);
        match event {
            "message_start" => self.count(&data["message"]["usage"]),
            "content_block_start" => {
                let block = &data["content_block"];
                let partial = match block["type"].as_str() {
                    Some("text") => Partial::Text(block["text"].as_str().unwrap_or("").into()),
                    Some("tool_use") => Partial::ToolUse {
                        id: block["id"].as_str().unwrap_or_default().into(),
                        name: block["name"].as_str().unwrap_or_default().into(),
                        json: String::new(),
                    },
                    _ => Partial::Ignored,
                };
                self.blocks.insert(index, partial);
            }
            "content_block_delta" => {
                let delta = &data["delta"];
                match (self.blocks.get_mut(&index), delta["type"].as_str()) {
                    (Some(Partial::Text(text)), Some("text_delta")) => {
                        let piece = delta["text"].as_str().unwrap_or("");
                        if let (Some(OnText(on_text)), false) = (on_text, piece.is_empty()) {
                            on_text(piece);
                        }
                        text.push_str(piece);
                    }
                    (Some(Partial::ToolUse { json, .. }), Some("input_json_delta")) => {
                        json.push_str(delta["partial_json"].as_str().unwrap_or(""));
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(reason) = data["delta"]["stop_reason"].as_str() {
                    self.stop_reason = Some(reason.to_string());
                }
                self.count(&data["usage"]);
            }
            // content_block_stop, ping and event types added to the API later.
            _ => {}
        }
    }

    /// Usage figures are running totals: the latest one seen for each counter wins.
    fn count(&mut self, usage: &Value) {
        let set = |field: &str, into: &mut u64| {
            if let Some(value) = usage[field].as_u64() {
                *into = value;
            }
        };
        set("input_tokens", &mut self.usage.input);
        set("output_tokens", &mut self.usage.output);
        set("cache_creation_input_tokens", &mut self.usage.cache_write);
        set("cache_read_input_tokens", &mut self.usage.cache_read);
    }

    fn finish(self) -> Turn {
        let content = self
            .blocks
            .into_values()
            .filter_map(|partial| match partial {
                Partial::Text(text) if text.is_empty() => None,
                Partial::Text(text) => Some(Block::Text { text }),
                Partial::ToolUse { id, name, json } => Some(Block::ToolUse {
                    id,
                    name,
                    input: tool_input(&json),
                }),
                Partial::Ignored => None,
            })
            .collect();
        Turn {
            message: Message {
                role: Role::Assistant,
                content,
            },
            stop_reason: self.stop_reason,
            usage: self.usage,
        }
    }
}

/// The tool input streamed as JSON pieces; no pieces means no arguments. Input that does not
/// parse (a turn cut at `max_tokens`) is kept as text for the tool to refuse.
fn tool_input(json: &str) -> Value {
    if json.trim().is_empty() {
        return json!({});
    }
    serde_json::from_str(json).unwrap_or_else(|_| json!({ "_invalid_json": json }))
}

/// An `error` event: overloaded and server-side errors are retried, the rest refuse.
fn stream_error(data: &Value) -> Failure {
    let kind = data["error"]["type"].as_str().unwrap_or("api_error");
    let message = data["error"]["message"]
        .as_str()
        .unwrap_or(kind)
        .to_string();
    let status = match kind {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        _ => {
            return Failure::Retry {
                reason: format!("{kind} during the stream: {message}"),
                retry_after: None,
            }
        }
    };
    Failure::Refused { status, message }
}

fn dropped(reason: &str) -> Failure {
    Failure::Retry {
        reason: format!("the response stream broke: {reason}"),
        retry_after: None,
    }
}

/// The `message` of an API error body, or the body itself, shortened.
fn error_message(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    match parsed.as_ref().and_then(|v| v["error"]["message"].as_str()) {
        Some(message) => message.to_string(),
        None => body.trim().chars().take(500).collect(),
    }
}

/// A reqwest error in words, without the URL (which is configuration, not news).
fn without_url(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    if let Some(url) = err.url() {
        text = text.replace(&format!(" ({url})"), "");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assemble(events: &[(&str, Value)]) -> Turn {
        let mut turn = TurnAssembly::default();
        for (name, data) in events {
            turn.apply(name, data, None);
        }
        turn.finish()
    }

    #[test]
    fn unknown_blocks_and_deltas_are_ignored() {
        let turn = assemble(&[
            (
                "content_block_start",
                json!({"index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
            ),
            (
                "content_block_delta",
                json!({"index": 0, "delta": {"type": "thinking_delta", "thinking": "hm"}}),
            ),
            (
                "content_block_start",
                json!({"index": 1, "content_block": {"type": "text", "text": ""}}),
            ),
            (
                "content_block_delta",
                json!({"index": 1, "delta": {"type": "text_delta", "text": "Hi"}}),
            ),
            (
                "content_block_delta",
                json!({"index": 1, "delta": {"type": "citations_delta"}}),
            ),
            ("something_new", json!({})),
            (
                "message_delta",
                json!({"delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 7}}),
            ),
        ]);
        assert_eq!(
            turn.message.content,
            vec![Block::Text { text: "Hi".into() }]
        );
        assert_eq!(turn.stop_reason.as_deref(), Some("end_turn"));
        assert_eq!(turn.usage.output, 7);
    }

    #[test]
    fn the_newest_message_and_the_stable_prefix_carry_cache_breakpoints() {
        let messages = [
            Message::user_text("first"),
            Message {
                role: Role::Assistant,
                content: vec![Block::Other, Block::Text { text: "ok".into() }],
            },
            Message::user_text("second"),
            Message {
                role: Role::Assistant,
                content: vec![Block::Other],
            },
            Message::user_text("third"),
        ];
        let body = request_body(&TurnRequest {
            model: "m",
            system: "sys",
            messages: &messages,
            tools: &Tool::ALL,
            max_tokens: 100,
            on_text: None,
        });
        assert_eq!(body["system"][0]["cache_control"]["type"], "ephemeral");
        assert!(body["tools"][0].get("cache_control").is_none());
        assert_eq!(body["tools"][1]["cache_control"]["type"], "ephemeral");
        assert_eq!(body["tools"][1]["type"], "text_editor_20250728");
        assert!(body["messages"][0]["content"][0]
            .get("cache_control")
            .is_none());
        assert_eq!(
            body["messages"][1]["content"].as_array().unwrap().len(),
            1,
            "unknown blocks are not sent"
        );
        assert!(body["messages"][2]["content"][0]
            .get("cache_control")
            .is_none());
        assert_eq!(
            body["messages"].as_array().unwrap().len(),
            4,
            "an answer with nothing to send is left out"
        );
        assert_eq!(body["messages"][3]["content"][0]["text"], "third");
        assert_eq!(
            body["messages"][3]["content"][0]["cache_control"]["type"],
            "ephemeral"
        );
    }
}
