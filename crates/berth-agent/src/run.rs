//! The agent as a runner executor: clone on the host, restore the workspace the task had,
//! then talk with the model, carrying out its tool calls in the sandbox. Every step (the
//! model's turn, then the tools' results) is stored before the next one starts, so another
//! attempt can pick up the conversation where this one was cut off.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use berth_proto::{EventKind, Network, Task};
use berth_runner::command::{sweep_containers, task_limits};
use berth_runner::git::{Checkout, GitAccess};
use berth_runner::{Context, Executor, Outcome};
use berth_sandbox::{
    DockerSandbox, ExecRequest, Limits, NetworkPolicy, Sandbox, SandboxError, SandboxSpec,
};
use berth_store::{Fence, StoreError};
use serde_json::json;

use crate::conversation::{Conversation, Ending};
use crate::prices::PriceTable;
use crate::publish::{publish, Author, GitHub};
use crate::redact::Redactor;
use crate::Provider;

/// How the agent works, from the server's configuration.
#[derive(Clone)]
pub struct AgentSettings {
    /// The model of tasks that name none.
    pub model: String,
    /// Most tokens the model writes in one turn.
    pub max_tokens_per_turn: u32,
    /// The model's context window, in tokens (see [`crate::context`]).
    pub context_tokens: u64,
    /// Turns a request may take when its task sets no `max_turns`.
    pub max_turns: u32,
    /// Longest one bash command may run.
    pub command_timeout: Duration,
    /// Commands run before the agent starts, by repository URL prefix (the longest wins).
    pub setup_commands: BTreeMap<String, String>,
    pub prices: PriceTable,
    /// The model API key and configured secrets.
    pub redactor: Redactor,
    pub github: Option<GitHub>,
    pub author: Author,
}

pub struct AgentExecutor {
    pub provider: Arc<dyn Provider>,
    pub settings: AgentSettings,
    pub git: GitAccess,
    pub docker: bollard::Docker,
    pub image: String,
    pub limits: Limits,
}

#[async_trait]
impl Executor for AgentExecutor {
    async fn run(&self, task: Task, ctx: Context) -> Outcome {
        let checkout = match self.git.clone_task(&task).await {
            Ok(checkout) => checkout,
            Err(outcome) => return outcome,
        };
        let redactor = self.settings.redactor.with(checkout.token());
        let base = match restore(&checkout, &task, &ctx).await {
            Ok(base) => base,
            Err(outcome) => return outcome,
        };
        let spec = SandboxSpec {
            task_id: task.id.to_string(),
            attempt: task.attempt,
            node_id: ctx.node_id.clone(),
            image: self.image.clone(),
            limits: task_limits(&task, self.limits),
        };
        let sandbox = match DockerSandbox::create(&self.docker, &spec).await {
            Ok(sandbox) => sandbox,
            Err(err) => return machine(err),
        };
        let outcome = self
            .work(&task, &ctx, &sandbox, &checkout, &base, &redactor)
            .await;
        if let Err(err) = sandbox.destroy().await {
            tracing::warn!(task = %task.id, error = %err, "removing the container failed; the sweep will");
        }
        redact_outcome(outcome, &redactor)
    }

    async fn sweep(&self, node_id: &str, live: &[Fence]) {
        sweep_containers(&self.docker, node_id, live).await;
    }
}

impl AgentExecutor {
    async fn work(
        &self,
        task: &Task,
        ctx: &Context,
        sandbox: &DockerSandbox,
        checkout: &Checkout,
        base: &str,
        redactor: &Redactor,
    ) -> Outcome {
        if let Err(err) = sandbox.copy_in(&checkout.path()).await {
            return machine(err);
        }
        if let Some(failed) = self.setup(task, ctx, sandbox, redactor).await {
            return failed;
        }
        let policy = match task.network {
            Network::None => NetworkPolicy::None,
            Network::Full => NetworkPolicy::Full,
        };
        if let Err(err) = sandbox.set_network(policy).await {
            return machine(err);
        }
        let model = task
            .model
            .clone()
            .unwrap_or_else(|| self.settings.model.clone());
        let price = self.settings.prices.price(&model);
        if task.budget.max_usd.is_some() && price.is_none() {
            return Outcome::failed(format!(
                "the task has a max_usd budget but the server has no price for model {model}; \
                 add it to the `prices` setting"
            ));
        }
        let conversation = Conversation {
            provider: self.provider.as_ref(),
            settings: &self.settings,
            task,
            ctx,
            sandbox,
            redactor,
            model: &model,
            price,
            base,
        };
        let ending = conversation.run().await;
        let diff = match sandbox.diff(base).await {
            Ok(diff) => diff,
            Err(err) if matches!(ending, Ending::Stopped) => {
                tracing::info!(task = %task.id, error = %err, "no diff from a stopped attempt");
                return Outcome::Stopped { diff: None };
            }
            Err(err @ SandboxError::DiffTooLarge { .. }) => {
                return Outcome::failed(err.to_string())
            }
            Err(err) => return machine(err),
        };
        if let Err(err) = ctx.store.save_diff(ctx.fence, &diff).await {
            tracing::info!(task = %task.id, error = %err, "could not store the final diff");
        }
        let kept = (!diff.is_empty()).then(|| diff.clone());
        match ending {
            Ending::Done { summary } => {
                let published =
                    if task.open_pull_request && (kept.is_some() || task.result.branch.is_some()) {
                        let github = self.settings.github.as_ref();
                        let author = &self.settings.author;
                        match publish(checkout, task, base, &diff, author, github, &summary).await {
                            Ok(published) => Some(published),
                            Err(reason) => {
                                return Outcome::Failed {
                                    reason: format!(
                                        "the work is done but could not be published: {reason}"
                                    ),
                                    diff: kept,
                                }
                            }
                        }
                    } else {
                        None
                    };
                let result = json!({
                    "has_diff": kept.is_some(),
                    "branch": published.as_ref().and_then(|p| p.branch.clone()),
                    "pull_request_url": published.as_ref().and_then(|p| p.pull_request_url.clone()),
                });
                let _ = ctx.emit(EventKind::Result, result).await;
                Outcome::Succeeded {
                    diff: kept,
                    published,
                }
            }
            Ending::Budget(reason) | Ending::Refused(reason) => {
                let _ = ctx
                    .emit(EventKind::Error, json!({ "message": reason }))
                    .await;
                Outcome::Failed { reason, diff: kept }
            }
            Ending::Unavailable(reason) => Outcome::Infrastructure { reason },
            Ending::Machine(reason) => Outcome::Infrastructure { reason },
            Ending::Stopped => Outcome::Stopped { diff: kept },
        }
    }

