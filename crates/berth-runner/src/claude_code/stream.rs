//! Claude Code's `--output-format stream-json` output, one JSON object a line, turned into the
//! task's events: what the model wrote, the tools it called and what they gave back, and the
//! run's final result.

use berth_proto::EventKind;
use serde_json::{json, Value};

/// What one line of the CLI's output means for the task.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// Events to append, in order.
    Events(Vec<(EventKind, Value)>),
    /// The run's last line: whether it succeeded, and its final text.
    Result { success: bool, text: String },
    /// A line the task need not see (the session's start, hooks, partial messages).
    Nothing,
}

pub fn step_of(line: &str) -> Step {
    let Ok(message) = serde_json::from_str::<Value>(line) else {
        return Step::Nothing;
    };
    match message["type"].as_str() {
        Some("assistant") => Step::Events(blocks(&message).filter_map(assistant_event).collect()),
        Some("user") => Step::Events(blocks(&message).filter_map(tool_result_event).collect()),
        Some("result") => Step::Result {
            success: message["subtype"] == "success" && message["is_error"] != true,
            text: message["result"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| message["subtype"].as_str().unwrap_or("").to_string()),
        },
        _ => Step::Nothing,
    }
}

fn blocks(message: &Value) -> impl Iterator<Item = &Value> {
    message["message"]["content"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
}

fn assistant_event(block: &Value) -> Option<(EventKind, Value)> {
    match block["type"].as_str()? {
        "text" => {
            let text = block["text"].as_str()?;
            (!text.trim().is_empty()).then(|| (EventKind::AssistantText, json!({"text": text})))
        }
        "tool_use" => Some((
            EventKind::ToolCall,
            json!({"id": block["id"], "name": block["name"], "input": block["input"]}),
        )),
        _ => None,
    }
}

fn tool_result_event(block: &Value) -> Option<(EventKind, Value)> {
    if block["type"] != "tool_result" {
        return None;
    }
    // A result is text, or a list of blocks of which the text ones are shown.
    let content = match &block["content"] {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|part| part["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    };
    Some((
        EventKind::ToolResult,
        json!({
            "tool_use_id": block["tool_use_id"],
            "content": content,
            "is_error": block["is_error"].as_bool().unwrap_or(false),
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_events_and_the_result_ends_the_run() {
        let call = r#"{"type":"assistant","message":{"content":[{"type":"text","text":"Looking."},{"type":"tool_use","id":"toolu_1","name":"Bash","input":{"command":"ls"}}]}}"#;
        let Step::Events(events) = step_of(call) else {
            panic!("events expected")
        };
        assert_eq!(
            events[0],
            (EventKind::AssistantText, json!({"text": "Looking."}))
        );
        assert_eq!(
            events[1],
            (
                EventKind::ToolCall,
                json!({"id": "toolu_1", "name": "Bash", "input": {"command": "ls"}})
            )
        );
        let result = r#"{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"toolu_1","content":[{"type":"text","text":"README.md"}],"is_error":false}]}}"#;
        let Step::Events(events) = step_of(result) else {
            panic!("events expected")
        };
        assert_eq!(events[0].1["content"], "README.md");
        assert_eq!(
            step_of(r#"{"type":"result","subtype":"success","is_error":false,"result":"Done."}"#),
            Step::Result {
                success: true,
                text: "Done.".into()
            }
        );
        assert_eq!(
            step_of(r#"{"type":"result","subtype":"error_max_turns","is_error":true}"#),
            Step::Result {
                success: false,
                text: "error_max_turns".into()
            }
        );
        assert_eq!(
            step_of(r#"{"type":"system","subtype":"init"}"#),
            Step::Nothing
        );
        assert_eq!(step_of("not json"), Step::Nothing);
    }
}
