//! A task's work as one fixed command (the `runner_command` setting), for batch jobs and
//! tests: run it in the prepared sandbox, its output streamed as events, its exit status the
//! task's ending. Everything around it is the lifecycle's ([`crate::attempt`]).

use std::time::Duration;

use async_trait::async_trait;
use berth_proto::EventKind;
use berth_sandbox::ExecRequest;
use serde_json::json;

use crate::attempt::{Ending, Job, Work};

pub struct SandboxCommand {
    pub command: String,
    /// Longest the command may run.
    pub timeout: Duration,
}

#[async_trait]
impl Work for SandboxCommand {
    async fn run(&self, job: Job<'_>) -> Ending {
        let call = json!({"name": "bash", "input": {"command": self.command}});
        let _ = job
            .ctx
            .emit(EventKind::ToolCall, job.redactor.json(&call))
            .await;
        let request = ExecRequest {
            timeout: self.timeout,
            ..ExecRequest::new(self.command.clone())
        };
        let done = match job.exec_streamed(&request, None).await {
            Ok(done) => done,
            Err(ending) => return ending,
        };
        if done.oom_killed {
            let limit = job.limits.memory_bytes >> 20;
            return Ending::Failed(format!("the command ran out of memory (limit {limit} MiB)"));
        }
        if done.timed_out {
            let limit = self.timeout.as_secs();
            return Ending::Failed(format!("the command ran longer than {limit} s"));
        }
        match done.exit_code {
            Some(0) => Ending::Done {
                summary: format!("Ran `{}`; it exited with status 0.", self.command),
            },
            code => Ending::Failed(format!(
                "the command exited with status {}",
                code.unwrap_or(-1)
            )),
        }
    }
}
