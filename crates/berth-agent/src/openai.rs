//! A provider for OpenAI-compatible chat completion APIs with tool calling — llama.cpp's
//! server, vLLM, Ollama, OpenAI — so that local models can drive Berth. The stored transcript
//! keeps the Anthropic shape; this module translates both ways. Answers are not streamed:
//! local servers differ most in their streaming, and a whole answer is what the loop needs.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

use crate::model::{
    retry_after, Block, Message, Provider, ProviderError, RetryPolicy, Role, TokenUsage, Tool,
    Turn, TurnRequest,
};

#[derive(Clone)]
pub struct OpenAiConfig {
    /// Such as `http://127.0.0.1:8080/v1`; `/chat/completions` is added.
    pub base_url: String,
    pub api_key: Option<String>,
    pub retry: RetryPolicy,
    /// Longest one request may take, answer included.
    pub timeout: Duration,
}

pub struct OpenAiProvider {
    config: OpenAiConfig,
    http: reqwest::Client,
}

impl OpenAiProvider {
    pub fn new(config: OpenAiConfig) -> Self {
        let http = reqwest::Client::builder()
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            .timeout(config.timeout)
            .build()
            .expect("an HTTP client with rustls");
        Self { config, http }
    }

    /// One request: the turn, or whether (and when) to try again.
    async fn attempt(&self, body: &Value) -> Result<Turn, (Option<Duration>, ProviderError)> {
        let url = format!(
            "{}/chat/completions",
            self.config.base_url.trim_end_matches('/')
        );
        let mut request = self.http.post(url).json(body);
        if let Some(key) = &self.config.api_key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.map_err(|err| {
            let reason = format!("cannot reach the model API: {}", err.without_url());
            (Some(Duration::ZERO), ProviderError::Unavailable(reason))
        })?;
        let status = response.status().as_u16();
        let wait = retry_after(response.headers());
        let text = response.text().await.unwrap_or_default();
        if status != 200 {
            let message = error_message(&text);
            return Err(if RetryPolicy::is_retryable(status) {
                let reason = format!("HTTP {status}: {message}");
                (
                    Some(wait.unwrap_or(Duration::ZERO)),
                    ProviderError::Unavailable(reason),
                )
            } else {
                (None, ProviderError::Refused { status, message })
            });
        }
        let answer: Value = serde_json::from_str(&text).map_err(|err| {
            let reason = format!("the answer is not JSON: {err}");
            (Some(Duration::ZERO), ProviderError::Unavailable(reason))
        })?;
        Ok(turn_of(&answer))
    }
}

#[async_trait]
impl Provider for OpenAiProvider {
    async fn turn(&self, request: &TurnRequest<'_>) -> Result<Turn, ProviderError> {
        let body = request_body(request);
        let policy = self.config.retry;
        let mut retry = 0;
        loop {
            match self.attempt(&body).await {
                Ok(turn) => return Ok(turn),
                Err((None, refused)) => return Err(refused),
                Err((Some(asked), failure)) => {
                    retry += 1;
                    if retry >= policy.attempts {
                        return Err(failure);
                    }
                    let asked = (!asked.is_zero()).then_some(asked);
                    tokio::time::sleep(policy.delay(retry, asked)).await;
                }
            }
        }
    }
}

/// The chat request: a system message, then the conversation with tool calls on assistant
/// messages and each tool result as a `tool` message right after them.
pub fn request_body(request: &TurnRequest<'_>) -> Value {
    let mut messages = vec![json!({"role": "system", "content": request.system})];
    for message in request.messages {
        messages.extend(chat_messages(message));
    }
    let tools: Vec<Value> = request.tools.iter().map(|tool| function(*tool)).collect();
    json!({
        "model": request.model,
        "max_tokens": request.max_tokens,
        "messages": messages,
        "tools": tools,
        "stream": false,
    })
}

