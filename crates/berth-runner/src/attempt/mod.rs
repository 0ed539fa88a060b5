//! The one lifecycle of an attempt, whatever does the task's work: clone on the host, restore
//! the task's workspace, a sandbox with a setup phase, the work phase under the task's network
//! policy, then the diff, the pull request, and the container removed. Executors differ only
//! in their work phase ([`Work`]): the agent's conversation, or one configured command.

mod environment;
mod phases;
mod workspace;

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use berth_proto::Task;
use berth_sandbox::{
    ExecRequest, ExecResult, Limits, Sandbox, SandboxError, SandboxSpec, Sandboxes,
};
use berth_store::{Store, StoreError};
use futures::FutureExt;

use crate::egress::{DomainRule, EgressProxy};
use crate::git::{Checkout, GitAccess};
use crate::output::OutputEvents;
use crate::publish::{Author, GitHub};
use crate::redact::Redactor;
use crate::{Context, Executor, Outcome};

/// What every attempt needs, whatever its work phase does.
#[derive(Clone)]
pub struct LifecycleSettings {
    pub git: GitAccess,
    /// Where sandboxes come from.
    pub sandboxes: Arc<dyn Sandboxes>,
    /// The sandbox image.
    pub image: String,
    /// The most a sandbox may have; a task may ask for less.
    pub limits: Limits,
    /// Commands run in the setup phase, with the network, by repository URL prefix (the
    /// longest wins).
    pub setup_commands: BTreeMap<String, String>,
    /// Longest a setup command may run.
    pub setup_timeout: Duration,
    /// Prepared environment images for repositories that declare `.berth/environment.toml`;
    /// without it the file is not read and every task runs the server's setup command.
    pub environments: Option<Arc<crate::environment::EnvironmentCache>>,
    /// The server's secrets; each attempt adds its owner's token.
    pub redactor: Redactor,
    /// Where pull requests are opened; without it a task's branch is pushed, no more.
    pub github: Option<GitHub>,
    /// Who commits what is pushed.
    pub author: Author,
    /// The egress proxy, for tasks with `network: allowlist`; without it they fail.
    pub egress: Option<EgressSettings>,
}

/// The egress proxy sandboxes with `network: allowlist` go through, and what it allows them.
#[derive(Clone)]
pub struct EgressSettings {
    pub proxy: Arc<EgressProxy>,
    /// The server's `egress_allowed_domains`.
    pub rules: Vec<DomainRule>,
}

/// The executor of every task: the lifecycle, with `work` as its work phase.
pub struct Lifecycle<W> {
    pub settings: LifecycleSettings,
    pub work: W,
}

/// What the work phase is given: the task and its attempt, and a sandbox whose workspace is
/// ready (the task's work so far restored, the setup done) and whose network is the task's.
#[derive(Clone, Copy)]
pub struct Job<'a> {
    pub task: &'a Task,
    pub ctx: &'a Context,
    pub sandbox: &'a dyn Sandbox,
    /// The commit the task's work started from: diffs are taken against it.
    pub base: &'a str,
    /// The sandbox's limits.
    pub limits: Limits,
    /// Everything stored or streamed goes through it: the server's secrets and the owner's
    /// token.
    pub redactor: &'a Redactor,
    /// Domains the repository's environment allows the work phase, for the network policy
    /// (empty without an environment file).
    pub allowed_domains: &'a [String],
}

/// The executor-specific part of an attempt.
#[async_trait]
pub trait Work: Send + Sync + 'static {
    /// Does the task's work in `job.sandbox`. Must return soon after `job.ctx.stop` is
    /// cancelled. The diff, publishing and the task's end are the lifecycle's.
    async fn run(&self, job: Job<'_>) -> Ending;
}

/// How a phase of an attempt ended.
#[derive(Debug)]
pub enum Ending {
    /// The work is done; `summary` says what was done (a pull request's description).
    Done { summary: String },
    /// The task failed for a reason of its own: not retried, its work so far kept.
    Failed(String),
    /// Something the work needs failed (the sandbox, the database, the model API): the task
    /// is retried with backoff.
    Infrastructure(String),
    /// The attempt was asked to stop (see [`Context::stop_reason`]).
    Stopped,
}

