//! The conversation as Berth keeps it, and what a model provider must do with it. The stored
//! transcript uses the Anthropic Messages shapes (a provider for another API translates), so a
//! task can resume on any node from what the store holds.

use async_trait::async_trait;
// The providers retry as publishing does: one policy for every service off the machine.
pub use berth_runner::retry::{retry_after, RetryPolicy};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
}

/// One block of a message. Blocks of kinds Berth does not know (such as `thinking`) are kept
/// as `Other` and not sent back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Block {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        input: serde_json::Value,
    },
    ToolResult {
        tool_use_id: String,
        content: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        is_error: bool,
    },
    #[serde(other)]
    Other,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: Vec<Block>,
}

impl Message {
    pub fn user_text(text: impl Into<String>) -> Self {
        Message {
            role: Role::User,
            content: vec![Block::Text { text: text.into() }],
        }
    }

    /// The tool calls an assistant message asks for: `(id, name, input)`.
    pub fn tool_uses(&self) -> impl Iterator<Item = (&str, &str, &serde_json::Value)> {
        self.content.iter().filter_map(|block| match block {
            Block::ToolUse { id, name, input } => Some((id.as_str(), name.as_str(), input)),
            _ => None,
        })
    }
}

/// The tools Berth offers; each provider says them in its API's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    /// Anthropic's `bash_20250124`: `{"command": "...", "restart": bool}`.
    Bash,
    /// Anthropic's `text_editor_20250728`, named `str_replace_based_edit_tool`.
    Editor,
}

impl Tool {
    pub const ALL: [Tool; 2] = [Tool::Bash, Tool::Editor];

    pub fn name(self) -> &'static str {
        match self {
            Tool::Bash => "bash",
            Tool::Editor => "str_replace_based_edit_tool",
        }
    }

    pub fn from_name(name: &str) -> Option<Tool> {
        Tool::ALL.into_iter().find(|tool| tool.name() == name)
    }
}

/// One request for the model's next turn.
#[derive(Clone, Debug)]
pub struct TurnRequest<'a> {
    pub model: &'a str,
    pub system: &'a str,
    pub messages: &'a [Message],
    pub tools: &'a [Tool],
    /// Most tokens the model may write in this turn.
    pub max_tokens: u32,
    /// Given each piece of the model's text as it arrives, where the provider streams it.
    /// A turn asked for again after failing halfway gives its text again from the start.
    pub on_text: Option<OnText<'a>>,
}

/// Where the model's text goes as it is written (see [`TurnRequest::on_text`]).
#[derive(Clone, Copy)]
pub struct OnText<'a>(pub &'a (dyn Fn(&str) + Send + Sync));

impl std::fmt::Debug for OnText<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnText")
    }
}

/// Tokens one turn used, as the API counted them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenUsage {
    pub input: u64,
    pub output: u64,
    pub cache_write: u64,
    pub cache_read: u64,
}

impl TokenUsage {
    pub fn total(&self) -> u64 {
        self.input + self.output + self.cache_write + self.cache_read
    }
}

/// The model's answer: an assistant message and why it stopped.
#[derive(Clone, Debug, PartialEq)]
pub struct Turn {
    pub message: Message,
    /// `end_turn`, `tool_use`, `max_tokens`, … as the API said it.
    pub stop_reason: Option<String>,
    pub usage: TokenUsage,
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The API refused the request (bad key, bad request, no access): retrying will not help,
    /// and the task ends with the API's own message.
    #[error("the model API refused the request ({status}): {message}")]
    Refused { status: u16, message: String },
    /// Overloaded, rate limited, a server error or a dropped stream, still failing after
    /// every retry.
    #[error("the model API kept failing: {0}")]
    Unavailable(String),
}

/// Something that can take the model's next turn: the Anthropic Messages API, or an
/// OpenAI-compatible chat completions API.
#[async_trait]
pub trait Provider: Send + Sync {
    /// Asks for one turn, retrying what is worth retrying (see [`RetryPolicy`]).
    async fn turn(&self, request: &TurnRequest<'_>) -> Result<Turn, ProviderError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transcript_blocks_round_trip_and_unknown_blocks_are_kept_as_other() {
        let stored = serde_json::json!({"role": "assistant", "content": [
            {"type": "thinking", "thinking": "hm", "signature": "x"},
            {"type": "text", "text": "Reading it."},
            {"type": "tool_use", "id": "t1", "name": "bash", "input": {"command": "ls"}}
        ]});
        let message: Message = serde_json::from_value(stored).unwrap();
        assert_eq!(message.content[0], Block::Other);
        assert_eq!(message.tool_uses().count(), 1);
        let result = Block::ToolResult {
            tool_use_id: "t1".into(),
            content: "ok".into(),
            is_error: false,
        };
        assert_eq!(
            serde_json::to_value(&result).unwrap(),
            serde_json::json!({"type": "tool_result", "tool_use_id": "t1", "content": "ok"})
        );
    }
}
