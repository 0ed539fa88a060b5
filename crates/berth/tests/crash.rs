//! Runners that die, as processes with the default configuration, on SQLite and PostgreSQL:
//! killed with SIGKILL mid-task, another runner finishes the task and removes the dead one's
//! container, whatever node id it had; a server started again on its data directory is the
//! same node, and hands back the attempt its earlier run lost at once.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use berth_client::Client;
use berth_proto::{CreateTask, EventKind, TaskId, TaskStatus};
use berth_testkit::db::{Backend, TestDb};
use berth_testkit::on_both_backends;
use common::{
    berth, containers_labelled, eventually, signal, start_runner, start_server, terminate, GitRepo,
    Process,
};

on_both_backends!(
    a_dead_runners_task_and_container_are_taken_care_of_by_another_node,
    a_server_started_again_hands_back_its_lost_attempt_at_once,
);

/// Long enough to be killed in the middle of.
const COMMAND: &str = "sleep 15; echo finished >> README";

/// `berth ARGS` on the test's database: `data_dir` under `dir`, and on PostgreSQL the test's
/// own database.
fn berth_on(db: &TestDb, dir: &Path, data_dir: &str, repo: &GitRepo, args: &[&str]) -> Command {
    let mut command = berth(dir);
    command
        .args(args)
        .args(["--data-dir", data_dir])
        .env("BERTH_GIT_ALLOWED_HOSTS", &repo.allowed_host)
        .env("BERTH_RUNNER_COMMAND", COMMAND);
    if let Some(url) = &db.url {
        command.env("BERTH_DATABASE_URL", url);
    }
    command
}

fn token(db: &TestDb, dir: &Path, repo: &GitRepo) -> String {
    let output = berth_on(
        db,
        dir,
        "state",
        repo,
        &["token", "create", "--user", "alice"],
    )
    .output()
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

async fn wait_for(client: &Client, id: TaskId, status: TaskStatus, limit: u64) {
    eventually(
        Duration::from_secs(limit),
        &format!("task {status}"),
        || async { client.get_task(id).await.unwrap().status == status },
    )
    .await;
}

fn containers_of(id: TaskId, attempt: i64) -> usize {
    containers_labelled(&format!("berth.task={id}"))
        .iter()
        .filter(|container| {
            let output = Command::new("docker")
                .args([
                    "inspect",
                    "-f",
                    "{{index .Config.Labels \"berth.attempt\"}}",
                    container,
                ])
                .output()
                .unwrap();
            String::from_utf8_lossy(&output.stdout).trim() == attempt.to_string()
        })
        .count()
}

/// The reasons the task's status events gave, in order.
async fn reasons(client: &Client, id: TaskId) -> Vec<String> {
    let events = client.list_events(id, 0, None).await.unwrap().events;
    events
        .iter()
        .filter(|event| event.kind == EventKind::Status)
        .filter_map(|event| event.payload["reason"].as_str().map(str::to_string))
        .collect()
}

async fn a_dead_runners_task_and_container_are_taken_care_of_by_another_node(backend: Backend) {
    let db = TestDb::new(&backend).await;
    let repo = GitRepo::serve(&[("README", "hello\n")]).await;
    let dir = tempfile::tempdir().unwrap();
    let token = token(&db, dir.path(), &repo);
    let api = berth_on(
        &db,
        dir.path(),
        "state",
        &repo,
        &["server", "--no-runner", "--listen", "127.0.0.1:0"],
    );
    let (mut api, url, _) = start_server(api);
    let client = Client::new(&url, Some(token)).unwrap();
    // On PostgreSQL the second runner has a data directory of its own, as another machine
    // would; on SQLite the database is in the data directory, so both share it, and the
    // second takes an id of its own beside the first's.
    let second_dir = if db.url.is_some() { "other" } else { "state" };

    let doomed = berth_on(&db, dir.path(), "state", &repo, &["runner"]);
    let mut doomed = start_runner(doomed);
    let (task, _) = client
        .create_task(&CreateTask::new(&repo.url, "slow work"), None)
        .await
        .unwrap();
    wait_for(&client, task.id, TaskStatus::Running, 60).await;
    eventually(
        Duration::from_secs(60),
        "the first attempt's container",
        || async { containers_of(task.id, 1) == 1 },
    )
    .await;
    let other = berth_on(&db, dir.path(), second_dir, &repo, &["runner"]);
    let mut other: Process = start_runner(other);
    signal(&doomed, "-KILL");
    doomed.wait().unwrap();

    // Within a lease (30 s) and a reap interval (5 s), and some slack for a loaded machine.
    eventually(
        Duration::from_secs(60),
        "the dead runner's container removed",
        || async { containers_of(task.id, 1) == 0 },
    )
    .await;
    wait_for(&client, task.id, TaskStatus::Succeeded, 120).await;
    let done = client.get_task(task.id).await.unwrap();
    assert_eq!(done.attempt, 2, "the second attempt finished it");
    let lost = reasons(&client, task.id).await;
    assert!(
        lost.iter()
            .any(|reason| reason.contains("stopped renewing the lease")),
        "{lost:?}"
    );
    assert!(terminate(&mut other).success());
    assert!(terminate(&mut api).success());
    assert!(containers_labelled(&format!("berth.task={}", task.id)).is_empty());
}

async fn a_server_started_again_hands_back_its_lost_attempt_at_once(backend: Backend) {
    let db = TestDb::new(&backend).await;
    let repo = GitRepo::serve(&[("README", "hello\n")]).await;
    let dir = tempfile::tempdir().unwrap();
    let token = token(&db, dir.path(), &repo);
    let serve = |listen: &str| {
        berth_on(
            &db,
            dir.path(),
            "state",
            &repo,
            &["server", "--listen", listen],
        )
    };
    let (mut first, url, _) = start_server(serve("127.0.0.1:0"));
    let client = Client::new(&url, Some(token)).unwrap();
    let (task, _) = client
        .create_task(&CreateTask::new(&repo.url, "slow work"), None)
        .await
        .unwrap();
    wait_for(&client, task.id, TaskStatus::Running, 60).await;
    eventually(
        Duration::from_secs(60),
        "the first attempt's container",
        || async { containers_of(task.id, 1) == 1 },
    )
    .await;
    signal(&first, "-KILL");
    first.wait().unwrap();

    let listen = url.trim_start_matches("http://");
    let (mut second, _, _) = start_server(serve(listen));
    wait_for(&client, task.id, TaskStatus::Succeeded, 120).await;
    let lost = reasons(&client, task.id).await;
    assert!(
        lost.iter()
            .any(|reason| reason.contains("restarted; the attempt was lost")),
        "handed back by the restarted node itself, not by the lease running out: {lost:?}"
    );
    assert_eq!(
        containers_of(task.id, 1),
        0,
        "the lost attempt's container is gone"
    );
    assert!(terminate(&mut second).success());
}
