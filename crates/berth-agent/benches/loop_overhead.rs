//! The agent loop's own overhead per step: from the moment the fake model has sent a whole
//! answer to the moment the next request arrives, minus the time the tool itself ran — what is
//! left is parsing the stream, storing the turn and its events, the checkpointed diff after a
//! change, and building the next request. Real runner, real SQLite, real Docker sandbox.
//! `cargo bench -p berth-agent --bench loop_overhead`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use berth_agent::anthropic::{AnthropicConfig, AnthropicProvider};
use berth_agent::prices::PriceTable;
use berth_agent::run::{Agent, AgentSettings};
use berth_agent::RetryPolicy;
use berth_proto::{CreateTask, EventKind};
use berth_runner::attempt::{Lifecycle, LifecycleSettings};
use berth_runner::git::GitAccess;
use berth_runner::publish::Author;
use berth_runner::redact::Redactor;
use berth_runner::{Runner, RunnerConfig};
use berth_sandbox::Limits;
use berth_store::NewTask;
use berth_testkit::anthropic::{FakeAnthropic, Reply};
use berth_testkit::git_server::GitServer;
use serde_json::json;

const STEPS: usize = 200;

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(run());
}

async fn run() {
    let docker = berth_sandbox::connect().await.expect("the Docker engine");
    berth_sandbox::ensure_default_image(&docker, &mut |line| eprintln!("image: {line}"))
        .await
        .expect("the sandbox image");
    let git = GitServer::start().await;
    let repo_url = git.create_repo(
        "bench/repo",
        &[
            ("README.md", "# bench\n"),
            ("src/lib.rs", "pub fn f() {}\n"),
        ],
    );
    let model = FakeAnthropic::start("sk-bench-key-000000").await;
    // Alternate a command, a view and an edit: the edit makes the loop store a diff.
    let served = Arc::new(AtomicUsize::new(0));
    model.respond_with({
        let served = served.clone();
        move |_| {
            let n = served.fetch_add(1, Ordering::SeqCst);
            let id = format!("toolu_{n}");
            match n {
                n if n >= STEPS => Reply::text("done"),
                n if n % 3 == 0 => Reply::tool(&id, "bash", json!({"command": "true"})),
                n if n % 3 == 1 => Reply::tool(
                    &id,
                    "str_replace_based_edit_tool",
                    json!({"command": "view", "path": "/workspace/README.md"}),
                ),
                _ => Reply::tool(
                    &id,
                    "str_replace_based_edit_tool",
                    json!({"command": "insert", "path": "/workspace/README.md",
                           "insert_line": 1, "insert_text": format!("line {n}")}),
                ),
            }
        }
    });

    let dir = tempfile::tempdir().unwrap();
    let store = berth_store::open_sqlite(dir.path()).await.unwrap();
    let address: SocketAddr = git.url().trim_start_matches("http://").parse().unwrap();
    let work = Agent {
        provider: Arc::new(AnthropicProvider::new(AnthropicConfig {
            base_url: model.url.clone(),
            api_key: model.api_key.clone(),
            version: "2023-06-01".into(),
            retry: RetryPolicy::default(),
            idle_timeout: Duration::from_secs(60),
        })),
        settings: AgentSettings {
            model: "claude-sonnet-4-5".into(),
            max_tokens_per_turn: 4096,
            context_tokens: 200_000,
            max_turns: 10_000,
            command_timeout: Duration::from_secs(60),
            prices: PriceTable::default(),
        },
    };
    let settings = LifecycleSettings {
        git: GitAccess {
            resolve_host: Arc::new(move |_| Box::pin(async move { Ok(vec![address]) })),
            credentials: Arc::new(|_, _, _| Box::pin(async { None })),
            work_dir: dir.path().join("work"),
            limits: Default::default(),
        },
        sandboxes: Arc::new(berth_sandbox::DockerSandboxes::new(docker.clone())),
        image: berth_sandbox::default_image(),
        limits: Limits::default(),
        setup_commands: BTreeMap::new(),
        setup_timeout: Duration::from_secs(60),
        environments: None,
        redactor: Redactor::new(["sk-bench-key-000000"]),
        github: None,
        author: Author::default(),
        egress: None,
    };
    let runner = Runner::new(
        RunnerConfig {
            capacity: 1,
            ..RunnerConfig::default()
        },
        store.clone(),
        Arc::new(Lifecycle { settings, work }),
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(runner.run({
        let stop = stop.clone();
        async move { stop.cancelled().await }
    }));

    let owner = store.upsert_user("bench").await.unwrap();
    let task = store
        .create_task(NewTask {
            owner_id: owner.id,
            request: CreateTask::new(&repo_url, "Take 200 small steps"),
            max_attempts: 1,
            idempotency: None,
            github: None,
        })
        .await
        .unwrap()
        .task;
    println!("running {STEPS} steps (bash `true`, view, insert, in turn)...");
    let done = loop {
        let task = store.get_task(owner.id, task.id).await.unwrap().unwrap();
        if task.status.is_terminal() {
            break task;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    stop.cancel();
    let _ = running.await;
    assert!(done.error.is_none(), "the task failed: {:?}", done.error);

    let (events, _) = store
        .list_events(owner.id, task.id, 0, 10_000)
        .await
        .unwrap()
        .unwrap();
    let tool_ms: Vec<f64> = events
        .iter()
        .filter(|e| e.kind == EventKind::ToolResult)
        .map(|e| e.payload["duration_ms"].as_f64().unwrap())
        .collect();
    let timings = model.timings();
    assert_eq!(tool_ms.len(), STEPS);
    assert_eq!(timings.len(), STEPS + 1);
    let mut overhead: Vec<f64> = (0..STEPS)
        .map(|i| {
            let answered = timings[i].1.expect("a streamed answer");
            let next = timings[i + 1].0;
            (next - answered).as_secs_f64() * 1000.0 - tool_ms[i]
        })
        .collect();
    let mut tools = tool_ms.clone();
    // Step i's overhead includes waiting for the diff checkpoint of step i - 1's tool, which
    // runs while the model answers: only a view leaves nothing to checkpoint. The fake model
    // answers at once, so the wait shows here; a real model's turn takes seconds and hides it.
    let (mut clean, mut checkpointed): (Vec<f64>, Vec<f64>) = (Vec::new(), Vec::new());
    for (i, ms) in overhead.iter().enumerate() {
        let after_view = i == 0 || i % 3 == 2;
        match after_view {
            true => clean.push(*ms),
            false => checkpointed.push(*ms),
        }
    }
    // Whether a step costs more as the conversation grows: the clean steps of the first and
    // the last third, in order of the steps.
    let third = clean.len() / 3;
    let (mut early, mut late) = (
        clean[..third].to_vec(),
        clean[clean.len() - third..].to_vec(),
    );
    for figures in [
        &mut overhead,
        &mut clean,
        &mut checkpointed,
        &mut tools,
        &mut early,
        &mut late,
    ] {
        figures.sort_by(f64::total_cmp);
    }
    let at = |v: &[f64], q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    let line = |v: &[f64]| {
        format!(
            "p50 {:.2} ms   p99 {:.2} ms   max {:.2} ms   mean {:.2} ms   ({} steps)",
            at(v, 0.5),
            at(v, 0.99),
            v[v.len() - 1],
            v.iter().sum::<f64>() / v.len() as f64,
            v.len()
        )
    };
    println!("loop overhead per step (model answer sent -> next request, minus the tool's run):");
    println!("  all steps:                        {}", line(&overhead));
    println!("  no diff checkpoint pending:       {}", line(&clean));
    println!(
        "  waiting for the diff checkpoint:  {}",
        line(&checkpointed)
    );
    println!("    (the checkpoint runs while the model answers; this fake answers at once)");
    println!("  no checkpoint, first third:       {}", line(&early));
    println!("  no checkpoint, last third:        {}", line(&late));
    println!(
        "  for scale, the tools' own run: p50 {:.2} ms   p99 {:.2} ms (docker exec round trips)",
        at(&tools, 0.5),
        at(&tools, 0.99)
    );
}
