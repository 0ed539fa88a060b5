//! Logs as an operator's collector reads them: `log_format = "json"` gives one JSON object a
//! line, every line about a request names its id (the client's, or one made and sent back),
//! and every line about a task names the task, whichever part of the runner wrote it.

mod common;

use std::time::Duration;

use berth_client::Client;
use berth_proto::{CreateTask, TaskStatus};
use common::{berth, eventually, start_server, terminate, token, GitRepo};
use serde_json::Value;

/// The names and fields of the spans a JSON line was logged in.
fn spans(line: &Value) -> Vec<&serde_json::Map<String, Value>> {
    line["spans"]
        .as_array()
        .map(|spans| spans.iter().filter_map(Value::as_object).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_name_the_request_and_the_task() {
    let repo = GitRepo::serve(&[("README", "hello\n")]).await;
    let dir = tempfile::tempdir().unwrap();
    let token = token(dir.path());
    let log = dir.path().join("server.log");
    let mut server = berth(dir.path());
    server
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir", "state"])
        .env("RUST_LOG", "info")
        .env("BERTH_LOG_FORMAT", "json")
        .env("BERTH_GIT_ALLOWED_HOSTS", &repo.allowed_host)
        .env("BERTH_RUNNER_COMMAND", "exit 4")
        .stderr(std::fs::File::create(&log).unwrap());
    let (mut child, url, _) = start_server(server);
    let client = Client::new(&url, Some(token.clone())).unwrap();
    let (task, _) = client
        .create_task(&CreateTask::new(&repo.url, "fail"), None)
        .await
        .unwrap();
    eventually(Duration::from_secs(120), "the task fails", || async {
        client.get_task(task.id).await.unwrap().status == TaskStatus::Failed
    })
    .await;

    // The client's own request id is honoured and sent back; without one, one is made.
    let http = reqwest::Client::new();
    let ours = http
        .get(format!("{url}/v1/tasks/{}", task.id))
        .bearer_auth(&token)
        .header("x-request-id", "req-from-the-client-42")
        .send()
        .await
        .unwrap();
    assert_eq!(ours.headers()["x-request-id"], "req-from-the-client-42");
    let made = http.get(format!("{url}/healthz")).send().await.unwrap();
    let made_id = made.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(!made_id.is_empty());
    assert!(terminate(&mut child).success());

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains('\x1b'), "no colour codes: {text}");
    let lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    let in_request = |id: &str| {
        lines.iter().any(|line| {
            spans(line)
                .iter()
                .any(|span| span["name"] == "request" && span["request_id"] == id)
        })
    };
    assert!(in_request("req-from-the-client-42"), "{text}");
    assert!(in_request(&made_id), "{text}");
    let request = lines
        .iter()
        .find(|line| line["span"]["request_id"] == "req-from-the-client-42")
        .unwrap();
    assert_eq!(request["span"]["route"], "/v1/tasks/{id}", "{request}");
    assert!(
        !text.contains(&token),
        "the bearer token never reaches the log"
    );

    // Every line from the attempt (its start, its end) is in the task's span.
    let task_id = task.id.to_string();
    let about_task: Vec<&Value> = lines
        .iter()
        .filter(|line| {
            spans(line)
                .iter()
                .any(|span| span["name"] == "task" && span["task"] == task_id.as_str())
        })
        .collect();
    let messages: Vec<&str> = about_task
        .iter()
        .filter_map(|line| line["message"].as_str())
        .collect();
    assert!(messages.contains(&"attempt started"), "{messages:?}");
    let ended = about_task
        .iter()
        .find(|line| line["message"] == "attempt ended")
        .unwrap();
    assert_eq!(ended["outcome"], "failed");
    assert_eq!(ended["span"]["attempt"], 1);
}
