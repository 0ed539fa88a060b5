//! How long until a task's sandbox is ready — create, start, copy in a 10 MB repository, run
//! a first command — against a bare `docker run --rm IMAGE true` of the same image, measured
//! in the same run; the round trip of a trivial exec; and, for a small repository, a sandbox
//! taken from a warm pool against one started cold.
//!
//! `cargo bench -p berth-sandbox --bench sandbox_ready` (needs the engine and the image).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use berth_sandbox::{
    DockerSandbox, DockerSandboxes, ExecRequest, Limits, PoolSettings, Sandbox, SandboxSpec,
    Sandboxes, WarmPool,
};

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
    let mut steps = [Vec::new(), Vec::new(), Vec::new()];
    for round in 0..ROUNDS {
        let spec = SandboxSpec {
            installation: "berth-test".to_string(),
            task_id: format!("bench-{round}-{}", std::process::id()),
            attempt: 1,
            node_id: "berth-bench".into(),
            image: berth_sandbox::default_image(),
            limits: Limits::default(),
        };
        let started = Instant::now();
        let sandbox = DockerSandbox::create(&docker, &spec).await.unwrap();
        let created = started.elapsed();
        sandbox.copy_in(repo.path(), 1 << 30).await.unwrap();
        let copied = started.elapsed();
        let first = sandbox
            .exec(
                &ExecRequest::new("git status --short | wc -l"),
                &mut |_, _| {},
            )
            .await
            .unwrap();
        ready.push(started.elapsed());
        steps[0].push(created);
        steps[1].push(copied - created);
        steps[2].push(started.elapsed() - copied);
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
    let [created, copied, first] = &mut steps;
    println!(
        "  of which, p50: create + start {:.1} ms, copy-in {:.1} ms, first exec {:.1} ms",
        ms(percentile(created, 50)),
        ms(percentile(copied, 50)),
        ms(percentile(first, 50))
    );
    println!("exec round trip of `true`, {EXECS} execs:");
    println!(
        "  p50 {:>6.1} ms   p99 {:>6.1} ms",
        ms(percentile(&mut trips, 50)),
        ms(percentile(&mut trips, 99))
    );
    lookups(&docker).await;
    copy_in_volume_against_layer(&docker, repo.path(), "10 MB").await;
    let small = tempfile::tempdir().unwrap();
    make_repo(small.path(), 100 << 10);
    copy_in_volume_against_layer(&docker, small.path(), "100 KB").await;
    warm_against_cold(&docker).await;
}

/// The copy-in into a sandbox's own workspace volume (how a task's sandbox is made) against
/// the obvious alternative, the container's own layer (on this engine's storage driver), in
/// turns. A layer sandbox is made the way a prepared environment's is: from an image tagged
/// under the environment images' name.
async fn copy_in_volume_against_layer(docker: &bollard::Docker, repo: &Path, size: &str) {
    let layered = berth_sandbox::environment::environment_image_name("bench", "layer");
    let (repo_name, tag) = layered.split_once(':').unwrap();
    let options = bollard::query_parameters::TagImageOptionsBuilder::default()
        .repo(repo_name)
        .tag(tag)
        .build();
    docker
        .tag_image(&berth_sandbox::default_image(), Some(options))
        .await
        .unwrap();
    let spec = |image: &str| SandboxSpec {
        installation: "berth-test".to_string(),
        task_id: format!("bench-copy-{}", uuid_ish()),
        attempt: 1,
        node_id: "berth-bench".into(),
        image: image.to_string(),
        limits: Limits::default(),
    };
    let (mut volume, mut layer) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        for (image, took) in [
            (berth_sandbox::default_image(), &mut volume),
            (layered.clone(), &mut layer),
        ] {
            let sandbox = DockerSandbox::create(docker, &spec(&image)).await.unwrap();
            let started = Instant::now();
            sandbox.copy_in(repo, 1 << 30).await.unwrap();
            took.push(started.elapsed());
            sandbox.destroy().await.unwrap();
        }
    }
    let _ = docker
        .remove_image(
            &layered,
            None::<bollard::query_parameters::RemoveImageOptions>,
            None,
        )
        .await;
    let (volume_p50, layer_p50) = (percentile(&mut volume, 50), percentile(&mut layer, 50));
    println!("copy-in of a {size} repository, {ROUNDS} rounds each:");
    println!(
        "  into the workspace volume (Berth)   p50 {:>7.1} ms   max {:>7.1} ms",
        ms(volume_p50),
        ms(percentile(&mut volume, 100))
    );
    println!(
        "  into the container's layer          p50 {:>7.1} ms   max {:>7.1} ms",
        ms(layer_p50),
        ms(percentile(&mut layer, 100))
    );
    println!(
        "  ratio volume / layer: {:.2}",
        ms(volume_p50) / ms(layer_p50)
    );
}

