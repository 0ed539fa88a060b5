//! A command's output as `command_output` events while it runs: redacted, in order, coalesced
//! when it comes faster than the database stores it, UTF-8 characters kept whole, and bounded.
//! Past the bound the sink drops output before it is queued, so a command that prints without
//! end costs the runner no more memory than the bound.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use berth_proto::EventKind;
use berth_sandbox::Stream;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::redact::{Redactor, StreamRedactor};
use crate::Context;

/// Bytes of one command's output kept as events, at most; the rest is dropped and said so.
pub const MAX_KEPT_OUTPUT: usize = 1 << 20;
/// Queued output of one stream is joined into one event up to this size.
const MAX_EVENT_BYTES: usize = 64 << 10;
const CUT_NOTE: &str = "\n[output past 1 MiB was not kept as events]\n";

type Chunk = (Stream, Vec<u8>);

/// Forwards what the sandbox's sinks are given to the task's event log.
pub struct OutputEvents {
    sender: Option<mpsc::UnboundedSender<Chunk>>,
    /// Bytes that may still be queued; shared by every sink.
    left: Arc<AtomicUsize>,
    cut: Arc<AtomicBool>,
    forwarder: tokio::task::JoinHandle<()>,
}

impl OutputEvents {
    /// Starts forwarding; events carry `tool_use_id` when there is one. Each stream is redacted
    /// on its own, so a secret split between two chunks of it is still masked.
    pub fn start(ctx: &Context, redactor: &Redactor, tool_use_id: Option<&str>) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        let cut = Arc::new(AtomicBool::new(false));
        let forwarder = Forwarder {
            ctx: ctx.clone(),
            tool_use_id: tool_use_id.map(str::to_string),
            stdout: StreamRedactor::new(redactor.clone()),
            stderr: StreamRedactor::new(redactor.clone()),
            cut: cut.clone(),
        };
        Self {
            sender: Some(sender),
            left: Arc::new(AtomicUsize::new(MAX_KEPT_OUTPUT)),
            cut,
            forwarder: tokio::spawn(forwarder.run(receiver).in_current_span()),
        }
    }

    /// What the sandbox calls with each chunk of output.
    pub fn sink(&self) -> impl FnMut(Stream, &[u8]) + Send + 'static {
        let sender = self.sender.clone().expect("sink taken before finish");
        let (left, cut) = (self.left.clone(), self.cut.clone());
        move |stream, bytes| {
            let before = left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                    Some(left - left.min(bytes.len()))
                })
                .expect("the update always applies");
            let take = before.min(bytes.len());
            if take < bytes.len() {
                cut.store(true, Ordering::Relaxed);
            }
            if take > 0 {
                let _ = sender.send((stream, bytes[..take].to_vec()));
            }
        }
    }

    /// Waits until everything given to the sinks is stored. Drop every sink first.
    pub async fn finish(mut self) {
        self.sender.take();
        let _ = (&mut self.forwarder).await;
    }
}

struct Forwarder {
    ctx: Context,
    tool_use_id: Option<String>,
    stdout: StreamRedactor,
    stderr: StreamRedactor,
    cut: Arc<AtomicBool>,
}

impl Forwarder {
    async fn run(mut self, mut receiver: mpsc::UnboundedReceiver<Chunk>) {
        let mut next = None;
        while let Some((stream, mut bytes)) = match next.take() {
            Some(chunk) => Some(chunk),
            None => receiver.recv().await,
        } {
            // What queued up while the last event was being stored goes into one event, as
            // long as it is the same stream (so stdout and stderr keep their order).
            while bytes.len() < MAX_EVENT_BYTES {
                match receiver.try_recv() {
                    Ok((same, more)) if same == stream => bytes.extend_from_slice(&more),
                    Ok(other) => {
                        next = Some(other);
                        break;
                    }
                    Err(_) => break,
                }
            }
            let text = self.filter(stream).push(&bytes);
            if self.emit(stream, text).await.is_err() {
                // Fenced out or the database is gone: nothing more of this attempt is kept.
                return;
            }
        }
        for stream in [Stream::Stdout, Stream::Stderr] {
            let rest = self.filter(stream).finish();
            let _ = self.emit(stream, rest).await;
        }
        if self.cut.load(Ordering::Relaxed) {
            let _ = self.emit(Stream::Stderr, CUT_NOTE.to_string()).await;
        }
    }

