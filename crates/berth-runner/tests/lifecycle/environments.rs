//! Per-repository environments on the real Docker engine: the setup of
//! `.berth/environment.toml` runs once and its image is reused, a changed lockfile prepares a
//! new one, a failing setup fails the task with its output, the server's rules narrow the
//! file, and the least recently used image goes past the size bound.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use berth_proto::{CreateTask, Event, EventKind, Task, TaskStatus};
use berth_runner::attempt::{Ending, Job, Lifecycle, LifecycleSettings, Work};
use berth_runner::environment::{EnvironmentCache, EnvironmentRules};
use berth_runner::git::GitAccess;
use berth_runner::publish::Author;
use berth_runner::redact::Redactor;
use berth_runner::{Runner, RunnerConfig};
use berth_sandbox::environment::{environment_images, remove_environment, EnvironmentImage};
use berth_sandbox::{ExecRequest, Limits};
use berth_store::sealing::Keyring;
use berth_store::{NewTask, SetupSecret, Store};
use berth_testkit::eventually;
use berth_testkit::git_server::GitServer;

/// Prints what the setup left and the variable, then changes a tracked file.
struct Probe;

#[async_trait]
impl Work for Probe {
    async fn run(&self, job: Job<'_>) -> Ending {
        let probe = ExecRequest::new(
            "echo \"marker=$(cat deps/marker) home=$(cat ~/setup-home) flavour=$FLAVOUR\"; \
             echo \"memory=$(cat /sys/fs/cgroup/memory.max 2>/dev/null || \
                   cat /sys/fs/cgroup/memory/memory.limit_in_bytes)\"; \
             echo changed >> README",
        );
        match job.exec_streamed(&probe, Some("probe")).await {
            Ok(_) => Ending::Done {
                summary: String::new(),
            },
            Err(ending) => ending,
        }
    }
}

const SETUP: &str = r#"
setup = "mkdir -p deps && head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \\n' > deps/marker && echo $FLAVOUR > ~/setup-home && echo prepared-ok"
inputs = ["deps.lock"]
[variables]
FLAVOUR = "vanilla"
[resources]
memory_mb = 1048576
"#;

/// One store, one git server and one runner for several tasks, as a server has.
struct Bench {
    git: GitServer,
    store: Arc<dyn Store>,
    dir: tempfile::TempDir,
    rules: EnvironmentRules,
    docker: bollard::Docker,
}

impl Bench {
    async fn start(rules: EnvironmentRules) -> Bench {
        let dir = tempfile::tempdir().unwrap();
        Bench {
            git: GitServer::start().await,
            store: berth_store::open_sqlite(dir.path()).await.unwrap(),
            dir,
            rules,
            docker: berth_sandbox::connect().await.expect("the Docker engine"),
        }
    }

    fn repo(&self, name: &str, environment: &str, lock: &str) -> String {
        self.git.create_repo(
            name,
            &[
                ("README", "hello\n"),
                (".gitignore", "/ignored\n"),
                (".berth/environment.toml", environment),
                ("deps.lock", lock),
            ],
        )
    }

    /// Runs the tasks at once on a runner of two slots, each to its end, with [`Probe`].
    async fn run(&self, repo_urls: &[&str]) -> Vec<(Task, Vec<Event>)> {
        self.run_with(Probe, repo_urls).await
    }

