//! [`Sandboxes`] as Fly Machines: one machine per attempt, sized to the attempt's limits and
//! marked with metadata that the sweep finds it by, like the Docker backend's labels.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use berth_sandbox::{NetworkPolicy, Sandbox, SandboxError, SandboxSpec, Sandboxes, TaskContainer};

use crate::api::{ApiError, CreateMachine, Guest, Init, MachineConfig, MachinesClient, Restart};
use crate::sandbox::FlySandbox;

pub const METADATA_INSTALLATION: &str = "berth_installation";
/// `task` for a task's machine, as the Docker backend's `berth.kind` label.
pub const METADATA_KIND: &str = "berth_kind";
const METADATA_TASK: &str = "berth_task";
const METADATA_ATTEMPT: &str = "berth_attempt";
const METADATA_NODE: &str = "berth_node";
const KIND_TASK: &str = "task";
/// Longest the machine may take to start.
const START_WITHIN: Duration = Duration::from_secs(300);

/// Sandboxes as machines of one Fly app.
#[derive(Clone, Debug)]
pub struct FlySandboxes {
    client: Arc<MachinesClient>,
    /// The image machines boot instead of the spec's, which names a local image.
    image: Option<String>,
    region: Option<String>,
    cpu_kind: String,
}

impl FlySandboxes {
    pub fn new(client: MachinesClient, image: Option<String>, region: Option<String>) -> Self {
        Self {
            client: Arc::new(client),
            image,
            region,
            cpu_kind: "shared".to_string(),
        }
    }

    /// From the server's settings (which must have passed their validation).
    pub fn from_settings(settings: &crate::Settings) -> Result<Self, String> {
        let (Some(app), Some(token)) = (&settings.fly_app, &settings.fly_api_token) else {
            return Err("the Fly backend needs fly_app and fly_api_token".into());
        };
        let client = MachinesClient::new(&settings.fly_api_url, app, token.clone());
        let mut sandboxes = Self::new(
            client,
            settings.fly_image.clone(),
            settings.fly_region.clone(),
        );
        sandboxes.cpu_kind = settings.fly_cpu_kind.clone();
        Ok(sandboxes)
    }

    fn request(&self, spec: &SandboxSpec) -> CreateMachine {
        let metadata = [
            (METADATA_INSTALLATION, spec.installation.clone()),
            (METADATA_KIND, KIND_TASK.to_string()),
            (METADATA_TASK, spec.task_id.clone()),
            (METADATA_ATTEMPT, spec.attempt.to_string()),
            (METADATA_NODE, spec.node_id.clone()),
        ];
        CreateMachine {
            name: Some(format!("berth-{}-{}", spec.task_id, spec.attempt)),
            region: self.region.clone(),
            config: MachineConfig {
                image: self.image.clone().unwrap_or_else(|| spec.image.clone()),
                guest: Some(guest_for(&self.cpu_kind, spec.limits)),
                metadata: metadata
                    .into_iter()
                    .map(|(key, value)| (key.to_string(), value))
                    .collect(),
                auto_destroy: true,
                restart: Some(Restart {
                    policy: "no".into(),
                }),
                // Keeps the machine up between execs whatever the image's own command is.
                init: Some(Init {
                    entrypoint: vec!["sleep".into()],
                    cmd: vec!["infinity".into()],
                }),
            },
        }
    }
}

/// The smallest Fly size that holds `limits`, by Fly's sizing rules: whole CPUs; shared CPUs
/// take 256 MiB steps, from 256 MiB to 2 GiB per CPU; performance CPUs take 2 GiB steps, from
/// 2 GiB to 8 GiB per CPU. Memory past what the CPUs may hold brings more CPUs.
fn guest_for(cpu_kind: &str, limits: berth_sandbox::Limits) -> Guest {
    let (step, min_per_cpu, max_per_cpu) = match cpu_kind {
        "performance" => (2048, 2048, 8192),
        _ => (256, 256, 2048),
    };
    let wanted_mib = (limits.memory_bytes >> 20).max(1);
    let cpus = (limits.cpus.ceil().max(1.0) as u64).max(wanted_mib.div_ceil(max_per_cpu));
    let memory_mb = (wanted_mib.div_ceil(step) * step).max(min_per_cpu * cpus);
    Guest {
        cpu_kind: cpu_kind.to_string(),
        cpus: cpus as u32,
        memory_mb,
    }
}

