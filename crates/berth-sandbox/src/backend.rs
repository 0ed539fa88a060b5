//! Where sandboxes come from. The runner asks a [`Sandboxes`] for one per attempt and for the
//! ones left behind; the local Docker engine is one backend, and others (a warm pool in front
//! of it, machines on another host) implement the same three calls.

use async_trait::async_trait;
use bollard::Docker;

use crate::{DockerSandbox, NetworkPolicy, Sandbox, SandboxError, SandboxSpec, TaskContainer};

/// A source of sandboxes, and the owner of what it leaves behind.
#[async_trait]
pub trait Sandboxes: Send + Sync {
    /// Starts a sandbox for one attempt, as `spec` says.
    async fn create(&self, spec: &SandboxSpec) -> Result<Box<dyn Sandbox>, SandboxError>;
    /// This installation's task sandboxes, made by any node: the sweep compares them with the
    /// attempts still live.
    async fn task_sandboxes(&self, installation: &str) -> Result<Vec<TaskContainer>, SandboxError>;
    /// Removes one of them (`id` as listed).
    async fn remove(&self, id: &str) -> Result<(), SandboxError>;
    /// Removes what this installation's sandboxes left behind besides themselves, such as
    /// storage whose sandbox went without it: the sweep's other half.
    async fn remove_leftovers(&self, _installation: &str) -> Result<(), SandboxError> {
        Ok(())
    }
    /// Whether its sandboxes can be held to `policy`; `Err` says why not, for the task, which
    /// is then refused before anything is made for it.
    fn check_network(&self, _policy: NetworkPolicy) -> Result<(), String> {
        Ok(())
    }
}

/// Sandboxes as containers on a Docker engine.
#[derive(Clone)]
pub struct DockerSandboxes {
    docker: Docker,
}

impl DockerSandboxes {
    pub fn new(docker: Docker) -> Self {
        Self { docker }
    }

    /// The engine it talks to.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }
}

#[async_trait]
impl Sandboxes for DockerSandboxes {
    async fn create(&self, spec: &SandboxSpec) -> Result<Box<dyn Sandbox>, SandboxError> {
        Ok(Box::new(DockerSandbox::create(&self.docker, spec).await?))
    }

    async fn task_sandboxes(&self, installation: &str) -> Result<Vec<TaskContainer>, SandboxError> {
        crate::task_containers(&self.docker, installation).await
    }

    async fn remove(&self, id: &str) -> Result<(), SandboxError> {
        crate::remove_container(&self.docker, id).await
    }

    /// This installation's workspace volumes that no container holds any more: Berth removes
    /// each with its container, but a container removed by hand (`docker rm` without `-v`)
    /// leaves its volume.
    async fn remove_leftovers(&self, installation: &str) -> Result<(), SandboxError> {
        let label = format!("{}={installation}", crate::LABEL_INSTALLATION);
        let filters = std::collections::HashMap::from([("label".to_string(), vec![label])]);
        let options = bollard::query_parameters::PruneVolumesOptionsBuilder::default()
            .filters(&filters)
            .build();
        self.docker
            .prune_volumes(Some(options))
            .await
            .map_err(crate::engine_error)?;
        Ok(())
    }
}
