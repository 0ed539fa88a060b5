//! One request's conversation with the model: resume what is stored, then turn after turn,
//! store the model's message, carry out its tool calls, store their results — until the
//! model ends, a budget is spent, or the attempt is asked to stop.

use berth_proto::{EventKind, Usage};
use berth_runner::attempt::{Ending, Job};
use berth_runner::output::OutputEvents;
use berth_runner::redact::StreamRedactor;
use berth_store::StoreError;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::context_window::ContextWindow;
use crate::model::{
    Block, Message, OnText, Provider, ProviderError, Role, TokenUsage, Tool, Turn, TurnRequest,
};
use crate::prices::Price;
use crate::run::AgentSettings;
use crate::tools::Toolbox;

/// Characters of a tool result shown in its event (the model gets it whole).
const MAX_EVENT_RESULT: usize = 64 << 10;

pub struct Conversation<'a> {
    pub provider: &'a dyn Provider,
    pub settings: &'a AgentSettings,
    /// The task, its attempt and its sandbox.
    pub job: Job<'a>,
    pub model: &'a str,
    pub price: Option<Price>,
}

/// The transcript as stored (with each turn's usage) and as sent.
#[derive(Default)]
struct Transcript {
    stored: Vec<Value>,
    messages: Vec<Message>,
}

/// A tool call of the model's, as it asked for it.
struct Call {
    id: String,
    name: String,
    input: Value,
}

impl Call {
    /// Only an editor `view` surely leaves the workspace as it was.
    fn may_change_files(&self) -> bool {
        !(self.name == Tool::Editor.name() && self.input["command"] == "view")
    }
}

