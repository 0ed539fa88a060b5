//! A scriptable fake of the Anthropic Messages API that speaks real server-sent events over
//! HTTP, so tests exercise Berth's own client. Replies are taken from a queue, then from a
//! responder function; every request is recorded. Like the real API, it refuses a wrong key
//! and a transcript with a `tool_use` left unanswered.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

/// What the fake answers to one request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// HTTP 200 with these events (`(event name, data)`), sent in chunks of `chunk` bytes so
    /// events and even lines arrive split.
    Events {
        events: Vec<(String, Value)>,
        chunk: usize,
    },
    /// The events, then the connection ends without `message_stop`.
    Cut(Vec<(String, Value)>),
    /// HTTP 200 with one JSON message, as the API answers a request that does not stream.
    Message(Value),
    /// An HTTP error with an Anthropic error body.
    Status {
        status: u16,
        kind: String,
        message: String,
        retry_after: Option<u64>,
    },
}

/// One content block of a scripted turn.
#[derive(Clone, Debug)]
pub enum ScriptBlock {
    Text(String),
    /// A tool call whose input JSON is streamed in pieces of `piece` characters.
    ToolUse {
        id: String,
        name: String,
        input: Value,
        piece: usize,
    },
}

impl Reply {
    /// A turn that says `text` and ends.
    pub fn text(text: &str) -> Reply {
        Reply::turn(vec![ScriptBlock::Text(text.into())], "end_turn")
    }

    /// A turn that calls one tool, its input streamed in 16-character pieces.
    pub fn tool(id: &str, name: &str, input: Value) -> Reply {
        Reply::turn(
            vec![ScriptBlock::ToolUse {
                id: id.into(),
                name: name.into(),
                input,
                piece: 16,
            }],
            "tool_use",
        )
    }

    /// A whole streamed turn: `message_start`, a `ping`, each block, `message_delta` and
    /// `message_stop`, with made-up but consistent token counts.
    pub fn turn(blocks: Vec<ScriptBlock>, stop_reason: &str) -> Reply {
        Reply::Events {
            events: turn_events(&blocks, stop_reason),
            chunk: 37,
        }
    }

    /// A whole message saying `text`, for a request that does not stream, with the same
    /// token counts as a streamed turn.
    pub fn message(text: &str) -> Reply {
        Reply::Message(json!({
            "id": format!("msg_{}", rand::random::<u32>()), "type": "message", "role": "assistant",
            "model": "fake", "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 100, "output_tokens": 30,
                      "cache_creation_input_tokens": 20, "cache_read_input_tokens": 50}}))
    }

    /// An `error` event after HTTP 200, once the message has started.
    pub fn error_event(kind: &str, message: &str) -> Reply {
        let mut events = turn_events(&[ScriptBlock::Text("I will st".into())], "end_turn");
        events.truncate(4);
        events.push((
            "error".into(),
            json!({"type": "error", "error": {"type": kind, "message": message}}),
        ));
        Reply::Events { events, chunk: 37 }
    }

    /// A turn whose connection drops after its first few events.
    pub fn dropped() -> Reply {
        let mut events = turn_events(&[ScriptBlock::Text("Partial".into())], "end_turn");
        events.truncate(4);
        Reply::Cut(events)
    }

    pub fn status(status: u16, kind: &str, message: &str) -> Reply {
        Reply::Status {
            status,
            kind: kind.into(),
            message: message.into(),
            retry_after: None,
        }
    }

    /// 529 Overloaded, as the API says it.
    pub fn overloaded() -> Reply {
        Reply::status(529, "overloaded_error", "Overloaded")
    }

    /// 429 with a `retry-after` in seconds.
    pub fn rate_limited(retry_after: u64) -> Reply {
        Reply::Status {
            status: 429,
            kind: "rate_limit_error".into(),
            message: "Number of request tokens has exceeded your per-minute rate limit".into(),
            retry_after: Some(retry_after),
        }
    }
}

fn turn_events(blocks: &[ScriptBlock], stop_reason: &str) -> Vec<(String, Value)> {
    let mut events = vec![
        (
            "message_start".to_string(),
            json!({"type": "message_start", "message": {
            "id": format!("msg_{}", rand::random::<u32>()), "type": "message", "role": "assistant",
            "content": [], "model": "fake", "stop_reason": null,
            "usage": {"input_tokens": 100, "output_tokens": 1,
                      "cache_creation_input_tokens": 20, "cache_read_input_tokens": 50}}}),
        ),
        ("ping".to_string(), json!({"type": "ping"})),
    ];
    for (index, block) in blocks.iter().enumerate() {
        let (start, deltas) = match block {
            ScriptBlock::Text(text) => (
                json!({"type": "text", "text": ""}),
                pieces(text, 8)
                    .into_iter()
                    .map(|piece| json!({"type": "text_delta", "text": piece}))
                    .collect::<Vec<_>>(),
            ),
            ScriptBlock::ToolUse {
                id,
                name,
                input,
                piece,
            } => (
                json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                pieces(&input.to_string(), *piece)
                    .into_iter()
                    .map(|piece| json!({"type": "input_json_delta", "partial_json": piece}))
                    .collect(),
            ),
        };
        events.push((
            "content_block_start".into(),
            json!({"type": "content_block_start", "index": index, "content_block": start}),
        ));
        for delta in deltas {
            events.push((
                "content_block_delta".into(),
                json!({"type": "content_block_delta", "index": index, "delta": delta}),
            ));
        }
        events.push((
            "content_block_stop".into(),
            json!({"type": "content_block_stop", "index": index}),
        ));
    }
    events.push(("message_delta".into(), json!({"type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": null}, "usage": {"output_tokens": 30}})));
    events.push(("message_stop".into(), json!({"type": "message_stop"})));
    events
}

