//! The phone app end to end, on SQLite and PostgreSQL: headless chromium on a 390×844 phone
//! screen against the real `berth server` with its runner, the agent on the real Docker
//! engine, the fake model, a local git server and the fake GitHub. A person signs in with a
//! token, starts a task with the app's form, follows it live to its pull request, reads the
//! diff, replies and follows the second run, cancels a long task (its container goes), and
//! keeps following a task while the server restarts under the page.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use berth_client::Client;
use berth_proto::{CreateTask, TaskId, TaskStatus};
use berth_testkit::anthropic::{FakeAnthropic, Reply, ScriptBlock};
use berth_testkit::chromium::{text, Chromium, PHONE};
use berth_testkit::db::{Backend, TestDb};
use berth_testkit::{on_both_backends, FakeGitHubApi, GitServer};
use serde_json::json;

use crate::common::{berth, eventually, start_server, terminate, Process};
use crate::{bash, containers_of, editor, ended, GITHUB_TOKEN, MODEL_KEY, REPO};

on_both_backends!(a_phone_starts_follows_reviews_replies_cancels_and_survives_a_restart);

/// Long enough for a container to start and the agent to take a few turns.
const WORK: Duration = Duration::from_secs(120);

struct Scene {
    model: FakeAnthropic,
    git: GitServer,
    github: FakeGitHubApi,
    repo_url: String,
    db: TestDb,
}

impl Scene {
    async fn on(backend: &Backend) -> Scene {
        let model = FakeAnthropic::start(MODEL_KEY).await;
        let git = GitServer::start().await;
        let repo_url = git.create_repo(
            REPO,
            &[
                ("greeting.txt", "hello world\n"),
                (
                    "test.sh",
                    "grep -q 'hello berth' greeting.txt && echo PASS || { echo FAIL; exit 1; }\n",
                ),
            ],
        );
        git.require_token(GITHUB_TOKEN);
        let github = FakeGitHubApi::start(GITHUB_TOKEN).await;
        let db = TestDb::new(backend).await;
        Scene {
            model,
            git,
            github,
            repo_url,
            db,
        }
    }

    /// `berth ARGS` on the test's database.
    fn berth(&self, args: &[&str]) -> Command {
        let mut command = berth(self.db.scratch());
        command.args(args).arg("--data-dir").arg(self.data_dir());
        if let Some(url) = &self.db.url {
            command.env("BERTH_DATABASE_URL", url);
        }
        command
    }

    fn data_dir(&self) -> PathBuf {
        self.db.data_dir()
    }

    /// The server with its runner, listening on `listen`; its URL.
    fn server(&self, listen: &str) -> (Process, String) {
        let mut server = self.berth(&["server", "--listen", listen]);
        server
            .env("BERTH_GIT_ALLOWED_HOSTS", self.git.url())
            .env("ANTHROPIC_API_KEY", MODEL_KEY)
            .env("ANTHROPIC_BASE_URL", &self.model.url)
            .env("BERTH_GITHUB_WEB_URL", self.git.url())
            .env("BERTH_GITHUB_API_URL", self.github.url())
            .env("BERTH_GITHUB_TOKEN", GITHUB_TOKEN)
            .env("BERTH_AGENT_COMMAND_TIMEOUT_SECS", "60")
            .env("BERTH_RUNNER_LEASE_SECS", "3")
            .env("BERTH_RUNNER_CAPACITY", "1");
        let (child, url, _) = start_server(server);
        (child, url)
    }

    /// An API token for `alice`, made on the command line.
    fn token(&self) -> String {
        let output = self
            .berth(&["token", "create", "--user", "alice"])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap().trim().to_string()
    }
}

/// The output of the first command of a task view.
const OUTPUT: &str = "#steps details.step.command pre.output";

/// Waits until the page shows `wanted` in the element `selector` names, for as long as real
/// work may take.
async fn shows(chromium: &mut Chromium, tab: &str, selector: &str, wanted: &str) -> String {
    chromium
        .wait_for_within(tab, &text(selector), wanted, WORK)
        .await
}

/// The task the page shows (from its address).
async fn shown_task(chromium: &mut Chromium, tab: &str) -> TaskId {
    let hash = chromium.wait_for(tab, "location.hash", "#/task/").await;
    hash.trim_start_matches("#/task/").parse().unwrap()
}