fn uuid_ish() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}-{nanos}", std::process::id())
}

/// What cold create no longer asks before each container: the image and the network.
async fn lookups(docker: &bollard::Docker) {
    let mut took = Vec::new();
    for _ in 0..EXECS {
        let started = Instant::now();
        docker
            .inspect_image(&berth_sandbox::default_image())
            .await
            .unwrap();
        berth_sandbox::ensure_sandbox_network(docker).await.unwrap();
        took.push(started.elapsed());
    }
    println!(
        "image and network look-ups a cold create no longer makes: p50 {:>6.1} ms",
        ms(percentile(&mut took, 50))
    );
}

/// A small repository (20 files, 100 KB) into a sandbox and a first command, the sandbox
/// taken from a warm pool of one (refilled between rounds) or started cold.
async fn warm_against_cold(docker: &bollard::Docker) {
    let repo = tempfile::tempdir().unwrap();
    make_repo(repo.path(), 100 << 10);
    let node = format!("berth-bench-{}", std::process::id());
    let settings = PoolSettings::new(1, Limits::default(), Some(Limits::default().memory_bytes));
    let image = berth_sandbox::default_image();
    let pool = WarmPool::start(docker.clone(), "berth-test", &node, settings, &[image])
        .await
        .unwrap();
    let cold = DockerSandboxes::new(docker.clone());
    let (mut warm, mut started_cold) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        while pool.idle() < 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let spec = SandboxSpec {
            installation: "berth-test".to_string(),
            task_id: format!("bench-warm-{round}-{}", std::process::id()),
            attempt: 1,
            node_id: node.clone(),
            image: berth_sandbox::default_image(),
            limits: Limits::default(),
        };
        warm.push(ready_small(&pool, &spec, repo.path()).await);
        let spec = SandboxSpec {
            task_id: format!("bench-cold-{round}-{}", std::process::id()),
            ..spec
        };
        started_cold.push(ready_small(&cold, &spec, repo.path()).await);
    }
    pool.shutdown().await;
    println!("small repository (100 KB) copied in + first exec, {ROUNDS} rounds:");
    for (name, rounds) in [("warm pool", &warm), ("cold", &started_cold)] {
        let step = |i: usize| {
            let mut samples: Vec<Duration> = rounds
                .iter()
                .map(|steps: &[Duration; 3]| steps[i])
                .collect();
            ms(percentile(&mut samples, 50))
        };
        let mut total: Vec<Duration> = rounds.iter().map(|steps| steps.iter().sum()).collect();
        println!(
            "  {name:<10} p50 {:>7.1} ms   max {:>7.1} ms   (p50 sandbox {:.1}, copy-in {:.1}, first exec {:.1})",
            ms(percentile(&mut total, 50)),
            ms(percentile(&mut total, 100)),
            step(0),
            step(1),
            step(2)
        );
    }
}

/// The time to a sandbox, to the repository copied in, and to the first command's end.
async fn ready_small(sandboxes: &dyn Sandboxes, spec: &SandboxSpec, repo: &Path) -> [Duration; 3] {
    let started = Instant::now();
    let sandbox = sandboxes.create(spec).await.unwrap();
    let made = started.elapsed();
    sandbox.copy_in(repo, 1 << 30).await.unwrap();
    let copied = started.elapsed();
    let first = sandbox
        .exec(
            &ExecRequest::new("git status --short | wc -l"),
            &mut |_, _| {},
        )
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(first.exit_code, Some(0));
    sandbox.destroy().await.unwrap();
    [made, copied - made, took - copied]
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
