//! What Berth writes on GitHub: the acknowledgement that links to the task, the same comment
//! rewritten when the task ends (its outcome, cost and pull request), and short refusals that
//! say why. Each carries a hidden mark, so Berth never reads its own comments as a request.

use berth_proto::{Task, TaskId, TaskStatus};

/// Marks Berth's comments.
pub const MARK: &str = "<!-- berth -->";

/// The task as a Markdown link into the web app, or its id without `public_url`.
pub fn task_link(public_url: Option<&str>, id: TaskId) -> String {
    match public_url {
        Some(url) => format!(
            "[task {}]({}/#task={id})",
            id.short(),
            url.trim_end_matches('/')
        ),
        None => format!("task `{id}`"),
    }
}

pub fn acknowledged(link: &str, follow_up: bool) -> String {
    let what = if follow_up {
        "Berth is working on the review"
    } else {
        "Berth is on it"
    };
    format!("{MARK}\n👀 {what}: {link}. This comment will say how it ends.")
}

pub fn refused(login: &str, reason: &str) -> String {
    format!("{MARK}\n@{login} Berth did not start: {reason}")
}

pub fn ended(task: &Task, link: &str) -> String {
    let (mark, outcome) = match task.status {
        TaskStatus::Succeeded => ("✅", "is done"),
        TaskStatus::Failed => ("❌", "failed"),
        TaskStatus::Cancelled => ("⏹️", "was cancelled"),
        TaskStatus::TimedOut => ("⌛", "ran out of time"),
        _ => ("👀", "is working"),
    };
    let mut text = format!("{MARK}\n{mark} Berth's {link} {outcome}.\n");
    match &task.result.pull_request_url {
        Some(url) => text.push_str(&format!("\n- Pull request: {url}")),
        None if task.status == TaskStatus::Succeeded => {
            text.push_str("\n- No change was needed, so there is no pull request.")
        }
        None => {}
    }
    if let Some(error) = &task.error {
        let first: String = error
            .lines()
            .next()
            .unwrap_or_default()
            .chars()
            .take(300)
            .collect();
        text.push_str(&format!("\n- Why: {first}"));
    }
    let usage = &task.usage;
    text.push_str(&format!(
        "\n- Cost: ${:.2} ({} tokens in, {} out)\n",
        usage.cost_usd, usage.input_tokens, usage.output_tokens
    ));
    text
}
