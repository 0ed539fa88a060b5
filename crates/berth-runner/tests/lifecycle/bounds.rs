//! Bombs in a repository or in the work: the host counts what git says it downloads and what
//! the files and the change come to, stops before writing past the bound, and fails the task
//! saying why; a large workspace is streamed into the sandbox, never held in memory.

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use berth_proto::TaskStatus;
use berth_runner::attempt::{Ending, Job, Work};
use berth_runner::git::RepositoryLimits;
use berth_sandbox::ExecRequest;

use crate::{run_with, Nothing, Repo, Setup};

const MIB: u64 = 1 << 20;

/// The most memory this process has held since the last reset, in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib << 10
}

/// Starts measuring the peak anew (Linux: writing 5 to clear_refs resets VmHWM).
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
}

/// A file of `bytes` zeros: megabytes on disk after git compresses them, kilobytes in a pack.
fn zeros(dir: &std::path::Path, name: &str, bytes: u64) {
    let file = std::fs::File::create(dir.join(name)).unwrap();
    file.set_len(bytes).unwrap();
}

/// Writes two files of zeros: a small diff that writes `2 × mib` MiB when applied.
struct WritesZeros(u64);

#[async_trait]
impl Work for WritesZeros {
    async fn run(&self, job: Job<'_>) -> Ending {
        let command = format!(
            "head -c {0}M /dev/zero > a.bin && head -c {0}M /dev/zero > b.bin",
            self.0
        );
        let done = job
            .sandbox
            .exec(&ExecRequest::new(command), &mut |_, _| {})
            .await
            .unwrap();
        assert_eq!(done.exit_code, Some(0), "{done:?}");
        Ending::Done {
            summary: String::new(),
        }
    }
}

fn bound(max_bytes: u64) -> RepositoryLimits {
    RepositoryLimits {
        max_bytes,
        ..RepositoryLimits::default()
    }
}

async fn failed_with(work: impl Work, setup: Setup) -> String {
    let (task, _) = run_with(work, setup).await;
    assert_eq!(task.status, TaskStatus::Failed, "{:?}", task.error);
    task.error.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_of_zeros_is_refused_before_its_files_are_written() {
    let setup = Setup {
        repo: Repo::Made(Box::new(|dir| zeros(dir, "zeros.bin", 100 * MIB))),
        limits: bound(32 * MIB),
        ..Setup::default()
    };
    let reason = failed_with(Nothing, setup).await;
    assert_eq!(
        reason,
        "the repository's files come to 100 MiB, over the bound of 32 MiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clone_that_downloads_past_the_bound_is_stopped() {
    let setup = Setup {
        repo: Repo::Made(Box::new(|dir| {
            use std::io::Write;
            let mut file = std::fs::File::create(dir.join("noise.bin")).unwrap();
            for _ in 0..48 {
                let noise: Vec<u8> = (0..MIB).map(|_| rand::random::<u8>()).collect();
                file.write_all(&noise).unwrap();
            }
        })),
        limits: bound(16 * MIB),
        ..Setup::default()
    };
    let reason = failed_with(Nothing, setup).await;
    assert!(
        reason.starts_with("the repository is larger than the bound of 16 MiB"),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clone_that_takes_too_long_is_stopped() {
    // A host that accepts the connection and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address: SocketAddr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let setup = Setup {
        repo: Repo::At(format!("http://{address}/acme/tool.git"), address),
        limits: RepositoryLimits {
            clone_timeout: Duration::from_secs(2),
            ..RepositoryLimits::default()
        },
        max_attempts: 1,
        ..Setup::default()
    };
    let reason = failed_with(Nothing, setup).await;
    assert_eq!(reason, "cloning the repository took longer than 2 s");
    held.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_that_would_write_past_the_bound_fails_the_task() {
    let setup = Setup {
        limits: bound(32 * MIB),
        ..Setup::default()
    };
    let reason = failed_with(WritesZeros(40), setup).await;
    assert_eq!(
        reason,
        "the change would write 80 MiB when applied, over the bound of 32 MiB"
    );
}

/// A workspace of hundreds of megabytes within the bound goes into the sandbox streamed: the
/// host's memory does not grow with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_workspace_is_streamed_into_the_sandbox() {
    let setup = Setup {
        repo: Repo::Made(Box::new(|dir| zeros(dir, "zeros.bin", 400 * MIB))),
        ..Setup::default()
    };
    reset_peak();
    let before = peak_rss();
    let (task, _) = run_with(Nothing, setup).await;
    assert_eq!(task.status, TaskStatus::Succeeded, "{:?}", task.error);
    let grew = peak_rss().saturating_sub(before);
    assert!(
        grew < 128 * MIB,
        "a 400 MiB workspace grew the host's memory by {} MiB",
        grew / MIB
    );
}