    async fn run_with(&self, work: impl Work, repo_urls: &[&str]) -> Vec<(Task, Vec<Event>)> {
        let address = self
            .git
            .url()
            .trim_start_matches("http://")
            .parse()
            .unwrap();
        let settings = LifecycleSettings {
            git: GitAccess {
                resolve_host: Arc::new(move |_| Box::pin(async move { Ok(vec![address]) })),
                credentials: Arc::new(|_, _, _| Box::pin(async { None })),
                work_dir: self.dir.path().join("work"),
                limits: Default::default(),
            },
            sandboxes: Arc::new(berth_sandbox::DockerSandboxes::new(self.docker.clone())),
            image: berth_sandbox::default_image(),
            limits: Limits {
                memory_bytes: 512 << 20,
                ..Limits::default()
            },
            setup_commands: Default::default(),
            setup_timeout: Duration::from_secs(120),
            environments: Some(Arc::new(
                EnvironmentCache::new(self.docker.clone(), self.rules.clone())
                    .with_keyring(Some(keyring())),
            )),
            redactor: Redactor::new(["never-shown"]),
            github: None,
            author: Author::default(),
            egress: None,
        };
        let config = RunnerConfig {
            // One node across runs, as a restarted runner keeps its id.
            node_id: format!("environments-{}", self.store.installation_id()),
            poll: Duration::from_millis(100),
            reap_interval: Duration::from_secs(3600),
            ..RunnerConfig::default()
        };
        let work = Arc::new(Lifecycle { settings, work });
        let runner = Runner::new(config, self.store.clone(), work);
        let stop = tokio_util::sync::CancellationToken::new();
        let running = tokio::spawn(runner.run(stop.clone().cancelled_owned()));
        let owner = self.store.upsert_user("alice").await.unwrap().id;
        let mut ids = Vec::new();
        for url in repo_urls {
            let new = NewTask {
                owner_id: owner,
                request: CreateTask::new(*url, "work"),
                max_attempts: 3,
                idempotency: None,
                github: None,
            };
            ids.push(self.store.create_task(new).await.unwrap().task.id);
        }
        let mut ended = Vec::new();
        for id in ids {
            let done = || async {
                let task = self.store.get_task(owner, id).await.unwrap().unwrap();
                task.status.is_terminal()
            };
            eventually(Duration::from_secs(300), "the task ends", done).await;
            let task = self.store.get_task(owner, id).await.unwrap().unwrap();
            let (events, _) = self
                .store
                .list_events(owner, id, 0, 1000)
                .await
                .unwrap()
                .unwrap();
            ended.push((task, events));
        }
        stop.cancel();
        running.await.unwrap();
        ended
    }

    async fn images(&self) -> Vec<EnvironmentImage> {
        environment_images(&self.docker, self.store.installation_id())
            .await
            .unwrap()
    }

    /// Removes the images this test's installation made.
    async fn clean(&self) {
        for image in self.images().await {
            let _ = remove_environment(&self.docker, &image.image).await;
        }
    }
}

/// A test that fails before [`Bench::clean`] still leaves no image behind.
impl Drop for Bench {
    fn drop(&mut self) {
        let label = format!("label=berth.installation={}", self.store.installation_id());
        let listed = std::process::Command::new("docker")
            .args(["images", "-q", "--filter", &label])
            .output();
        let Ok(listed) = listed else { return };
        let ids = String::from_utf8_lossy(&listed.stdout).to_string();
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let _ = std::process::Command::new("docker")
                .arg("rmi")
                .arg("-f")
                .args(ids)
                .output();
        }
    }
}

/// The keyring setup secrets are sealed with.
fn keyring() -> Keyring {
    let settings = berth_store::sealing::Settings {
        encryption_key: Some(berth_proto::Secret::new(
            "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
        )),
        ..Default::default()
    };
    settings.keyring().unwrap().unwrap()
}

/// The text of the command output events of `tool_use_id`.
fn output_of(events: &[Event], tool_use_id: &str) -> String {
    events
        .iter()
        .filter(|e| e.kind == EventKind::CommandOutput && e.payload["tool_use_id"] == tool_use_id)
        .map(|e| e.payload["text"].as_str().unwrap_or_default())
        .collect()
}

