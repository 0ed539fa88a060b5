//! A warm pool: started, unused containers kept ready per image, so that an attempt takes one
//! instead of waiting for a create and a start. A pooled container is made exactly as a task's
//! would be (same image, limits and lockdown), labelled `kind=pool` with its runner's node and
//! the time after which a sweep may remove it; nothing of a task is in it until it is taken.
//! It waits with no network (the default of tasks); an attempt whose setup or task needs the
//! network connects it.
//!
//! Docker cannot relabel a container, so taking one renames it to the task container's name
//! (`berth-<task>-<attempt>`): from then on the sweep treats it as that attempt's container and
//! removes it once the attempt is no longer live. A container not yet taken is handed out only
//! while it is younger than `max_age`, and the pool replaces it after that; a sweep removes it
//! only `grace` later still. So a live pool's containers are never swept, while those of a pool
//! whose runner died (or of an earlier run of the same node) go within `max_age + grace`.
//! A container is never given to a second task: the attempt destroys it at its end as ever.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bollard::models::ContainerUpdateBody;
use bollard::query_parameters::RenameContainerOptionsBuilder;
use bollard::Docker;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::docker::workspace_for;
use crate::labels::{self, list_kind, unix_now, KIND_POOL, POOL_NAME_PREFIX};
use crate::{
    engine_error, DockerSandbox, DockerSandboxes, Limits, NetworkPolicy, Sandbox, SandboxError,
    SandboxSpec, Sandboxes, TaskContainer,
};

/// How often the pool looks at itself when nothing wakes it: retires old containers, refills
/// after a failure.
const REFRESH: Duration = Duration::from_secs(30);
/// An image nobody has asked for in this long is no longer kept warm (unless it was named at
/// start).
const IMAGE_IDLE: Duration = Duration::from_secs(3600);

/// How a pool is sized.
#[derive(Clone, Debug)]
pub struct PoolSettings {
    /// Started, unused containers kept per image.
    pub size: usize,
    /// The most the memory limits of all pooled containers may add up to; `None`: the memory
    /// the machine has available when a container is added.
    pub memory_budget_bytes: Option<u64>,
    /// The limits pooled containers are made with (the server's); a task asking for lower
    /// ones gets them lowered when it takes one, a task asking for more starts cold.
    pub limits: Limits,
    /// How long a pooled container may be handed out after it was made.
    pub max_age: Duration,
    /// How long after that a sweep leaves it alone (the pool removes it itself first).
    pub grace: Duration,
}

impl PoolSettings {
    /// `size` containers per image of `limits`, kept up to 30 minutes, bounded by `budget`.
    pub fn new(size: usize, limits: Limits, memory_budget_bytes: Option<u64>) -> Self {
        Self {
            size,
            memory_budget_bytes,
            limits,
            max_age: Duration::from_secs(30 * 60),
            grace: Duration::from_secs(5 * 60),
        }
    }
}

/// [`Sandboxes`] with a warm pool in front of the Docker engine.
pub struct WarmPool {
    inner: Arc<Inner>,
    filler: Mutex<Option<JoinHandle<()>>>,
}

struct Inner {
    docker: Docker,
    cold: DockerSandboxes,
    installation: String,
    node_id: String,
    settings: PoolSettings,
    state: Mutex<State>,
    wake: Notify,
    stop: CancellationToken,
}

#[derive(Default)]
struct State {
    images: Vec<Wanted>,
    idle: Vec<Pooled>,
}

/// An image kept warm.
struct Wanted {
    image: String,
    /// Named at start: kept warm whether or not anyone asks.
    pinned: bool,
    last_asked: Instant,
}

/// A started container nobody has taken.
struct Pooled {
    id: String,
    image: String,
    /// Unix time after which it is not handed out.
    hand_out_until: u64,
}

impl WarmPool {
    /// Starts a pool of `installation`'s containers for the runner `node_id`, keeping `images`
    /// warm from now on (and any other image once it is asked for). Pooled containers an
    /// earlier run of this node left are removed first: node ids are unique among live
    /// runners, so nobody else holds them.
    pub async fn start(
        docker: Docker,
        installation: &str,
        node_id: &str,
        settings: PoolSettings,
        images: &[String],
    ) -> Result<Self, SandboxError> {
        for leftover in list_kind(&docker, installation, KIND_POOL, Some(node_id)).await? {
            if leftover
                .name
                .trim_start_matches('/')
                .starts_with(POOL_NAME_PREFIX)
            {
                labels::remove_container(&docker, &leftover.id).await?;
            }
        }
        let now = Instant::now();
        let state = State {
            images: images
                .iter()
                .map(|image| Wanted {
                    image: image.clone(),
                    pinned: true,
                    last_asked: now,
                })
                .collect(),
            idle: Vec::new(),
        };
        let inner = Arc::new(Inner {
            cold: DockerSandboxes::new(docker.clone()),
            docker,
            installation: installation.to_string(),
            node_id: node_id.to_string(),
            settings,
            state: Mutex::new(state),
            wake: Notify::new(),
            stop: CancellationToken::new(),
        });
        let filler = tokio::spawn(inner.clone().keep_filled());
        Ok(Self {
            inner,
            filler: Mutex::new(Some(filler)),
        })
    }

