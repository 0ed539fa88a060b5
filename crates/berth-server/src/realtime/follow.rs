//! Producing a stream: replay what the client missed from the database, then follow the
//! hub of what it follows. Each hub batch says where it starts, so a subscriber that joined
//! after it, or fell behind the hub's buffer, reads the database from the last entry it sent
//! until it has caught up: nothing is lost or sent twice however joining races with writes.

use std::sync::Arc;
use std::time::Duration;

use berth_proto::{EventKind, StreamFrame, Task, TaskId, TaskStatus, UserId};
use berth_store::{Principal, Store, StoreError};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::credentials::CredentialChecks;
use super::fanout::Streams;
use super::frame::Frame;
use super::hub::{read_with_retries, Batch, Entry, Log, Shared, PAGE, POLL};

/// Why a producer stopped before its natural end.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped {
    NotFound,
    /// The client's queue stayed full too long.
    SlowConsumer,
    ShuttingDown,
    /// The client went away.
    Gone,
    /// What the stream was opened with was revoked, signed out or disabled meanwhile.
    Unauthorized,
    Failed,
}

/// The bounded queue to one client.
pub struct Outbox {
    pub frames: mpsc::Sender<Frame>,
    pub stall: Duration,
}

impl Outbox {
    async fn send(&self, frame: Frame) -> Result<(), Stopped> {
        match self.frames.send_timeout(frame, self.stall).await {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => Err(Stopped::SlowConsumer),
            Err(mpsc::error::SendTimeoutError::Closed(_)) => Err(Stopped::Gone),
        }
    }
}

/// A task's event log.
pub struct TaskLog {
    pub owner: UserId,
    pub task_id: TaskId,
}

impl Log for TaskLog {
    type Key = TaskId;
    type Pos = i64;

    async fn read(
        &self,
        store: &dyn Store,
        after: i64,
    ) -> Result<Option<Vec<Entry<i64>>>, StoreError> {
        let page = store
            .list_events(self.owner, self.task_id, after, PAGE)
            .await?;
        Ok(page.map(|(events, _)| {
            events
                .into_iter()
                .map(|event| {
                    let status = (event.kind == EventKind::Status)
                        .then(|| event.payload["status"].as_str().and_then(TaskStatus::parse))
                        .flatten();
                    Entry {
                        pos: event.seq,
                        frame: Frame::new(&StreamFrame::Event { event }),
                        status,
                    }
                })
                .collect()
        }))
    }

    fn covers(at: i64, seq: i64) -> bool {
        seq <= at
    }

    fn seq(pos: i64) -> i64 {
        pos
    }
}

/// The changes to a user's tasks.
pub struct UserLog {
    pub owner: UserId,
}

impl Log for UserLog {
    type Key = UserId;
    type Pos = (i64, TaskId);

    async fn read(
        &self,
        store: &dyn Store,
        after: (i64, TaskId),
    ) -> Result<Option<Vec<Entry<(i64, TaskId)>>>, StoreError> {
        let tasks = store.list_tasks_changed(self.owner, after, PAGE).await?;
        Ok(Some(
            tasks
                .into_iter()
                .map(|task| Entry {
                    pos: (task.updated_at.timestamp_millis(), task.id),
                    frame: Frame::new(&StreamFrame::Task {
                        cursor: encode_cursor(&task),
                        task: Box::new(task),
                    }),
                    status: None,
                })
                .collect(),
        ))
    }

    /// A notice names a task's event, not where the task list stands: always read.
    fn covers(_: (i64, TaskId), _: i64) -> bool {
        false
    }

    /// A task list has no sequence numbers (and no end).
    fn seq(_: (i64, TaskId)) -> i64 {
        0
    }
}

/// One client's producer following one hub.
struct Subscriber<'a, L: Log> {
    hub: &'a Shared<L>,
    batches: broadcast::Receiver<Arc<Batch<L::Pos>>>,
    accounts: broadcast::Receiver<(UserId, tokio::time::Instant)>,
    credentials: &'a CredentialChecks,
    principal: &'a Principal,
    out: &'a Outbox,
    shutdown: &'a CancellationToken,
    last: L::Pos,
    /// A task's status as its events say, to know when it has ended; `None` for a task list.
    status: Option<TaskStatus>,
}

