//! The warm pool on the real Docker engine with the real default image: it fills, hands out
//! started containers (each once) and refills, gives lower limits to a task that asks, is
//! left alone by the sweep while its runner lives and swept once it is dead, and is removed at
//! shutdown. Without an engine the tests fail on CI (CI is set) and are skipped elsewhere.

mod engine;

use engine::engine;
use std::collections::HashMap;
use std::time::Duration;

use berth_sandbox::{
    ExecRequest, Limits, NetworkPolicy, PoolSettings, Sandbox, SandboxSpec, Sandboxes, WarmPool,
    LABEL_KIND, LABEL_NODE,
};
use bollard::query_parameters::{InspectContainerOptions, ListContainersOptionsBuilder};
use bollard::Docker;

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7().simple())
}

/// Small limits, so that the pools of parallel tests fit any machine's budget.
fn limits() -> Limits {
    Limits {
        memory_bytes: 256 << 20,
        cpus: 1.0,
        pids: 256,
    }
}

fn settings(size: usize) -> PoolSettings {
    PoolSettings::new(size, limits(), Some(size as u64 * (256 << 20)))
}

fn spec(installation: &str, node: &str) -> SandboxSpec {
    SandboxSpec {
        installation: installation.to_string(),
        task_id: uuid::Uuid::now_v7().to_string(),
        attempt: 1,
        node_id: node.to_string(),
        image: berth_sandbox::default_image(),
        limits: limits(),
    }
}

/// A pool of `size` for a fresh installation and node; removed when the test ends, even when
/// it fails (by label, whatever the pool holds by then).
struct Pool {
    pool: WarmPool,
    installation: String,
    node: String,
    _cleanup: Cleanup,
}

/// Removes a node's containers when dropped.
struct Cleanup(String);

impl Pool {
    async fn start(docker: &Docker, size: usize) -> Pool {
        Self::start_with(docker, &unique("install"), settings(size)).await
    }

