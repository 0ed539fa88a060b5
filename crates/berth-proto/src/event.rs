//! The per-task event log: everything a client can see of a task, in order.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::TaskId;

/// What an event records. The payload's shape depends on the kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// `{"status": "...", "reason"?: "..."}`
    Status,
    /// `{"text": "..."}`: text the model wrote.
    AssistantText,
    /// `{"id", "name", "input"}`: the model asked for a tool.
    ToolCall,
    /// `{"tool_use_id", "content", "is_error", "duration_ms"}`
    ToolResult,
    /// `{"tool_use_id"?, "stream": "stdout"|"stderr", "text"}`: output of a command as it runs.
    CommandOutput,
    /// Token counts of one model turn.
    Usage,
    /// `{"has_diff", "branch"?, "pull_request_url"?}`
    Result,
    /// `{"message": "..."}`
    Error,
    /// `{"host", "port", "method", "allowed", "reason"?}`: a request through the egress proxy
    /// of a task with `network: allowlist`, allowed or refused.
    Egress,
}

impl EventKind {
    pub const ALL: [EventKind; 9] = [
        EventKind::Status,
        EventKind::AssistantText,
        EventKind::ToolCall,
        EventKind::ToolResult,
        EventKind::CommandOutput,
        EventKind::Usage,
        EventKind::Result,
        EventKind::Error,
        EventKind::Egress,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Status => "status",
            EventKind::AssistantText => "assistant_text",
            EventKind::ToolCall => "tool_call",
            EventKind::ToolResult => "tool_result",
            EventKind::CommandOutput => "command_output",
            EventKind::Usage => "usage",
            EventKind::Result => "result",
            EventKind::Error => "error",
            EventKind::Egress => "egress",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == s)
    }
}

/// One entry of a task's event log. `seq` starts at 1 and has no gaps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    pub task_id: TaskId,
    pub seq: i64,
    /// The attempt that wrote the event.
    pub attempt: i64,
    pub kind: EventKind,
    pub payload: serde_json::Value,
    pub created_at: DateTime<Utc>,
}
