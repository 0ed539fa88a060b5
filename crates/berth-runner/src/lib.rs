//! Berth's runner: takes tasks from the queue, keeps their leases alive, stops them when they
//! are cancelled, time out or the node drains, and writes how each attempt ended — every
//! write fenced by the attempt number, so a runner that lost its lease cannot overwrite
//! anything. It also reaps the leases of runners that died. Each attempt goes through one
//! lifecycle ([`attempt`]) whatever does its work.

pub mod attempt;
mod backoff;
pub mod claude_code;
pub mod command;
pub mod egress;
pub mod environment;
mod executor;
pub mod git;
mod measure;
pub mod model_proxy;
mod node;
pub mod output;
pub mod patch;
pub mod publish;
pub mod redact;
pub mod retry;
mod settings;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_proto::{Task, TaskId, TaskStatus};
use berth_store::{ClaimLimits, Fence, Store, StoreError, TaskEnd};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use backoff::Backoff;
pub use executor::{Context, Executor, Outcome, Published, StopReason};
pub use node::NodeIdentity;
pub use settings::Settings;

#[derive(Clone, Debug)]
pub struct RunnerConfig {
    /// Names this runner in leases, events and container labels.
    pub node_id: String,
    /// Most tasks this runner runs at once.
    pub capacity: usize,
    /// Most tasks one user has running at once, across all runners.
    pub per_user_limit: i64,
    /// How long a claim or heartbeat keeps a task; a runner silent for longer loses it.
    pub lease: Duration,
    /// How often leases are renewed; well under `lease`.
    pub heartbeat: Duration,
    /// How often the runner looks for tasks of its own that were asked to cancel.
    pub cancel_poll: Duration,
    /// How often the runner looks for work with no wake-up; wake-ups make claims quicker.
    pub poll: Duration,
    /// How often expired leases are reaped.
    pub reap_interval: Duration,
    /// On shutdown, how long running tasks may go on before they are handed back.
    pub drain_grace: Duration,
    /// How long an attempt may take to stop once asked, before it is abandoned.
    pub stop_grace: Duration,
    /// Timeout of a task that does not set one.
    pub default_timeout: Duration,
    pub backoff: Backoff,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            // Tests and embedders name their nodes; `berth` takes its id from the data
            // directory (see `NodeIdentity`).
            node_id: format!("node-{:08x}", rand::random::<u32>()),
            capacity: 2,
            per_user_limit: 2,
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(10),
            cancel_poll: Duration::from_millis(500),
            poll: Duration::from_secs(2),
            reap_interval: Duration::from_secs(5),
            drain_grace: Duration::from_secs(30),
            stop_grace: Duration::from_secs(30),
            default_timeout: Duration::from_secs(30 * 60),
            backoff: Backoff::default(),
        }
    }
}

pub struct Runner {
    config: RunnerConfig,
    store: Arc<dyn Store>,
    executor: Arc<dyn Executor>,
    active: Mutex<HashMap<TaskId, Context>>,
}

impl Runner {
    pub fn new(
        config: RunnerConfig,
        store: Arc<dyn Store>,
        executor: Arc<dyn Executor>,
    ) -> Arc<Self> {
        Arc::new(Self {
            config,
            store,
            executor,
            active: Mutex::new(HashMap::new()),
        })
    }

    pub fn node_id(&self) -> &str {
        &self.config.node_id
    }

