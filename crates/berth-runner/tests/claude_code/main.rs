//! The real Claude Code CLI in a real sandbox, talking to the model through Berth's proxy,
//! whose upstream is the testkit's fake Anthropic API scripted to make the CLI read a file,
//! run a command and edit a file. The image variant is built from the `claude-agent-sdk`
//! wheel that `BERTH_CLAUDE_CODE_WHEEL` names (`scripts/install-claude-code`); without it the
//! tests are skipped, and under CI they fail.

use std::sync::Arc;
use std::time::Duration;

use berth_proto::{Budget, CreateTask, Event, Secret, Task, TaskId, TaskStatus, UserId};
use berth_runner::attempt::{Lifecycle, LifecycleSettings};
use berth_runner::claude_code::{ClaudeCode, DEFAULT_ALLOWED_TOOLS};
use berth_runner::git::{GitAccess, RepositoryLimits};
use berth_runner::model_proxy::{ModelProxy, Reach, Upstreams};
use berth_runner::publish::Author;
use berth_runner::redact::Redactor;
use berth_runner::{Runner, RunnerConfig};
use berth_sandbox::claude_code_image::{build_claude_code_image, claude_code_image};
use berth_sandbox::Limits;
use berth_store::{NewTask, Store};
use berth_testkit::anthropic::Reply;
use berth_testkit::git_server::GitServer;
use berth_testkit::{eventually, FakeAnthropic};
use futures::future::BoxFuture;
use serde_json::{json, Value};

const REAL_KEY: &str = "sk-ant-real-key-8086";

/// The wheel to build the image from, or `None` (with a message) when none is given.
fn wheel() -> Option<std::path::PathBuf> {
    match std::env::var("BERTH_CLAUDE_CODE_WHEEL") {
        Ok(path) if !path.is_empty() => Some(path.into()),
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("BERTH_CLAUDE_CODE_WHEEL is not set; run the tests with scripts/test")
        }
        _ => {
            eprintln!("skipped: BERTH_CLAUDE_CODE_WHEEL is not set (scripts/install-claude-code)");
            None
        }
    }
}

/// The image variant, built once per machine and Berth version.
async fn image(docker: &bollard::Docker, wheel: &std::path::Path) -> String {
    static BUILT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    BUILT
        .get_or_init(|| async {
            if docker.inspect_image(&claude_code_image()).await.is_ok() {
                return;
            }
            let mut progress = |line: &str| eprintln!("image: {line}");
            berth_sandbox::ensure_default_image(docker, &mut progress)
                .await
                .unwrap();
            let base = berth_sandbox::default_image();
            build_claude_code_image(docker, &base, wheel, &mut progress)
                .await
                .unwrap();
        })
        .await;
    claude_code_image()
}

/// The proxy on the sandbox network's gateway, in front of `fake`; with its base URL.
async fn proxy(docker: &bollard::Docker, fake: &FakeAnthropic) -> (ModelProxy, String) {
    let addresses = berth_sandbox::sandbox_network_addresses(docker)
        .await
        .unwrap();
    let upstreams = Upstreams {
        anthropic_base_url: fake.url.clone(),
        anthropic_api_key: Some(Secret::new(REAL_KEY)),
        openai_base_url: "http://127.0.0.1:9/v1".into(),
        openai_api_key: None,
    };
    let reach = Reach {
        network: addresses.subnet.parse().unwrap(),
        host: addresses.gateway,
    };
    let proxy = ModelProxy::new(upstreams, reach, Arc::new(|_, _| Some(0.0)));
    let listener = tokio::net::TcpListener::bind((addresses.gateway, 0))
        .await
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let serving = proxy.clone();
    tokio::spawn(async move { serving.serve(listener, std::future::pending()).await });
    (proxy, url)
}

/// Which step of the script a request is at: how many turns the model has taken so far.
fn turns_taken(body: &Value) -> usize {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    messages.iter().filter(|m| m["role"] == "assistant").count()
}

