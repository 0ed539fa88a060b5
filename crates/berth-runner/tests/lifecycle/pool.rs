//! A task whose sandbox comes from a warm pool: the attempt gets one of the pool's started
//! containers, with the task's repository copied in, and removes it at its end like any other.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use berth_proto::TaskStatus;
use berth_runner::attempt::sweep_containers;
use berth_runner::attempt::{Ending, Job, Work};
use berth_sandbox::{ExecRequest, Limits, PoolSettings, WarmPool};
use berth_testkit::docker::containers_labelled;
use berth_testkit::eventually;

use crate::{run_with, Setup};

/// Reads the repository's README and notes its container, and whether the pool made it.
#[derive(Default)]
struct Reads {
    seen: Mutex<Option<(String, bool, String)>>,
}

#[async_trait]
impl Work for &'static Reads {
    async fn run(&self, job: Job<'_>) -> Ending {
        let read = ExecRequest::new("cat README && echo changed >> README");
        let ran = job.sandbox.exec(&read, &mut |_, _| {}).await.unwrap();
        let id = job.sandbox.id().to_string();
        let pooled = containers_labelled("berth.kind=pool")
            .iter()
            .any(|short| id.starts_with(short.as_str()));
        let stdout = String::from_utf8_lossy(&ran.stdout).into_owned();
        *self.seen.lock().unwrap() = Some((id, pooled, stdout));
        Ending::Done {
            summary: String::new(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_runs_in_a_container_from_the_warm_pool_which_is_removed_at_its_end() {
    let work: &'static Reads = Box::leak(Box::default());
    let setup = Setup {
        warm_pool: 1,
        ..Setup::default()
    };
    let (task, _events) = run_with(work, setup).await;
    assert_eq!(task.status, TaskStatus::Succeeded, "{:?}", task.error);
    assert!(
        task.result.has_diff,
        "the change in the pooled container is the task's"
    );
    let (id, pooled, stdout) = work.seen.lock().unwrap().clone().expect("the work ran");
    assert!(pooled, "the sandbox was one of the pool's containers");
    assert_eq!(stdout, "hello\n", "the repository was copied into it");
    assert!(
        containers_labelled("berth.kind=pool")
            .iter()
            .all(|short| !id.starts_with(short.as_str())),
        "removed at the attempt's end, and the pool's shut down"
    );
}

/// Says whether its container has a default route, i.e. a network.
struct RouteCount {
    routes: Mutex<Option<String>>,
}

#[async_trait]
impl Work for &'static RouteCount {
    async fn run(&self, job: Job<'_>) -> Ending {
        let count = ExecRequest::new(DEFAULT_ROUTES);
        let ran = job.sandbox.exec(&count, &mut |_, _| {}).await.unwrap();
        *self.routes.lock().unwrap() = Some(String::from_utf8_lossy(&ran.stdout).trim().into());
        Ending::Done {
            summary: String::new(),
        }
    }
}

const DEFAULT_ROUTES: &str = "awk 'NR > 1 && $2 == \"00000000\"' /proc/net/route | wc -l";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_sandbox_has_the_network_for_its_setup_and_none_for_its_work() {
    let work: &'static RouteCount = Box::leak(Box::new(RouteCount {
        routes: Mutex::new(None),
    }));
    let setup = Setup {
        warm_pool: 1,
        setup_command: Some(format!("test \"$({DEFAULT_ROUTES})\" = 1")),
        ..Setup::default()
    };
    let (task, _events) = run_with(work, setup).await;
    assert_eq!(
        task.status,
        TaskStatus::Succeeded,
        "the setup had a route: {:?}",
        task.error
    );
    let routes = work.routes.lock().unwrap().clone();
    assert_eq!(
        routes.as_deref(),
        Some("0"),
        "the work (network: none) has none"
    );
}

/// The runner's sweep, with a live pool of its own and the pool of a runner that died: the
/// dead one's waiting containers are removed once past their time, the live one's stay; a
/// workspace volume whose container was removed by hand goes too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_removes_a_dead_runners_pool_and_leaves_a_live_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = berth_store::open_sqlite(dir.path()).await.unwrap();
    let docker = berth_sandbox::connect().await.expect("the Docker engine");
    let installation = store.installation_id().to_string();
    let unique = |name: &str| format!("{name}-{}", uuid::Uuid::now_v7().simple());
    let (live_node, dead_node) = (unique("live"), unique("dead"));
    let live = crate::warm_pool(&docker, &installation, &live_node, 1).await;
    let at_once = PoolSettings {
        max_age: Duration::ZERO,
        grace: Duration::ZERO,
        ..PoolSettings::new(1, Limits::default(), Some(Limits::default().memory_bytes))
    };
    let image = berth_sandbox::default_image();
    let dead = WarmPool::start(docker, &installation, &dead_node, at_once, &[image])
        .await
        .unwrap();
    let full = || async { dead.idle() == 1 };
    eventually(Duration::from_secs(120), "the other pool fills", full).await;
    // Its runner dies: nothing refills or removes its container any more.
    drop(dead);
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let label = format!("{}={installation}", berth_sandbox::LABEL_INSTALLATION);
    let created = std::process::Command::new("docker")
        .args(["volume", "create", "--label", &label])
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    let volume = String::from_utf8(created.stdout)
        .unwrap()
        .trim()
        .to_string();

    sweep_containers(&live, store.as_ref()).await;
    let inspected = std::process::Command::new("docker")
        .args(["volume", "inspect", &volume])
        .output()
        .unwrap();
    assert!(!inspected.status.success(), "the leftover volume stayed");
    assert!(containers_labelled(&format!("berth.node={dead_node}")).is_empty());
    assert_eq!(
        containers_labelled(&format!("berth.node={live_node}")).len(),
        1
    );
    live.shutdown().await;
}
