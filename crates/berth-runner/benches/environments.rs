//! Time until a task's sandbox is ready to work with a prepared environment image against
//! running the same setup in every task's container, measured in the same run. The setup
//! stands for a dependency install without the network: it writes 4 000 small files and
//! 32 MB under `deps/`, and compresses them.
//!
//! `cargo bench -p berth-runner --bench environments` (needs the engine and the sandbox image).

use std::time::{Duration, Instant};

use berth_runner::environment::{EnvironmentCache, EnvironmentRules};
use berth_sandbox::environment::{remove_environment, EnvironmentBuild};
use berth_sandbox::{DockerSandbox, ExecRequest, Limits, Sandbox, SandboxSpec};

const ROUNDS: usize = 5;
const SETUP: &str =
    "mkdir -p deps && for i in $(seq 1 4000); do echo \"package $i\" > deps/p$i; done \
                     && head -c 32000000 /dev/urandom > deps/blob && tar czf deps.tgz deps";

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(run());
}

fn spec(round: usize, kind: &str, image: &str) -> SandboxSpec {
    SandboxSpec {
        installation: "berth-bench".into(),
        task_id: format!("bench-{kind}-{round}-{}", std::process::id()),
        attempt: 1,
        node_id: "berth-bench".into(),
        image: image.into(),
        limits: Limits::default(),
    }
}

async fn run() {
    let docker = berth_sandbox::connect().await.expect("the Docker engine");
    let base = berth_sandbox::default_image();
    let repo = tempfile::tempdir().unwrap();
    std::fs::write(repo.path().join("README"), "hello\n").unwrap();
    let git = |args: &[&str]| {
        let ok = std::process::Command::new("git")
            .args(["-c", "user.name=b", "-c", "user.email=b@example.com"])
            .args(args)
            .current_dir(repo.path())
            .status()
            .unwrap()
            .success();
        assert!(ok);
    };
    git(&["init", "-q"]);
    git(&["add", "-A"]);
    git(&["commit", "-qm", "init"]);

    let mut each_time = Vec::new();
    for round in 0..ROUNDS {
        let started = Instant::now();
        let sandbox = DockerSandbox::create(&docker, &spec(round, "cold", &base))
            .await
            .unwrap();
        sandbox.copy_in(repo.path(), 1 << 30).await.unwrap();
        let ran = sandbox
            .exec(&ExecRequest::new(SETUP), &mut |_, _| {})
            .await
            .unwrap();
        assert_eq!(
            ran.exit_code,
            Some(0),
            "{}",
            String::from_utf8_lossy(&ran.stderr)
        );
        each_time.push(started.elapsed());
        sandbox.destroy().await.unwrap();
    }

    let cache = EnvironmentCache::new(docker.clone(), EnvironmentRules::default());
    let key = format!("bench{}", std::process::id());
    let mut cached = Vec::new();
    let mut image = String::new();
    for round in 0..=ROUNDS {
        let started = Instant::now();
        let build = EnvironmentBuild {
            container: spec(round, "build", &base),
            key: &key,
            repo_url: "bench",
            workspace: repo.path(),
            max_workspace_bytes: 1 << 30,
            variables: Vec::new(),
            setup: Some(ExecRequest::new(SETUP)),
        };
        let found = cache
            .lock(&key)
            .await
            .get_or_build(build, false, &mut |_, _| {})
            .await
            .unwrap();
        image = match found {
            berth_runner::environment::cache::Found::Reused(image) => image,
            berth_runner::environment::cache::Found::Built { image, .. } => image.image,
            berth_runner::environment::cache::Found::SetupFailed(_) => panic!("the setup failed"),
        };
        let sandbox = DockerSandbox::create(&docker, &spec(round, "warm", &image))
            .await
            .unwrap();
        sandbox.copy_in(repo.path(), 1 << 30).await.unwrap();
        let ran = sandbox
            .exec(&ExecRequest::new("test -f deps.tgz"), &mut |_, _| {})
            .await
            .unwrap();
        assert_eq!(ran.exit_code, Some(0), "the image holds the setup's output");
        // The first round builds the image; it is reported on its own.
        cached.push(started.elapsed());
        sandbox.destroy().await.unwrap();
    }
    remove_environment(&docker, &image).await.unwrap();

    let first_build = cached.remove(0);
    println!(
        "setup run in every task  median {:>8.0} ms",
        median(&mut each_time)
    );
    println!(
        "first build (setup+commit)        {:>8.0} ms",
        ms(first_build)
    );
    println!(
        "prepared image reused    median {:>8.0} ms",
        median(&mut cached)
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(samples: &mut [Duration]) -> f64 {
    samples.sort();
    ms(samples[samples.len() / 2])
}
