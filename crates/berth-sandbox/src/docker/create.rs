//! Making a sandbox's container: created with its limits and labels and no network, started,
//! and handed back as a [`DockerSandbox`] (also for a warm pool's containers).

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountTypeEnum, MountVolumeOptions};
use bollard::query_parameters::CreateContainerOptionsBuilder;
use bollard::Docker;

use super::DockerSandbox;
use crate::{engine_error, Limits, Sandbox, SandboxError, SandboxSpec};

/// Where a container's `/workspace` lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Workspace {
    /// A volume of the container's own, removed with it: the copy-in and the agent's writes go
    /// straight to the host's file system rather than through the image's storage driver
    /// (with fuse-overlayfs, filling it is about five times faster; README, "Sandbox start
    /// figures"). Docker fills a new volume with what the image has there, with its owner.
    Volume,
    /// In the container's own layer: for a build whose result `docker commit` must keep, and
    /// for a prepared environment, whose `/workspace` a new volume would first copy whole.
    Layer,
}

/// Where a task's sandbox of `image` keeps its workspace.
pub(crate) fn workspace_for(image: &str) -> Workspace {
    match crate::environment::is_environment_image(image) {
        true => Workspace::Layer,
        false => Workspace::Volume,
    }
}

impl DockerSandbox {
    /// Creates and starts the task's container. The image must exist on this machine.
    pub async fn create(docker: &Docker, spec: &SandboxSpec) -> Result<Self, SandboxError> {
        Self::create_with_env(docker, spec, Vec::new(), workspace_for(&spec.image)).await
    }

    /// Like [`DockerSandbox::create`], with `NAME=value` variables in the container's
    /// environment (every exec sees them, and an image committed from it keeps them).
    pub(crate) async fn create_with_env(
        docker: &Docker,
        spec: &SandboxSpec,
        env: Vec<String>,
        workspace: Workspace,
    ) -> Result<Self, SandboxError> {
        let labels = crate::labels::task_labels(spec);
        let name = format!("berth-{}-{}", spec.task_id, spec.attempt);
        Self::start_new(
            docker,
            &spec.image,
            spec.limits,
            labels,
            &name,
            env,
            workspace,
        )
        .await
    }

    /// Creates and starts a container of `image` under `name` and `labels`, with `env` in its
    /// environment. The engine is asked as little as it can be: no image look-up (the create's
    /// answer says when it is missing), and no network until one is asked for.
    pub(crate) async fn start_new(
        docker: &Docker,
        image: &str,
        limits: Limits,
        labels: HashMap<String, String>,
        name: &str,
        env: Vec<String>,
        workspace: Workspace,
    ) -> Result<Self, SandboxError> {
        let mounts = (workspace == Workspace::Volume).then(|| {
            vec![Mount {
                target: Some("/workspace".into()),
                typ: Some(MountTypeEnum::VOLUME),
                volume_options: Some(MountVolumeOptions {
                    // Labelled like the container, so that a volume left behind is found.
                    labels: Some(labels.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            }]
        });
        let host_config = HostConfig {
            mounts,
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            memory: Some(limits.memory_bytes as i64),
            memory_swap: Some(limits.memory_bytes as i64),
            nano_cpus: Some((limits.cpus * 1e9) as i64),
            pids_limit: Some(limits.pids),
            // No network until a phase asks for one (`Sandbox::set_network`): most tasks never
            // do, and a bridge endpoint made and torn down costs each container 60-90 ms.
            network_mode: Some("none".into()),
            // PID 1 reaps orphans; otherwise killed commands linger as zombies and a fork
            // bomb's leftovers hold the process limit forever.
            init: Some(true),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            // Keeps the container alive between execs whatever the image's own command is.
            entrypoint: Some(vec!["sleep".into()]),
            cmd: Some(vec!["infinity".into()]),
            user: Some("1000:1000".into()),
            working_dir: Some("/workspace".into()),
            env: (!env.is_empty()).then_some(env),
            labels: Some(labels),
            host_config: Some(host_config),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default().name(name).build();
        let created = docker
            .create_container(Some(options), body)
            .await
            .map_err(|err| match engine_error(err) {
                SandboxError::ImageMissing(_) => SandboxError::ImageMissing(image.into()),
                other => other,
            })?;
        let sandbox = Self::adopt(docker, created.id, limits);
        let started = docker.start_container(
            &sandbox.id,
            None::<bollard::query_parameters::StartContainerOptions>,
        );
        if let Err(err) = started.await.map_err(engine_error) {
            let _ = sandbox.destroy().await;
            return Err(err);
        }
        Ok(sandbox)
    }

    /// The handle of a started container made with `limits`.
    pub(crate) fn adopt(docker: &Docker, id: String, limits: Limits) -> Self {
        Self {
            docker: docker.clone(),
            id,
            memory_bytes: limits.memory_bytes,
            pids: limits.pids,
            execs: Default::default(),
            oom_seen: Default::default(),
            env: Default::default(),
        }
    }
}
