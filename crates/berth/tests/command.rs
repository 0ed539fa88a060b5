//! Tasks run as the configured `runner_command`, as processes on the real Docker engine, with
//! the testkit's git server and GitHub API: the command gets the same attempt lifecycle as
//! the agent — the repository's setup command first, follow-ups on the restored workspace,
//! and a pull request that a follow-up updates.

mod common;

use std::path::Path;
use std::time::Duration;

use berth_client::Client;
use berth_proto::{CreateTask, Event, EventKind, Task, TaskId, TaskStatus};
use berth_testkit::git_server::GitServer;
use berth_testkit::github_api::FakeGitHubApi;
use common::{berth, eventually, start_server, terminate, token, Process};

const GITHUB_TOKEN: &str = "ghp_servertoken0123456789";
const REPO: &str = "acme/tool";

/// `berth server` on data in `dir`, running `command` as each task, with alice's client.
fn server_running(
    dir: &Path,
    git: &GitServer,
    command: &str,
    settings: &[(&str, &str)],
) -> (Process, Client) {
    let token = token(dir);
    let mut server = berth(dir);
    server
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir", "state"])
        .env("BERTH_GIT_ALLOWED_HOSTS", git.url())
        .env("BERTH_RUNNER_COMMAND", command)
        .envs(settings.iter().copied());
    let (child, url, _) = start_server(server);
    (child, Client::new(&url, Some(token)).unwrap())
}

async fn ended(client: &Client, id: TaskId) -> Task {
    eventually(Duration::from_secs(120), "the task ends", || async {
        client.get_task(id).await.unwrap().status.is_terminal()
    })
    .await;
    client.get_task(id).await.unwrap()
}

async fn events(client: &Client, id: TaskId) -> Vec<Event> {
    client.list_events(id, 0, Some(1000)).await.unwrap().events
}

