//! Producing a stream: replay what the client missed from the database, then follow new
//! events live. Notices from the store only say "look again"; what is sent is always read
//! from the database after the last sequence sent, so nothing is lost or sent twice however
//! notices race with the replay.

use std::sync::Arc;
use std::time::Duration;

use berth_proto::{EventKind, StreamFrame, Task, TaskId, TaskStatus, UserId};
use berth_store::{EventNotice, Store};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

const PAGE: i64 = 500;
/// Looked again at this interval even with no notice: notices are hints, not the only path.
/// Lagging behind the notices, or losing PostgreSQL's LISTEN connection, already makes every
/// stream look again at once; this only bounds what an unforeseen loss could cost, while
/// 10,000 idle streams cost the database about 300 reads a second.
const POLL: Duration = Duration::from_secs(30);

/// Why a producer stopped before its natural end.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped {
    NotFound,
    /// The client's queue stayed full too long.
    SlowConsumer,
    ShuttingDown,
    /// The client went away.
    Gone,
    /// The user was disabled while the stream was open.
    Unauthorized,
    Failed,
}

/// A read that a busy database may fail for a moment (a full pool, say): tried a few times
/// before the stream gives up and tells the client to resume.
async fn read_with_retries<T, F, Fut>(read: F) -> Result<T, Stopped>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, berth_store::StoreError>>,
{
    let mut wait = Duration::from_millis(100);
    for _ in 0..4 {
        match read().await {
            Ok(value) => return Ok(value),
            Err(err) => tracing::warn!(error = %err, "a stream's read failed; trying again"),
        }
        tokio::time::sleep(wait).await;
        wait *= 2;
    }
    read().await.map_err(failed)
}

fn failed(err: berth_store::StoreError) -> Stopped {
    tracing::error!(error = %err, "a stream could not read the database");
    Stopped::Failed
}

/// The bounded queue to one client.
pub struct Outbox {
    pub frames: mpsc::Sender<StreamFrame>,
    pub stall: Duration,
}

impl Outbox {
    async fn send(&self, frame: StreamFrame) -> Result<(), Stopped> {
        match self.frames.send_timeout(frame, self.stall).await {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => Err(Stopped::SlowConsumer),
            Err(mpsc::error::SendTimeoutError::Closed(_)) => Err(Stopped::Gone),
        }
    }
}

/// What woke a waiting stream.
enum Woken {
    /// New events may be there.
    Events,
    /// The user's account may have changed too (or notices were missed): check it as well.
    Account,
}

/// Stops the stream if its user was disabled meanwhile.
async fn still_allowed(store: &dyn Store, owner: UserId, woken: Woken) -> Result<(), Stopped> {
    if let Woken::Account = woken {
        let account = read_with_retries(|| store.get_account(owner)).await?;
        if account.is_none_or(|account| account.disabled_at.is_some()) {
            return Err(Stopped::Unauthorized);
        }
    }
    Ok(())
}

/// Waits for a notice that concerns `wanted`, the poll interval, or shutdown.
async fn wait(
    notices: &mut broadcast::Receiver<EventNotice>,
    owner: UserId,
    wanted: impl Fn(&EventNotice) -> bool,
    shutdown: &CancellationToken,
) -> Result<Woken, Stopped> {
    let deadline = tokio::time::sleep(POLL);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            notice = notices.recv() => match notice {
                Ok(notice) if notice.is_user_change() && notice.owner_id == owner => {
                    return Ok(Woken::Account);
                }
                Ok(notice) if wanted(&notice) || notice == EventNotice::RESYNC => {
                    // One read answers a whole burst: drop the notices already waiting.
                    while notices.try_recv().is_ok() {}
                    return Ok(Woken::Events);
                }
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(_)) => return Ok(Woken::Account),
                Err(broadcast::error::RecvError::Closed) => return Err(Stopped::ShuttingDown),
            },
            () = &mut deadline => return Ok(Woken::Account),
            () = shutdown.cancelled() => return Err(Stopped::ShuttingDown),
        }
    }
}

/// One task's events after `after`, then live, ending with `End` once the task has ended.
pub async fn follow_task(
    store: Arc<dyn Store>,
    owner: UserId,
    task_id: TaskId,
    after: i64,
    out: Outbox,
    shutdown: CancellationToken,
) -> Result<(), Stopped> {
    let mut notices = store.subscribe_events();
    let task = store.get_task(owner, task_id).await.map_err(failed)?;
    let task = task.ok_or(Stopped::NotFound)?;
    let mut status = task.status;
    out.send(StreamFrame::Subscribed {
        task_id: Some(task_id),
        after: after.to_string(),
        head_seq: Some(task.last_event_seq),
        status: Some(status),
    })
    .await?;
    let mut last = after;
    loop {
        loop {
            let page = read_with_retries(|| store.list_events(owner, task_id, last, PAGE)).await?;
            let (events, _) = page.ok_or(Stopped::NotFound)?;
            let full = events.len() as i64 == PAGE;
            for event in events {
                if event.kind == EventKind::Status {
                    let said = event.payload["status"].as_str().and_then(TaskStatus::parse);
                    status = said.unwrap_or(status);
                }
                last = event.seq;
                out.send(StreamFrame::Event { event }).await?;
            }
            if !full {
                break;
            }
        }
        // A task's final status is always its last event, so once it is sent, all is sent.
        if status.is_terminal() {
            return out
                .send(StreamFrame::End {
                    status,
                    last_seq: last,
                })
                .await;
        }
        let woken = wait(
            &mut notices,
            owner,
            |notice| notice.task_id == task_id,
            &shutdown,
        )
        .await?;
        still_allowed(store.as_ref(), owner, woken).await?;
    }
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
    store: Arc<dyn Store>,
    owner: UserId,
    after: (i64, TaskId),
    out: Outbox,
    shutdown: CancellationToken,
) -> Result<(), Stopped> {
    let mut notices = store.subscribe_events();
    let asked = if after.0 == 0 {
        "0".to_string()
    } else {
        format!("{}:{}", after.0, after.1)
    };
    out.send(StreamFrame::Subscribed {
        task_id: None,
        after: asked,
        head_seq: None,
        status: None,
    })
    .await?;
    let mut cursor = after;
    loop {
        loop {
            let tasks = read_with_retries(|| store.list_tasks_changed(owner, cursor, PAGE)).await?;
            let full = tasks.len() as i64 == PAGE;
            for task in tasks {
                cursor = (task.updated_at.timestamp_millis(), task.id);
                let frame = StreamFrame::Task {
                    cursor: encode_cursor(&task),
                    task: Box::new(task),
                };
                out.send(frame).await?;
            }
            if !full {
                break;
            }
        }
        let woken = wait(
            &mut notices,
            owner,
            |notice| notice.owner_id == owner,
            &shutdown,
        )
        .await?;
        still_allowed(store.as_ref(), owner, woken).await?;
    }
}