    /// Claims and runs tasks until `shutdown` completes, then drains: no new claims, running
    /// tasks get `drain_grace` to finish and are then handed back to the queue.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        self.recover_lost_attempts().await;
        let upkeep = tokio::spawn(self.clone().keep_leases());
        let slots = Arc::new(Semaphore::new(self.config.capacity));
        let mut attempts = JoinSet::new();
        let mut work = self.store.work_signal();
        tokio::pin!(shutdown);
        tracing::info!(node = %self.config.node_id, capacity = self.config.capacity, "runner started");
        loop {
            work.borrow_and_update();
            self.claim_while_free(&slots, &mut attempts).await;
            tokio::select! {
                () = &mut shutdown => break,
                changed = work.changed() => {
                    if changed.is_err() {
                        tokio::time::sleep(self.config.poll).await;
                    }
                }
                Some(_) = attempts.join_next(), if !attempts.is_empty() => {}
                () = tokio::time::sleep(self.config.poll) => {}
            }
        }
        self.drain(&mut attempts).await;
        upkeep.abort();
        tracing::info!(node = %self.config.node_id, "runner stopped");
    }

    async fn claim_while_free(
        self: &Arc<Self>,
        slots: &Arc<Semaphore>,
        attempts: &mut JoinSet<()>,
    ) {
        let limits = ClaimLimits {
            node_id: self.config.node_id.clone(),
            lease_ms: self.config.lease.as_millis() as i64,
            node_capacity: self.config.capacity as i64,
            per_user_limit: self.config.per_user_limit,
        };
        while let Ok(slot) = slots.clone().try_acquire_owned() {
            let started = Instant::now();
            let claimed = self.store.claim_next_task(&limits).await;
            metrics::histogram!("berth_claim_duration_seconds").record(started.elapsed());
            match claimed {
                Ok(Some(task)) => {
                    measure::claimed(&task);
                    // Every line logged about the attempt, wherever it is logged, names it.
                    let span = tracing::info_span!("task", task = %task.id, attempt = task.attempt);
                    attempts.spawn(self.clone().attempt(task, slot).instrument(span));
                }
                Ok(None) => break,
                Err(err) => {
                    tracing::warn!(error = %err, "claiming a task failed; retrying at the next poll");
                    break;
                }
            }
        }
    }

    async fn drain(&self, attempts: &mut JoinSet<()>) {
        if attempts.is_empty() {
            return;
        }
        tracing::info!(running = attempts.len(), grace = ?self.config.drain_grace, "draining");
        let all_done = async { while attempts.join_next().await.is_some() {} };
        if tokio::time::timeout(self.config.drain_grace, all_done)
            .await
            .is_err()
        {
            for ctx in self.active.lock().expect("active lock").values() {
                ctx.request_stop(StopReason::Draining);
            }
            while attempts.join_next().await.is_some() {}
        }
    }

    /// Runs one attempt from start to its recorded end.
    async fn attempt(self: Arc<Self>, task: Task, _slot: OwnedSemaphorePermit) {
        let fence = Fence {
            task_id: task.id,
            attempt: task.attempt,
        };
        let ctx = Context {
            fence,
            node_id: self.config.node_id.clone(),
            store: self.store.clone(),
            stop: CancellationToken::new(),
            reason: Arc::default(),
        };
        self.active
            .lock()
            .expect("active lock")
            .insert(task.id, ctx.clone());
        let timeout = task
            .timeout_secs
            .map_or(self.config.default_timeout, Duration::from_secs);
        let timer = {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(timeout).await;
                ctx.request_stop(StopReason::TimedOut);
            })
        };
        tracing::info!(task = %task.id, attempt = task.attempt, "attempt started");
        let started = Instant::now();
        let outcome = self.execute(task, &ctx).await;
        timer.abort();
        let (ending, reason) = outcome.summary();
        measure::ended(ending, started.elapsed());
        let stop = ctx.stop_reason().map(|reason| format!("{reason:?}"));
        tracing::info!(
            task = %fence.task_id, attempt = fence.attempt, outcome = ending,
            reason = reason.unwrap_or_default(), stop = stop.unwrap_or_default(), "attempt ended"
        );
        self.active
            .lock()
            .expect("active lock")
            .remove(&fence.task_id);
        // A busy or briefly unreachable database must not strand a finished task until its
        // lease runs out: the end is written again, with backoff. A fenced refusal is final.
        let mut wait = Duration::from_millis(200);
        for tries_left in (0..6).rev() {
            match self.settle(&ctx, outcome.clone(), timeout).await {
                Ok(()) => break,
                Err(StoreError::Fenced(_)) => {
                    tracing::info!(task = %fence.task_id, "attempt lost its lease; its result is dropped");
                    break;
                }
                Err(err) if tries_left == 0 => {
                    tracing::error!(task = %fence.task_id, error = %err, "recording the end failed; the lease will expire");
                }
                Err(err) => {
                    tracing::warn!(task = %fence.task_id, error = %err, "recording the end failed; trying again");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
            }
        }
    }

    /// The executor's outcome; a panic counts as an infrastructure failure, and an executor
    /// that ignores a stop request is abandoned after `stop_grace`.
    async fn execute(&self, task: Task, ctx: &Context) -> Outcome {
        let mut run = tokio::spawn({
            let executor = self.executor.clone();
            let ctx = ctx.clone();
            async move { executor.run(task, ctx).await }.in_current_span()
        });
        let overdue = async {
            ctx.stop.cancelled().await;
            tokio::time::sleep(self.config.stop_grace).await;
        };
        tokio::select! {
            result = &mut run => result.unwrap_or_else(|err| Outcome::Infrastructure {
                reason: format!("the executor crashed: {err}"),
            }),
            () = overdue => {
                run.abort();
                tracing::warn!(task = %ctx.fence.task_id, "attempt did not stop when asked; abandoned");
                Outcome::Stopped { diff: None }
            }
        }
    }

    async fn settle(
        &self,
        ctx: &Context,
        outcome: Outcome,
        timeout: Duration,
    ) -> Result<(), StoreError> {
        let fence = ctx.fence;
        let end = |status, reason: Option<String>, diff| TaskEnd {
            status,
            reason,
            diff,
            branch: None,
            pull_request_url: None,
        };
        let store = &self.store;
        match (ctx.stop_reason(), outcome) {
            (Some(StopReason::LeaseLost), _) => Err(StoreError::Fenced(fence.task_id)),
            (_, Outcome::Succeeded { diff, published }) => {
                let published = published.unwrap_or_default();
                let end = TaskEnd {
                    branch: published.branch,
                    pull_request_url: published.pull_request_url,
                    ..end(TaskStatus::Succeeded, None, diff)
                };
                store.finish_task(fence, end).await
            }
            (_, Outcome::Failed { reason, diff }) => {
                store
                    .finish_task(fence, end(TaskStatus::Failed, Some(reason), diff))
                    .await
            }
            (Some(StopReason::Draining), _) => {
                let reason = format!("runner {} shut down", self.config.node_id);
                store.release_task(fence, &reason, None).await.map(drop)
            }
            (_, Outcome::Infrastructure { reason }) => {
                let retry_in = self.config.backoff.delay_ms(fence.attempt);
                store
                    .release_task(fence, &reason, Some(retry_in))
                    .await
                    .map(drop)
            }
            (Some(StopReason::Cancelled), Outcome::Stopped { diff }) => {
                let reason = Some("cancelled by its owner".to_string());
                store
                    .finish_task(fence, end(TaskStatus::Cancelled, reason, diff))
                    .await
            }
            (Some(StopReason::TimedOut), Outcome::Stopped { diff }) => {
                let reason = Some(format!(
                    "ran longer than its timeout of {} s",
                    timeout.as_secs()
                ));
                store
                    .finish_task(fence, end(TaskStatus::TimedOut, reason, diff))
                    .await
            }
            (None, Outcome::Stopped { diff }) => {
                let reason = Some("the executor stopped without being asked to".to_string());
                store
                    .finish_task(fence, end(TaskStatus::Failed, reason, diff))
                    .await
            }
        }
    }

    /// Renews the leases of running attempts, notices cancellations and lost leases, and
    /// reaps the leases of runners that died.
    async fn keep_leases(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.config.cancel_poll);
        let mut last_heartbeat = tokio::time::Instant::now();
        let mut last_reap = tokio::time::Instant::now() - self.config.reap_interval;
        loop {
            tick.tick().await;
            self.notice_cancellations().await;
            if last_heartbeat.elapsed() >= self.config.heartbeat {
                last_heartbeat = tokio::time::Instant::now();
                self.renew_leases().await;
            }
            if last_reap.elapsed() >= self.config.reap_interval {
                last_reap = tokio::time::Instant::now();
                self.reap().await;
                self.sweep().await;
            }
        }
    }

    async fn notice_cancellations(&self) {
        if self.active.lock().expect("active lock").is_empty() {
            return;
        }
        match self.store.cancelling_on_node(&self.config.node_id).await {
            Ok(fences) => {
                for fence in fences {
                    self.stop_attempt(fence, StopReason::Cancelled);
                }
            }
            Err(err) => tracing::warn!(error = %err, "checking for cancellations failed"),
        }
    }

    async fn renew_leases(&self) {
        let fences: Vec<Fence> = self
            .active
            .lock()
            .expect("active lock")
            .values()
            .map(|ctx| ctx.fence)
            .collect();
        let lease_ms = self.config.lease.as_millis() as i64;
        for fence in fences {
            match self.store.heartbeat(fence, lease_ms).await {
                Ok(None) => self.stop_attempt(fence, StopReason::LeaseLost),
                Ok(Some(TaskStatus::Cancelling)) => self.stop_attempt(fence, StopReason::Cancelled),
                Ok(Some(_)) => {}
                Err(err) => tracing::warn!(task = %fence.task_id, error = %err, "heartbeat failed"),
            }
        }
    }

    fn stop_attempt(&self, fence: Fence, reason: StopReason) {
        let active = self.active.lock().expect("active lock");
        if let Some(ctx) = active.get(&fence.task_id).filter(|ctx| ctx.fence == fence) {
            ctx.request_stop(reason);
        }
    }

    async fn sweep(&self) {
        self.executor.sweep(self.store.as_ref()).await;
    }

    /// Hands back the attempts this node's id still holds from a run that ended without
    /// handing them back (a crash, SIGKILL): nothing of this process runs them, and their
    /// leases would otherwise keep the tasks waiting until they run out. Node ids are unique
    /// among live runners, so none of them is anyone else's.
    async fn recover_lost_attempts(&self) {
        let lost = match self.store.held_by_node(&self.config.node_id).await {
            Ok(lost) => lost,
            Err(err) => {
                tracing::warn!(error = %err, "looking for attempts lost by an earlier run failed; the reaper will find them");
                return;
            }
        };
        let reason = format!(
            "runner {} restarted; the attempt was lost",
            self.config.node_id
        );
        for fence in lost {
            let retry_in = self.config.backoff.delay_ms(fence.attempt);
            match self
                .store
                .release_task(fence, &reason, Some(retry_in))
                .await
            {
                Ok(released) => {
                    tracing::warn!(task = %fence.task_id, attempt = fence.attempt, now = %released.status, "handed back an attempt lost by this node's earlier run")
                }
                Err(err) => {
                    tracing::warn!(task = %fence.task_id, error = %err, "handing back a lost attempt failed; the reaper will")
                }
            }
        }
    }

    async fn reap(&self) {
        let backoff = self.config.backoff;
        match self
            .store
            .reap_expired_leases(&move |attempt| backoff.delay_ms(attempt))
            .await
        {
            Ok(released) => {
                for task in released {
                    tracing::warn!(task = %task.task_id, now = %task.status, "reaped an expired lease");
                }
            }
            Err(err) => tracing::warn!(error = %err, "reaping expired leases failed"),
        }
    }
}