async fn diff(client: &Client, id: TaskId) -> String {
    String::from_utf8(client.get_diff(id).await.unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_task_runs_the_setup_command_first() {
    let git = GitServer::start().await;
    let repo_url = git.create_repo(REPO, &[("README", "hello\n")]);
    let dir = tempfile::tempdir().unwrap();
    let setup = format!(
        "[setup_commands]\n\"{}/acme/\" = \"echo prepared > .setup-marker && echo setting up\"\n",
        git.url()
    );
    std::fs::write(dir.path().join("berth.toml"), setup).unwrap();
    let command = "cat .setup-marker && echo bye >> README";
    let (mut server, client) = server_running(dir.path(), &git, command, &[]);

    let (task, _) = client
        .create_task(&CreateTask::new(&repo_url, "append bye"), None)
        .await
        .unwrap();
    let done = ended(&client, task.id).await;
    assert_eq!(done.status, TaskStatus::Succeeded, "{:?}", done.error);
    let log = events(&client, task.id).await;
    let calls: Vec<&str> = log
        .iter()
        .filter(|e| e.kind == EventKind::ToolCall)
        .map(|e| e.payload["name"].as_str().unwrap())
        .collect();
    assert_eq!(calls, ["setup", "bash"]);
    let output_of = |tool_use_id: Option<&str>| -> String {
        log.iter()
            .filter(|e| e.kind == EventKind::CommandOutput)
            .filter(|e| e.payload["tool_use_id"].as_str() == tool_use_id)
            .map(|e| e.payload["text"].as_str().unwrap())
            .collect()
    };
    assert_eq!(output_of(Some("setup")), "setting up\n");
    assert_eq!(
        output_of(None),
        "prepared\n",
        "the command saw the setup's work"
    );
    assert!(diff(&client, task.id).await.contains("+bye"));
    assert!(terminate(&mut server).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_up_of_a_command_task_runs_on_its_restored_workspace_and_updates_its_pull_request()
{
    let git = GitServer::start().await;
    let repo_url = git.create_repo(REPO, &[("README", "hello\n")]);
    git.require_token(GITHUB_TOKEN);
    let github = FakeGitHubApi::start(GITHUB_TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    // Each run counts the runs before it from the workspace it finds.
    let command = "n=$(( $(cat runs 2>/dev/null || echo 0) + 1 )); echo $n > runs; \
                   echo \"run $n\" >> README";
    let settings = [
        ("BERTH_GITHUB_WEB_URL", git.url()),
        ("BERTH_GITHUB_API_URL", github.url()),
        ("BERTH_GITHUB_TOKEN", GITHUB_TOKEN),
    ];
    let (mut server, client) = server_running(dir.path(), &git, command, &settings);

    let mut request = CreateTask::new(&repo_url, "count the runs");
    request.open_pull_request = true;
    let (task, _) = client.create_task(&request, None).await.unwrap();
    let done = ended(&client, task.id).await;
    assert_eq!(done.status, TaskStatus::Succeeded, "{:?}", done.error);
    let branch = done.result.branch.clone().expect("a pushed branch");
    assert_eq!(
        git.file_at(REPO, &branch, "README").as_deref(),
        Some("hello\nrun 1\n")
    );
    let pulls = github.pulls();
    assert_eq!(pulls.len(), 1);
    assert_eq!(pulls[0].head, branch);
    assert_eq!(
        done.result.pull_request_url.as_deref(),
        Some(pulls[0].html_url.as_str())
    );

    client.follow_up(task.id, "once more", None).await.unwrap();
    let again = ended(&client, task.id).await;
    assert_eq!(again.status, TaskStatus::Succeeded, "{:?}", again.error);
    let diff = diff(&client, task.id).await;
    assert!(
        diff.contains("+run 1\n+run 2\n"),
        "both runs' changes: {diff}"
    );
    assert!(
        diff.contains("+2\n"),
        "the second run found the first's count: {diff}"
    );
    assert_eq!(again.result.branch.as_deref(), Some(branch.as_str()));
    assert_eq!(
        git.file_at(REPO, &branch, "README").as_deref(),
        Some("hello\nrun 1\nrun 2\n")
    );
    assert_eq!(
        git.log(REPO, &branch).len(),
        3,
        "initial, first run, follow-up"
    );
    assert_eq!(github.pulls().len(), 1, "the same pull request");
    assert_eq!(again.result.pull_request_url, done.result.pull_request_url);
    let results: Vec<Event> = events(&client, task.id)
        .await
        .into_iter()
        .filter(|e| e.kind == EventKind::Result)
        .collect();
    assert_eq!(results.len(), 2, "one result per request");
    assert_eq!(results[1].payload["branch"], branch.as_str());
    assert!(terminate(&mut server).success());
}

/// A server whose `berth.toml` makes the allow-list the default: a task naming no network
/// reaches the allowed name (pinned to the git server on this machine) through the runner's
/// egress proxy, with git taking the proxy from its environment, and nothing else; both show
/// in its events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_on_the_default_allowlist_reaches_only_the_allowed_names() {
    let git = GitServer::start().await;
    let repo_url = git.create_repo(REPO, &[("README", "hello\n")]);
    let port = git.url().rsplit(':').next().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let config = "default_network = \"allowlist\"\n\
                  egress_allowed_domains = [\"pkg.berth.test\", \
                  { domain = \"api.berth.test\", methods = [\"GET\"] }]\n\
                  [egress_pinned_hosts]\n\"pkg.berth.test\" = \"127.0.0.1\"\n";
    std::fs::write(dir.path().join("berth.toml"), config).unwrap();
    let command = format!(
        "git ls-remote http://pkg.berth.test:{port}/{REPO}.git HEAD >/dev/null && echo reached; \
         perl -MHTTP::Tiny -e 'print HTTP::Tiny->new->get(q(http://elsewhere.berth.test/))->{{status}}'"
    );
    let (mut server, client) = server_running(dir.path(), &git, &command, &[]);

    let (task, _) = client
        .create_task(&CreateTask::new(&repo_url, "look around"), None)
        .await
        .unwrap();
    assert_eq!(task.network, berth_proto::Network::Allowlist);
    let done = ended(&client, task.id).await;
    assert_eq!(done.status, TaskStatus::Succeeded, "{:?}", done.error);
    let log = events(&client, task.id).await;
    let output: String = log
        .iter()
        .filter(|e| e.kind == EventKind::CommandOutput)
        .map(|e| e.payload["text"].as_str().unwrap())
        .collect();
    assert!(output.contains("reached\n403"), "{output}");
    let egress: Vec<&serde_json::Value> = log
        .iter()
        .filter(|e| e.kind == EventKind::Egress)
        .map(|e| &e.payload)
        .collect();
    let (allowed, refused): (Vec<&serde_json::Value>, Vec<&serde_json::Value>) =
        egress.into_iter().partition(|p| p["allowed"] == true);
    assert!(!allowed.is_empty());
    assert!(
        allowed.iter().all(|p| p["host"] == "pkg.berth.test"),
        "{allowed:?}"
    );
    assert_eq!(
        refused,
        [&serde_json::json!({
            "host": "elsewhere.berth.test", "port": 80, "method": "GET", "allowed": false,
            "reason": "elsewhere.berth.test is not an allowed domain",
        })]
    );
    terminate(&mut server);
}
