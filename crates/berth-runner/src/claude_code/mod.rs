//! A task's work done by Claude Code running inside its sandbox: the CLI gets the task's
//! request, the model proxy's address and a token good for this attempt only (never the real
//! key), and its JSON output becomes the task's events. The diff, branch and pull request
//! after it are the lifecycle's, as for Berth's own loop.

mod stream;

use std::time::Duration;

use async_trait::async_trait;
use berth_sandbox::{ExecRequest, NetworkPolicy, Stream};
use tokio::sync::mpsc;

use crate::attempt::{Ending, Job, Work};
use crate::model_proxy::{Admission, ModelProxy, Pass};
use crate::redact::Redactor;
use stream::Step;

/// Where the CLI is in images built with `berth image build --with-claude-code`.
pub const CLAUDE_EXECUTABLE: &str = "/usr/local/bin/claude";

/// Tools the CLI may use without asking: it runs unattended, and the sandbox is its bound.
pub const DEFAULT_ALLOWED_TOOLS: &str = "Bash,Read,Edit,MultiEdit,Write,Glob,Grep,LS";

pub struct ClaudeCode {
    pub proxy: ModelProxy,
    /// The proxy's base URL as sandboxes reach it (`http://<gateway>:<port>`).
    pub proxy_url: String,
    /// `--model` for tasks that name none; the CLI's own default when `None`.
    pub model: Option<String>,
    pub allowed_tools: String,
    /// Longest one run of the CLI may take.
    pub timeout: Duration,
}

/// Runs the CLI as the sandbox user. The token goes in through `env`, so no process of the
/// CLI's holds it in its command line; `HOME` is outside /workspace so that the CLI's own
/// state is not part of the change.
const SCRIPT: &str = r#"mkdir -p /tmp/claude-home
exec env HOME=/tmp/claude-home ANTHROPIC_BASE_URL="$2" ANTHROPIC_API_KEY="$3" \
  DISABLE_TELEMETRY=1 DISABLE_AUTOUPDATER=1 CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 \
  "$4" -p "$1" --output-format stream-json --verbose --allowedTools "$5" ${6:+--model "$6"}"#;

#[async_trait]
impl Work for ClaudeCode {
    async fn run(&self, job: Job<'_>) -> Ending {
        let pass = self.proxy.admit(Admission {
            fence: job.ctx.fence,
            store: job.ctx.store.clone(),
            budget: job.task.budget.clone(),
        });
        // The proxy listens on the sandbox network's gateway.
        if let Err(err) = job.sandbox.set_network(NetworkPolicy::Full).await {
            return err.into();
        }
        // A follow-up is the request now; the work so far is already in the workspace.
        let prompt = match job.ctx.store.work_state(job.task.id).await {
            Ok(state) => state
                .pending_prompt
                .unwrap_or_else(|| job.task.prompt.clone()),
            Err(err) => return err.into(),
        };
        let model = job.task.model.clone().or_else(|| self.model.clone());
        let redactor = job.redactor.with([pass.token()]);
        let request = ExecRequest {
            args: vec![
                prompt,
                self.proxy_url.clone(),
                pass.token().to_string(),
                CLAUDE_EXECUTABLE.to_string(),
                self.allowed_tools.clone(),
                model.unwrap_or_default(),
            ],
            timeout: self.timeout,
            ..ExecRequest::new(SCRIPT)
        };
        let ran = tokio::select! {
            ran = run_streamed(job, &request, &redactor) => ran,
            () = job.ctx.stop.cancelled() => return Ending::Stopped,
        };
        ending(ran, &pass, self.timeout)
    }
}

/// How the CLI's run went.
struct Ran {
    exec: Result<berth_sandbox::ExecResult, berth_sandbox::SandboxError>,
    /// Its `result` line, if it wrote one.
    result: Option<(bool, String)>,
}

/// Runs the CLI, turning each line of its output into events as it comes.
async fn run_streamed(job: Job<'_>, request: &ExecRequest, redactor: &Redactor) -> Ran {
    let (lines, mut received) = mpsc::unbounded_channel::<String>();
    let mut pending = Vec::new();
    let mut on_output = move |stream: Stream, bytes: &[u8]| {
        if stream != Stream::Stdout {
            return;
        }
        pending.extend_from_slice(bytes);
        while let Some(end) = pending.iter().position(|byte| *byte == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let _ = lines.send(String::from_utf8_lossy(&line).into_owned());
        }
    };
    let exec = async {
        let exec = job.sandbox.exec(request, &mut on_output).await;
        drop(on_output);
        exec
    };
    let steps = async {
        let mut result = None;
        while let Some(line) = received.recv().await {
            match stream::step_of(&line) {
                Step::Events(events) => {
                    for (kind, payload) in events {
                        let _ = job.ctx.emit(kind, redactor.json(&payload)).await;
                    }
                }
                Step::Result { success, text } => result = Some((success, redactor.text(&text))),
                Step::Nothing => {}
            }
        }
        result
    };
    let (exec, result) = tokio::join!(exec, steps);
    Ran { exec, result }
}

fn ending(ran: Ran, pass: &Pass, timeout: Duration) -> Ending {
    let done = match ran.exec {
        Ok(done) => done,
        Err(err) => return err.into(),
    };
    if let Some(spent) = pass.budget_refusal() {
        return Ending::Failed(spent);
    }
    if done.timed_out {
        return Ending::Failed(format!(
            "Claude Code ran longer than {} s",
            timeout.as_secs()
        ));
    }
    match ran.result {
        Some((true, summary)) => Ending::Done { summary },
        Some((false, reason)) => Ending::Failed(format!("Claude Code gave up: {reason}")),
        None => {
            let stderr = String::from_utf8_lossy(&done.stderr);
            let start = (stderr.len().saturating_sub(500)..stderr.len())
                .find(|at| stderr.is_char_boundary(*at))
                .unwrap_or(stderr.len());
            let tail = &stderr[start..];
            Ending::Failed(format!(
                "Claude Code ended without a result (exit code {}): {}",
                done.exit_code.unwrap_or(-1),
                tail.trim()
            ))
        }
    }
}
