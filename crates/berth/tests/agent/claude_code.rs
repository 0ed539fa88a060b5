//! `agent = "claude-code"` end to end: `berth server` starts the metered model proxy on the
//! sandbox network and runs tasks with the real Claude Code CLI in the image variant, or with
//! Berth's own loop when a task asks; a server without it refuses tasks that ask for it. The
//! CLI comes from the wheel `BERTH_CLAUDE_CODE_WHEEL` names (`scripts/install-claude-code`);
//! without it those tests are skipped, and under CI they fail.

use berth_proto::{Agent, EventKind, TaskStatus};
use berth_testkit::anthropic::Reply;
use serde_json::{json, Value};

use crate::common::berth;
use crate::{ended, events, Stack, MODEL_KEY};

fn wheel() -> Option<String> {
    match std::env::var("BERTH_CLAUDE_CODE_WHEEL") {
        Ok(path) if !path.is_empty() => Some(path),
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("BERTH_CLAUDE_CODE_WHEEL is not set; run the tests with scripts/test")
        }
        _ => {
            eprintln!("skipped: BERTH_CLAUDE_CODE_WHEEL is not set (scripts/install-claude-code)");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_asking_for_claude_code_fails_on_a_server_without_it() {
    let stack = Stack::start(&[("README", "hello\n")]).await;
    let (_server, client) = stack.server();
    let mut request = stack.task("Say hello");
    request.agent = Some(Agent::ClaudeCode);
    let (task, _) = client.create_task(&request, None).await.unwrap();
    let done = ended(&client, task.id).await;
    assert_eq!(done.status, TaskStatus::Failed);
    let reason = done.error.unwrap_or_default();
    assert!(reason.contains("agent = \"claude-code\""), "{reason}");
    assert!(stack.model.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_does_the_servers_tasks_through_its_proxy_and_a_task_may_pick_berth() {
    let Some(wheel) = wheel() else {
        return;
    };
    let stack = Stack::start(&[("README", "hello\n")]).await;
    let built = berth(stack.dir.path())
        .args(["image", "build", "--with-claude-code", &wheel])
        .status()
        .unwrap();
    assert!(
        built.success(),
        "berth image build --with-claude-code failed"
    );
    // Claude Code sends tools by its own names (`Bash`); Berth's loop by its own (`bash`).
    stack.model.respond_with(|body: &Value| {
        let tools: Vec<&str> = body["tools"]
            .as_array()
            .map(|tools| tools.iter().filter_map(|t| t["name"].as_str()).collect())
            .unwrap_or_default();
        let taken = body["messages"]
            .as_array()
            .map_or(0, |m| m.iter().filter(|m| m["role"] == "assistant").count());
        match (taken, tools.contains(&"Bash"), tools.contains(&"bash")) {
            (0, true, _) => Reply::tool(
                "toolu_cc",
                "Bash",
                json!({"command": "echo claude > by.txt", "description": "Write"}),
            ),
            (0, _, true) => {
                Reply::tool("toolu_b", "bash", json!({"command": "echo berth > by.txt"}))
            }
            _ => Reply::text("Wrote by.txt."),
        }
    });
    let (_server, client) = stack.server_with(&[
        ("BERTH_AGENT", "claude-code"),
        ("BERTH_CLAUDE_CODE_MODEL", "claude-sonnet-4-5"),
    ]);

    let (task, _) = client
        .create_task(&stack.task("Write by.txt"), None)
        .await
        .unwrap();
    let done = ended(&client, task.id).await;
    assert_eq!(done.status, TaskStatus::Succeeded, "{:?}", done.error);
    let diff = String::from_utf8(client.get_diff(task.id).await.unwrap()).unwrap();
    assert!(diff.contains("+claude"), "{diff}");
    assert!(
        done.usage.cost_usd > 0.0,
        "the proxy priced the turns: {:?}",
        done.usage
    );
    let log = events(&client, task.id).await;
    let metered = log
        .iter()
        .filter(|e| e.kind == EventKind::Usage && e.payload["source"] == "model_proxy")
        .count();
    assert!(metered >= 2, "{log:#?}");
    assert!(stack
        .model
        .headers()
        .iter()
        .all(|h| h["x-api-key"] == MODEL_KEY));

    let mut request = stack.task("Write by.txt");
    request.agent = Some(Agent::Berth);
    let (task, _) = client.create_task(&request, None).await.unwrap();
    let done = ended(&client, task.id).await;
    assert_eq!(done.status, TaskStatus::Succeeded, "{:?}", done.error);
    let diff = String::from_utf8(client.get_diff(task.id).await.unwrap()).unwrap();
    assert!(diff.contains("+berth"), "{diff}");
}
