//! Submit → the agent's first command, through a real runner (SQLite store, a git server of the
//! bench's own on loopback, the real Docker engine): the task is created in the store, claimed,
//! its small repository cloned and copied into a sandbox, and its work phase runs a first
//! command. With a warm pool of one (full before each submit) and with every sandbox started
//! cold, in the same run.
//!
//! `cargo bench -p berth-runner --bench warm_start` (needs the engine and the image).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use berth_proto::CreateTask;
use berth_runner::attempt::{Ending, Job, Lifecycle, LifecycleSettings, Work};
use berth_runner::git::GitAccess;
use berth_runner::publish::Author;
use berth_runner::redact::Redactor;
use berth_runner::{Runner, RunnerConfig};
use berth_sandbox::{ExecRequest, Limits, PoolSettings, Sandboxes, WarmPool};
use berth_store::NewTask;
use berth_testkit::git_server::GitServer;
use tokio::sync::mpsc;

const ROUNDS: usize = 10;

/// Runs one command and says when it is done.
struct FirstCommand(mpsc::UnboundedSender<Instant>);

#[async_trait]
impl Work for FirstCommand {
    async fn run(&self, job: Job<'_>) -> Ending {
        let ran = job
            .sandbox
            .exec(&ExecRequest::new("ls"), &mut |_, _| {})
            .await;
        let _ = self.0.send(Instant::now());
        match ran {
            Ok(_) => Ending::Done {
                summary: String::new(),
            },
            Err(err) => Ending::Failed(err.to_string()),
        }
    }
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let docker = berth_sandbox::connect().await.expect("the Docker engine");
        let mut progress = |line: &str| eprintln!("{line}");
        berth_sandbox::ensure_default_image(&docker, &mut progress)
            .await
            .expect("the image");
        let git = GitServer::start().await;
        let url = git.create_repo_with("acme/small", |dir| {
            for n in 0..20 {
                std::fs::write(dir.join(format!("f{n}.txt")), "some text\n".repeat(500)).unwrap();
            }
        });
        let address = git.url().trim_start_matches("http://").parse().unwrap();
        println!("submit → first command done (20 files, 100 KB), {ROUNDS} rounds:");
        for warm in [true, false] {
            let mut samples = rounds(&docker, &url, address, warm).await;
            samples.sort();
            println!(
                "  {:<10} p50 {:>7.1} ms   max {:>7.1} ms",
                if warm { "warm pool" } else { "cold" },
                ms(samples[samples.len() / 2]),
                ms(samples[samples.len() - 1])
            );
        }
    });
}

async fn rounds(
    docker: &bollard::Docker,
    url: &str,
    address: std::net::SocketAddr,
    warm: bool,
) -> Vec<Duration> {
    let dir = tempfile::tempdir().unwrap();
    let store = berth_store::open_sqlite(dir.path()).await.unwrap();
    let node_id = format!("bench-{}", uuid::Uuid::now_v7().simple());
    let pool = match warm {
        true => {
            let settings =
                PoolSettings::new(1, Limits::default(), Some(Limits::default().memory_bytes));
            let images = [berth_sandbox::default_image()];
            let pool = WarmPool::start(
                docker.clone(),
                store.installation_id(),
                &node_id,
                settings,
                &images,
            );
            Some(Arc::new(pool.await.unwrap()))
        }
        false => None,
    };
    let sandboxes: Arc<dyn Sandboxes> = match &pool {
        Some(pool) => pool.clone(),
        None => Arc::new(berth_sandbox::DockerSandboxes::new(docker.clone())),
    };
    let settings = LifecycleSettings {
        git: GitAccess {
            resolve_host: Arc::new(move |_| Box::pin(async move { Ok(vec![address]) })),
            credentials: Arc::new(|_, _, _| Box::pin(async { None })),
            work_dir: dir.path().join("work"),
            limits: Default::default(),
        },
        sandboxes,
        image: berth_sandbox::default_image(),
        limits: Limits::default(),
        setup_commands: Default::default(),
        setup_timeout: Duration::from_secs(60),
        redactor: Redactor::new(Vec::<String>::new()),
        github: None,
        author: Author::default(),
        egress: None,
        environments: None,
    };
    let (done, mut first) = mpsc::unbounded_channel();
    let config = RunnerConfig {
        node_id,
        poll: Duration::from_millis(100),
        ..RunnerConfig::default()
    };
    let work = FirstCommand(done);
    let runner = Runner::new(
        config,
        store.clone(),
        Arc::new(Lifecycle { settings, work }),
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(runner.run(stop.clone().cancelled_owned()));
    let owner = store.upsert_user("bench").await.unwrap().id;
    let mut samples = Vec::new();
    for _ in 0..ROUNDS {
        if let Some(pool) = &pool {
            while pool.idle() < 1 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let submitted = Instant::now();
        let new = NewTask {
            owner_id: owner,
            request: CreateTask::new(url, "work"),
            max_attempts: 1,
            idempotency: None,
            github: None,
        };
        let id = store.create_task(new).await.unwrap().task.id;
        let at = first.recv().await.expect("the first command ran");
        samples.push(at - submitted);
        // The task ends (its container removed) before the next is submitted.
        loop {
            let task = store.get_task(owner, id).await.unwrap().unwrap();
            if task.status.is_terminal() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    stop.cancel();
    running.await.unwrap();
    if let Some(pool) = pool {
        pool.shutdown().await;
    }
    samples
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
