//! How `berth watch` shows a task's steps on a terminal: the model's text, commands with their
//! output, edits, results, and the ending. Colours only on a terminal, and never with NO_COLOR.

use std::io::{IsTerminal, Write};

use berth_proto::{Event, EventKind, StreamFrame, TaskStatus};

pub struct Style {
    colour: bool,
}

impl Style {
    pub fn detect() -> Self {
        let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        Self { colour }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        match self.colour {
            true => format!("\x1b[{code}m{text}\x1b[0m"),
            false => text.to_string(),
        }
    }

    pub fn dim(&self, text: &str) -> String {
        self.paint("2", text)
    }

    pub fn bold(&self, text: &str) -> String {
        self.paint("1", text)
    }

    pub fn red(&self, text: &str) -> String {
        self.paint("31", text)
    }

    pub fn green(&self, text: &str) -> String {
        self.paint("32", text)
    }

    pub fn is_terminal(&self) -> bool {
        self.colour
    }
}

/// Prints one frame for a person.
pub fn human(style: &Style, frame: &StreamFrame) {
    let mut out = std::io::stdout().lock();
    let _ = match frame {
        StreamFrame::Subscribed {
            status: Some(status),
            ..
        } => {
            writeln!(out, "{}", style.dim(&format!("● {status}")))
        }
        StreamFrame::Event { event } => write!(out, "{}", event_text(style, event)),
        StreamFrame::End { status, .. } => writeln!(out, "{}", ending(style, *status)),
        _ => Ok(()),
    };
    let _ = out.flush();
}

fn event_text(style: &Style, event: &Event) -> String {
    let payload = &event.payload;
    let text = |key: &str| payload[key].as_str().unwrap_or_default().to_string();
    match event.kind {
        EventKind::Status => {
            let mut line = format!("● {}", text("status"));
            if let Some(attempt) = payload["attempt"].as_i64() {
                line.push_str(&format!(" (attempt {attempt})"));
            }
            if let Some(reason) = payload["reason"].as_str() {
                line.push_str(&format!(": {reason}"));
            }
            format!("{}\n", style.dim(&line))
        }
        EventKind::AssistantText => format!("{}\n", text("text")),
        EventKind::ToolCall => match payload["input"]["command"].as_str() {
            Some(command) if payload["name"] != "str_replace_based_edit_tool" => {
                format!("{}\n", style.bold(&format!("$ {command}")))
            }
            _ => {
                let path = payload["input"]["path"].as_str().unwrap_or_default();
                let action = payload["input"]["command"].as_str().unwrap_or("edit");
                format!("{}\n", style.bold(&format!("✎ {action} {path}")))
            }
        },
        EventKind::CommandOutput if text("stream") == "stderr" => style.dim(&text("text")),
        EventKind::CommandOutput => text("text"),
        EventKind::ToolResult if payload["is_error"].as_bool() == Some(true) => {
            format!(
                "{}\n",
                style.red(&format!(
                    "✘ {}",
                    payload["content"].as_str().unwrap_or("tool error")
                ))
            )
        }
        EventKind::ToolResult => String::new(),
        EventKind::Usage => String::new(),
        EventKind::Result => {
            let mut line = String::from("result:");
            if let Some(branch) = payload["branch"].as_str() {
                line.push_str(&format!(" branch {branch}"));
            }
            if let Some(url) = payload["pull_request_url"].as_str() {
                line.push_str(&format!(" pull request {url}"));
            }
            format!("{line}\n")
        }
        EventKind::Error => format!("{}\n", style.red(&format!("error: {}", text("message")))),
        EventKind::Egress if payload["allowed"].as_bool() == Some(true) => String::new(),
        EventKind::Egress => format!(
            "{}\n",
            style.dim(&format!(
                "egress refused: {} {}:{} ({})",
                text("method"),
                text("host"),
                payload["port"],
                text("reason")
            ))
        ),
    }
}

fn ending(style: &Style, status: TaskStatus) -> String {
    match status {
        TaskStatus::Succeeded => style.green("✔ succeeded"),
        TaskStatus::Cancelled => style.dim("■ cancelled"),
        other => style.red(&format!("✘ {other}")),
    }
}