fn setup_result(events: &[Event]) -> String {
    events
        .iter()
        .find(|e| e.kind == EventKind::ToolResult && e.payload["tool_use_id"] == "setup")
        .map(|e| {
            e.payload["content"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .unwrap_or_default()
}

fn marker(events: &[Event]) -> String {
    let probe = output_of(events, "probe");
    let marker = probe
        .split_whitespace()
        .find_map(|word| word.strip_prefix("marker="))
        .unwrap_or_default();
    assert_eq!(marker.len(), 16, "the setup's marker is there: {probe}");
    marker.to_string()
}

/// Pushes a commit that changes `file` of the repository at `url`.
fn push_change(url: &str, file: &str, contents: &str) {
    let work = tempfile::tempdir().unwrap();
    let git = |dir: &Path, args: &[&str]| {
        let status = std::process::Command::new("git")
            .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
            .args(args)
            .current_dir(dir)
            .status()
            .unwrap();
        assert!(status.success(), "git {args:?}");
    };
    git(work.path(), &["clone", "-q", url, "repo"]);
    let repo = work.path().join("repo");
    std::fs::write(repo.join(file), contents).unwrap();
    git(&repo, &["commit", "-qam", "change"]);
    git(&repo, &["push", "-q", "origin", "HEAD:main"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_setup_runs_once_and_a_changed_lockfile_prepares_again() {
    let bench = Bench::start(EnvironmentRules::default()).await;
    let url = bench.repo("acme/tool", SETUP, "lock v1\n");

    // Two tasks at once: one build, which both use.
    let first = bench.run(&[&url, &url]).await;
    let prepared: Vec<String> = first
        .iter()
        .map(|(_, events)| setup_result(events))
        .collect();
    for (task, events) in &first {
        assert_eq!(task.status, TaskStatus::Succeeded, "{:?}", task.error);
        let probe = output_of(events, "probe");
        assert!(probe.contains("home=vanilla flavour=vanilla"), "{probe}");
        // The task asked for far more memory than the server's 512 MiB.
        assert!(
            probe.contains(&format!("memory={}", 512u64 << 20)),
            "{probe}"
        );
        let diff = bench.store.get_diff(task.owner_id, task.id).await.unwrap();
        let diff = String::from_utf8(diff.unwrap_or_default()).unwrap();
        assert!(diff.contains("+changed"), "{diff}");
        assert!(
            !diff.contains("deps/marker"),
            "the setup's output is not the work: {diff}"
        );
    }
    assert_eq!(
        prepared
            .iter()
            .filter(|r| r.starts_with("prepared"))
            .count(),
        1,
        "built once: {prepared:?}"
    );
    assert_eq!(marker(&first[0].1), marker(&first[1].1));
    assert!(
        output_of(&first[0].1, "setup").contains("prepared-ok")
            || output_of(&first[1].1, "setup").contains("prepared-ok")
    );

    let images = bench.images().await;
    assert_eq!(images.len(), 1, "{images:?}");
    assert_eq!(images[0].repo, url);
    let shown = bench.store.list_environments(&url).await.unwrap();
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert_eq!(shown[0].state, "ready");
    assert_eq!(shown[0].image, images[0].image);
    assert!(
        shown[0].log.contains("prepared-ok"),
        "the setup's log: {}",
        shown[0].log
    );

    let again = bench.run(&[&url]).await;
    assert!(
        setup_result(&again[0].1).starts_with("reused"),
        "{:?}",
        again[0].1
    );
    assert_eq!(marker(&again[0].1), marker(&first[0].1), "the same image");

    // A rebuild asked for through the API drops the image: the setup runs again.
    let key = shown[0].key.clone();
    assert!(bench.store.mark_environment_stale(&key).await.unwrap());
    let rebuilt = bench.run(&[&url]).await;
    assert!(setup_result(&rebuilt[0].1).starts_with("prepared"));
    assert_ne!(marker(&rebuilt[0].1), marker(&first[0].1), "built again");
    assert_eq!(
        bench.store.get_environment(&key).await.unwrap()[0].state,
        "ready"
    );

    push_change(&url, "deps.lock", "lock v2\n");
    let changed = bench.run(&[&url]).await;
    assert_eq!(
        changed[0].0.status,
        TaskStatus::Succeeded,
        "{:?}",
        changed[0].0.error
    );
    assert!(setup_result(&changed[0].1).starts_with("prepared"));
    assert_ne!(marker(&changed[0].1), marker(&first[0].1), "a new image");
    assert_eq!(bench.images().await.len(), 2);
    bench.clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_setup_fails_the_task_with_its_output() {
    let bench = Bench::start(EnvironmentRules::default()).await;
    let environment = "setup = \"echo missing-dependency-xyz >&2; exit 3\"\n";
    let url = bench.repo("acme/broken", environment, "lock\n");
    let ended = bench.run(&[&url]).await;
    let (task, events) = &ended[0];
    assert_eq!(task.status, TaskStatus::Failed);
    assert_eq!(task.attempt, 1, "not retried");
    let reason = task.error.clone().unwrap_or_default();
    assert!(reason.contains("exit code 3"), "{reason}");
    assert!(reason.contains("missing-dependency-xyz"), "{reason}");
    assert!(output_of(events, "setup").contains("missing-dependency-xyz"));
    assert!(output_of(events, "probe").is_empty(), "the work never ran");
    assert!(bench.images().await.is_empty(), "nothing kept");
    let shown = bench.store.list_environments(&url).await.unwrap();
    assert_eq!(shown[0].state, "failed");
    assert!(shown[0].log.contains("missing-dependency-xyz"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_rules_narrow_the_file() {
    let rules = EnvironmentRules {
        domains: vec!["crates.io".into()],
        ..EnvironmentRules::default()
    };
    let bench = Bench::start(rules).await;
    let image = bench.repo("acme/image", "image = \"someone/else:latest\"\n", "");
    let domain = bench.repo("acme/domain", "[network]\nallow = [\"example.com\"]\n", "");
    let ended = bench.run(&[&image, &domain]).await;
    let reasons: Vec<String> = ended
        .iter()
        .map(|(task, _)| {
            assert_eq!(task.status, TaskStatus::Failed);
            task.error.clone().unwrap_or_default()
        })
        .collect();
    assert!(
        reasons[0].contains("someone/else:latest") && reasons[0].contains("environment_images"),
        "{}",
        reasons[0]
    );
    assert!(
        reasons[1].contains("example.com") && reasons[1].contains("environment_domains"),
        "{}",
        reasons[1]
    );
    assert!(bench.images().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_bound_the_least_recently_used_image_goes() {
    let rules = EnvironmentRules {
        cache_bytes: 1,
        ..EnvironmentRules::default()
    };
    let bench = Bench::start(rules).await;
    let older = bench.repo("acme/older", SETUP, "a\n");
    let newer = bench.repo("acme/newer", SETUP, "b\n");
    bench.run(&[&older]).await;
    assert_eq!(bench.images().await.len(), 1);
    bench.run(&[&newer]).await;
    let images = bench.images().await;
    assert_eq!(images.len(), 1, "{images:?}");
    assert_eq!(images[0].repo, newer, "the one just built is kept");
    bench.clean().await;
}

/// Looks for the secret everywhere the task's own command can: its environment, every
/// process's environment, and the files of the container; prints only whether it found it.
struct Snoops;

const SETUP_SECRET: &str = "npm-secret-93c1f0";

#[async_trait]
impl Work for Snoops {
    async fn run(&self, job: Job<'_>) -> Ending {
        let (head, tail) = SETUP_SECRET.split_at(5);
        // The secret is put together at run time, so the script's own text never holds it.
        let snoop = ExecRequest {
            args: vec![head.into(), tail.into()],
            ..ExecRequest::new(
                "s=\"$1$2\"; found=; \
                 env | grep -qF \"$s\" && found=\"$found env\"; \
                 cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep -qF \"$s\" && found=\"$found proc\"; \
                 grep -rqsF --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev \"$s\" / && found=\"$found files\"; \
                 echo \"found:${found:-nothing}\"",
            )
        };
        match job.exec_streamed(&snoop, Some("snoop")).await {
            Ok(_) => Ending::Done {
                summary: String::new(),
            },
            Err(ending) => ending,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setup_secret_reaches_the_setup_only() {
    let bench = Bench::start(EnvironmentRules::default()).await;
    // The file is in the workspace: it must not hold the secret itself.
    let environment = "setup = \"test ${#NPM_TOKEN} = 17 && echo setup-saw-the-token && \
                       echo token=$NPM_TOKEN\"\n";
    let url = bench.repo("acme/private", environment, "");
    let alice = bench.store.upsert_user("alice").await.unwrap().id;
    let secret = SetupSecret {
        repo_url: url.clone(),
        name: "NPM_TOKEN".into(),
        sealed: keyring().seal(alice, SETUP_SECRET),
    };
    bench.store.put_setup_secret(&secret).await.unwrap();
    let ended = bench.run_with(Snoops, &[&url]).await;
    let (task, events) = &ended[0];
    assert_eq!(task.status, TaskStatus::Succeeded, "{:?}", task.error);
    let setup = output_of(events, "setup");
    assert!(setup.contains("setup-saw-the-token"), "{setup}");
    assert!(setup.contains("token=[REDACTED]"), "{setup}");
    let snoop = output_of(events, "snoop");
    assert_eq!(
        snoop.trim(),
        "found:nothing",
        "the work phase cannot see it"
    );
    let every_event =
        serde_json::to_string(&events.iter().map(|e| &e.payload).collect::<Vec<_>>()).unwrap();
    assert!(!every_event.contains(SETUP_SECRET), "no event holds it");
    let shown = bench.store.list_environments(&url).await.unwrap();
    assert!(!shown[0].log.contains(SETUP_SECRET) && shown[0].log.contains("[REDACTED]"));
    bench.clean().await;
}