    /// The containers waiting to be taken, of every image.
    pub fn idle(&self) -> usize {
        self.inner.state().idle.len()
    }

    /// Stops refilling and removes every container still waiting.
    pub async fn shutdown(&self) {
        self.inner.stop.cancel();
        let filler = self.filler.lock().expect("pool lock").take();
        if let Some(filler) = filler {
            let _ = filler.await;
        }
        let idle = std::mem::take(&mut self.inner.state().idle);
        for pooled in idle {
            self.inner.discard(&pooled.id).await;
        }
    }
}

#[async_trait]
impl Sandboxes for WarmPool {
    async fn create(&self, spec: &SandboxSpec) -> Result<Box<dyn Sandbox>, SandboxError> {
        let inner = &self.inner;
        if inner.settings.size == 0 || !within(spec.limits, inner.settings.limits) {
            return inner.cold.create(spec).await;
        }
        let taken = inner.take_idle(&spec.image);
        inner.wake.notify_one();
        if let Some(pooled) = taken {
            match inner.hand_over(&pooled, spec).await {
                Ok(sandbox) => return Ok(Box::new(sandbox)),
                Err(err) => {
                    tracing::warn!(container = %pooled.id, error = %err, "a pooled container could not be taken; starting one cold");
                    inner.discard(&pooled.id).await;
                }
            }
        }
        inner.cold.create(spec).await
    }

    async fn task_sandboxes(&self, installation: &str) -> Result<Vec<TaskContainer>, SandboxError> {
        let mut found = self.inner.cold.task_sandboxes(installation).await?;
        let state = self.inner.state();
        found.retain(|container| !state.idle.iter().any(|pooled| pooled.id == container.id));
        Ok(found)
    }

    async fn remove(&self, id: &str) -> Result<(), SandboxError> {
        self.inner.cold.remove(id).await
    }

    async fn remove_leftovers(&self, installation: &str) -> Result<(), SandboxError> {
        self.inner.cold.remove_leftovers(installation).await
    }
}

/// Whether limits `asked` are nowhere above `pooled`.
fn within(asked: Limits, pooled: Limits) -> bool {
    asked.memory_bytes <= pooled.memory_bytes
        && asked.cpus <= pooled.cpus
        && asked.pids <= pooled.pids
}

