//! `berth server` with `sandbox_backend = "fly"`: its runner makes each task's sandbox through
//! the Machines API (here the testkit's fake, whose machines are containers of the real image)
//! and needs no Docker engine of its own; a task asking for no network is refused.

mod common;

use std::time::Duration;

use berth_client::Client;
use berth_proto::{CreateTask, Network, Task, TaskId, TaskStatus};
use berth_testkit::git_server::GitServer;
use berth_testkit::FakeFlyApi;
use common::{berth, eventually, start_server, terminate, token};

async fn ended(client: &Client, id: TaskId) -> Task {
    eventually(Duration::from_secs(120), "the task ends", || async {
        client.get_task(id).await.unwrap().status.is_terminal()
    })
    .await;
    client.get_task(id).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_on_fly_runs_tasks_in_machines_and_refuses_network_none() {
    let fly = FakeFlyApi::start().await;
    let git = GitServer::start().await;
    let repo_url = git.create_repo("acme/tool", &[("README", "hello\n")]);
    let dir = tempfile::tempdir().unwrap();
    let token = token(dir.path());
    let mut server = berth(dir.path());
    server
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir", "state"])
        .env("BERTH_GIT_ALLOWED_HOSTS", git.url())
        .env("BERTH_RUNNER_COMMAND", "echo bye >> README")
        .env("BERTH_SANDBOX_BACKEND", "fly")
        .env("BERTH_FLY_API_URL", &fly.url)
        .env("BERTH_FLY_APP", &fly.app)
        .env("BERTH_FLY_API_TOKEN", &fly.token)
        .env("BERTH_FLY_IMAGE", berth_sandbox::default_image())
        // The runner reaches no engine of its own: only the fake's machines run tasks.
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock");
    let (mut server, url, _) = start_server(server);
    let client = Client::new(&url, Some(token)).unwrap();

    let request = CreateTask {
        network: Some(Network::Full),
        ..CreateTask::new(&repo_url, "append bye")
    };
    let (task, _) = client.create_task(&request, None).await.unwrap();
    let done = ended(&client, task.id).await;
    assert_eq!(done.status, TaskStatus::Succeeded, "{:?}", done.error);
    let diff = String::from_utf8(client.get_diff(task.id).await.unwrap()).unwrap();
    assert!(diff.contains("+bye"), "{diff}");
    assert!(fly
        .requests()
        .iter()
        .any(|r| r == "POST /machines/{id}/exec"));
    assert!(
        fly.machines().is_empty(),
        "the task's machine was destroyed"
    );

    let made = fly.requests().len();
    let (task, _) = client
        .create_task(&CreateTask::new(&repo_url, "no network"), None)
        .await
        .unwrap();
    let done = ended(&client, task.id).await;
    assert_eq!(done.status, TaskStatus::Failed);
    let reason = done.error.unwrap();
    assert!(reason.contains("network none"), "{reason}");
    let after: Vec<String> = fly.requests()[made..].to_vec();
    assert!(!after.iter().any(|r| r == "POST /machines"), "{after:?}");
    assert!(terminate(&mut server).success());
}
