//! What a runner does with a claimed task. The queue does not care how a task is run: the
//! agent loop, a fixed sandbox command, or a test's script all implement [`Executor`].

use std::sync::Arc;

use async_trait::async_trait;
use berth_proto::{EventKind, Task};
use berth_store::{Fence, Store, StoreError, TextDelta};
use tokio_util::sync::CancellationToken;

/// Why a runner asked a task to stop before it ended by itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// Its owner cancelled it.
    Cancelled,
    /// It ran past its timeout.
    TimedOut,
    /// The runner is shutting down: the task goes back to the queue.
    Draining,
    /// Another attempt owns the task now; nothing this attempt writes will be kept.
    LeaseLost,
}

/// How an attempt ended, as the executor saw it.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// The work is done; `published` says where it was pushed, if it was.
    Succeeded {
        diff: Option<Vec<u8>>,
        published: Option<Published>,
    },
    /// The task itself failed (the agent gave up, a budget ran out): not retried.
    Failed {
        reason: String,
        diff: Option<Vec<u8>>,
    },
    /// The machinery failed (the sandbox did not start, the engine errored): retried with
    /// backoff until the task's attempts are used up.
    Infrastructure { reason: String },
    /// The executor stopped because it was asked to (see [`Context::stop_reason`]); it keeps
    /// whatever work was done so far.
    Stopped { diff: Option<Vec<u8>> },
}

/// Where a finished task's change went: a pushed branch and, if one was opened, its pull
/// request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Published {
    pub branch: Option<String>,
    pub pull_request_url: Option<String>,
}

impl Outcome {
    /// How the attempt ended, in a word, and why when it did not succeed: for the log.
    pub fn summary(&self) -> (&'static str, Option<&str>) {
        match self {
            Outcome::Succeeded { .. } => ("succeeded", None),
            Outcome::Failed { reason, .. } => ("failed", Some(reason)),
            Outcome::Infrastructure { reason } => ("infrastructure failure", Some(reason)),
            Outcome::Stopped { .. } => ("stopped", None),
        }
    }

    /// Succeeded, with nothing published.
    pub fn succeeded(diff: Option<Vec<u8>>) -> Self {
        Outcome::Succeeded {
            diff,
            published: None,
        }
    }

    /// Failed for a reason of the task's own, with no work to keep.
    pub fn failed(reason: impl Into<String>) -> Self {
        Outcome::Failed {
            reason: reason.into(),
            diff: None,
        }
    }
}

/// What an executor gets with each attempt.
#[derive(Clone)]
pub struct Context {
    pub fence: Fence,
    /// The runner's node id, for labels.
    pub node_id: String,
    pub store: Arc<dyn Store>,
    /// Cancelled when the attempt must stop; the executor should return promptly.
    pub stop: CancellationToken,
    pub(crate) reason: Arc<std::sync::Mutex<Option<StopReason>>>,
}

impl Context {
    /// Appends an event to the task's log, fenced by this attempt.
    pub async fn emit(
        &self,
        kind: EventKind,
        payload: serde_json::Value,
    ) -> Result<i64, StoreError> {
        self.store.append_event(self.fence, kind, payload).await
    }

    /// Hands text the model is writing to the task's open streams, without storing it; the
    /// event that stores the whole text, written after, supersedes it.
    pub async fn live_text(&self, text: String) -> Result<(), StoreError> {
        let delta = TextDelta {
            fence: self.fence,
            text,
        };
        self.store.publish_text_delta(delta).await
    }

    /// Why the attempt was asked to stop, once it was.
    pub fn stop_reason(&self) -> Option<StopReason> {
        *self.reason.lock().expect("stop reason lock")
    }

    /// Asks the attempt to stop; the first reason given wins.
    pub(crate) fn request_stop(&self, reason: StopReason) {
        let mut current = self.reason.lock().expect("stop reason lock");
        if current.is_none() {
            *current = Some(reason);
        }
        drop(current);
        self.stop.cancel();
    }
}

#[async_trait]
pub trait Executor: Send + Sync + 'static {
    /// Runs one attempt of `task`. Must return soon after `ctx.stop` is cancelled.
    async fn run(&self, task: Task, ctx: Context) -> Outcome;

    /// Removes what attempts that are no longer live left behind (containers after a crash,
    /// on this node or on one that never came back). What is live is the database's word.
    async fn sweep(&self, _store: &dyn Store) {}
}