    /// Runs the repository's setup command, if one is configured, with the network.
    async fn setup(
        &self,
        task: &Task,
        ctx: &Context,
        sandbox: &DockerSandbox,
        redactor: &Redactor,
    ) -> Option<Outcome> {
        let command = self
            .settings
            .setup_commands
            .iter()
            .filter(|(prefix, _)| task.repo_url.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(_, command)| command.clone())?;
        let _ = ctx
            .emit(
                EventKind::ToolCall,
                json!({"id": "setup", "name": "setup", "input": {"command": command}}),
            )
            .await;
        let request = ExecRequest {
            timeout: self.settings.command_timeout,
            ..ExecRequest::new(command)
        };
        let output = crate::conversation::output_events(ctx, redactor, "setup");
        let mut on_output = output.sink();
        let done = tokio::select! {
            done = sandbox.exec(&request, &mut on_output) => done,
            () = ctx.stop.cancelled() => return Some(Outcome::Stopped { diff: None }),
        };
        drop(on_output);
        output.finish().await;
        match done {
            Err(err) => Some(machine(err)),
            Ok(done) if done.exit_code == Some(0) => None,
            Ok(done) => Some(Outcome::failed(format!(
                "the setup command failed (exit code {}{})",
                done.exit_code.unwrap_or(-1),
                if done.timed_out { ", timed out" } else { "" }
            ))),
        }
    }
}

/// Puts the checkout where the task's work stands: on its first attempt, the ref it asked
/// for (recorded as its base); later, that base with the stored diff applied. Returns the
/// base commit.
async fn restore(checkout: &Checkout, task: &Task, ctx: &Context) -> Result<String, Outcome> {
    let state = ctx.store.work_state(task.id).await.map_err(store_trouble)?;
    let Some(base) = state.base_commit else {
        let head = checkout
            .git_text(&["rev-parse", "HEAD"])
            .await
            .map_err(|reason| Outcome::Infrastructure { reason })?;
        ctx.store
            .set_base_commit(ctx.fence, &head)
            .await
            .map_err(store_trouble)?;
        return Ok(head);
    };
    checkout
        .git_text(&["checkout", "--quiet", "--detach", &base])
        .await
        .map_err(|err| {
            Outcome::failed(format!("the commit the task started from is gone: {err}"))
        })?;
    let diff = ctx
        .store
        .get_diff(task.owner_id, task.id)
        .await
        .map_err(store_trouble)?
        .filter(|diff| !diff.is_empty());
    if let Some(diff) = diff {
        let patch = checkout.path().join(".git").join("berth-restore.patch");
        std::fs::write(&patch, diff).map_err(|err| Outcome::Infrastructure {
            reason: err.to_string(),
        })?;
        let patch = patch.to_string_lossy().to_string();
        checkout
            .git_text(&["apply", "--binary", "--whitespace=nowarn", &patch])
            .await
            .map_err(|err| {
                Outcome::failed(format!(
                    "the task's earlier work could not be restored: {err}"
                ))
            })?;
        let _ = std::fs::remove_file(&patch);
    }
    Ok(base)
}

fn store_trouble(err: StoreError) -> Outcome {
    Outcome::Infrastructure {
        reason: format!("the database failed: {err}"),
    }
}

fn machine(err: berth_sandbox::SandboxError) -> Outcome {
    Outcome::Infrastructure {
        reason: err.to_string(),
    }
}

/// Reasons are stored and shown: they get the same redaction as events.
fn redact_outcome(outcome: Outcome, redactor: &Redactor) -> Outcome {
    match outcome {
        Outcome::Failed { reason, diff } => Outcome::Failed {
            reason: redactor.text(&reason),
            diff,
        },
        Outcome::Infrastructure { reason } => Outcome::Infrastructure {
            reason: redactor.text(&reason),
        },
        other => other,
    }
}
