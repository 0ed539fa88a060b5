//! The agent end to end, as processes on the real Docker engine: `berth server` with the fake
//! Anthropic API, a local git server speaking smart HTTP (clone and push, token required) and
//! a fake GitHub REST API for pull requests.

mod common;

use std::process::Child;
use std::time::Duration;

use berth_client::Client;
use berth_proto::{Budget, CreateTask, Event, EventKind, StreamFrame, Task, TaskStatus};
use berth_testkit::anthropic::{FakeAnthropic, Reply, ScriptBlock};
use berth_testkit::git_server::GitServer;
use berth_testkit::github_api::FakeGitHubApi;
use common::{berth, eventually, start_server, terminate};
use serde_json::{json, Value};

const MODEL_KEY: &str = "sk-ant-test-0123456789abcdef";
const GITHUB_TOKEN: &str = "ghp_servertoken0123456789";
const CONFIGURED_SECRET: &str = "supersecretvalue42";
const REPO: &str = "acme/widgets";

struct Stack {
    model: FakeAnthropic,
    git: GitServer,
    github: FakeGitHubApi,
    repo_url: String,
    dir: tempfile::TempDir,
    token: String,
}

impl Stack {
    async fn start(files: &[(&str, &str)]) -> Stack {
        let model = FakeAnthropic::start(MODEL_KEY).await;
        let git = GitServer::start().await;
        let repo_url = git.create_repo(REPO, files);
        git.require_token(GITHUB_TOKEN);
        let github = FakeGitHubApi::start(GITHUB_TOKEN).await;
        let dir = tempfile::tempdir().unwrap();
        let token = token(dir.path());
        Stack {
            model,
            git,
            github,
            repo_url,
            dir,
            token,
        }
    }

    fn server(&self) -> (Server, Client) {
        self.server_with(&[])
    }

    /// The server with more settings in its environment.
    fn server_with(&self, settings: &[(&str, &str)]) -> (Server, Client) {
        let mut server = berth(self.dir.path());
        server.envs(settings.iter().copied());
        server
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir", "state"])
            .env("BERTH_GIT_ALLOWED_HOSTS", self.git.url())
            .env("ANTHROPIC_API_KEY", MODEL_KEY)
            .env("ANTHROPIC_BASE_URL", &self.model.url)
            .env("BERTH_GITHUB_WEB_URL", self.git.url())
            .env("BERTH_GITHUB_API_URL", self.github.url())
            .env("BERTH_GITHUB_TOKEN", GITHUB_TOKEN)
            .env("BERTH_REDACT_SECRETS", format!("[\"{CONFIGURED_SECRET}\"]"))
            .env("BERTH_AGENT_COMMAND_TIMEOUT_SECS", "60")
            .env("BERTH_RUNNER_LEASE_SECS", "3")
            .env("BERTH_RUNNER_CAPACITY", "1");
        let (child, url, _) = start_server(server);
        let client = Client::new(&url, Some(self.token.clone())).unwrap();
        (Server(child), client)
    }

    fn task(&self, prompt: &str) -> CreateTask {
        CreateTask::new(&self.repo_url, prompt)
    }
}

/// A server process, killed if a failing test leaves it running.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn token(dir: &std::path::Path) -> String {
    let output = berth(dir)
        .args(["token", "create", "--user", "alice", "--data-dir", "state"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

async fn ended(client: &Client, id: berth_proto::TaskId) -> Task {
    eventually(Duration::from_secs(120), "the task ends", || async {
        client.get_task(id).await.unwrap().status.is_terminal()
    })
    .await;
    client.get_task(id).await.unwrap()
}

async fn events(client: &Client, id: berth_proto::TaskId) -> Vec<Event> {
    client.list_events(id, 0, Some(1000)).await.unwrap().events
}

fn editor(id: &str, input: Value) -> Reply {
    Reply::tool(id, "str_replace_based_edit_tool", input)
}

fn bash(id: &str, command: &str) -> Reply {
    Reply::tool(id, "bash", json!({ "command": command }))
}

/// The tool results the model was sent in its latest request, by tool_use id.
fn results_sent(model: &FakeAnthropic) -> Vec<Value> {
    let requests = model.requests();
    let last = requests.last().unwrap();
    let messages = last["messages"].as_array().unwrap();
    messages.last().unwrap()["content"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["type"] == "tool_result")
        .cloned()
        .collect()
}

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
    assert!(terminate(&mut server.0).success());
}

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
    assert!(terminate(&mut server.0).success());
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
    assert!(terminate(&mut server.0).success());
}

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
    assert!(terminate(&mut server.0).success());
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
        if let StreamFrame::Event { event } = frame.unwrap() {
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
    assert!(terminate(&mut server.0).success());
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
    assert!(terminate(&mut server.0).success());
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
    server.0.kill().unwrap();
    server.0.wait().unwrap();

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
    assert!(terminate(&mut server.0).success());
}

/// Containers of the task on the engine, running or not.
fn containers_of(task: berth_proto::TaskId) -> Vec<String> {
    let output = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label=berth.task={task}")])
        .output()
        .unwrap();
    assert!(output.status.success(), "docker ps runs");
    String::from_utf8(output.stdout)
        .unwrap()
        .split_whitespace()
        .map(str::to_string)
        .collect()
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
    assert!(terminate(&mut server.0).success());
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
    assert!(terminate(&mut server.0).success());
}