impl<L: Log> Subscriber<'_, L> {
    /// Sends what was missed, then what the hub hands on; ends with `End` once a task ended.
    async fn follow(mut self) -> Result<(), Stopped> {
        self.catch_up().await?;
        self.hub.start_at(self.last);
        let mut poll = tokio::time::interval_at(tokio::time::Instant::now() + POLL, POLL);
        loop {
            if let Some(status) = self.status.filter(|status| status.is_terminal()) {
                // A task's final status is always its last event, so once it is sent, all is.
                return self
                    .out
                    .send(Frame::new(&StreamFrame::End {
                        status,
                        last_seq: L::seq(self.last),
                    }))
                    .await;
            }
            tokio::select! {
                batch = self.batches.recv() => match batch {
                    Ok(batch) => self.take(&batch).await?,
                    Err(broadcast::error::RecvError::Lagged(_)) => self.catch_up().await?,
                    Err(broadcast::error::RecvError::Closed) => return Err(Stopped::ShuttingDown),
                },
                changed = self.accounts.recv() => match changed {
                    Ok((user, _)) if user != self.principal.user.id && user != UserId(uuid::Uuid::nil()) => {}
                    Ok((_, heard)) => self.still_allowed(heard).await?,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        self.still_allowed(tokio::time::Instant::now()).await?
                    }
                    Err(broadcast::error::RecvError::Closed) => return Err(Stopped::ShuttingDown),
                },
                // The safety net's check may be shared with other streams' of the last second.
                at = poll.tick() => {
                    self.still_allowed(at.checked_sub(Duration::from_secs(1)).unwrap_or(at)).await?
                }
                () = self.shutdown.cancelled() => return Err(Stopped::ShuttingDown),
            }
        }
    }

    async fn take(&mut self, batch: &Batch<L::Pos>) -> Result<(), Stopped> {
        match batch {
            // The hub read from further on than this subscriber has: read what lies between.
            Batch::Entries { after, .. } if *after > self.last => self.catch_up().await,
            Batch::Entries { entries, .. } => {
                let last = self.last;
                for entry in entries.iter().filter(|entry| entry.pos > last) {
                    self.send(entry).await?;
                }
                Ok(())
            }
            Batch::Live { at, frame } if *at == self.last => self.out.send(frame.clone()).await,
            Batch::Live { .. } => Ok(()),
            Batch::Failed => Err(Stopped::Failed),
            Batch::Gone => Err(Stopped::NotFound),
        }
    }

    /// Reads the database after the last entry sent until a page comes back short.
    async fn catch_up(&mut self) -> Result<(), Stopped> {
        loop {
            let last = self.last;
            let page = read_with_retries(|| self.hub.log().read(self.hub.store(), last))
                .await
                .map_err(|()| Stopped::Failed)?;
            self.hub
                .reads()
                .catching_up
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let entries = page.ok_or(Stopped::NotFound)?;
            for entry in &entries {
                self.send(entry).await?;
            }
            if (entries.len() as i64) < PAGE {
                return Ok(());
            }
        }
    }

    async fn send(&mut self, entry: &Entry<L::Pos>) -> Result<(), Stopped> {
        if self.status.is_some() && entry.status.is_some() {
            self.status = entry.status;
        }
        self.last = entry.pos;
        self.out.send(entry.frame.clone()).await
    }

    /// Stops the stream if what it was opened with is no longer good: its token revoked, its
    /// session ended, its user disabled — as read by a check started at or after `since`.
    async fn still_allowed(&self, since: tokio::time::Instant) -> Result<(), Stopped> {
        let valid = (self.credentials.still_valid(self.principal, since).await)
            .map_err(|()| Stopped::Failed)?;
        valid.then_some(()).ok_or(Stopped::Unauthorized)
    }
}

/// One task's events after `after`, then live, ending with `End` once the task has ended.
pub async fn follow_task(
    streams: Arc<Streams>,
    principal: Principal,
    task_id: TaskId,
    after: i64,
    out: Outbox,
    shutdown: CancellationToken,
) -> Result<(), Stopped> {
    let owner = principal.user.id;
    let accounts = streams.accounts();
    let task = streams.store().get_task(owner, task_id).await;
    let task = task.map_err(|err| {
        tracing::error!(error = %err, "a stream could not read the database");
        Stopped::Failed
    })?;
    let task = task.ok_or(Stopped::NotFound)?;
    let hub = streams.tasks.hub(task_id, || TaskLog { owner, task_id });
    let batches = hub.shared.subscribe();
    out.send(Frame::new(&StreamFrame::Subscribed {
        task_id: Some(task_id),
        after: after.to_string(),
        head_seq: Some(task.last_event_seq),
        status: Some(task.status),
    }))
    .await?;
    Subscriber {
        hub: &hub.shared,
        batches,
        accounts,
        credentials: &streams.credentials,
        principal: &principal,
        out: &out,
        shutdown: &shutdown,
        last: after,
        status: Some(task.status),
    }
    .follow()
    .await
}

/// `updated_at-ms:task-id`: where a client following all its tasks stands.
pub fn encode_cursor(task: &Task) -> String {
    format!("{}:{}", task.updated_at.timestamp_millis(), task.id)
}

pub fn decode_cursor(text: &str) -> Option<(i64, TaskId)> {
    if text.is_empty() || text == "0" {
        return Some((0, TaskId(uuid::Uuid::nil())));
    }
    let (millis, id) = text.split_once(':')?;
    Some((millis.parse().ok()?, id.parse().ok()?))
}

/// Every change to the owner's tasks after `after`, then live, until the client leaves.
pub async fn follow_user(
    streams: Arc<Streams>,
    principal: Principal,
    after: (i64, TaskId),
    out: Outbox,
    shutdown: CancellationToken,
) -> Result<(), Stopped> {
    let owner = principal.user.id;
    let accounts = streams.accounts();
    let hub = streams.users.hub(owner, || UserLog { owner });
    let batches = hub.shared.subscribe();
    let asked = if after.0 == 0 {
        "0".to_string()
    } else {
        format!("{}:{}", after.0, after.1)
    };
    out.send(Frame::new(&StreamFrame::Subscribed {
        task_id: None,
        after: asked,
        head_seq: None,
        status: None,
    }))
    .await?;
    Subscriber {
        hub: &hub.shared,
        batches,
        accounts,
        credentials: &streams.credentials,
        principal: &principal,
        out: &out,
        shutdown: &shutdown,
        last: after,
        status: None,
    }
    .follow()
    .await
}
