//! How long until a task's sandbox is ready — create, start, copy in a 10 MB repository, run
//! a first command — against a bare `docker run --rm IMAGE true` of the same image, measured
//! in the same run; and the round trip of a trivial exec.
//!
//! `cargo bench -p berth-sandbox --bench sandbox_ready` (needs the engine and the image).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use berth_sandbox::{DockerSandbox, ExecRequest, Limits, Sandbox, SandboxSpec};

const ROUNDS: usize = 10;
const EXECS: usize = 50;

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(run());
}

async fn run() {
    let docker = berth_sandbox::connect().await.expect("the Docker engine");
    let mut progress = |line: &str| eprintln!("{line}");
    berth_sandbox::ensure_default_image(&docker, &mut progress)
        .await
        .expect("the image");
    let repo = tempfile::tempdir().unwrap();
    make_repo(repo.path(), 10 << 20);

    let mut ready = Vec::new();
    let mut raw = Vec::new();
    let mut trips = Vec::new();
    for round in 0..ROUNDS {
        let spec = SandboxSpec {
            task_id: format!("bench-{round}-{}", std::process::id()),
            attempt: 1,
            node_id: "berth-bench".into(),
            image: berth_sandbox::default_image(),
            limits: Limits::default(),
        };
        let started = Instant::now();
        let sandbox = DockerSandbox::create(&docker, &spec).await.unwrap();
        sandbox.copy_in(repo.path()).await.unwrap();
        let first = sandbox
            .exec(
                &ExecRequest::new("git status --short | wc -l"),
                &mut |_, _| {},
            )
            .await
            .unwrap();
        ready.push(started.elapsed());
        assert_eq!(first.exit_code, Some(0));
        if round == 0 {
            for _ in 0..EXECS {
                let started = Instant::now();
                sandbox
                    .exec(&ExecRequest::new("true"), &mut |_, _| {})
                    .await
                    .unwrap();
                trips.push(started.elapsed());
            }
        }
        sandbox.destroy().await.unwrap();

        let started = Instant::now();
        let status = Command::new("docker")
            .args(["run", "--rm", &berth_sandbox::default_image(), "true"])
            .status()
            .unwrap();
        raw.push(started.elapsed());
        assert!(status.success());
    }
    let (ready_p50, raw_p50) = (percentile(&mut ready, 50), percentile(&mut raw, 50));
    println!("sandbox ready (create + start + copy-in 10 MB + first exec), {ROUNDS} rounds:");
    println!(
        "  berth   p50 {:>7.1} ms   max {:>7.1} ms",
        ms(ready_p50),
        ms(percentile(&mut ready, 100))
    );
    println!(
        "  docker run --rm true   p50 {:>7.1} ms   max {:>7.1} ms",
        ms(raw_p50),
        ms(percentile(&mut raw, 100))
    );
    println!(
        "  ratio berth / docker run: {:.2}",
        ms(ready_p50) / ms(raw_p50)
    );
    println!("exec round trip of `true`, {EXECS} execs:");
    println!(
        "  p50 {:>6.1} ms   p99 {:>6.1} ms",
        ms(percentile(&mut trips, 50)),
        ms(percentile(&mut trips, 99))
    );
}

/// A git repository of about `bytes` bytes in 100 files.
fn make_repo(dir: &Path, bytes: usize) {
    let file_size = bytes / 100;
    for n in 0..100 {
        let contents: Vec<u8> = (0..file_size)
            .map(|i| b"abcdefghij\n"[(i + n) % 11])
            .collect();
        std::fs::write(dir.join(format!("file{n:03}.txt")), contents).unwrap();
    }
    for args in [
        &["init", "-q"][..],
        &["add", "-A"],
        &[
            "-c",
            "user.name=b",
            "-c",
            "user.email=b@b",
            "commit",
            "-qm",
            "bench",
        ],
    ] {
        assert!(Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .status()
            .unwrap()
            .success());
    }
}

fn percentile(samples: &mut [Duration], p: usize) -> Duration {
    samples.sort();
    let index = ((samples.len() * p).div_ceil(100)).clamp(1, samples.len()) - 1;
    samples[index]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
