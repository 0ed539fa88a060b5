//! The frames of a stream (`GET /v1/tasks/{id}/stream`, `GET /v1/stream`), the same over
//! WebSocket (one JSON text message each) and Server-Sent Events (`event:` is the type).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{Event, Task, TaskId, TaskStatus};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamFrame {
    /// The first frame: where the stream stands. For one task, `head_seq` is the newest
    /// sequence number stored when the subscription began; the replay after `after` is
    /// complete once an event with that sequence number has arrived.
    Subscribed {
        #[serde(skip_serializing_if = "Option::is_none")]
        task_id: Option<TaskId>,
        /// What the client asked to resume after (a sequence number or a cursor).
        after: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        head_seq: Option<i64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        status: Option<TaskStatus>,
    },
    /// One event of the task's log, in sequence order, each exactly once.
    Event { event: Event },
    /// A task of the caller's changed (its status, result or usage): the whole task, and the
    /// cursor to resume after it.
    Task { task: Box<Task>, cursor: String },
    /// The task has ended and every event up to `last_seq` was sent; the server closes next.
    End { status: TaskStatus, last_seq: i64 },
    /// Text the model is writing, as it comes, on a task's stream. It has no sequence number:
    /// it is never stored and never replayed, and may be lost (a slow client, a reconnect).
    /// The `assistant_text` event stored after it, with its `seq`, holds the whole text and
    /// supersedes the deltas of its attempt before it: a client shows the deltas joined, and
    /// replaces them with that event when it arrives.
    TextDelta {
        /// The attempt writing; a client drops deltas of an attempt older than its newest.
        attempt: i64,
        /// Text to append to what this attempt's deltas have said since its last stored
        /// `assistant_text` event.
        text: String,
    },
}

/// WebSocket close codes. 4000–4499: reconnect and resume from the last sequence number (or
/// cursor) seen. 4500 and up, and 44xx below: do not retry without fixing something.
pub mod close_code {
    /// The client fell behind: its queue was full. Reconnect and resume.
    pub const SLOW_CONSUMER: u16 = 4001;
    /// The server is shutting down or restarting. Reconnect (to another node) and resume.
    pub const SHUTTING_DOWN: u16 = 4002;
    /// No pong in time. Reconnect and resume.
    pub const NO_PONG: u16 = 4003;
    /// No valid token or ticket. Do not retry with the same credentials.
    pub const UNAUTHORIZED: u16 = 4401;
    /// No such task (or not yours). Do not retry.
    pub const NOT_FOUND: u16 = 4404;

    /// True for the codes after which a client should reconnect and resume.
    pub fn should_resume(code: u16) -> bool {
        (4000..4400).contains(&code)
    }
}

/// The body of `POST /v1/stream-tickets`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StreamTicket {
    /// Single use. Pass as `?ticket=` or as the WebSocket subprotocol `berth.ticket.<ticket>`.
    pub ticket: String,
    pub expires_in_secs: u64,
}