    async fn start_with(docker: &Docker, installation: &str, settings: PoolSettings) -> Pool {
        let node = unique("node");
        let image = berth_sandbox::default_image();
        let pool = WarmPool::start(docker.clone(), installation, &node, settings, &[image])
            .await
            .unwrap();
        Pool {
            pool,
            installation: installation.to_string(),
            _cleanup: Cleanup(node.clone()),
            node,
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        remove_labelled(&format!("{LABEL_NODE}={}", self.0));
    }
}

fn remove_labelled(label: &str) {
    let listed = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label={label}")])
        .output()
        .unwrap();
    for id in String::from_utf8_lossy(&listed.stdout).split_whitespace() {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", "-v", id])
            .output();
    }
}

/// The ids of the engine's running pooled containers of `node`.
async fn pooled_on_engine(docker: &Docker, node: &str) -> Vec<String> {
    let filters = HashMap::from([(
        "label".to_string(),
        vec![format!("{LABEL_KIND}=pool"), format!("{LABEL_NODE}={node}")],
    )]);
    let options = ListContainersOptionsBuilder::default()
        .filters(&filters)
        .build();
    let listed = docker.list_containers(Some(options)).await.unwrap();
    listed.into_iter().filter_map(|c| c.id).collect()
}

/// Waits (up to a minute: the machine is shared) until `idle` containers wait in the pool.
async fn filled(pool: &Pool, idle: usize) {
    for _ in 0..600 {
        if pool.pool.idle() == idle {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the pool holds {} containers, not {idle}", pool.pool.idle());
}

async fn echo(sandbox: &dyn Sandbox) -> String {
    stdout(sandbox, "echo ready").await
}

async fn stdout(sandbox: &dyn Sandbox, command: &str) -> String {
    let ran = sandbox
        .exec(&ExecRequest::new(command), &mut |_, _| {})
        .await
        .unwrap();
    assert_eq!(ran.exit_code, Some(0), "{ran:?}");
    String::from_utf8(ran.stdout).unwrap()
}

#[tokio::test]
async fn the_pool_fills_hands_out_a_started_container_and_refills() {
    let Some(docker) = engine().await else { return };
    let pool = Pool::start(&docker, 2).await;
    filled(&pool, 2).await;
    let waiting = pooled_on_engine(&docker, &pool.node).await;
    assert_eq!(waiting.len(), 2, "two started containers on the engine");

    let spec = spec(&pool.installation, &pool.node);
    let sandbox = pool.pool.create(&spec).await.unwrap();
    assert!(
        waiting.contains(&sandbox.id().to_string()),
        "taken from the pool"
    );
    assert_eq!(echo(sandbox.as_ref()).await, "ready\n");
    let interfaces = "ls /sys/class/net | sort | tr '\\n' ' '";
    assert_eq!(
        stdout(sandbox.as_ref(), interfaces).await,
        "lo ",
        "it waited with no network"
    );
    sandbox.set_network(NetworkPolicy::Full).await.unwrap();
    let default_route = "awk 'NR > 1 && $2 == \"00000000\"' /proc/net/route | wc -l";
    assert_eq!(
        stdout(sandbox.as_ref(), default_route).await.trim(),
        "1",
        "connected on demand"
    );
    let inspected = docker
        .inspect_container(sandbox.id(), None::<InspectContainerOptions>)
        .await
        .unwrap();
    let name = format!("/berth-{}-1", spec.task_id);
    assert_eq!(inspected.name.as_deref(), Some(name.as_str()));

    filled(&pool, 2).await;
    let now = pooled_on_engine(&docker, &pool.node).await;
    assert_eq!(now.len(), 3, "two waiting and the taken one");
    sandbox.destroy().await.unwrap();
    pool.pool.shutdown().await;
}

#[tokio::test]
async fn two_takes_never_get_the_same_container() {
    let Some(docker) = engine().await else { return };
    let pool = Pool::start(&docker, 2).await;
    filled(&pool, 2).await;
    let (first, second) = (
        spec(&pool.installation, &pool.node),
        spec(&pool.installation, &pool.node),
    );
    let (a, b) = tokio::join!(pool.pool.create(&first), pool.pool.create(&second));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_ne!(a.id(), b.id());
    a.destroy().await.unwrap();
    b.destroy().await.unwrap();
    pool.pool.shutdown().await;
}

#[tokio::test]
async fn a_task_asking_for_less_gets_its_limits_on_the_pooled_container() {
    let Some(docker) = engine().await else { return };
    let pool = Pool::start(&docker, 1).await;
    filled(&pool, 1).await;
    let waiting = pooled_on_engine(&docker, &pool.node).await;
    let lower = Limits {
        memory_bytes: 128 << 20,
        cpus: 0.5,
        pids: 64,
    };
    let asking = SandboxSpec {
        limits: lower,
        ..spec(&pool.installation, &pool.node)
    };
    let sandbox = pool.pool.create(&asking).await.unwrap();
    assert!(
        waiting.contains(&sandbox.id().to_string()),
        "taken from the pool"
    );
    let host = docker
        .inspect_container(sandbox.id(), None::<InspectContainerOptions>)
        .await
        .unwrap()
        .host_config
        .unwrap();
    assert_eq!(host.memory, Some(128 << 20));
    assert_eq!(host.memory_swap, Some(128 << 20));
    assert_eq!(host.nano_cpus, Some(500_000_000));
    assert_eq!(host.pids_limit, Some(64));

    let more = SandboxSpec {
        limits: Limits {
            memory_bytes: 512 << 20,
            ..limits()
        },
        ..spec(&pool.installation, &pool.node)
    };
    filled(&pool, 1).await;
    let waiting = pooled_on_engine(&docker, &pool.node).await;
    let cold = pool.pool.create(&more).await.unwrap();
    assert!(
        !waiting.contains(&cold.id().to_string()),
        "a task asking for more than the pool's limits starts cold"
    );
    sandbox.destroy().await.unwrap();
    cold.destroy().await.unwrap();
    pool.pool.shutdown().await;
}

/// The sweep lists what it may remove: a live pool's waiting containers never, a taken one as
/// its attempt's, a dead runner's waiting ones once past their time, another installation's
/// never.
#[tokio::test]
async fn the_sweep_leaves_a_live_pool_alone_and_finds_a_dead_runners() {
    let Some(docker) = engine().await else { return };
    let installation = unique("install");
    let live = Pool::start_with(&docker, &installation, settings(1)).await;
    let at_once = PoolSettings {
        max_age: Duration::ZERO,
        grace: Duration::ZERO,
        ..settings(1)
    };
    let dead = Pool::start_with(&docker, &installation, at_once.clone()).await;
    let elsewhere = Pool::start_with(&docker, &unique("install"), at_once).await;
    filled(&live, 1).await;
    filled(&dead, 1).await;
    filled(&elsewhere, 1).await;
    let dead_ones = pooled_on_engine(&docker, &dead.node).await;
    let theirs = pooled_on_engine(&docker, &elsewhere.node).await;
    // Their runners die: nothing refills or removes their containers any more.
    let Pool {
        pool,
        _cleanup: _dead,
        ..
    } = dead;
    drop(pool);
    let Pool {
        pool,
        _cleanup: _elsewhere,
        ..
    } = elsewhere;
    drop(pool);
    let spec = spec(&installation, &live.node);
    let taken = live.pool.create(&spec).await.unwrap();
    filled(&live, 1).await;
    let live_waiting = pooled_on_engine(&docker, &live.node).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let found = live.pool.task_sandboxes(&installation).await.unwrap();
    let ids: Vec<&str> = found.iter().map(|c| c.id.as_str()).collect();
    let held = found
        .iter()
        .find(|c| c.id == taken.id())
        .expect("the taken container is listed");
    assert_eq!(
        (held.task_id.as_str(), held.attempt),
        (spec.task_id.as_str(), 1)
    );
    assert_eq!(dead_ones.len(), 1);
    assert!(
        ids.contains(&dead_ones[0].as_str()),
        "the dead runner's is listed: {found:?}"
    );
    let for_none = found.iter().find(|c| c.id == dead_ones[0]).unwrap();
    assert_eq!(
        for_none.attempt, 0,
        "listed for no attempt, so the sweep removes it"
    );
    for waiting in &live_waiting {
        if waiting != taken.id() {
            assert!(
                !ids.contains(&waiting.as_str()),
                "the live pool's is never listed"
            );
        }
    }
    assert!(
        !ids.contains(&theirs[0].as_str()),
        "another installation's is never listed"
    );
    // A sweep from a runner with no pool of its own lists the same.
    let plain = berth_sandbox::task_containers(&docker, &installation)
        .await
        .unwrap();
    assert!(plain.iter().any(|c| c.id == dead_ones[0]));
    assert!(plain
        .iter()
        .all(|c| !live_waiting.contains(&c.id) || c.id == taken.id()));

    taken.destroy().await.unwrap();
    live.pool.shutdown().await;
}

#[tokio::test]
async fn shutdown_removes_the_waiting_containers() {
    let Some(docker) = engine().await else { return };
    let pool = Pool::start(&docker, 2).await;
    filled(&pool, 2).await;
    pool.pool.shutdown().await;
    assert!(pooled_on_engine(&docker, &pool.node).await.is_empty());
    assert_eq!(pool.pool.idle(), 0);
}

#[tokio::test]
async fn a_restarted_node_removes_what_its_earlier_run_left() {
    let Some(docker) = engine().await else { return };
    let earlier = Pool::start(&docker, 1).await;
    filled(&earlier, 1).await;
    let left = pooled_on_engine(&docker, &earlier.node).await;
    assert_eq!(left.len(), 1);
    let (installation, node) = (earlier.installation.clone(), earlier.node.clone());
    // The earlier run crashes: nothing removes its container.
    let Pool { pool, _cleanup, .. } = earlier;
    drop(pool);
    let image = berth_sandbox::default_image();
    let restarted = WarmPool::start(docker.clone(), &installation, &node, settings(0), &[image])
        .await
        .unwrap();
    assert!(pooled_on_engine(&docker, &node).await.is_empty());
    restarted.shutdown().await;
}