fn pieces(text: &str, size: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars
        .chunks(size.max(1))
        .map(|chunk| chunk.iter().collect())
        .collect()
}

type Responder = Box<dyn Fn(&Value) -> Reply + Send + Sync>;

#[derive(Default)]
struct Inner {
    queue: VecDeque<Reply>,
    responder: Option<Responder>,
    requests: Vec<Value>,
    headers: Vec<HeaderMap>,
    /// Requests refused because the transcript broke the API's rules.
    rejections: Vec<String>,
    /// When each request arrived and when its streamed answer was fully sent.
    timings: Vec<(Instant, Option<Instant>)>,
}

pub struct FakeAnthropic {
    /// Base URL, for `anthropic_base_url`.
    pub url: String,
    pub api_key: String,
    inner: Arc<Mutex<Inner>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeAnthropic {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[derive(Clone)]
struct Shared {
    inner: Arc<Mutex<Inner>>,
    api_key: String,
}

impl FakeAnthropic {
    /// Starts the fake on a free loopback port; requests must carry `api_key`.
    pub async fn start(api_key: &str) -> FakeAnthropic {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let shared = Shared {
            inner: inner.clone(),
            api_key: api_key.to_string(),
        };
        let app = Router::new()
            .route("/v1/messages", post(messages))
            .with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("fake Anthropic server");
        });
        FakeAnthropic {
            url,
            api_key: api_key.to_string(),
            inner,
            server,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("fake Anthropic lock")
    }

    /// Queues replies, answered in order.
    pub fn push(&self, replies: impl IntoIterator<Item = Reply>) {
        self.lock().queue.extend(replies);
    }

    /// Answers with `responder` once the queue is empty.
    pub fn respond_with(&self, responder: impl Fn(&Value) -> Reply + Send + Sync + 'static) {
        self.lock().responder = Some(Box::new(responder));
    }

    /// The bodies of every request so far.
    pub fn requests(&self) -> Vec<Value> {
        self.lock().requests.clone()
    }

    pub fn headers(&self) -> Vec<HeaderMap> {
        self.lock().headers.clone()
    }

    /// Why requests were refused for breaking the API's transcript rules.
    pub fn rejections(&self) -> Vec<String> {
        self.lock().rejections.clone()
    }

    /// For each request: when it arrived, and when the last byte of its streamed answer was
    /// handed to the connection (`None` for error answers).
    pub fn timings(&self) -> Vec<(Instant, Option<Instant>)> {
        self.lock().timings.clone()
    }

    /// Replies still queued.
    pub fn pending(&self) -> usize {
        self.lock().queue.len()
    }
}

async fn messages(
    State(shared): State<Shared>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    // The request has arrived once its last byte has: the clock stops before this fake's own
    // parsing, which grows with the conversation and is none of the client's time.
    let arrived = Instant::now();
    let json_sent = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    let Some(body) = json_sent
        .then(|| serde_json::from_slice::<Value>(&body).ok())
        .flatten()
    else {
        return error(400, "invalid_request_error", "the body must be JSON", None);
    };
    let (reply, index) = {
        let mut inner = shared.inner.lock().expect("fake Anthropic lock");
        inner.requests.push(body.clone());
        inner.headers.push(headers.clone());
        inner.timings.push((arrived, None));
        let key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
        if key != Some(shared.api_key.as_str()) {
            return error(401, "authentication_error", "invalid x-api-key", None);
        }
        if headers.get("anthropic-version").is_none() {
            return error(
                400,
                "invalid_request_error",
                "anthropic-version: header is required",
                None,
            );
        }
        if let Err(problem) = check_transcript(&body) {
            inner.rejections.push(problem.clone());
            return error(400, "invalid_request_error", &problem, None);
        }
        let reply = match inner.queue.pop_front() {
            Some(reply) => reply,
            None => match &inner.responder {
                Some(responder) => responder(&body),
                None => Reply::status(400, "invalid_request_error", "fake: no scripted reply left"),
            },
        };
        (reply, inner.timings.len() - 1)
    };
    let sent = move || {
        let mut inner = shared.inner.lock().expect("fake Anthropic lock");
        inner.timings[index].1 = Some(Instant::now());
    };
    match reply {
        Reply::Status {
            status,
            kind,
            message,
            retry_after,
        } => error(status, &kind, &message, retry_after),
        Reply::Events { events, chunk } => stream(events, chunk, Some(Box::new(sent))),
        Reply::Cut(events) => stream(events, 37, None),
        Reply::Message(message) => Json(message).into_response(),
    }
}

fn error(status: u16, kind: &str, message: &str, retry_after: Option<u64>) -> Response {
    let body = json!({"type": "error", "error": {"type": kind, "message": message}});
    let mut response = (StatusCode::from_u16(status).expect("status"), Json(body)).into_response();
    if let Some(secs) = retry_after {
        response.headers_mut().insert("retry-after", secs.into());
    }
    response
}

/// Sends events as `text/event-stream`, cut into small chunks. A complete stream calls `sent`
/// after its last chunk; a cut one (no `sent`) ends with an error, so the connection closes
/// without a clean end of body.
fn stream(
    events: Vec<(String, Value)>,
    chunk: usize,
    sent: Option<Box<dyn FnOnce() + Send>>,
) -> Response {
    let complete = sent.is_some();
    let mut text = String::new();
    for (name, data) in &events {
        text.push_str(&format!("event: {name}\ndata: {data}\n\n"));
    }
    let bytes = text.into_bytes();
    let mut chunks: Vec<Result<Vec<u8>, std::io::Error>> = bytes
        .chunks(chunk.max(1))
        .map(|piece| Ok(piece.to_vec()))
        .collect();
    if !complete {
        chunks.push(Err(std::io::Error::other("fake: connection dropped")));
    }
    let body = futures_stream(chunks, sent);
    Response::builder()
        .status(200)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(body)
        .expect("response")
}

fn futures_stream(
    chunks: Vec<Result<Vec<u8>, std::io::Error>>,
    sent: Option<Box<dyn FnOnce() + Send>>,
) -> Body {
    use futures::StreamExt;
    let count = chunks.len();
    let sent = Mutex::new(sent);
    let stream = futures::stream::iter(chunks.into_iter().enumerate()).then(move |(i, chunk)| {
        let last = i + 1 == count;
        let sent = if last {
            sent.lock().expect("sent").take()
        } else {
            None
        };
        async move {
            tokio::time::sleep(Duration::from_micros(50)).await;
            if let Some(sent) = sent {
                sent();
            }
            chunk
        }
    });
    Body::from_stream(stream)
}

/// The API's rules Berth could break when it resumes: the conversation starts with the user,
/// no message but a final assistant one is empty, and every `tool_use` is answered by a
/// `tool_result` in the very next (user) message, which answers nothing else.
pub fn check_transcript(body: &Value) -> Result<(), String> {
    let messages = body["messages"]
        .as_array()
        .ok_or("messages: field required")?;
    if messages
        .first()
        .map(|m| m["role"] != "user")
        .unwrap_or(true)
    {
        return Err("messages: the first message must use the \"user\" role".into());
    }
    for (i, message) in messages.iter().enumerate() {
        let blocks = message["content"].as_array().cloned().unwrap_or_default();
        let ids = |blocks: &[Value], kind: &str, field: &str| -> Vec<String> {
            blocks
                .iter()
                .filter(|b| b["type"] == kind)
                .filter_map(|b| b[field].as_str().map(str::to_string))
                .collect()
        };
        let empty = match &message["content"] {
            Value::String(text) => text.is_empty(),
            other => other.as_array().is_none_or(Vec::is_empty),
        };
        if empty && !(message["role"] == "assistant" && i + 1 == messages.len()) {
            return Err(format!("messages.{i}: all messages must have non-empty content except for the optional final assistant message"));
        }
        let results = ids(&blocks, "tool_result", "tool_use_id");
        let asked = match i.checked_sub(1).map(|p| &messages[p]) {
            Some(previous) if previous["role"] == "assistant" => ids(
                previous["content"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or(&[]),
                "tool_use",
                "id",
            ),
            _ => Vec::new(),
        };
        if let Some(stray) = results.iter().find(|id| !asked.contains(id)) {
            return Err(format!(
                "messages.{i}: unexpected `tool_use_id` found in `tool_result` blocks: {stray}"
            ));
        }
        if let Some(missing) = asked.iter().find(|id| !results.contains(id)) {
            return Err(format!("messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after: {missing}"));
        }
        if message["role"] == "assistant"
            && !ids(&blocks, "tool_use", "id").is_empty()
            && i + 1 == messages.len()
        {
            return Err(format!(
                "messages.{i}: the final assistant message cannot hold tool_use blocks"
            ));
        }
    }
    Ok(())
}
