//! The agent end to end, as processes on the real Docker engine: `berth server` with the fake
//! Anthropic API, a local git server speaking smart HTTP (clone and push, token required) and
//! a fake GitHub REST API for pull requests. One module per capability; this file holds the
//! stack they share. `github` brings its own: the server as the fake GitHub's App, on SQLite
//! and PostgreSQL; so does `web`, the phone app in headless chromium.

#[path = "../common/mod.rs"]
mod common;

mod claude_code;
mod github;
mod live;
mod model;
mod results;
mod sandbox;
mod web;

use std::time::Duration;

use berth_client::Client;
use berth_proto::{CreateTask, Event, Task};
use berth_testkit::anthropic::{FakeAnthropic, Reply};
use berth_testkit::git_server::GitServer;
use berth_testkit::github_api::FakeGitHubApi;
use common::{berth, eventually, start_server, token, Process};
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

    fn server(&self) -> (Process, Client) {
        self.server_with(&[])
    }

    /// The server with more settings in its environment.
    fn server_with(&self, settings: &[(&str, &str)]) -> (Process, Client) {
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
        (child, client)
    }

    fn task(&self, prompt: &str) -> CreateTask {
        CreateTask::new(&self.repo_url, prompt)
    }
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

/// Containers of the task on the engine, running or not.
fn containers_of(task: berth_proto::TaskId) -> Vec<String> {
    common::containers_labelled(&format!("berth.task={task}"))
}
