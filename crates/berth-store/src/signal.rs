//! Wake-ups inside one process: runners wait on `work` for claimable tasks, streams listen on
//! `events` for appended events. On PostgreSQL, NOTIFY feeds the same channels from other
//! nodes; on SQLite, another process's commits are noticed by polling `PRAGMA data_version`.
//! All are hints: a missed one costs a poll interval, never a lost task or event.

use std::sync::Arc;

use berth_proto::{TaskId, UserId};
use tokio::sync::{broadcast, watch};

use crate::Fence;

/// An event was appended to a task's log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventNotice {
    pub task_id: TaskId,
    pub owner_id: UserId,
    pub seq: i64,
}

impl EventNotice {
    /// A notice about no task in particular: notices may have been lost, so every subscriber
    /// should re-read the logs it follows.
    pub const RESYNC: EventNotice = EventNotice {
        task_id: TaskId(uuid::Uuid::nil()),
        owner_id: UserId(uuid::Uuid::nil()),
        seq: 0,
    };

    /// Something about the user changed (such as being disabled): their streams look again.
    pub fn user_changed(owner_id: UserId) -> Self {
        EventNotice {
            task_id: TaskId(uuid::Uuid::nil()),
            owner_id,
            seq: -1,
        }
    }

    pub fn is_user_change(&self) -> bool {
        self.seq == -1
    }

    /// `task:owner:seq`, the payload of a PostgreSQL notification.
    pub(crate) fn encode(&self) -> String {
        format!("{}:{}:{}", self.task_id, self.owner_id, self.seq)
    }

    pub(crate) fn decode(text: &str) -> Option<Self> {
        let mut parts = text.split(':');
        let notice = EventNotice {
            task_id: parts.next()?.parse().ok()?,
            owner_id: parts.next()?.parse().ok()?,
            seq: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(notice)
    }
}

/// Text the model is writing, as it comes: never stored, and lost rather than waited for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextDelta {
    /// The attempt writing it.
    pub fence: Fence,
    pub text: String,
}

impl TextDelta {
    /// Most bytes of text one PostgreSQL notification carries (its payload must stay under
    /// 8000 bytes, with the ids and the JSON around it).
    pub(crate) const MAX_NOTIFIED: usize = 7000;

    /// `{"t":task,"a":attempt,"x":text}`, the payload of a PostgreSQL notification.
    pub(crate) fn encode(&self) -> String {
        serde_json::json!({"t": self.fence.task_id, "a": self.fence.attempt, "x": self.text})
            .to_string()
    }

    pub(crate) fn decode(text: &str) -> Option<Self> {
        let value: serde_json::Value = serde_json::from_str(text).ok()?;
        Some(TextDelta {
            fence: Fence {
                task_id: value["t"].as_str()?.parse().ok()?,
                attempt: value["a"].as_i64()?,
            },
            text: value["x"].as_str()?.to_string(),
        })
    }

    /// The text in pieces of at most [`Self::MAX_NOTIFIED`] bytes, characters kept whole.
    pub(crate) fn pieces(&self) -> Vec<TextDelta> {
        let mut pieces = Vec::new();
        let mut rest = self.text.as_str();
        while !rest.is_empty() {
            let mut cut = rest.len().min(Self::MAX_NOTIFIED);
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            let (piece, after) = rest.split_at(cut);
            pieces.push(TextDelta {
                fence: self.fence,
                text: piece.to_string(),
            });
            rest = after;
        }
        pieces
    }
}

pub(crate) struct Signals {
    work: watch::Sender<u64>,
    events: broadcast::Sender<EventNotice>,
    text: broadcast::Sender<Arc<TextDelta>>,
}

impl Signals {
    pub(crate) fn new() -> Self {
        Self {
            work: watch::channel(0).0,
            events: broadcast::channel(4096).0,
            text: broadcast::channel(1024).0,
        }
    }

    /// Tells waiting runners that a task may be claimable.
    pub(crate) fn wake_runners(&self) {
        self.work
            .send_modify(|version| *version = version.wrapping_add(1));
    }

    pub(crate) fn event_appended(&self, notice: EventNotice) {
        // No subscriber is fine: nobody is watching that task now.
        let _ = self.events.send(notice);
    }

    /// Notices from other nodes may have been missed: tell stream subscribers to re-read.
    pub(crate) fn connection_lost(&self) {
        let _ = self.events.send(EventNotice::RESYNC);
    }

    /// Another process wrote to the database (SQLite): stream subscribers re-read, and this
    /// process's runners look for work, which may be a task the other process queued (or a
    /// slot its runner freed).
    pub(crate) fn changed_elsewhere(&self) {
        let _ = self.events.send(EventNotice::RESYNC);
        self.wake_runners();
    }

    pub(crate) fn text_written(&self, delta: TextDelta) {
        let _ = self.text.send(Arc::new(delta));
    }

    pub(crate) fn text_deltas(&self) -> broadcast::Receiver<Arc<TextDelta>> {
        self.text.subscribe()
    }

    pub(crate) fn work(&self) -> watch::Receiver<u64> {
        self.work.subscribe()
    }

    pub(crate) fn events(&self) -> broadcast::Receiver<EventNotice> {
        self.events.subscribe()
    }
}