fn chat_messages(message: &Message) -> Vec<Value> {
    let texts: Vec<&str> = message
        .content
        .iter()
        .filter_map(|block| match block {
            Block::Text { text } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    let text = texts.join("\n\n");
    match message.role {
        Role::Assistant => {
            let calls: Vec<Value> = message
                .tool_uses()
                .map(|(id, name, input)| {
                    json!({"id": id, "type": "function",
                           "function": {"name": name, "arguments": input.to_string()}})
                })
                .collect();
            if text.is_empty() && calls.is_empty() {
                // An empty answer: chat APIs refuse an assistant message with nothing in it.
                return Vec::new();
            }
            let mut out = json!({
                "role": "assistant",
                "content": if text.is_empty() { Value::Null } else { Value::String(text) },
            });
            if !calls.is_empty() {
                out["tool_calls"] = Value::Array(calls);
            }
            vec![out]
        }
        Role::User => {
            // Tool results first: they must follow the assistant message that asked for them.
            let mut out: Vec<Value> = message
                .content
                .iter()
                .filter_map(|block| match block {
                    Block::ToolResult {
                        tool_use_id,
                        content,
                        is_error,
                    } => Some(json!({
                        "role": "tool",
                        "tool_call_id": tool_use_id,
                        "content": if *is_error { format!("Error: {content}") } else { content.clone() },
                    })),
                    _ => None,
                })
                .collect();
            if !text.is_empty() {
                out.push(json!({"role": "user", "content": text}));
            }
            out
        }
    }
}

/// The two tools as JSON-Schema functions, with the inputs Anthropic's tools take.
fn function(tool: Tool) -> Value {
    let (description, parameters) = match tool {
        Tool::Bash => (
            "Run a shell command in the task's container, in a fresh bash shell whose working \
             directory carries over between calls. Returns stdout, stderr and the exit code.",
            json!({"type": "object", "properties": {
                "command": {"type": "string", "description": "The command to run."},
                "restart": {"type": "boolean", "description": "Start over in /workspace instead of running a command."}
            }}),
        ),
        Tool::Editor => (
            "View and edit files under /workspace. Commands: view (a file with line numbers, \
             or a directory), create (write file_text), str_replace (replace old_str, which \
             must appear exactly once, with new_str), insert (insert_text after line \
             insert_line; 0 is the top). Paths are absolute.",
            json!({"type": "object", "required": ["command", "path"], "properties": {
                "command": {"type": "string", "enum": ["view", "create", "str_replace", "insert"]},
                "path": {"type": "string", "description": "Absolute path under /workspace."},
                "view_range": {"type": "array", "items": {"type": "integer"}, "description": "[first, last] line; last -1 for the end."},
                "file_text": {"type": "string"},
                "old_str": {"type": "string"},
                "new_str": {"type": "string"},
                "insert_line": {"type": "integer"},
                "insert_text": {"type": "string"}
            }}),
        ),
    };
    json!({"type": "function", "function": {
        "name": tool.name(), "description": description, "parameters": parameters}})
}

/// The first choice as a turn. Arguments that are not JSON are kept for the tool to refuse.
fn turn_of(answer: &Value) -> Turn {
    let choice = &answer["choices"][0];
    let message = &choice["message"];
    let mut content = Vec::new();
    if let Some(text) = message["content"].as_str().filter(|t| !t.is_empty()) {
        content.push(Block::Text { text: text.into() });
    }
    for (n, call) in message["tool_calls"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let arguments = call["function"]["arguments"].as_str().unwrap_or("{}");
        let input = serde_json::from_str(arguments)
            .unwrap_or_else(|_| json!({ "_invalid_json": arguments }));
        // Some local servers send no id: make one that no other call in the transcript has.
        let id = call["id"].as_str().filter(|id| !id.is_empty());
        content.push(Block::ToolUse {
            id: id.map_or_else(
                || format!("call_{:016x}{n}", rand::random::<u64>()),
                str::to_string,
            ),
            name: call["function"]["name"].as_str().unwrap_or_default().into(),
            input,
        });
    }
    let stop_reason = choice["finish_reason"].as_str().map(|reason| {
        match reason {
            "stop" => "end_turn",
            "tool_calls" => "tool_use",
            "length" => "max_tokens",
            other => other,
        }
        .to_string()
    });
    let usage = &answer["usage"];
    let cached = usage["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap_or(0);
    let prompt = usage["prompt_tokens"].as_u64().unwrap_or(0);
    Turn {
        message: Message {
            role: Role::Assistant,
            content,
        },
        stop_reason,
        usage: TokenUsage {
            input: prompt.saturating_sub(cached),
            output: usage["completion_tokens"].as_u64().unwrap_or(0),
            cache_write: 0,
            cache_read: cached,
        },
    }
}

fn error_message(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    match parsed.as_ref().and_then(|v| v["error"]["message"].as_str()) {
        Some(message) => message.to_string(),
        None => body.trim().chars().take(500).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_calls_without_an_id_get_one_of_their_own() {
        let answer = json!({"choices": [{"finish_reason": "tool_calls", "message": {
        "content": null,
        "tool_calls": [
            {"type": "function", "function": {"name": "bash", "arguments": "{\"command\":\"ls\"}"}},
            {"id": "", "type": "function", "function": {"name": "bash", "arguments": "{}"}},
        ]}}]});
        let ids = |turn: Turn| -> Vec<String> {
            turn.message
                .tool_uses()
                .map(|(id, _, _)| id.to_string())
                .collect()
        };
        let first = ids(turn_of(&answer));
        let again = ids(turn_of(&answer));
        assert_eq!(first.len(), 2);
        assert!(first.iter().all(|id| id.starts_with("call_")));
        assert_ne!(first[0], first[1]);
        assert!(
            first.iter().all(|id| !again.contains(id)),
            "unique across turns"
        );
    }
}