impl Conversation<'_> {
    pub async fn run(&self) -> Ending {
        self.converse().await.unwrap_or_else(Ending::from)
    }

    async fn converse(&self) -> Result<Ending, StoreError> {
        let mut transcript = self.resume().await?;
        if let Some(last) = transcript.messages.last() {
            if last.role == Role::Assistant {
                // The model had already finished when the last attempt ended.
                return Ok(Ending::Done {
                    summary: text_of(last),
                });
            }
        }
        let system = crate::prompt::system_prompt(self.job.task, self.settings.command_timeout);
        let toolbox = Toolbox {
            sandbox: self.job.sandbox,
            command_timeout: self.settings.command_timeout,
        };
        // Whether the last tools may have changed the workspace: its diff is then stored
        // while the model thinks, before any further tool runs.
        let mut changed = false;
        let mut window = ContextWindow::new(self.settings.context_tokens);
        loop {
            if let Some(reason) = self.budget_spent(&transcript.stored) {
                if changed {
                    self.checkpoint().await?;
                }
                return Ok(Ending::Failed(reason));
            }
            let cleared = window.cleared();
            let messages = window.fit(&system, &transcript.messages);
            if window.cleared() > cleared {
                tracing::info!(task = %self.job.task.id, messages = window.cleared(),
                    "older tool results left out of the request to fit the context window");
            }
            let turn = match self.ask(&system, &messages, changed).await? {
                Ok(turn) => turn,
                Err(ending) => return Ok(ending),
            };
            let message = self.record(turn, &mut transcript).await?;
            let calls: Vec<Call> = message
                .tool_uses()
                .map(|(id, name, input)| Call {
                    id: id.to_string(),
                    name: name.to_string(),
                    input: input.clone(),
                })
                .collect();
            if calls.is_empty() {
                return Ok(Ending::Done {
                    summary: text_of(message),
                });
            }
            changed = calls.iter().any(Call::may_change_files);
            // The first call's event went with the turn, and the last result's goes with the
            // message that hands the results back: one write each, not three.
            let last = calls.len() - 1;
            let mut results = Vec::new();
            let mut last_result = Vec::new();
            for (n, call) in calls.into_iter().enumerate() {
                let (result, event) = match self.carry_out(&toolbox, call, n == 0).await? {
                    Ok(done) => done,
                    Err(ending) => return Ok(ending),
                };
                results.push(result);
                match n == last {
                    true => last_result.push((EventKind::ToolResult, event)),
                    false => self
                        .job
                        .ctx
                        .emit(EventKind::ToolResult, event)
                        .await
                        .map(drop)?,
                }
            }
            self.append_user(&mut transcript, results, last_result)
                .await?;
        }
    }

    /// Asks the model for its next turn; the diff so far is stored meanwhile, if the last
    /// tools may have changed it.
    async fn ask(
        &self,
        system: &str,
        messages: &[Message],
        changed: bool,
    ) -> Result<Result<Turn, Ending>, StoreError> {
        let (text_in, text_out) = mpsc::unbounded_channel::<String>();
        let asked = async move {
            let on_text = move |piece: &str| {
                let _ = text_in.send(piece.to_string());
            };
            let request = TurnRequest {
                model: self.model,
                system,
                messages,
                tools: &Tool::ALL,
                max_tokens: self.settings.max_tokens_per_turn,
                on_text: Some(OnText(&on_text)),
            };
            self.provider.turn(&request).await
            // The text's sender goes with `on_text`: `speak` ends once the turn has.
        };
        let checkpoint = async {
            match changed {
                true => self.checkpoint().await,
                false => Ok(()),
            }
        };
        let (answer, saved, ()) = tokio::select! {
            all = async { tokio::join!(asked, checkpoint, self.speak(text_out)) } => all,
            () = self.job.ctx.stop.cancelled() => return Ok(Err(Ending::Stopped)),
        };
        saved?;
        Ok(answer.map_err(|err| match err {
            // Retrying will not help a refused request; a model API that kept failing may be
            // back for another attempt.
            ProviderError::Refused { .. } => Ending::Failed(err.to_string()),
            ProviderError::Unavailable(_) => Ending::Infrastructure(err.to_string()),
        }))
    }

    /// Hands the model's text to the task's streams as it comes, redacted, joining what
    /// arrived while the last piece was being handed on. Streams may miss some: the stored
    /// `assistant_text` event supersedes it, so a failure here is only logged.
    async fn speak(&self, mut text: mpsc::UnboundedReceiver<String>) {
        let mut redactor = StreamRedactor::new(self.job.redactor.clone());
        while let Some(piece) = text.recv().await {
            let mut ready = redactor.push(piece.as_bytes());
            while let Ok(piece) = text.try_recv() {
                ready.push_str(&redactor.push(piece.as_bytes()));
            }
            self.hand_on(ready).await;
        }
        self.hand_on(redactor.finish()).await;
    }

    async fn hand_on(&self, text: String) {
        if text.is_empty() {
            return;
        }
        if let Err(err) = self.job.ctx.live_text(text).await {
            tracing::debug!(error = %err, "the model's text could not be streamed");
        }
    }

    /// Stores the turn in one write, before any of its tool calls runs: its usage counted,
    /// the model's message (redacted) in the transcript, and its usage, its text and its
    /// first tool call as events.
    async fn record<'t>(
        &self,
        turn: Turn,
        transcript: &'t mut Transcript,
    ) -> Result<&'t Message, StoreError> {
        let cost = self.price.map_or(0.0, |price| price.cost(&turn.usage));
        measure_usage(self.model, &turn.usage, cost);
        let totals = Usage {
            input_tokens: turn.usage.input,
            output_tokens: turn.usage.output,
            cache_write_tokens: turn.usage.cache_write,
            cache_read_tokens: turn.usage.cache_read,
            cost_usd: cost,
        };
        let message = Message {
            role: Role::Assistant,
            content: self.redact_blocks(turn.message.content),
        };
        let record = json!({
            "role": "assistant",
            "content": message.content,
            "stop_reason": turn.stop_reason,
            "usage": usage_json(&turn.usage, cost),
        });
        let mut events = vec![(EventKind::Usage, usage_json(&turn.usage, cost))];
        for block in &message.content {
            if let Block::Text { text } = block {
                events.push((EventKind::AssistantText, json!({ "text": text })));
            }
        }
        if let Some((id, name, input)) = message.tool_uses().next() {
            events.push((EventKind::ToolCall, tool_call_event(id, name, input)));
        }
        let ctx = self.job.ctx;
        (ctx.store)
            .record_turn(ctx.fence, Some(&totals), record.clone(), events)
            .await?;
        transcript.stored.push(record);
        transcript.messages.push(message);
        Ok(transcript.messages.last().expect("just pushed"))
    }

    /// Runs one tool call in the sandbox, streaming its output, and returns the result for
    /// the model and its `tool_result` event, for the caller to write; or how the
    /// conversation ends, if the attempt stops or the sandbox fails. Its `tool_call` event is
    /// written first, unless it was `announced` with the turn.
    async fn carry_out(
        &self,
        toolbox: &Toolbox<'_>,
        call: Call,
        announced: bool,
    ) -> Result<Result<(Block, Value), Ending>, StoreError> {
        let Call { id, name, input } = call;
        if !announced {
            let event = tool_call_event(&id, &name, &input);
            self.job.ctx.emit(EventKind::ToolCall, event).await?;
        }
        let output = OutputEvents::start(self.job.ctx, self.job.redactor, Some(&id));
        let mut sink = output.sink();
        let started = std::time::Instant::now();
        let ran = tokio::select! {
            ran = toolbox.run(&name, &input, &mut sink) => Some(ran),
            () = self.job.ctx.stop.cancelled() => None,
        };
        let took = started.elapsed();
        drop(sink);
        output.finish().await;
        let output = match ran {
            None => return Ok(Err(Ending::Stopped)),
            Some(Err(err)) => return Ok(Err(err.into())),
            Some(Ok(output)) => output,
        };
        let content = self.job.redactor.text(&output.content);
        let shown: String = content.chars().take(MAX_EVENT_RESULT).collect();
        let event = json!({
            "tool_use_id": id,
            "content": shown,
            "is_error": output.is_error,
            "duration_ms": took.as_secs_f64() * 1000.0,
        });
        let result = Block::ToolResult {
            tool_use_id: id,
            content,
            is_error: output.is_error,
        };
        Ok(Ok((result, event)))
    }

    /// Loads the stored transcript and makes it one the API accepts: tool calls an earlier
    /// attempt never answered get error results, and a waiting prompt (the task's own, or a
    /// follow-up) is added.
    async fn resume(&self) -> Result<Transcript, StoreError> {
        let stored = self.job.ctx.store.list_messages(self.job.task.id).await?;
        let mut transcript = Transcript::default();
        for record in stored {
            let message: Message = serde_json::from_value(record.clone()).map_err(|err| {
                StoreError::Corrupt(format!("a stored message is unreadable: {err}"))
            })?;
            transcript.stored.push(record);
            transcript.messages.push(message);
        }
        let mut blocks: Vec<Block> = match transcript.messages.last() {
            Some(last) if last.role == Role::Assistant => last
                .tool_uses()
                .map(|(id, _, _)| Block::ToolResult {
                    tool_use_id: id.to_string(),
                    content: "This tool call was not carried out to the end: the run was \
                              interrupted. Check the workspace before repeating it."
                        .to_string(),
                    is_error: true,
                })
                .collect(),
            _ => Vec::new(),
        };
        let pending = self
            .job
            .ctx
            .store
            .work_state(self.job.task.id)
            .await?
            .pending_prompt;
        if transcript.messages.is_empty() {
            blocks.push(Block::Text {
                text: self.job.task.prompt.clone(),
            });
        } else if let Some(prompt) = pending {
            blocks.push(Block::Text { text: prompt });
        }
        if !blocks.is_empty() {
            let blocks = self.redact_blocks(blocks);
            self.append_user(&mut transcript, blocks, Vec::new())
                .await?;
        }
        Ok(transcript)
    }

    /// Appends a user message (the task's prompt, or tool results) with `events`, in one
    /// write.
    async fn append_user(
        &self,
        transcript: &mut Transcript,
        content: Vec<Block>,
        events: Vec<(EventKind, Value)>,
    ) -> Result<(), StoreError> {
        let message = Message {
            role: Role::User,
            content,
        };
        let record = serde_json::to_value(&message).expect("messages serialize");
        let ctx = self.job.ctx;
        (ctx.store)
            .record_turn(ctx.fence, None, record.clone(), events)
            .await?;
        transcript.stored.push(record);
        transcript.messages.push(message);
        Ok(())
    }

    /// Stores the diff so far, so that a crash loses at most one step.
    async fn checkpoint(&self) -> Result<(), StoreError> {
        match self.job.sandbox.diff(self.job.base).await {
            Ok(diff) => {
                self.job
                    .ctx
                    .store
                    .save_diff(self.job.ctx.fence, &diff)
                    .await
            }
            Err(err) => {
                tracing::info!(task = %self.job.task.id, error = %err, "no checkpoint of the diff");
                Ok(())
            }
        }
    }

    fn redact_blocks(&self, blocks: Vec<Block>) -> Vec<Block> {
        let value = serde_json::to_value(&blocks).expect("blocks serialize");
        serde_json::from_value(self.job.redactor.json(&value))
            .expect("redacted blocks keep their shape")
    }

    /// Why the current request may not take another turn, if it may not. Budgets count from
    /// the request's prompt (the task's, or the latest follow-up), one turn at a time: the
    /// turn that crosses a limit finishes.
    fn budget_spent(&self, stored: &[Value]) -> Option<String> {
        let start = stored
            .iter()
            .rposition(|record| {
                record["role"] == "user"
                    && record["content"]
                        .as_array()
                        .is_some_and(|blocks| blocks.iter().any(|b| b["type"] == "text"))
            })
            .unwrap_or(0);
        let turns: Vec<&Value> = stored[start..]
            .iter()
            .filter(|r| r["role"] == "assistant")
            .collect();
        let budget = &self.job.task.budget;
        let max_turns = budget.max_turns.unwrap_or(self.settings.max_turns);
        if turns.len() as u64 >= u64::from(max_turns) {
            return Some(format!("stopped at its budget of {max_turns} turns"));
        }
        let tokens: u64 = turns
            .iter()
            .map(|r| r["usage"]["total_tokens"].as_u64().unwrap_or(0))
            .sum();
        if let Some(max) = budget.max_tokens.filter(|max| tokens >= *max) {
            return Some(format!(
                "stopped at its budget of {max} tokens ({tokens} used)"
            ));
        }
        let cost: f64 = turns
            .iter()
            .map(|r| r["usage"]["cost_usd"].as_f64().unwrap_or(0.0))
            .sum();
        if let Some(max) = budget.max_usd.filter(|max| cost >= *max) {
            return Some(format!(
                "stopped at its budget of ${max} (${cost:.4} spent)"
            ));
        }
        None
    }
}

