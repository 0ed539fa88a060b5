//! What a task ends with: a diff, a pushed branch and a pull request, updated by follow-ups;
//! and the work kept when a budget or a cancel ends it early.

use std::time::Duration;

use berth_proto::{Budget, EventKind, TaskStatus};
use berth_testkit::anthropic::{Reply, ScriptBlock};
use serde_json::json;

use crate::common::{eventually, terminate};
use crate::{bash, containers_of, editor, ended, events, Stack, REPO};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_reads_edits_tests_and_ends_with_a_pull_request_then_a_follow_up_updates_it() {
    let stack = Stack::start(&[
        ("greeting.txt", "hello world\n"),
        (
            "test.sh",
            "grep -q 'hello berth' greeting.txt && echo PASS || { echo FAIL; exit 1; }\n",
        ),
    ])
    .await;
    stack.model.push([
        editor(
            "toolu_1",
            json!({"command": "view", "path": "/workspace/greeting.txt"}),
        ),
        Reply::turn(
            vec![ScriptBlock::ToolUse {
                id: "toolu_2".into(),
                name: "str_replace_based_edit_tool".into(),
                input: json!({"command": "str_replace", "path": "/workspace/greeting.txt",
                              "old_str": "hello world", "new_str": "hello berth"}),
                piece: 3,
            }],
            "tool_use",
        ),
        bash("toolu_3", "sh test.sh"),
        Reply::text("Changed the greeting; test.sh passes."),
    ]);
    let (mut server, client) = stack.server();
    let mut request = stack.task("Make the greeting say hello berth");
    request.open_pull_request = true;
    let (task, _) = client.create_task(&request, None).await.unwrap();
    let done = ended(&client, task.id).await;
    assert_eq!(done.status, TaskStatus::Succeeded, "{:?}", done.error);

    // Each step, in order.
    let log = events(&client, task.id).await;
    let steps: Vec<String> = log
        .iter()
        .filter(|e| {
            !matches!(
                e.kind,
                EventKind::Status | EventKind::Usage | EventKind::CommandOutput
            )
        })
        .map(|e| match e.kind {
            EventKind::ToolCall => format!(
                "call {}",
                e.payload["input"]["command"].as_str().unwrap_or("?")
            ),
            EventKind::ToolResult => format!("result error={}", e.payload["is_error"]),
            kind => kind.as_str().to_string(),
        })
        .collect();
    assert_eq!(
        steps,
        [
            "call view",
            "result error=false",
            "call str_replace",
            "result error=false",
            "call sh test.sh",
            "result error=false",
            "assistant_text",
            "result",
        ]
    );
    let output: String = log
        .iter()
        .filter(|e| e.kind == EventKind::CommandOutput)
        .map(|e| e.payload["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(output, "PASS\n");
    assert_eq!(log.iter().filter(|e| e.kind == EventKind::Usage).count(), 4);
    assert_eq!(done.usage.input_tokens, 400);
    assert_eq!(done.usage.output_tokens, 120);
    assert!(done.usage.cost_usd > 0.0, "priced from the table");

    // The model saw the file, then the test pass; nothing it was sent broke the API's rules.
    let requests = stack.model.requests();
    assert_eq!(requests.len(), 4);
    assert!(stack.model.rejections().is_empty());
    let viewed = &requests[1]["messages"][2]["content"][0];
    assert_eq!(viewed["tool_use_id"], "toolu_1");
    assert!(viewed["content"]
        .as_str()
        .unwrap()
        .contains("1\thello world"));
    assert!(requests[3]["messages"][6]["content"][0]["content"]
        .as_str()
        .unwrap()
        .contains("PASS"));

    // The diff, the pushed branch and the pull request.
    let diff = String::from_utf8(client.get_diff(task.id).await.unwrap()).unwrap();
    assert!(diff.contains("-hello world\n+hello berth\n"), "{diff}");
    let branch = done.result.branch.clone().expect("a branch");
    assert!(branch.starts_with("berth/"));
    assert_eq!(
        stack.git.file_at(REPO, &branch, "greeting.txt").as_deref(),
        Some("hello berth\n")
    );
    let pulls = stack.github.pulls();
    assert_eq!(pulls.len(), 1);
    assert_eq!(pulls[0].head, branch);
    assert_eq!(pulls[0].base, "main");
    assert_eq!(
        done.result.pull_request_url.as_deref(),
        Some(pulls[0].html_url.as_str())
    );
    let result = log.iter().find(|e| e.kind == EventKind::Result).unwrap();
    assert_eq!(
        result.payload["pull_request_url"],
        pulls[0].html_url.as_str()
    );
    let first_head = stack.git.branch_head(REPO, &branch).unwrap();

    // A follow-up continues the same conversation and workspace, on the same branch. The
    // model commits its change although told not to: the change still counts.
    stack.model.push([
        editor(
            "toolu_4",
            json!({"command": "insert", "path": "/workspace/greeting.txt",
                                 "insert_line": 1, "insert_text": "and goodbye"}),
        ),
        bash(
            "toolu_5",
            "git -c user.name=m -c user.email=m@m commit -qam 'the model commits anyway'",
        ),
        Reply::text("Added a goodbye."),
    ]);
    client
        .follow_up(task.id, "Also say goodbye on a second line", None)
        .await
        .unwrap();
    let again = ended(&client, task.id).await;
    assert_eq!(again.status, TaskStatus::Succeeded, "{:?}", again.error);
    let requests = stack.model.requests();
    let follow_up = &requests[4]["messages"];
    assert_eq!(
        follow_up.as_array().unwrap().len(),
        9,
        "the whole conversation, then the new prompt"
    );
    assert_eq!(
        follow_up[8]["content"][0]["text"],
        "Also say goodbye on a second line"
    );
    let diff = String::from_utf8(client.get_diff(task.id).await.unwrap()).unwrap();
    assert!(
        diff.contains("+hello berth\n+and goodbye\n"),
        "the first change is kept: {diff}"
    );
    assert_eq!(again.result.branch.as_deref(), Some(branch.as_str()));
    assert_eq!(
        stack.git.file_at(REPO, &branch, "greeting.txt").as_deref(),
        Some("hello berth\nand goodbye\n")
    );
    let log = stack.git.log(REPO, &branch);
    assert_eq!(
        log.len(),
        3,
        "initial commit, the task's commit, the follow-up's: {log:?}"
    );
    assert_eq!(
        stack.git.log(REPO, &first_head).len(),
        2,
        "the follow-up's commit sits on the first"
    );
    assert_eq!(
        stack
            .git
            .file_at(REPO, &format!("{branch}~1"), "greeting.txt")
            .as_deref(),
        Some("hello berth\n")
    );
    assert_eq!(stack.github.pulls().len(), 1, "the same pull request");
    assert_eq!(again.result.pull_request_url, done.result.pull_request_url);
    assert!(terminate(&mut server).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_reached_mid_task_ends_it_and_keeps_the_diff() {
    let stack = Stack::start(&[("README", "hi\n")]).await;
    stack.model.push([
        editor("toolu_1", json!({"command": "create", "path": "/workspace/notes/plan.md", "file_text": "step one\n"})),
        bash("toolu_2", "ls notes"),
        bash("toolu_3", "echo never"),
    ]);
    let (mut server, client) = stack.server();
    let mut request = stack.task("Write a plan");
    request.budget = Budget {
        max_turns: Some(2),
        ..Budget::default()
    };
    request.open_pull_request = true;
    let (task, _) = client.create_task(&request, None).await.unwrap();
    let done = ended(&client, task.id).await;
    assert_eq!(done.status, TaskStatus::Failed);
    assert!(
        done.error.as_deref().unwrap().contains("budget of 2 turns"),
        "{:?}",
        done.error
    );
    assert_eq!(stack.model.requests().len(), 2, "no third turn");
    assert_eq!(stack.model.pending(), 1);
    let diff = String::from_utf8(client.get_diff(task.id).await.unwrap()).unwrap();
    assert!(
        diff.contains("+++ b/notes/plan.md") && diff.contains("+step one"),
        "{diff}"
    );
    assert!(
        done.result.branch.is_none(),
        "an unfinished task is not pushed"
    );
    assert!(stack.github.pulls().is_empty());

    // Tokens and dollars: each fake turn counts 200 tokens and costs $0.00084 on Sonnet 4.5.
    for (budget, reason) in [
        (
            Budget {
                max_tokens: Some(250),
                ..Budget::default()
            },
            "budget of 250 tokens (400 used)",
        ),
        (
            Budget {
                max_usd: Some(0.001),
                ..Budget::default()
            },
            "budget of $0.001",
        ),
    ] {
        stack.model.push([
            bash("toolu_a", "true"),
            bash("toolu_b", "true"),
            bash("toolu_c", "true"),
        ]);
        let before = stack.model.requests().len();
        let mut request = stack.task("Spend");
        request.budget = budget;
        let (task, _) = client.create_task(&request, None).await.unwrap();
        let done = ended(&client, task.id).await;
        assert_eq!(done.status, TaskStatus::Failed);
        assert!(
            done.error.as_deref().unwrap().contains(reason),
            "{:?}",
            done.error
        );
        assert_eq!(
            stack.model.requests().len() - before,
            2,
            "stopped before a third turn"
        );
    }
    assert!(terminate(&mut server).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_task_stops_its_command_and_keeps_its_work() {
    let stack = Stack::start(&[("README", "hi\n")]).await;
    stack.model.push([
        editor(
            "toolu_1",
            json!({"command": "create", "path": "/workspace/notes.md", "file_text": "half done\n"}),
        ),
        bash("toolu_2", "echo working; sleep 600"),
        Reply::text("Never asked for."),
    ]);
    let (mut server, client) = stack.server();
    let (task, _) = client
        .create_task(&stack.task("Work for a long time"), None)
        .await
        .unwrap();
    eventually(
        Duration::from_secs(120),
        "the long command runs",
        || async {
            events(&client, task.id)
                .await
                .iter()
                .any(|e| e.kind == EventKind::CommandOutput && e.payload["text"] == "working\n")
        },
    )
    .await;
    assert_eq!(containers_of(task.id).len(), 1);

    client.cancel_task(task.id).await.unwrap();
    let done = ended(&client, task.id).await;
    assert_eq!(done.status, TaskStatus::Cancelled, "{:?}", done.error);
    // The command would have ended after the 60 s command timeout and the model been asked
    // again; the cancel stopped it first.
    assert_eq!(stack.model.requests().len(), 2, "no turn after the cancel");
    let log = events(&client, task.id).await;
    assert!(
        !log.iter()
            .any(|e| e.kind == EventKind::ToolResult && e.payload["tool_use_id"] == "toolu_2"),
        "the stopped command has no result"
    );
    assert_eq!(log.last().unwrap().payload["status"], "cancelled");
    let diff = String::from_utf8(client.get_diff(task.id).await.unwrap()).unwrap();
    assert!(
        diff.contains("+half done"),
        "the work so far is kept: {diff}"
    );
    eventually(
        Duration::from_secs(30),
        "the container is removed",
        || async { containers_of(task.id).is_empty() },
    )
    .await;
    assert!(terminate(&mut server).success());
}