impl From<SandboxError> for Ending {
    fn from(err: SandboxError) -> Self {
        match err {
            // The task's own size, which another try would meet again.
            SandboxError::DiffTooLarge { .. } | SandboxError::WorkspaceTooLarge { .. } => {
                Ending::Failed(err.to_string())
            }
            err => Ending::Infrastructure(format!("the sandbox failed: {err}")),
        }
    }
}

/// A fenced write means another attempt owns the task: this one stops.
impl From<StoreError> for Ending {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Fenced(_) => Ending::Stopped,
            err => Ending::Infrastructure(format!("the database failed: {err}")),
        }
    }
}

impl Ending {
    /// The attempt's outcome, with the work's diff (never an empty one).
    fn outcome(self, diff: Option<Vec<u8>>) -> Outcome {
        let diff = diff.filter(|diff| !diff.is_empty());
        match self {
            Ending::Done { .. } => Outcome::succeeded(diff),
            Ending::Failed(reason) => Outcome::Failed { reason, diff },
            Ending::Infrastructure(reason) => Outcome::Infrastructure { reason },
            Ending::Stopped => Outcome::Stopped { diff },
        }
    }
}

impl Job<'_> {
    /// Runs a command in the sandbox, its output streamed as `command_output` events (with
    /// `tool_use_id`, if given), until it ends or the attempt is asked to stop.
    pub async fn exec_streamed(
        &self,
        request: &ExecRequest,
        tool_use_id: Option<&str>,
    ) -> Result<ExecResult, Ending> {
        let output = OutputEvents::start(self.ctx, self.redactor, tool_use_id);
        let mut on_output = output.sink();
        let ran = tokio::select! {
            ran = self.sandbox.exec(request, &mut on_output) => Some(ran),
            () = self.ctx.stop.cancelled() => None,
        };
        drop(on_output);
        output.finish().await;
        match ran {
            Some(ran) => Ok(ran?),
            None => Err(Ending::Stopped),
        }
    }
}

#[async_trait]
impl<W: Work> Executor for Lifecycle<W> {
    async fn run(&self, task: Task, ctx: Context) -> Outcome {
        let token = self.settings.git.token_for(&task).await;
        let redactor =
            (self.settings.redactor).with(token.iter().flat_map(|t| crate::git::token_forms(t)));
        let limits = task_limits(&task, self.settings.limits);
        let outcome = match self.prepare(&task, &ctx, token, limits, &redactor).await {
            Ok((checkout, base, sandbox, prepared)) => {
                let job = Job {
                    task: &task,
                    ctx: &ctx,
                    sandbox: sandbox.as_ref(),
                    base: &base,
                    limits: prepared.limits,
                    redactor: &redactor,
                    allowed_domains: &prepared.allowed_domains,
                };
                // A panic in the sandbox's phases still ends here, so the container is
                // removed. An attempt abandoned for not stopping is dropped instead: the
                // sweep removes its container.
                let in_sandbox = self.in_sandbox(job, &checkout, &prepared);
                let outcome = AssertUnwindSafe(in_sandbox)
                    .catch_unwind()
                    .await
                    .unwrap_or_else(crashed);
                if let Err(err) = sandbox.destroy().await {
                    tracing::warn!(task = %task.id, error = %err, "removing the container failed; the sweep will");
                }
                outcome
            }
            Err(ending) => ending.outcome(None),
        };
        phases::reported(outcome, &ctx, &redactor).await
    }

    async fn sweep(&self, store: &dyn Store) {
        sweep_containers(self.settings.sandboxes.as_ref(), store).await;
    }
}

