//! Talking to the model: its API's failures, a turn with several tool calls, a runner killed
//! mid-conversation, and a conversation longer than the context window.

use std::time::Duration;

use berth_proto::{Event, EventKind, TaskStatus};
use berth_testkit::anthropic::{Reply, ScriptBlock};
use serde_json::{json, Value};

use crate::common::{eventually, terminate};
use crate::{bash, editor, ended, events, results_sent, Stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_api_failures_are_retried_or_end_the_task_with_the_apis_message() {
    let stack = Stack::start(&[("README", "hi\n")]).await;
    let (mut server, client) = stack.server();

    // 529, then an error event after HTTP 200: both retried, and the task succeeds.
    stack.model.push([
        Reply::overloaded(),
        Reply::error_event("overloaded_error", "Overloaded"),
        Reply::text("Nothing to change."),
    ]);
    let (task, _) = client
        .create_task(&stack.task("Look around"), None)
        .await
        .unwrap();
    let done = ended(&client, task.id).await;
    assert_eq!(done.status, TaskStatus::Succeeded, "{:?}", done.error);
    assert_eq!(stack.model.requests().len(), 3);
    assert!(!done.result.has_diff);

    // 401 is not retried: the task fails with the API's own words.
    stack.model.push([Reply::status(
        401,
        "authentication_error",
        "invalid x-api-key",
    )]);
    let (task, _) = client
        .create_task(&stack.task("Look again"), None)
        .await
        .unwrap();
    let failed = ended(&client, task.id).await;
    assert_eq!(failed.status, TaskStatus::Failed);
    let reason = failed.error.unwrap();
    assert!(
        reason.contains("401") && reason.contains("invalid x-api-key"),
        "{reason}"
    );
    assert_eq!(stack.model.requests().len(), 4, "no retry after 401");
    assert!(terminate(&mut server).success());
}

/// Two tool calls in one turn: each call's event comes before its output and its result,
/// the second call's after the first's result, and both results go back in one message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_calls_of_one_turn_run_in_order_and_answer_together() {
    let stack = Stack::start(&[("README", "hi\n")]).await;
    let call = |id: &str, command: &str| ScriptBlock::ToolUse {
        id: id.into(),
        name: "bash".into(),
        input: json!({ "command": command }),
        piece: 5,
    };
    stack.model.push([
        Reply::turn(
            vec![
                ScriptBlock::Text("Two looks.".into()),
                call("toolu_a", "echo first"),
                call("toolu_b", "echo second"),
            ],
            "tool_use",
        ),
        Reply::text("Seen both."),
    ]);
    let (mut server, client) = stack.server();
    let (task, _) = client
        .create_task(&stack.task("Look twice"), None)
        .await
        .unwrap();
    let done = ended(&client, task.id).await;
    assert_eq!(done.status, TaskStatus::Succeeded, "{:?}", done.error);

    let mut steps: Vec<(EventKind, String)> = events(&client, task.id)
        .await
        .iter()
        .filter_map(|event| {
            let id = match event.kind {
                EventKind::AssistantText => "text",
                EventKind::ToolCall => event.payload["id"].as_str()?,
                EventKind::CommandOutput | EventKind::ToolResult => {
                    event.payload["tool_use_id"].as_str()?
                }
                _ => return None,
            };
            Some((event.kind, id.to_string()))
        })
        .collect();
    // A command's output may come in more than one event.
    steps.dedup();
    let step = |kind, id: &str| (kind, id.to_string());
    let expected = vec![
        step(EventKind::AssistantText, "text"),
        step(EventKind::ToolCall, "toolu_a"),
        step(EventKind::CommandOutput, "toolu_a"),
        step(EventKind::ToolResult, "toolu_a"),
        step(EventKind::ToolCall, "toolu_b"),
        step(EventKind::CommandOutput, "toolu_b"),
        step(EventKind::ToolResult, "toolu_b"),
        step(EventKind::AssistantText, "text"),
    ];
    assert_eq!(steps, expected);
    let requests = stack.model.requests();
    let answer = &requests[1]["messages"].as_array().unwrap()[2];
    let answered: Vec<&str> = answer["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|block| block["tool_use_id"].as_str().unwrap())
        .collect();
    assert_eq!(answered, ["toolu_a", "toolu_b"]);
    assert!(terminate(&mut server).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_killed_after_a_tool_call_was_stored_resumes_without_an_api_rejection() {
    let stack = Stack::start(&[("README", "hi\n")]).await;
    stack.model.push([
        editor(
            "toolu_1",
            json!({"command": "create", "path": "/workspace/first.txt", "file_text": "kept\n"}),
        ),
        bash("toolu_2", "sleep 600"),
        Reply::text("Picked up after the restart."),
    ]);
    let (mut server, client) = stack.server();
    let (task, _) = client
        .create_task(&stack.task("Work slowly"), None)
        .await
        .unwrap();
    eventually(Duration::from_secs(120), "the sleep starts", || async {
        events(&client, task.id)
            .await
            .iter()
            .any(|e| e.kind == EventKind::ToolCall && e.payload["id"] == "toolu_2")
    })
    .await;
    server.kill().unwrap();
    server.wait().unwrap();

    let (mut server, client) = stack.server();
    let done = ended(&client, task.id).await;
    assert_eq!(done.status, TaskStatus::Succeeded, "{:?}", done.error);
    assert_eq!(done.attempt, 2);
    assert!(
        stack.model.rejections().is_empty(),
        "{:?}",
        stack.model.rejections()
    );
    let answered = results_sent(&stack.model);
    assert_eq!(answered.len(), 1);
    assert_eq!(answered[0]["tool_use_id"], "toolu_2");
    assert_eq!(answered[0]["is_error"], true);
    let diff = String::from_utf8(client.get_diff(task.id).await.unwrap()).unwrap();
    assert!(
        diff.contains("+kept"),
        "the first attempt's work was restored: {diff}"
    );
    assert!(terminate(&mut server).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_conversation_leaves_old_tool_results_out_to_fit_the_context_window() {
    let stack = Stack::start(&[("README", "hi\n")]).await;
    // Each command prints 3,000 bytes, about 1,000 tokens, into a window of 8,192.
    let noisy = "head -c 3000 /dev/zero | tr '\\0' x";
    stack.model.push([
        bash("toolu_1", noisy),
        bash("toolu_2", noisy),
        bash("toolu_3", noisy),
        bash("toolu_4", noisy),
        bash("toolu_5", noisy),
        Reply::text("Done."),
    ]);
    let (mut server, client) = stack.server_with(&[("BERTH_AGENT_CONTEXT_TOKENS", "8192")]);
    let (task, _) = client
        .create_task(&stack.task("Print a lot"), None)
        .await
        .unwrap();
    let done = ended(&client, task.id).await;
    assert_eq!(done.status, TaskStatus::Succeeded, "{:?}", done.error);
    assert!(
        stack.model.rejections().is_empty(),
        "every request was valid"
    );

    let results = |request: &Value| -> Vec<String> {
        request["messages"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|m| m["content"].as_array().unwrap().clone())
            .filter(|b| b["type"] == "tool_result")
            .map(|b| b["content"].as_str().unwrap().to_string())
            .collect()
    };
    let requests = stack.model.requests();
    assert_eq!(requests.len(), 6);
    let whole = "x".repeat(3000);
    assert!(
        results(&requests[3]).iter().all(|r| *r == whole),
        "still fits"
    );
    let trimmed = results(&requests[4]);
    assert_eq!(trimmed.len(), 4);
    assert!(trimmed[..3].iter().all(|r| r.starts_with("[Berth removed")));
    assert_eq!(trimmed[3], whole, "the newest result is sent whole");
    let next = results(&requests[5]);
    assert_eq!(
        next[..4],
        trimmed[..],
        "what was sent stays as it was, for the cache"
    );
    assert_eq!(next[4], whole);
    // The task's own record keeps every output.
    let shown: Vec<Event> = events(&client, task.id)
        .await
        .into_iter()
        .filter(|e| e.kind == EventKind::ToolResult)
        .collect();
    assert!(shown.iter().all(|e| e.payload["content"] == whole.as_str()));
    assert!(terminate(&mut server).success());
}
