//! The roles end to end, as processes on the real Docker engine: `berth server` runs a task
//! to its diff, refuses what it must, and logs plainly. Runners that die are crash.rs's.

mod common;

use std::process::Command;
use std::time::Duration;

use berth_client::Client;
use berth_proto::{CreateTask, EventKind, TaskStatus};
use common::{berth, eventually, start_server, terminate, token, GitRepo, Process};

async fn wait_for(
    client: &Client,
    id: berth_proto::TaskId,
    status: TaskStatus,
) -> berth_proto::Task {
    eventually(
        Duration::from_secs(120),
        &format!("task {status}"),
        || async { client.get_task(id).await.unwrap().status == status },
    )
    .await;
    client.get_task(id).await.unwrap()
}

/// `berth server` running `command` as each task, on data in `dir`, with alice's client.
fn server_running(repo: &GitRepo, dir: &std::path::Path, command: &str) -> (Process, Client) {
    let token = token(dir);
    let mut server = berth(dir);
    server
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir", "state"])
        .env("BERTH_GIT_ALLOWED_HOSTS", &repo.allowed_host)
        .env("BERTH_RUNNER_COMMAND", command);
    let (child, url, _) = start_server(server);
    (child, Client::new(&url, Some(token)).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_runs_a_task_to_its_diff() {
    let repo = GitRepo::serve(&[("README", "hello\n")]).await;
    let dir = tempfile::tempdir().unwrap();
    let command = "echo bye >> README && echo done && cat /sys/fs/cgroup/pids/pids.max";
    let (mut child, client) = server_running(&repo, dir.path(), command);

    let (task, _) = client
        .create_task(&CreateTask::new(&repo.url, "append bye"), None)
        .await
        .unwrap();
    let task = wait_for(&client, task.id, TaskStatus::Succeeded).await;
    assert!(task.result.has_diff);
    let diff = String::from_utf8(client.get_diff(task.id).await.unwrap()).unwrap();
    assert!(diff.contains("+bye"), "{diff}");
    let events = client.list_events(task.id, 0, None).await.unwrap().events;
    // Output that comes quickly may be joined into one event: read it whole.
    let output: String = events
        .iter()
        .filter(|e| e.kind == EventKind::CommandOutput && e.payload["stream"] == "stdout")
        .map(|e| e.payload["text"].as_str().unwrap())
        .collect();
    assert!(output.starts_with("done\n"), "{output:?}");
    assert!(terminate(&mut child).success());
}

/// Logs read as plain text off a terminal, and say how each attempt ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_plain_text_and_tell_each_attempts_end() {
    let repo = GitRepo::serve(&[("README", "hello\n")]).await;
    let dir = tempfile::tempdir().unwrap();
    let token = token(dir.path());
    let log = dir.path().join("server.log");
    let mut server = berth(dir.path());
    server
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir", "state"])
        .env("RUST_LOG", "info")
        .env("BERTH_GIT_ALLOWED_HOSTS", &repo.allowed_host)
        .env("BERTH_RUNNER_COMMAND", "exit 4")
        .stderr(std::fs::File::create(&log).unwrap());
    let (mut child, url, _) = start_server(server);
    let client = Client::new(&url, Some(token)).unwrap();
    let (task, _) = client
        .create_task(&CreateTask::new(&repo.url, "fail"), None)
        .await
        .unwrap();
    wait_for(&client, task.id, TaskStatus::Failed).await;
    assert!(terminate(&mut child).success());

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains('\x1b'), "no colour codes in a file: {text}");
    let ended = text
        .lines()
        .find(|line| line.contains("attempt ended") && line.contains(&task.id.to_string()))
        .unwrap_or_else(|| panic!("the attempt's end is logged: {text}"));
    assert!(ended.contains("outcome=\"failed\""), "{ended}");
    assert!(ended.contains("exited with status 4"), "{ended}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_too_large_to_keep_fails_the_task() {
    let repo = GitRepo::serve(&[("README", "hello\n")]).await;
    let dir = tempfile::tempdir().unwrap();
    let command = "yes 'a line of text that fills the diff' | head -c 70000000 > big.txt";
    let (mut child, client) = server_running(&repo, dir.path(), command);
    let (task, _) = client
        .create_task(&CreateTask::new(&repo.url, "write a lot"), None)
        .await
        .unwrap();
    let task = wait_for(&client, task.id, TaskStatus::Failed).await;
    let reason = task.error.unwrap_or_default();
    assert!(reason.contains("larger than the 64 MiB"), "{reason}");
    assert!(!task.result.has_diff, "no cut diff is stored");
    assert!(terminate(&mut child).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runner_refuses_a_host_that_resolves_inside() {
    let repo = GitRepo::serve(&[("README", "hello\n")]).await;
    let dir = tempfile::tempdir().unwrap();
    let token = token(dir.path());
    let port = repo.allowed_host.rsplit(':').next().unwrap().to_string();
    let inside = format!("http://localhost:{port}/repo.git");
    let mut server = berth(dir.path());
    server
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir", "state"])
        .env(
            "BERTH_GIT_ALLOWED_HOSTS",
            format!("{},http://localhost:{port}", repo.allowed_host),
        )
        .env("BERTH_RUNNER_COMMAND", "echo cloned");
    let (mut child, url, _) = start_server(server);
    let client = Client::new(&url, Some(token)).unwrap();
    let refused = client
        .create_task(&CreateTask::new(&inside, "x"), None)
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Some("invalid_repo_url"),
        "the API refuses it up front"
    );

    // Stored anyway (as by an older server, or before the name changed what it resolves to):
    // the runner checks again, at the moment it clones, and refuses.
    let store = berth_store::open_sqlite(&dir.path().join("state"))
        .await
        .unwrap();
    let owner = client.me().await.unwrap().user_id;
    let new = berth_store::NewTask {
        owner_id: owner,
        request: CreateTask::new(&inside, "clone from inside"),
        max_attempts: 3,
        idempotency: None,
        github: None,
    };
    let task = store.create_task(new).await.unwrap().task;
    let failed = wait_for(&client, task.id, TaskStatus::Failed).await;
    let reason = failed.error.unwrap();
    assert!(
        reason.contains("the repository's host was refused"),
        "{reason}"
    );
    let events = client.list_events(task.id, 0, None).await.unwrap().events;
    assert!(
        events.iter().all(|e| e.kind != EventKind::CommandOutput),
        "nothing ran"
    );
    store.close().await;
    assert!(terminate(&mut child).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_repository_is_cloned_with_the_owners_github_token() {
    use berth_testkit::github_oauth::{FakeGitHubOAuth, CLIENT_ID, CLIENT_SECRET};

    // A private repository "on GitHub": the fake serves it only with a token it issued.
    let repos = tempfile::tempdir().unwrap();
    let work = repos.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("README"), "secret project\n").unwrap();
    let git = |args: &[&str], cwd: &std::path::Path| {
        assert!(
            Command::new("git")
                .args(args)
                .current_dir(cwd)
                .status()
                .unwrap()
                .success(),
            "git {args:?}"
        );
    };
    git(&["init", "-q", "-b", "main"], &work);
    git(&["add", "-A"], &work);
    git(
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-qm",
            "initial",
        ],
        &work,
    );
    std::fs::create_dir_all(repos.path().join("octo")).unwrap();
    git(
        &["clone", "-q", "--bare", "../work", "private.git"],
        &repos.path().join("octo"),
    );
    git(
        &["update-server-info"],
        &repos.path().join("octo/private.git"),
    );
    let github = FakeGitHubOAuth::start_with_repositories(repos.path().to_owned()).await;
    github.add_user(77, "octo", &[]);

    let dir = tempfile::tempdir().unwrap();
    let nobody = token(dir.path());
    let mut server = berth(dir.path());
    server
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir", "state"])
        .env("BERTH_GITHUB_CLIENT_ID", CLIENT_ID)
        .env("BERTH_GITHUB_CLIENT_SECRET", CLIENT_SECRET)
        .env("BERTH_GITHUB_WEB_URL", &github.url)
        .env("BERTH_GITHUB_API_URL", &github.url)
        .env(
            "BERTH_ENCRYPTION_KEY",
            "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
        )
        .env("BERTH_GIT_ALLOWED_HOSTS", &github.url)
        .env(
            "BERTH_RUNNER_COMMAND",
            "echo bye >> README && git remote -v",
        );
    let (mut child, url, _) = start_server(server);

    // octo signs in with GitHub; the server keeps their GitHub token, sealed.
    let created = berth_client::device::login(&url, "test", |code| {
        github.approve_device(&code.user_code, 77)
    })
    .await
    .unwrap();
    let octo = Client::new(&url, Some(created.token)).unwrap();
    let repo_url = format!("{}/octo/private.git", github.url);
    let (task, _) = octo
        .create_task(&CreateTask::new(&repo_url, "append bye"), None)
        .await
        .unwrap();
    let done = wait_for(&octo, task.id, TaskStatus::Succeeded).await;
    assert!(done.result.has_diff);
    let diff = String::from_utf8(octo.get_diff(task.id).await.unwrap()).unwrap();
    assert!(diff.contains("+bye"), "{diff}");
    // The sandbox's copy of the repository carries no credentials.
    let events = octo.list_events(task.id, 0, None).await.unwrap().events;
    let printed: String = events
        .iter()
        .filter_map(|e| e.payload["text"].as_str())
        .collect();
    assert!(printed.contains(&repo_url), "{printed}");
    for issued in github.issued_tokens() {
        assert!(
            !printed.contains(&issued),
            "the GitHub token never reaches the sandbox"
        );
    }

    // Someone without a GitHub token on this server cannot clone it.
    let stranger = Client::new(&url, Some(nobody)).unwrap();
    let (task, _) = stranger
        .create_task(&CreateTask::new(&repo_url, "peek"), None)
        .await
        .unwrap();
    let failed = wait_for(&stranger, task.id, TaskStatus::Failed).await;
    assert!(failed
        .error
        .unwrap()
        .contains("cloning the repository failed"));
    assert!(terminate(&mut child).success());
}
