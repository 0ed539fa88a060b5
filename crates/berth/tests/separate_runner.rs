//! SQLite with the runner in a process of its own: `berth server --no-runner` and `berth
//! runner` on one data directory. The runner's events reach the server's open streams as they
//! are written (the server notices the other process's commits), not at the 30 s safety poll.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_client::{Client, Followed};
use berth_proto::{CreateTask, EventKind, StreamFrame};
use common::{berth, start_runner, start_server, terminate, token, GitRepo};

/// Five lines two seconds apart: five events, each written well after the last.
const COMMAND: &str = "for i in 1 2 3 4 5; do echo line $i; sleep 2; done";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_separate_runners_events_reach_open_streams_as_they_are_written() {
    let repo = GitRepo::serve(&[("README", "hello\n")]).await;
    let dir = tempfile::tempdir().unwrap();
    let token = token(dir.path());
    let mut api = berth(dir.path());
    api.args(["server", "--no-runner", "--listen", "127.0.0.1:0"])
        .args(["--data-dir", "state"])
        .env("BERTH_GIT_ALLOWED_HOSTS", &repo.allowed_host);
    let (mut api, url, _) = start_server(api);
    let mut runner = berth(dir.path());
    runner
        .args(["runner", "--data-dir", "state"])
        .env("BERTH_GIT_ALLOWED_HOSTS", &repo.allowed_host)
        .env("BERTH_RUNNER_COMMAND", COMMAND);
    let mut runner = start_runner(runner);

    let client = Client::new(&url, Some(token)).unwrap();
    let (task, _) = client
        .create_task(&CreateTask::new(&repo.url, "count slowly"), None)
        .await
        .unwrap();
    let mut stream = client.follow_task(task.id, 0);
    // How long after being written each line arrived, in ms (one clock: this machine's).
    let mut late = Vec::new();
    while let Some(next) = tokio::time::timeout(Duration::from_secs(120), stream.next())
        .await
        .expect("the stream goes on")
    {
        if let Followed::Frame(StreamFrame::Event { event }) = next.unwrap() {
            if event.kind == EventKind::CommandOutput {
                let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
                late.push(now.as_millis() as i64 - event.created_at.timestamp_millis());
            }
        }
    }
    assert!(
        late.len() >= 3,
        "the lines came as events of their own: {late:?}"
    );
    // The safety poll is 30 s: arriving only with it would leave most lines 10 s late or more.
    assert!(
        late.iter().all(|ms| *ms < 10_000),
        "each line arrived soon after it was written (ms late: {late:?})"
    );
    assert!(terminate(&mut runner).success());
    assert!(terminate(&mut api).success());
}
