//! `berth watch` while the server goes away: stopped and started again, and killed with
//! SIGKILL mid-task. The watch waits, says so, resumes where it was, and misses nothing.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use berth_client::Client;
use berth_proto::{CreateTask, StreamFrame, TaskId};
use common::{berth, signal, start_server, terminate, token, GitRepo, Process};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Each run prints a line, waits, and prints two more, so a watch can be cut off midway.
const COMMAND: &str = "echo one; sleep 3; echo two; sleep 1; echo three";

/// `berth server` on the data in `dir/state`, listening on `listen`.
fn server(dir: &Path, repo: &GitRepo, listen: &str) -> (Process, String) {
    let mut command = berth(dir);
    command
        .args(["server", "--listen", listen, "--data-dir", "state"])
        .env("BERTH_GIT_ALLOWED_HOSTS", &repo.allowed_host)
        .env("BERTH_RUNNER_COMMAND", COMMAND);
    let (child, url, _) = start_server(command);
    (child, url)
}

/// A `berth watch ID --json` process whose frames and messages are collected as they come.
struct Watch {
    child: tokio::process::Child,
    frames: tokio::sync::mpsc::UnboundedReceiver<StreamFrame>,
    stderr: tokio::task::JoinHandle<String>,
}

impl Watch {
    fn start(dir: &Path, url: &str, token: &str, id: TaskId) -> Self {
        let mut command = berth(dir);
        command
            .args(["watch", &id.to_string(), "--json"])
            .env("BERTH_SERVER", url)
            .env("BERTH_TOKEN", token)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = tokio::process::Command::from(command)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let (sender, frames) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stdout.next_line().await {
                let frame = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
                let _ = sender.send(frame);
            }
        });
        let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            while let Ok(Some(line)) = stderr.next_line().await {
                text.push_str(&line);
                text.push('\n');
            }
            text
        });
        Self {
            child,
            frames,
            stderr,
        }
    }

    /// Collects frames until one holds the output `text`.
    async fn until_output(&mut self, text: &str, seen: &mut Vec<StreamFrame>) {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(60), self.frames.recv())
                .await
                .unwrap_or_else(|_| panic!("no output {text:?} within a minute"))
                .expect("the watch goes on");
            let found = matches!(&frame, StreamFrame::Event { event }
                if event.payload["text"].as_str().is_some_and(|t| t.contains(text)));
            seen.push(frame);
            if found {
                return;
            }
        }
    }

    /// Waits for the watch to exit; returns its exit code, every frame and what it said.
    async fn finish(
        mut self,
        mut seen: Vec<StreamFrame>,
    ) -> (Option<i32>, Vec<StreamFrame>, String) {
        let status = tokio::time::timeout(Duration::from_secs(120), self.child.wait())
            .await
            .expect("the watch ends with the task")
            .unwrap();
        while let Some(frame) = self.frames.recv().await {
            seen.push(frame);
        }
        (status.code(), seen, self.stderr.await.unwrap())
    }
}

/// The sequence numbers of the events among `frames`, in the order they came.
fn seqs(frames: &[StreamFrame]) -> Vec<i64> {
    frames
        .iter()
        .filter_map(|frame| match frame {
            StreamFrame::Event { event } => Some(event.seq),
            _ => None,
        })
        .collect()
}

/// Every event the server stored for the task, by sequence number.
async fn stored_seqs(client: &Client, id: TaskId) -> Vec<i64> {
    let page = client.list_events(id, 0, Some(1000)).await.unwrap();
    page.events.iter().map(|event| event.seq).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_waits_through_a_restart_and_a_crash_and_misses_nothing() {
    let repo = GitRepo::serve(&[("README", "hello\n")]).await;
    let dir = tempfile::tempdir().unwrap();
    let token = token(dir.path());
    let (mut first, url) = server(dir.path(), &repo, "127.0.0.1:0");
    let listen = url.trim_start_matches("http://").to_string();
    let client = Client::new(&url, Some(token.clone())).unwrap();

    // A stop and start: the server drains (the task finishes meanwhile), then comes back.
    let (task, _) = client
        .create_task(&CreateTask::new(&repo.url, "restart"), None)
        .await
        .unwrap();
    let mut watch = Watch::start(dir.path(), &url, &token, task.id);
    let mut seen = Vec::new();
    watch.until_output("one", &mut seen).await;
    assert!(terminate(&mut first).success());
    let (mut second, _) = server(dir.path(), &repo, &listen);
    let (code, seen, said) = watch.finish(seen).await;
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("waiting for the server"), "{said}");
    assert!(matches!(seen.last(), Some(StreamFrame::End { .. })));
    assert_eq!(seqs(&seen), stored_seqs(&client, task.id).await);
    assert!(terminate(&mut second).success());

    // A crash: SIGKILL mid-task. The server comes back; the task's attempt is retried and
    // the watch follows it to its end, every event once.
    let (mut third, _) = server(dir.path(), &repo, &listen);
    let (task, _) = client
        .create_task(&CreateTask::new(&repo.url, "crash"), None)
        .await
        .unwrap();
    let mut watch = Watch::start(dir.path(), &url, &token, task.id);
    let mut seen = Vec::new();
    watch.until_output("one", &mut seen).await;
    signal(&third, "-KILL");
    let _ = third.wait();
    let (_fourth, _) = server(dir.path(), &repo, &listen);
    let (code, seen, said) = watch.finish(seen).await;
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("waiting for the server"), "{said}");
    assert!(!said.contains("panicked"), "{said}");
    let streamed = seqs(&seen);
    assert_eq!(streamed, stored_seqs(&client, task.id).await);
    assert_eq!(streamed, (1..=streamed.len() as i64).collect::<Vec<_>>());
}