async fn a_phone_starts_follows_reviews_replies_cancels_and_survives_a_restart(backend: Backend) {
    let Some(mut chromium) = Chromium::launch().await else {
        return;
    };
    let scene = Scene::on(&backend).await;
    let token = scene.token();
    let (server, url) = scene.server("127.0.0.1:0");
    let client = Client::new(&url, Some(token.clone())).unwrap();
    let tab = chromium.open_on(&format!("{url}/"), PHONE).await;

    // Signing in: a wrong token is refused, then the right one.
    chromium.fill(&tab, "#token", "berth_not-a-token").await;
    chromium.click(&tab, "#token-form button").await;
    shows(&mut chromium, &tab, "#signin-status", "unknown or revoked").await;
    chromium.fill(&tab, "#token", &token).await;
    chromium.click(&tab, "#token-form button").await;
    shows(&mut chromium, &tab, "#who", "alice").await;

    // A task made with the form, asking for a pull request.
    scene.model.push([
        Reply::turn(
            vec![
                ScriptBlock::Text("Let me read the greeting first.".into()),
                ScriptBlock::ToolUse {
                    id: "toolu_1".into(),
                    name: "str_replace_based_edit_tool".into(),
                    input: json!({"command": "view", "path": "/workspace/greeting.txt"}),
                    piece: 16,
                },
            ],
            "tool_use",
        ),
        editor(
            "toolu_2",
            json!({"command": "str_replace", "path": "/workspace/greeting.txt",
                   "old_str": "hello world", "new_str": "hello berth"}),
        ),
        bash("toolu_3", "sh test.sh"),
        Reply::text("Changed the greeting; test.sh passes."),
    ]);
    chromium.click(&tab, "a[href='#/new']").await;
    chromium.fill(&tab, "#repo", &scene.repo_url).await;
    chromium
        .fill(&tab, "#prompt", "Make the greeting say hello berth")
        .await;
    chromium.click(&tab, "details.options summary").await;
    chromium.click(&tab, "#open-pr").await;
    chromium.click(&tab, "#create").await;
    let id = shown_task(&mut chromium, &tab).await;

    // Followed live to its end: the model's text, the read, the edit as a diff, the command
    // with its output folded, the summary, the branch and the pull request.
    shows(&mut chromium, &tab, "#steps", "● succeeded").await;
    let steps = chromium.text_of(&tab, &text("#steps")).await;
    for wanted in [
        "Let me read the greeting first.",
        "Read /workspace/greeting.txt",
        "Edited /workspace/greeting.txt",
        "- hello world",
        "+ hello berth",
        "$ sh test.sh",
        "PASS",
        "Changed the greeting; test.sh passes.",
    ] {
        assert!(steps.contains(wanted), "{wanted:?} in {steps:?}");
    }
    let folded = "document.querySelector('details.step.command').open";
    assert_eq!(chromium.eval(&tab, folded).await, json!(false));
    let done = client.get_task(id).await.unwrap();
    assert_eq!(done.status, TaskStatus::Succeeded, "{:?}", done.error);
    let branch = done.result.branch.clone().expect("a branch");
    let pulls = scene.github.pulls();
    assert_eq!(pulls.len(), 1);
    let facts = shows(&mut chromium, &tab, "#facts", "Statussucceeded").await;
    assert!(facts.contains("Turns4"), "{facts:?}");
    let number = pulls[0].html_url.rsplit('/').next().unwrap();
    for wanted in [
        format!("Branch{branch}"),
        "Repositoryacme/widgets".into(),
        format!("Pull request{REPO}/pull/{number}"),
    ] {
        assert!(facts.contains(&wanted), "{wanted:?} in {facts:?}");
    }
    let link = "document.querySelector('#pull-request').href";
    assert_eq!(chromium.eval(&tab, link).await, json!(pulls[0].html_url));
    shows(&mut chromium, &tab, "#summary", "test.sh passes").await;

    // The diff, file by file, readable on the phone.
    shows(&mut chromium, &tab, "#diff", "greeting.txt+1 −1").await;
    chromium.click(&tab, "#diff details.file summary").await;
    shows(
        &mut chromium,
        &tab,
        "#diff details.file[open]",
        "+hello berth",
    )
    .await;
    let wide = "document.documentElement.scrollWidth";
    assert_eq!(chromium.eval(&tab, wide).await, json!(390));

    // A reply runs the same task again; the page follows the second run.
    scene.model.push([
        editor(
            "toolu_4",
            json!({"command": "insert", "path": "/workspace/greeting.txt",
                   "insert_line": 1, "insert_text": "and goodbye"}),
        ),
        Reply::text("Added a goodbye."),
    ]);
    chromium
        .fill(&tab, "#reply-text", "Also say goodbye on a second line")
        .await;
    chromium.click(&tab, "#reply button").await;
    shows(&mut chromium, &tab, "#summary", "Added a goodbye.").await;
    shows(&mut chromium, &tab, "#diff", "greeting.txt+2 −1").await;
    let steps = chromium.text_of(&tab, &text("#steps")).await;
    assert_eq!(steps.matches("test.sh passes").count(), 1, "{steps:?}");
    assert_eq!(steps.matches("● succeeded").count(), 2, "{steps:?}");
    assert!(steps.contains("+ and goodbye"), "{steps:?}");
    assert_eq!(
        scene.git.file_at(REPO, &branch, "greeting.txt").as_deref(),
        Some("hello berth\nand goodbye\n")
    );
    assert_eq!(scene.github.pulls().len(), 1, "the same pull request");
    let requests = scene.model.requests();
    assert_eq!(requests.len(), 6);
    assert_eq!(
        requests[4]["messages"][8]["content"][0]["text"],
        "Also say goodbye on a second line"
    );

    // A long task, opened from the live list and cancelled from its view: its container goes.
    scene
        .model
        .push([bash("toolu_5", "echo working; sleep 600")]);
    chromium.click(&tab, "a.back").await;
    let request = CreateTask::new(&scene.repo_url, "Work for a long time");
    let (long, _) = client.create_task(&request, None).await.unwrap();
    chromium
        .click(&tab, &format!("#tasks a[href='#/task/{}']", long.id))
        .await;
    shows(&mut chromium, &tab, OUTPUT, "working").await;
    assert_eq!(containers_of(long.id).len(), 1);
    chromium.click(&tab, "#cancel").await;
    shows(&mut chromium, &tab, "#steps", "● cancelled").await;
    shows(&mut chromium, &tab, "#facts", "cancelled").await;
    assert_eq!(ended(&client, long.id).await.status, TaskStatus::Cancelled);
    eventually(
        Duration::from_secs(30),
        "the container is removed",
        || async { containers_of(long.id).is_empty() },
    )
    .await;

    survives_a_restart(&scene, &mut chromium, &tab, server, &url, &client).await;
}

