//! Runs a task as a fixed command in its sandbox: clone the repository on the host (its
//! credentials never enter the container), copy it in, run the configured command with the
//! task's network policy, stream the output as events, and keep the diff whatever the ending.
//! Tests and plain batch jobs use it; the agent (berth-agent) runs a conversation instead.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use berth_proto::{EventKind, Network, Task};
use berth_sandbox::{
    DockerSandbox, ExecRequest, Limits, NetworkPolicy, Sandbox, SandboxError, SandboxSpec,
};
use berth_store::Fence;

use crate::git::{Checkout, GitAccess};
use crate::output::{OutputEvents, Utf8Text};
use crate::{Context, Executor, Outcome};

pub struct SandboxCommand {
    pub git: GitAccess,
    pub docker: bollard::Docker,
    pub image: String,
    pub limits: Limits,
    pub command: String,
    pub command_timeout: Duration,
}

#[async_trait]
impl Executor for SandboxCommand {
    async fn run(&self, task: Task, ctx: Context) -> Outcome {
        let (checkout, base) = match self.checkout(&task, &ctx).await {
            Ok(checked_out) => checked_out,
            Err(outcome) => return outcome,
        };
        let spec = SandboxSpec {
            task_id: task.id.to_string(),
            attempt: task.attempt,
            node_id: node_of(&ctx),
            image: self.image.clone(),
            limits: task_limits(&task, self.limits),
        };
        let sandbox = match DockerSandbox::create(&self.docker, &spec).await {
            Ok(sandbox) => Arc::new(sandbox),
            Err(err) => return infrastructure(err),
        };
        let outcome = self
            .work(&task, &ctx, sandbox.as_ref(), &checkout.path(), &base)
            .await;
        if let Err(err) = sandbox.destroy().await {
            tracing::warn!(task = %task.id, error = %err, "removing the container failed; the sweep will");
        }
        outcome
    }

    async fn sweep(&self, node_id: &str, live: &[Fence]) {
        sweep_containers(&self.docker, node_id, live).await;
    }
}

/// Removes this node's containers whose attempts are no longer running here.
pub async fn sweep_containers(docker: &bollard::Docker, node_id: &str, live: &[Fence]) {
    let is_live = |task: &str, attempt: i64| {
        live.iter()
            .any(|fence| fence.task_id.to_string() == task && fence.attempt == attempt)
    };
    match berth_sandbox::remove_orphans(docker, node_id, &is_live).await {
        Ok(0) => {}
        Ok(removed) => tracing::info!(removed, "removed containers left behind"),
        Err(err) => tracing::warn!(error = %err, "looking for containers left behind failed"),
    }
}

impl SandboxCommand {
    /// Clones the repository on the host, and records the commit the work starts from.
    async fn checkout(&self, task: &Task, ctx: &Context) -> Result<(Checkout, String), Outcome> {
        let checkout = self.git.clone_task(task).await?;
        let base = checkout
            .git_text(&["rev-parse", "HEAD"])
            .await
            .map_err(|reason| Outcome::Infrastructure { reason })?;
        if let Err(err) = ctx.store.set_base_commit(ctx.fence, &base).await {
            tracing::info!(task = %task.id, error = %err, "could not record the base commit");
        }
        Ok((checkout, base))
    }

    async fn work(
        &self,
        task: &Task,
        ctx: &Context,
        sandbox: &DockerSandbox,
        checkout: &Path,
        base: &str,
    ) -> Outcome {
        if let Err(err) = sandbox.copy_in(checkout).await {
            return infrastructure(err);
        }
        let policy = match task.network {
            Network::None => NetworkPolicy::None,
            Network::Full => NetworkPolicy::Full,
        };
        if let Err(err) = sandbox.set_network(policy).await {
            return infrastructure(err);
        }
        let _ = ctx
            .emit(
                EventKind::ToolCall,
                serde_json::json!({"name": "bash", "input": {"command": self.command}}),
            )
            .await;
        let output = OutputEvents::start(ctx, None, Utf8Text::default);
        let mut on_output = output.sink();
        let request = ExecRequest {
            timeout: self.command_timeout,
            ..ExecRequest::new(self.command.clone())
        };
        let result = tokio::select! {
            result = sandbox.exec(&request, &mut on_output) => Some(result),
            () = ctx.stop.cancelled() => None,
        };
        drop(on_output);
        output.finish().await;
        let diff = match sandbox.diff(base).await {
            Ok(diff) => Some(diff).filter(|diff| !diff.is_empty()),
            // As with the agent: a change too big to keep fails the task, it is not lost quietly.
            Err(err @ SandboxError::DiffTooLarge { .. }) if result.is_some() => {
                return Outcome::failed(err.to_string())
            }
            Err(err) => {
                tracing::info!(task = %task.id, error = %err, "no diff kept");
                None
            }
        };
        match result {
            None => Outcome::Stopped { diff },
            Some(Err(err)) => infrastructure(err),
            Some(Ok(done)) if done.oom_killed => Outcome::Failed {
                reason: format!(
                    "the command ran out of memory (limit {} MiB)",
                    self.limits.memory_bytes >> 20
                ),
                diff,
            },
            Some(Ok(done)) if done.timed_out => Outcome::Failed {
                reason: format!(
                    "the command ran longer than {} s",
                    request.timeout.as_secs()
                ),
                diff,
            },
            Some(Ok(done)) if done.exit_code == Some(0) => Outcome::succeeded(diff),
            Some(Ok(done)) => Outcome::Failed {
                reason: format!(
                    "the command exited with status {}",
                    done.exit_code.unwrap_or(-1)
                ),
                diff,
            },
        }
    }
}

/// The task's own limits where it asked for lower ones; the server's otherwise, and never more.
pub fn task_limits(task: &Task, server: Limits) -> Limits {
    let asked = &task.resources;
    let wanted = Limits {
        memory_bytes: asked.memory_mb.map_or(server.memory_bytes, |mb| mb << 20),
        cpus: asked.cpus.unwrap_or(server.cpus),
        pids: asked.pids.unwrap_or(server.pids),
    };
    wanted.clamp_to(server)
}

fn infrastructure(err: SandboxError) -> Outcome {
    Outcome::Infrastructure {
        reason: err.to_string(),
    }
}

fn node_of(ctx: &Context) -> String {
    ctx.node_id.clone()
}
