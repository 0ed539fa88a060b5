//! `berth runner` with `warm_pool_size`: the runner fills its pool as it starts, labelled with
//! its node, and removes the pool when it is stopped.

mod common;

use std::time::Duration;

use common::{berth, containers_labelled, eventually, start_runner, terminate};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_keeps_its_warm_pool_full_and_removes_it_when_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let node = format!("pool-{}", uuid::Uuid::now_v7().simple());
    let mut runner = berth(dir.path());
    runner
        .args(["runner", "--data-dir", "state"])
        .env("BERTH_RUNNER_NODE_ID", &node)
        .env("BERTH_RUNNER_COMMAND", "echo done")
        .env("BERTH_WARM_POOL_SIZE", "2")
        .env("BERTH_SANDBOX_MEMORY_MB", "256")
        .env("BERTH_WARM_POOL_MEMORY_MB", "512");
    let mut runner = start_runner(runner);
    let pooled = || containers_labelled(&format!("berth.node={node}"));
    let full = || async { pooled().len() == 2 };
    eventually(Duration::from_secs(120), "the pool fills", full).await;
    let kind_pool = containers_labelled("berth.kind=pool");
    assert!(
        pooled().iter().all(|id| kind_pool.contains(id)),
        "they are pooled containers"
    );
    let status = terminate(&mut runner);
    assert!(status.success(), "{status:?}");
    assert!(
        pooled().is_empty(),
        "the pool is removed when the runner stops"
    );
}