/// The server stops under an open task view while the task's command runs: the runner drains
/// (the task ends meanwhile), the page says it is reconnecting, and once the server is back
/// on the same address the page shows what happened meanwhile — exactly what a fresh page of
/// the task shows, nothing missed and nothing twice.
async fn survives_a_restart(
    scene: &Scene,
    chromium: &mut Chromium,
    tab: &str,
    mut server: Process,
    url: &str,
    client: &Client,
) {
    scene.model.push([
        bash("toolu_6", "echo before; sleep 5; echo after"),
        Reply::text("Waited through a restart."),
    ]);
    let request = CreateTask::new(&scene.repo_url, "Wait a little");
    let (task, _) = client.create_task(&request, None).await.unwrap();
    let address = format!("{url}/#/task/{}", task.id);
    chromium
        .call("Page.navigate", json!({ "url": address }), Some(tab))
        .await;
    shows(chromium, tab, OUTPUT, "before").await;
    assert!(terminate(&mut server).success());
    shows(chromium, tab, "#connection", "reconnecting").await;
    let listen = url.trim_start_matches("http://");
    let (mut server, _) = scene.server(listen);
    shows(chromium, tab, "#steps", "Waited through a restart.").await;
    shows(chromium, tab, "#steps", "● succeeded").await;
    let output = chromium.text_of(tab, &text(OUTPUT)).await;
    assert_eq!(output, "before\nafter\n");
    let followed = chromium.text_of(tab, &text("#steps")).await;
    assert_eq!(
        client.get_task(task.id).await.unwrap().status,
        TaskStatus::Succeeded
    );

    chromium.call("Page.reload", json!({}), Some(tab)).await;
    shows(chromium, tab, "#steps", "● succeeded").await;
    let fresh = chromium.text_of(tab, &text("#steps")).await;
    assert_eq!(
        followed, fresh,
        "the followed page shows what a fresh one does"
    );
    assert!(terminate(&mut server).success());
}