/// What an API failure means for a task.
pub(crate) fn api_error(err: ApiError) -> SandboxError {
    match err {
        err if err.is_not_found() => SandboxError::ContainerGone,
        err => SandboxError::Other(err.to_string()),
    }
}

#[async_trait]
impl Sandboxes for FlySandboxes {
    async fn create(&self, spec: &SandboxSpec) -> Result<Box<dyn Sandbox>, SandboxError> {
        let machine = self
            .client
            .create(&self.request(spec))
            .await
            .map_err(api_error)?;
        let sandbox = FlySandbox::new(self.client.clone(), machine.id, spec.limits.pids);
        let ready = async {
            self.client
                .wait_started(sandbox.id(), START_WITHIN)
                .await
                .map_err(api_error)?;
            // Also the first proof that exec works on this image.
            sandbox.note_oom_kills().await
        };
        if let Err(err) = ready.await {
            let _ = sandbox.destroy().await;
            return Err(err);
        }
        Ok(Box::new(sandbox))
    }

    async fn task_sandboxes(&self, installation: &str) -> Result<Vec<TaskContainer>, SandboxError> {
        let machines = self.client.list().await.map_err(api_error)?;
        Ok(machines
            .into_iter()
            .filter(|machine| machine.state != "destroyed")
            .filter_map(|machine| {
                let metadata = machine.metadata();
                let value = |key: &str| metadata.get(key).cloned().unwrap_or_default();
                let ours = value(METADATA_INSTALLATION) == installation
                    && value(METADATA_KIND) == KIND_TASK;
                ours.then(|| TaskContainer {
                    id: machine.id.clone(),
                    task_id: value(METADATA_TASK),
                    attempt: value(METADATA_ATTEMPT).parse().unwrap_or(-1),
                    node_id: value(METADATA_NODE),
                })
            })
            .collect())
    }

    async fn remove(&self, id: &str) -> Result<(), SandboxError> {
        match self.client.destroy(id).await {
            Err(err) if err.is_not_found() => Ok(()),
            other => other.map_err(api_error),
        }
    }

    fn check_network(&self, policy: NetworkPolicy) -> Result<(), String> {
        match policy {
            NetworkPolicy::Full => Ok(()),
            NetworkPolicy::None => Err(NETWORK_NONE_REFUSED.to_string()),
            NetworkPolicy::Egress { .. } => Err(NETWORK_ALLOWLIST_REFUSED.to_string()),
        }
    }
}

pub(crate) const NETWORK_NONE_REFUSED: &str =
    "this server runs sandboxes as Fly Machines, which cannot be \
    cut off from the network while they run: a task with network none cannot run here. Ask \
    for network full, or run it on a server with sandbox_backend = \"docker\"";

pub(crate) const NETWORK_ALLOWLIST_REFUSED: &str =
    "this server runs sandboxes as Fly Machines, which cannot be \
    put behind Berth's egress proxy: a task with network allowlist cannot run here. Ask for \
    network full, or run it on a server with sandbox_backend = \"docker\"";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_sizes_round_up_to_what_fly_sells() {
        let limits = |mib: u64, cpus: f64| berth_sandbox::Limits {
            memory_bytes: mib << 20,
            cpus,
            pids: 512,
        };
        let size = |kind: &str, mib, cpus| {
            let guest = guest_for(kind, limits(mib, cpus));
            (guest.cpus, guest.memory_mb)
        };
        assert_eq!(size("shared", 64, 0.5), (1, 256));
        assert_eq!(size("shared", 1000, 1.5), (2, 1024));
        assert_eq!(size("shared", 2048, 1.0), (1, 2048));
        assert_eq!(size("shared", 3000, 1.0), (2, 3072), "past 2 GiB a CPU");
        assert_eq!(
            size("shared", 256, 4.0),
            (4, 1024),
            "256 MiB a CPU at least"
        );
        assert_eq!(size("performance", 2048, 1.0), (1, 2048));
        assert_eq!(size("performance", 3000, 1.0), (1, 4096), "2 GiB steps");
        assert_eq!(
            size("performance", 512, 2.0),
            (2, 4096),
            "2 GiB a CPU at least"
        );
    }
}
