//! What the agent can reach and what is kept of it: the setup command, paths outside the
//! workspace, and secrets in command output.

use std::time::Duration;

use berth_client::Followed;
use berth_proto::{Event, EventKind, StreamFrame, TaskStatus};
use berth_testkit::anthropic::Reply;
use serde_json::json;

use crate::common::terminate;
use crate::{bash, editor, ended, events, Stack, CONFIGURED_SECRET, GITHUB_TOKEN, MODEL_KEY};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_setup_command_runs_before_the_agent() {
    let stack = Stack::start(&[("README", "hi\n")]).await;
    let setup = format!(
        "[setup_commands]\n\"{}/acme/\" = \"echo prepared > .setup-marker && echo setting up\"\n",
        stack.git.url()
    );
    std::fs::write(stack.dir.path().join("berth.toml"), setup).unwrap();
    stack
        .model
        .push([bash("toolu_1", "cat .setup-marker"), Reply::text("Ready.")]);
    let (mut server, client) = stack.server();
    let (task, _) = client
        .create_task(&stack.task("Check the setup"), None)
        .await
        .unwrap();
    let done = ended(&client, task.id).await;
    assert_eq!(done.status, TaskStatus::Succeeded, "{:?}", done.error);
    let log = events(&client, task.id).await;
    let first_call = log.iter().find(|e| e.kind == EventKind::ToolCall).unwrap();
    assert_eq!(first_call.payload["name"], "setup");
    let result = log
        .iter()
        .find(|e| e.kind == EventKind::ToolResult && e.payload["tool_use_id"] == "toolu_1")
        .unwrap();
    assert_eq!(result.payload["content"], "prepared\n");
    assert!(terminate(&mut server).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_outside_the_workspace_are_refused_as_error_results() {
    let stack = Stack::start(&[("README", "hi\n")]).await;
    stack.model.push([
        editor(
            "toolu_1",
            json!({"command": "create", "path": "/etc/cron.d/evil", "file_text": "x"}),
        ),
        bash("toolu_2", "ln -s /etc /workspace/etc-link"),
        editor(
            "toolu_3",
            json!({"command": "create", "path": "/workspace/etc-link/evil", "file_text": "x"}),
        ),
        editor(
            "toolu_4",
            json!({"command": "view", "path": "/workspace/../etc/passwd"}),
        ),
        Reply::text("I could not."),
    ]);
    let (mut server, client) = stack.server();
    let (task, _) = client
        .create_task(&stack.task("Escape"), None)
        .await
        .unwrap();
    let done = ended(&client, task.id).await;
    assert_eq!(done.status, TaskStatus::Succeeded, "{:?}", done.error);
    let results: Vec<Event> = events(&client, task.id)
        .await
        .into_iter()
        .filter(|e| e.kind == EventKind::ToolResult)
        .collect();
    let by_id = |id: &str| {
        results
            .iter()
            .find(|e| e.payload["tool_use_id"] == id)
            .unwrap()
            .payload
            .clone()
    };
    for id in ["toolu_1", "toolu_3", "toolu_4"] {
        let result = by_id(id);
        assert_eq!(result["is_error"], true, "{id}: {result}");
        assert!(
            result["content"]
                .as_str()
                .unwrap()
                .contains("outside /workspace"),
            "{id}: {result}"
        );
    }
    assert_eq!(by_id("toolu_2")["is_error"], false);
    assert!(stack.model.rejections().is_empty());
    assert!(terminate(&mut server).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_redacted_in_stored_and_streamed_events_and_never_reach_the_model() {
    let stack = Stack::start(&[("deploy.env", &format!("TOKEN={CONFIGURED_SECRET}\n"))]).await;
    // The secret is printed whole, then split across two writes a moment apart.
    let half = CONFIGURED_SECRET.len() / 2;
    let command = format!(
        "cat deploy.env; printf '{}'; sleep 0.5; printf '{}\\n'",
        &CONFIGURED_SECRET[..half],
        &CONFIGURED_SECRET[half..]
    );
    stack
        .model
        .push([bash("toolu_1", &command), Reply::text("Printed it.")]);
    let (mut server, client) = stack.server();
    let (task, _) = client
        .create_task(&stack.task("Show the deploy settings"), None)
        .await
        .unwrap();
    let mut stream = client.follow_task(task.id, 0);
    let mut streamed = Vec::new();
    while let Some(frame) = tokio::time::timeout(Duration::from_secs(120), stream.next())
        .await
        .expect("the stream goes on")
    {
        if let Followed::Frame(StreamFrame::Event { event }) = frame.unwrap() {
            streamed.push(event);
        }
    }
    let done = ended(&client, task.id).await;
    assert_eq!(done.status, TaskStatus::Succeeded, "{:?}", done.error);

    let stored = events(&client, task.id).await;
    assert_eq!(streamed.len(), stored.len());
    for (name, log) in [("stored", &stored), ("streamed", &streamed)] {
        let text = serde_json::to_string(log).unwrap();
        assert!(
            !text.contains(CONFIGURED_SECRET),
            "{name} events hold the secret"
        );
        let output: String = log
            .iter()
            .filter(|e| e.kind == EventKind::CommandOutput)
            .map(|e| e.payload["text"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(output, "TOKEN=[REDACTED]\n[REDACTED]\n", "{name}");
    }
    let sent = serde_json::to_string(&stack.model.requests()).unwrap();
    assert!(!sent.contains(CONFIGURED_SECRET), "the model never sees it");
    assert!(!sent.contains(GITHUB_TOKEN) && !sent.contains(MODEL_KEY));
    assert!(terminate(&mut server).success());
}