/// Reads the README, looks at the sandbox for the key, edits the README, and says so.
fn script(body: &Value) -> Reply {
    if body["tools"].as_array().is_none_or(Vec::is_empty) {
        return Reply::text("A task");
    }
    // The key searched for, without the key itself in the command the model sends.
    let probe = format!(
        "cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep ANTHROPIC; ps -eo args; \
         grep -rlF \"$(echo {} | base64 -d)\" / --exclude-dir=proc --exclude-dir=sys 2>/dev/null; \
         echo probe-done",
        base64_of(REAL_KEY)
    );
    match turns_taken(body) {
        0 => Reply::tool(
            "toolu_read",
            "Read",
            json!({"file_path": "/workspace/README"}),
        ),
        1 => Reply::tool(
            "toolu_probe",
            "Bash",
            json!({"command": probe, "description": "Look around"}),
        ),
        2 => Reply::tool(
            "toolu_edit",
            "Edit",
            json!({"file_path": "/workspace/README", "old_string": "hello",
                   "new_string": "hello, proxy"}),
        ),
        _ => Reply::text("Edited the README."),
    }
}

fn base64_of(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// What a task left, and where its proxy listened.
struct Ran {
    task: Task,
    events: Vec<Event>,
    diff: Vec<u8>,
    proxy_url: String,
}

/// What a test does while its task runs.
type During = Box<dyn FnOnce(Arc<dyn Store>, UserId, TaskId) -> BoxFuture<'static, ()> + Send>;

/// Runs one task with Claude Code as its work, to its end, doing `during` meanwhile.
async fn run_task(budget: Budget, fake: &FakeAnthropic, during: Option<During>) -> Option<Ran> {
    let wheel = wheel()?;
    let docker = berth_sandbox::connect().await.expect("the Docker engine");
    let image = image(&docker, &wheel).await;
    let (proxy, proxy_url) = proxy(&docker, fake).await;
    let git = GitServer::start().await;
    let repo_url = git.create_repo_with("acme/tool", |dir| {
        std::fs::write(dir.join("README"), "hello\n").unwrap()
    });
    let address = git.url().trim_start_matches("http://").parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let settings = LifecycleSettings {
        git: GitAccess {
            resolve_host: Arc::new(move |_| Box::pin(async move { Ok(vec![address]) })),
            credentials: Arc::new(|_, _, _| Box::pin(async { None })),
            work_dir: dir.path().join("work"),
            limits: RepositoryLimits::default(),
        },
        sandboxes: Arc::new(berth_sandbox::DockerSandboxes::new(docker)),
        image,
        limits: Limits::default(),
        setup_commands: Default::default(),
        setup_timeout: Duration::from_secs(60),
        redactor: Redactor::new([REAL_KEY]),
        github: None,
        author: Author::default(),
        egress: None,
        environments: None,
    };
    let work = ClaudeCode {
        proxy,
        proxy_url: proxy_url.clone(),
        model: Some("claude-sonnet-4-5".into()),
        allowed_tools: DEFAULT_ALLOWED_TOOLS.into(),
        timeout: Duration::from_secs(300),
    };
    let store = berth_store::open_sqlite(dir.path()).await.unwrap();
    let config = RunnerConfig {
        node_id: format!("claude-code-{}", uuid::Uuid::now_v7().simple()),
        poll: Duration::from_millis(100),
        ..RunnerConfig::default()
    };
    let runner = Runner::new(
        config,
        store.clone(),
        Arc::new(Lifecycle { settings, work }),
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(runner.run(stop.clone().cancelled_owned()));

    let owner = store.upsert_user("alice").await.unwrap().id;
    let mut request = CreateTask::new(&repo_url, "Say hello to the proxy in the README");
    request.budget = budget;
    let new = NewTask {
        owner_id: owner,
        request,
        max_attempts: 1,
        idempotency: None,
        github: None,
    };
    let id = store.create_task(new).await.unwrap().task.id;
    if let Some(during) = during {
        during(store.clone(), owner, id).await;
    }
    let ended = || async {
        let task = store.get_task(owner, id).await.unwrap().unwrap();
        task.status.is_terminal()
    };
    eventually(Duration::from_secs(300), "the task ends", ended).await;
    let task = store.get_task(owner, id).await.unwrap().unwrap();
    let (events, _) = store
        .list_events(owner, id, 0, 10_000)
        .await
        .unwrap()
        .unwrap();
    let diff = store.get_diff(owner, id).await.unwrap().unwrap_or_default();
    stop.cancel();
    running.await.unwrap();
    Some(Ran {
        task,
        events,
        diff,
        proxy_url,
    })
}

/// Sends a request with `token` to the proxy from a fresh container on the sandbox network;
/// the status line of the answer.
async fn from_a_sandbox(proxy_url: &str, token: &str) -> String {
    let docker = berth_sandbox::connect().await.unwrap();
    let sandboxes = berth_sandbox::DockerSandboxes::new(docker);
    let spec = berth_sandbox::SandboxSpec {
        installation: "claude-code-test".into(),
        task_id: uuid::Uuid::now_v7().to_string(),
        attempt: 1,
        node_id: "claude-code-test".into(),
        image: berth_sandbox::default_image(),
        limits: Limits::default(),
    };
    let sandbox = berth_sandbox::Sandboxes::create(&sandboxes, &spec)
        .await
        .unwrap();
    sandbox
        .set_network(berth_sandbox::NetworkPolicy::Full)
        .await
        .unwrap();
    let address = proxy_url.trim_start_matches("http://").replace(':', "/");
    let request = berth_sandbox::ExecRequest {
        args: vec![address, token.to_string()],
        ..berth_sandbox::ExecRequest::new(
            "exec 3<>/dev/tcp/$1; printf 'POST /v1/messages HTTP/1.0\\r\\nx-api-key: %s\\r\\n\
             content-type: application/json\\r\\ncontent-length: 2\\r\\n\\r\\n{}' \"$2\" >&3; \
             head -n 1 <&3",
        )
    };
    let done = sandbox.exec(&request, &mut |_, _| {}).await.unwrap();
    sandbox.destroy().await.unwrap();
    String::from_utf8_lossy(&done.stdout).trim().to_string()
}

#[tokio::test]
async fn claude_code_reads_runs_and_edits_through_the_proxy_and_never_holds_the_key() {
    let fake = FakeAnthropic::start(REAL_KEY).await;
    fake.respond_with(script);
    let Some(ran) = run_task(Budget::default(), &fake, None).await else {
        return;
    };
    let Ran {
        task, events, diff, ..
    } = &ran;
    assert_eq!(task.status, TaskStatus::Succeeded, "{task:?}\n{events:#?}");
    let diff = String::from_utf8(diff.clone()).unwrap();
    assert!(diff.contains("-hello\n+hello, proxy\n"), "{diff}");
    assert!(
        !diff.contains(".claude"),
        "the CLI's own state is no change: {diff}"
    );

    // The probe's output, as the CLI sent it back to the model.
    let requests = serde_json::to_string(&fake.requests()).unwrap();
    let probe = fake
        .requests()
        .iter()
        .filter_map(|body| body["messages"].as_array().cloned())
        .flatten()
        .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
        .find(|block| block["tool_use_id"] == "toolu_probe")
        .map(|block| block["content"].to_string())
        .expect("the probe's result reached the model");
    assert!(probe.contains("ANTHROPIC_API_KEY=berth-proxy-"), "{probe}");
    assert!(probe.contains("probe-done"), "{probe}");
    assert!(
        !requests.contains(REAL_KEY),
        "the key was inside the sandbox"
    );
    for headers in fake.headers() {
        assert_eq!(headers["x-api-key"], REAL_KEY);
    }

    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    let calls: Vec<&Value> = events
        .iter()
        .filter(|e| e.kind.as_str() == "tool_call")
        .map(|e| &e.payload["name"])
        .collect();
    assert_eq!(
        calls,
        [&json!("Read"), &json!("Bash"), &json!("Edit")],
        "{kinds:?}"
    );
    assert!(kinds.contains(&"tool_result") && kinds.contains(&"assistant_text"));
    let usage_events = kinds.iter().filter(|k| **k == "usage").count();
    assert!(usage_events >= 4, "each model turn is counted: {kinds:?}");
    assert!(task.usage.output_tokens >= 4 * 30, "{:?}", task.usage);

    // The attempt's token, as the probe saw it in the sandbox, once the attempt has ended.
    let token = probe
        .split("ANTHROPIC_API_KEY=")
        .nth(1)
        .and_then(|rest| {
            rest.split(|c: char| !c.is_ascii_alphanumeric() && c != '-')
                .next()
        })
        .unwrap()
        .to_string();
    let status = from_a_sandbox(&ran.proxy_url, &token).await;
    assert!(
        status.contains(" 401 "),
        "a dead token from a sandbox: {status}"
    );
    let from_the_host = reqwest::Client::new()
        .post(format!("{}/v1/messages", ran.proxy_url))
        .header("x-api-key", &token)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(from_the_host.status(), 403, "the host is not a sandbox");
}

#[tokio::test]
async fn a_spent_budget_stops_claude_code_and_fails_the_task() {
    let fake = FakeAnthropic::start(REAL_KEY).await;
    fake.respond_with(script);
    let budget = Budget {
        max_turns: Some(2),
        ..Budget::default()
    };
    let Some(Ran { task, events, .. }) = run_task(budget, &fake, None).await else {
        return;
    };
    assert_eq!(task.status, TaskStatus::Failed, "{task:?}\n{events:#?}");
    let reason = task.error.clone().unwrap_or_default();
    assert!(
        reason.contains("budget of 2 model turns is spent"),
        "{task:?}"
    );
    assert_eq!(
        fake.requests().len(),
        2,
        "no turn past the budget reached the model"
    );
}

#[tokio::test]
async fn cancelling_the_task_stops_claude_code_and_removes_its_sandbox() {
    let fake = FakeAnthropic::start(REAL_KEY).await;
    fake.respond_with(|body| match turns_taken(body) {
        0 if body["tools"]
            .as_array()
            .is_some_and(|tools| !tools.is_empty()) =>
        {
            Reply::tool(
                "toolu_sleep",
                "Bash",
                // Not a lone `sleep`, which the CLI refuses to run.
                json!({"command": "echo waiting; sleep 600; echo waited", "description": "Wait", "timeout": 600000}),
            )
        }
        _ => Reply::text("Done."),
    });
    let cancel: During = Box::new(|store, owner, id| {
        Box::pin(async move {
            let sleeping = || async {
                let (events, _) = store
                    .list_events(owner, id, 0, 1000)
                    .await
                    .unwrap()
                    .unwrap();
                events.iter().any(|e| e.payload["name"] == "Bash")
            };
            eventually(
                Duration::from_secs(120),
                "the CLI runs its command",
                sleeping,
            )
            .await;
            store.cancel_task(owner, id).await.unwrap().unwrap();
        })
    });
    let Some(Ran { task, events, .. }) = run_task(Budget::default(), &fake, Some(cancel)).await
    else {
        return;
    };
    assert_eq!(task.status, TaskStatus::Cancelled, "{task:?}\n{events:#?}");
    // No request carried the command's result back (the CLI's side requests without tools,
    // such as its title for the session, may come and go).
    let after_the_command = (fake.requests().iter())
        .filter(|body| turns_taken(body) > 0)
        .count();
    assert_eq!(after_the_command, 0, "the CLI was stopped mid-command");
    let label = format!("berth.task={}", task.id);
    assert!(berth_testkit::docker::containers_labelled(&label).is_empty());
}