/// A `tool_call` event: what the model asked to run.
fn tool_call_event(id: &str, name: &str, input: &Value) -> Value {
    json!({"id": id, "name": name, "input": input})
}

fn usage_json(usage: &TokenUsage, cost: f64) -> Value {
    json!({
        "input_tokens": usage.input,
        "output_tokens": usage.output,
        "cache_write_tokens": usage.cache_write,
        "cache_read_tokens": usage.cache_read,
        "total_tokens": usage.total(),
        "cost_usd": cost,
    })
}

fn text_of(message: &Message) -> String {
    let texts: Vec<&str> = message
        .content
        .iter()
        .filter_map(|block| match block {
            Block::Text { text } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    texts.join("\n")
}

/// Tokens by model and kind, and their cost in millionths of a dollar (a counter takes whole
/// numbers), for the metrics.
fn measure_usage(model: &str, usage: &TokenUsage, cost: f64) {
    for (kind, tokens) in [
        ("input", usage.input),
        ("output", usage.output),
        ("cache_write", usage.cache_write),
        ("cache_read", usage.cache_read),
    ] {
        metrics::counter!("berth_llm_tokens_total", "model" => model.to_string(), "kind" => kind)
            .increment(tokens);
    }
    metrics::counter!("berth_llm_cost_microdollars_total", "model" => model.to_string())
        .increment((cost * 1e6).round() as u64);
}
