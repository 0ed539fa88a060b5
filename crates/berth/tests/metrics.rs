//! `/metrics` as Prometheus scrapes it, from an API node and a runner node sharing one
//! database, each on its own metrics address, after an agent task ran against the fake model.

mod common;

use std::process::Command;
use std::time::Duration;

use berth_client::Client;
use berth_proto::{CreateTask, TaskStatus};
use berth_testkit::anthropic::{FakeAnthropic, Reply};
use common::{berth, eventually, spawn_lines, start_server, terminate, token, GitRepo, Process};

const MODEL_KEY: &str = "sk-ant-metrics-test";

/// Starts a node and reads up to the line naming its metrics address; the rest of its
/// output is read on, so that it never writes into a closed pipe.
fn metrics_of(mut command: Command) -> (Process, String) {
    let (child, mut lines) = spawn_lines(&mut command);
    loop {
        let line = lines.next().expect("the node says where its metrics are");
        if let Some(url) = line.unwrap().strip_prefix("berth metrics on ") {
            std::thread::spawn(move || lines.for_each(drop));
            return (child, url.to_string());
        }
    }
}

async fn scrape(url: &str) -> String {
    let response = reqwest::get(url).await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    response.text().await.unwrap()
}

/// The value of the one series whose name and labels are `series` exactly.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_and_runner_nodes_export_what_they_measure() {
    let model = FakeAnthropic::start(MODEL_KEY).await;
    model.push([Reply::text("Nothing to change.")]);
    let repo = GitRepo::serve(&[("README", "hello\n")]).await;
    let dir = tempfile::tempdir().unwrap();
    let token = token(dir.path());
    let node = |role: &str| {
        let mut command = berth(dir.path());
        command
            .args([role, "--listen", "127.0.0.1:0", "--data-dir", "state"])
            .env("BERTH_METRICS_LISTEN", "127.0.0.1:0")
            .env("BERTH_GIT_ALLOWED_HOSTS", &repo.allowed_host)
            .env("ANTHROPIC_API_KEY", MODEL_KEY)
            .env("ANTHROPIC_BASE_URL", &model.url);
        command
    };
    let mut api = node("server");
    api.arg("--no-runner");
    let (mut api, url, seen) = start_server(api);
    let api_metrics = seen
        .iter()
        .find_map(|line| line.strip_prefix("berth metrics on "))
        .expect("the API node says where its metrics are")
        .to_string();
    let (mut runner, runner_metrics) = metrics_of(node("runner"));

    let client = Client::new(&url, Some(token)).unwrap();
    let (task, _) = client
        .create_task(&CreateTask::new(&repo.url, "look around"), None)
        .await
        .unwrap();
    eventually(Duration::from_secs(120), "the task succeeds", || async {
        client.get_task(task.id).await.unwrap().status == TaskStatus::Succeeded
    })
    .await;
    // A stream followed to the task's end is counted while open, and no longer after.
    let mut stream = client.follow_task(task.id, 0);
    while let Some(Ok(_)) = stream.next().await {}
    eventually(Duration::from_secs(10), "the stream is closed", || async {
        let text = scrape(&api_metrics).await;
        text.contains(r#"berth_open_streams{transport="websocket"} 0"#)
    })
    .await;

    let text = scrape(&api_metrics).await;
    assert_eq!(value(&text, r#"berth_tasks{status="succeeded"}"#), 1.0);
    assert_eq!(value(&text, r#"berth_tasks{status="queued"}"#), 0.0);
    let created = r#"berth_http_request_duration_seconds_count{method="POST",route="/v1/tasks",status="201"}"#;
    assert_eq!(value(&text, created), 1.0);
    let polled = r#"berth_http_request_duration_seconds_count{method="GET",route="/v1/tasks/{id}",status="200"}"#;
    assert!(value(&text, polled) >= 1.0);
    assert!(
        !text.contains("berth_attempts_total"),
        "the API node runs nothing"
    );

    let text = scrape(&runner_metrics).await;
    assert_eq!(
        value(&text, r#"berth_attempts_total{outcome="succeeded"}"#),
        1.0
    );
    let took = r#"berth_attempt_duration_seconds_sum{outcome="succeeded"}"#;
    assert!(value(&text, took) > 0.0);
    assert_eq!(value(&text, "berth_queue_wait_seconds_count"), 1.0);
    assert!(value(&text, "berth_queue_wait_seconds_sum") >= 0.0);
    assert!(value(&text, "berth_claim_duration_seconds_count") >= 1.0);
    assert_eq!(value(&text, "berth_sandbox_start_seconds_count"), 1.0);
    assert!(value(&text, "berth_sandbox_start_seconds_sum") > 0.0);
    assert!(
        !text.contains("berth_retries_total "),
        "a first attempt is no retry"
    );
    let tokens = |kind: &str| {
        value(
            &text,
            &format!(r#"berth_llm_tokens_total{{model="claude-sonnet-4-5",kind="{kind}"}}"#),
        )
    };
    assert_eq!((tokens("input"), tokens("output")), (100.0, 30.0));
    assert_eq!((tokens("cache_write"), tokens("cache_read")), (20.0, 50.0));
    let cost = r#"berth_llm_cost_microdollars_total{model="claude-sonnet-4-5"}"#;
    assert!(value(&text, cost) > 0.0);
    assert!(!text.contains(MODEL_KEY));

    assert!(terminate(&mut runner).success());
    assert!(terminate(&mut api).success());
}