impl<W: Work> Lifecycle<W> {
    /// The clone on the host, the task's workspace restored in it, its environment, and a
    /// sandbox.
    async fn prepare(
        &self,
        task: &Task,
        ctx: &Context,
        token: Option<String>,
        limits: Limits,
        redactor: &Redactor,
    ) -> Result<(Checkout, String, Box<dyn Sandbox>, environment::Prepared), Ending> {
        // Refused before the clone: another try on this server would be refused again.
        let policy = phases::work_policy(task, self.settings.egress.as_ref())?;
        (self.settings.sandboxes)
            .check_network(policy)
            .map_err(Ending::Failed)?;
        let checkout = self.settings.git.clone_task(task, token).await?;
        let max_bytes = self.settings.git.limits.max_bytes;
        let base = workspace::restore(&checkout, task, ctx, max_bytes).await?;
        let prepared = self
            .environment(task, ctx, &checkout, limits, redactor)
            .await?;
        let spec = SandboxSpec {
            installation: ctx.store.installation_id().to_string(),
            task_id: task.id.to_string(),
            attempt: task.attempt,
            node_id: ctx.node_id.clone(),
            image: prepared.image.clone(),
            limits: prepared.limits,
        };
        let started = std::time::Instant::now();
        let sandbox = self.settings.sandboxes.create(&spec).await?;
        crate::measure::sandbox_started(started.elapsed());
        Ok((checkout, base, sandbox, prepared))
    }

    /// Everything that happens in the sandbox: copy in, setup (unless a prepared image has
    /// it done), the work, and its results.
    async fn in_sandbox(
        &self,
        job: Job<'_>,
        checkout: &Checkout,
        prepared: &environment::Prepared,
    ) -> Outcome {
        let ready = async {
            let max_bytes = self.settings.git.limits.max_bytes;
            job.sandbox.copy_in(&checkout.path(), max_bytes).await?;
            let setup_ran = prepared.setup_pending && self.setup(job).await?;
            // Only a setup or the image can leave files the task did not make; looking costs
            // a round trip to the sandbox.
            if setup_ran || prepared.image_leaves_files {
                workspace::exclude_setup_output(job.sandbox, checkout).await?;
            }
            phases::work_network(job, self.settings.egress.as_ref()).await
        };
        let egress = match ready.await {
            Ok(egress) => egress,
            Err(ending) => return ending.outcome(None),
        };
        let ending = self.work.run(job).await;
        if let Some(egress) = egress {
            egress.close().await;
        }
        self.conclude(job, checkout, ending).await
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

/// Removes this installation's task containers, made by any node, whose attempt no longer
/// holds its task, and what sandboxes left behind besides. The containers are listed before
/// the database is asked: a container listed was made after its attempt's claim, so an
/// attempt live now is in the answer.
pub async fn sweep_containers(sandboxes: &dyn Sandboxes, store: &dyn Store) {
    if let Err(err) = sandboxes.remove_leftovers(store.installation_id()).await {
        tracing::warn!(error = %err, "removing what sandboxes left behind failed");
    }
    let found = match sandboxes.task_sandboxes(store.installation_id()).await {
        Ok(found) if found.is_empty() => return,
        Ok(found) => found,
        Err(err) => {
            tracing::warn!(error = %err, "looking for containers left behind failed");
            return;
        }
    };
    let live = match store.live_attempts().await {
        Ok(live) => live,
        Err(err) => {
            tracing::warn!(error = %err, "asking which attempts are live failed");
            return;
        }
    };
    let is_live = |container: &berth_sandbox::TaskContainer| {
        live.iter().any(|fence| {
            fence.task_id.to_string() == container.task_id && fence.attempt == container.attempt
        })
    };
    for container in found.iter().filter(|container| !is_live(container)) {
        match sandboxes.remove(&container.id).await {
            Ok(()) => tracing::info!(
                task = %container.task_id, attempt = container.attempt, node = %container.node_id,
                "removed a container left behind"
            ),
            Err(err) => {
                tracing::warn!(container = %container.id, error = %err, "removing a container left behind failed")
            }
        }
    }
}

fn crashed(panic: Box<dyn std::any::Any + Send>) -> Outcome {
    let message = panic
        .downcast_ref::<&str>()
        .map(|message| message.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    Outcome::Infrastructure {
        reason: format!("the attempt crashed: {message}"),
    }
}