impl Inner {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("pool lock")
    }

    /// Takes a fresh container of `image` out of the pool, noting that the image is wanted.
    fn take_idle(&self, image: &str) -> Option<Pooled> {
        let mut state = self.state();
        match state.images.iter_mut().find(|wanted| wanted.image == image) {
            Some(wanted) => wanted.last_asked = Instant::now(),
            None => state.images.push(Wanted {
                image: image.to_string(),
                pinned: false,
                last_asked: Instant::now(),
            }),
        }
        let now = unix_now();
        let index = state
            .idle
            .iter()
            .position(|pooled| pooled.image == image && now < pooled.hand_out_until)?;
        Some(state.idle.remove(index))
    }

    /// Makes a pooled container the attempt's: named for it (which tells the sweep whose it
    /// is), and with the task's lower limits if it asked for any.
    async fn hand_over(
        &self,
        pooled: &Pooled,
        spec: &SandboxSpec,
    ) -> Result<DockerSandbox, SandboxError> {
        let name = labels::task_name(&spec.task_id, spec.attempt);
        let options = RenameContainerOptionsBuilder::default().name(&name).build();
        self.docker
            .rename_container(&pooled.id, options)
            .await
            .map_err(engine_error)?;
        if spec.limits != self.settings.limits {
            let limits = spec.limits;
            let update = ContainerUpdateBody {
                memory: Some(limits.memory_bytes as i64),
                memory_swap: Some(limits.memory_bytes as i64),
                nano_cpus: Some((limits.cpus * 1e9) as i64),
                pids_limit: Some(limits.pids),
                ..Default::default()
            };
            self.docker
                .update_container(&pooled.id, update)
                .await
                .map_err(engine_error)?;
        }
        Ok(DockerSandbox::adopt(
            &self.docker,
            pooled.id.clone(),
            spec.limits,
        ))
    }

    async fn discard(&self, id: &str) {
        if let Err(err) = labels::remove_container(&self.docker, id).await {
            tracing::warn!(container = %id, error = %err, "removing a pooled container failed; a sweep will");
        }
    }

    /// Refills the pool whenever a container is taken, and looks again every [`REFRESH`],
    /// until stopped.
    async fn keep_filled(self: Arc<Self>) {
        loop {
            self.retire().await;
            self.fill().await;
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(REFRESH) => {}
                () = self.stop.cancelled() => return,
            }
        }
    }

    /// Removes containers too old to hand out, and those of images no longer wanted.
    async fn retire(&self) {
        let retired: Vec<Pooled> = {
            let mut state = self.state();
            state
                .images
                .retain(|wanted| wanted.pinned || wanted.last_asked.elapsed() < IMAGE_IDLE);
            let now = unix_now();
            let (keep, retired) = std::mem::take(&mut state.idle)
                .into_iter()
                .partition(|pooled| {
                    now < pooled.hand_out_until
                        && state
                            .images
                            .iter()
                            .any(|wanted| wanted.image == pooled.image)
                });
            state.idle = keep;
            retired
        };
        for pooled in retired {
            self.discard(&pooled.id).await;
        }
    }

    /// Adds containers, one at a time, to every wanted image short of `size`, the most
    /// recently asked for first, while the memory budget allows.
    async fn fill(&self) {
        while let Some(image) = self.next_to_fill() {
            if self.stop.is_cancelled() {
                return;
            }
            let made = unix_now();
            let hand_out_until = made + self.settings.max_age.as_secs();
            let remove_after = hand_out_until + self.settings.grace.as_secs();
            let labels = labels::pool_labels(&self.installation, &self.node_id, remove_after);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.as_nanos());
            let name = format!("{POOL_NAME_PREFIX}{}-{nanos:x}", self.node_id);
            let limits = self.settings.limits;
            match self.start_one(&image, limits, labels, &name).await {
                Ok(sandbox) => self.state().idle.push(Pooled {
                    id: sandbox.id().to_string(),
                    image,
                    hand_out_until,
                }),
                Err(err) => {
                    // Tried again at the next look, not in a tight loop.
                    tracing::warn!(%image, error = %err, "adding a container to the warm pool failed");
                    return;
                }
            }
        }
    }

    /// A started container, with no network yet: most tasks work without one, and leaving
    /// the network here spares their attempt that step. A task that needs it (its setup, or
    /// `network: full`) connects it, as for any container.
    async fn start_one(
        &self,
        image: &str,
        limits: Limits,
        labels: HashMap<String, String>,
        name: &str,
    ) -> Result<DockerSandbox, SandboxError> {
        let sandbox = DockerSandbox::start_new(
            &self.docker,
            image,
            limits,
            labels,
            name,
            Vec::new(),
            workspace_for(image),
        )
        .await?;
        if let Err(err) = sandbox.set_network(NetworkPolicy::None).await {
            self.discard(sandbox.id()).await;
            return Err(err);
        }
        Ok(sandbox)
    }

    /// The image to add a container to next, if any is short and the budget has room.
    fn next_to_fill(&self) -> Option<String> {
        let state = self.state();
        let each = self.settings.limits.memory_bytes;
        let held = each * state.idle.len() as u64;
        let budget = match self.settings.memory_budget_bytes {
            Some(budget) => budget,
            None => available_memory()?,
        };
        if held + each > budget {
            return None;
        }
        let mut wanted: Vec<&Wanted> = state.images.iter().collect();
        wanted.sort_by_key(|wanted| std::cmp::Reverse(wanted.last_asked));
        let count = |image: &str| state.idle.iter().filter(|p| p.image == image).count();
        wanted
            .into_iter()
            .find(|wanted| count(&wanted.image) < self.settings.size)
            .map(|wanted| wanted.image.clone())
    }
}

/// The memory the machine has available now (Linux's `MemAvailable`), if it can be read.
fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemAvailable:"))?;
    let kib: u64 = line.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib << 10)
}

impl Drop for WarmPool {
    /// Stops refilling. Containers still waiting stay, as after a crash, until a sweep finds
    /// them past their time: call [`WarmPool::shutdown`] to remove them at once.
    fn drop(&mut self) {
        self.inner.stop.cancel();
    }
}

impl std::fmt::Debug for WarmPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmPool")
            .field("node", &self.inner.node_id)
            .field("idle", &self.idle())
            .finish()
    }
}