    fn filter(&mut self, stream: Stream) -> &mut StreamRedactor {
        match stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        }
    }

    async fn emit(&mut self, stream: Stream, text: String) -> Result<(), berth_store::StoreError> {
        if text.is_empty() {
            return Ok(());
        }
        let stream = match stream {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        };
        let mut payload = json!({"stream": stream, "text": text});
        if let Some(id) = &self.tool_use_id {
            payload["tool_use_id"] = Value::String(id.clone());
        }
        self.ctx
            .emit(EventKind::CommandOutput, payload)
            .await
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use berth_proto::{CreateTask, UserId};
    use berth_store::{ClaimLimits, Fence, NewTask};
    use tokio_util::sync::CancellationToken;

    use super::*;

    /// A running attempt of a fresh task, in a fresh SQLite database.
    async fn attempt() -> (tempfile::TempDir, Context, UserId) {
        let dir = tempfile::tempdir().unwrap();
        let store = berth_store::open_sqlite(dir.path()).await.unwrap();
        let owner = store.upsert_user("alice").await.unwrap();
        let request = CreateTask::new("https://github.com/octo/hello", "print things");
        let new = NewTask {
            owner_id: owner.id,
            request,
            max_attempts: 1,
            idempotency: None,
            github: None,
        };
        store.create_task(new).await.unwrap();
        let limits = ClaimLimits {
            node_id: "node".into(),
            lease_ms: 60_000,
            node_capacity: 1,
            per_user_limit: 1,
        };
        let task = store.claim_next_task(&limits).await.unwrap().unwrap();
        let ctx = Context {
            fence: Fence {
                task_id: task.id,
                attempt: task.attempt,
            },
            node_id: "node".into(),
            store,
            stop: CancellationToken::new(),
            reason: Default::default(),
        };
        (dir, ctx, owner.id)
    }

    async fn output_events(ctx: &Context, owner: UserId) -> Vec<Value> {
        let (events, _) = ctx
            .store
            .list_events(owner, ctx.fence.task_id, 0, 10_000)
            .await
            .unwrap()
            .unwrap();
        events
            .into_iter()
            .filter(|event| event.kind == EventKind::CommandOutput)
            .map(|event| event.payload)
            .collect()
    }

    // One thread: nothing is forwarded until the test awaits, so all the chunks are queued
    // at once, as when a command prints faster than the database stores.
    #[tokio::test(flavor = "current_thread")]
    async fn output_past_the_bound_is_dropped_before_it_is_queued_and_said_so() {
        let (_dir, ctx, owner) = attempt().await;
        let output = OutputEvents::start(&ctx, &Redactor::default(), None);
        let mut sink = output.sink();
        let chunk = vec![b'x'; 4096];
        for _ in 0..(3 * MAX_KEPT_OUTPUT / chunk.len()) {
            sink(Stream::Stdout, &chunk);
        }
        assert_eq!(output.left.load(Ordering::Relaxed), 0);
        drop(sink);
        output.finish().await;

        let events = output_events(&ctx, owner).await;
        let (note, kept) = events.split_last().unwrap();
        assert_eq!(note["text"], CUT_NOTE);
        assert_eq!(note["stream"], "stderr");
        let text: usize = kept.iter().map(|e| e["text"].as_str().unwrap().len()).sum();
        assert_eq!(text, MAX_KEPT_OUTPUT);
        // Queued chunks were joined: 64 KiB events, not 4 KiB ones.
        assert_eq!(kept.len(), MAX_KEPT_OUTPUT / MAX_EVENT_BYTES);
        assert!(kept.iter().all(|e| e["stream"] == "stdout"));
        assert!(kept.iter().all(|e| e.get("tool_use_id").is_none()));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn streams_keep_their_order_and_characters_stay_whole() {
        let (_dir, ctx, owner) = attempt().await;
        let output = OutputEvents::start(&ctx, &Redactor::default(), Some("toolu_1"));
        let mut sink = output.sink();
        sink(Stream::Stdout, b"caf\xc3");
        sink(Stream::Stdout, b"\xa9 ");
        sink(Stream::Stderr, b"warning\n");
        sink(Stream::Stdout, b"ok \xe2\x9c");
        drop(sink);
        output.finish().await;

        let events = output_events(&ctx, owner).await;
        let seen: Vec<(&str, &str)> = events
            .iter()
            .map(|e| (e["stream"].as_str().unwrap(), e["text"].as_str().unwrap()))
            .collect();
        // A character cut off by the end of the output shows as U+FFFD, once.
        assert_eq!(
            seen,
            [
                ("stdout", "café "),
                ("stderr", "warning\n"),
                ("stdout", "ok "),
                ("stdout", "\u{fffd}"),
            ]
        );
        assert!(events.iter().all(|e| e["tool_use_id"] == "toolu_1"));
    }
}
