//! How Berth marks what it makes in Docker, so that a sweep finds exactly its own leftovers
//! and nothing else: every container carries the id of the installation (the database) that
//! made it and its kind; a task's container also names its task, attempt and node. A sweep
//! asks the database which attempts are live, never which node is alive, so it works whether
//! or not the node that made a container ever comes back.

use std::collections::HashMap;

use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveContainerOptionsBuilder};
use bollard::Docker;

use crate::{engine_error, SandboxError, SandboxSpec};

pub const LABEL_INSTALLATION: &str = "berth.installation";
/// `task` for a task's sandbox, `pool` for a warm pool's container (see [`crate::WarmPool`]).
pub const LABEL_KIND: &str = "berth.kind";
pub const LABEL_TASK: &str = "berth.task";
pub const LABEL_ATTEMPT: &str = "berth.attempt";
/// The node that made it: for people looking at `docker ps`, and for a restarted runner to find
/// its own pool's leftovers; sweeps do not rely on it.
pub const LABEL_NODE: &str = "berth.node";

/// On a pooled container: the Unix time after which its pool no longer hands it out, plus a
/// margin; past it, a sweep removes the container unless a task holds it.
pub const LABEL_REMOVE_AFTER: &str = "berth.pool.remove-after";

const KIND_TASK: &str = "task";
pub(crate) const KIND_POOL: &str = "pool";
/// The name of a pooled container nobody has taken yet begins with it; taking it renames it
/// to a task container's name, which is how the sweep knows it is held.
pub(crate) const POOL_NAME_PREFIX: &str = "berth-pool-";

/// The labels of a task's container.
pub(crate) fn task_labels(spec: &SandboxSpec) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_INSTALLATION.to_string(), spec.installation.clone()),
        (LABEL_KIND.to_string(), KIND_TASK.to_string()),
        (LABEL_TASK.to_string(), spec.task_id.clone()),
        (LABEL_ATTEMPT.to_string(), spec.attempt.to_string()),
        (LABEL_NODE.to_string(), spec.node_id.clone()),
    ])
}

/// The labels of a warm pool's container of `node`, to be removed after `remove_after`.
pub(crate) fn pool_labels(
    installation: &str,
    node_id: &str,
    remove_after: u64,
) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_INSTALLATION.to_string(), installation.to_string()),
        (LABEL_KIND.to_string(), KIND_POOL.to_string()),
        (LABEL_NODE.to_string(), node_id.to_string()),
        (LABEL_REMOVE_AFTER.to_string(), remove_after.to_string()),
    ])
}

/// The name a task's container has, made for it or taken from a pool.
pub(crate) fn task_name(task_id: &str, attempt: i64) -> String {
    format!("berth-{task_id}-{attempt}")
}

/// The seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// A task's container on this engine, as its labels describe it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskContainer {
    pub id: String,
    pub task_id: String,
    pub attempt: i64,
    pub node_id: String,
}

/// The task containers of `installation` on this engine, running or not: those made for a
/// task, those taken from a warm pool (named for their task when taken), and pooled ones no
/// pool may hand out any more (a pool's runner that died leaves them), listed with no task
/// (attempt 0) so that a sweep finds no live attempt of theirs and removes them. Pooled
/// containers not yet taken and still fresh are left out, whichever runner holds them.
pub async fn task_containers(
    docker: &Docker,
    installation: &str,
) -> Result<Vec<TaskContainer>, SandboxError> {
    let made = list_kind(docker, installation, KIND_TASK, None).await?;
    let mut found: Vec<TaskContainer> = made
        .iter()
        .map(|container| {
            let attempt = container.label(LABEL_ATTEMPT).parse().unwrap_or(-1);
            container.as_task(&container.label(LABEL_TASK), attempt)
        })
        .collect();
    let now = unix_now();
    for container in list_kind(docker, installation, KIND_POOL, None).await? {
        let name = container.name.trim_start_matches('/');
        if name.starts_with(POOL_NAME_PREFIX) {
            let remove_after = container.label(LABEL_REMOVE_AFTER).parse().unwrap_or(0);
            if now > remove_after {
                found.push(container.as_task("", 0));
            }
            continue;
        }
        // `berth-<task id>-<attempt>`; the task id has dashes of its own.
        let taken = name
            .strip_prefix("berth-")
            .and_then(|rest| rest.rsplit_once('-'))
            .and_then(|(task, attempt)| Some((task.to_string(), attempt.parse().ok()?)));
        let (task, attempt) = taken.unwrap_or_default();
        found.push(container.as_task(&task, attempt));
    }
    Ok(found)
}

/// A container as the engine lists it.
pub(crate) struct Listed {
    pub id: String,
    pub name: String,
    labels: HashMap<String, String>,
}

impl Listed {
    fn label(&self, key: &str) -> String {
        self.labels.get(key).cloned().unwrap_or_default()
    }

    fn as_task(&self, task_id: &str, attempt: i64) -> TaskContainer {
        TaskContainer {
            id: self.id.clone(),
            task_id: task_id.to_string(),
            attempt,
            node_id: self.label(LABEL_NODE),
        }
    }
}

/// The containers of `installation` of one kind, running or not; with `node`, only that
/// node's.
pub(crate) async fn list_kind(
    docker: &Docker,
    installation: &str,
    kind: &str,
    node: Option<&str>,
) -> Result<Vec<Listed>, SandboxError> {
    let mut wanted = vec![
        format!("{LABEL_INSTALLATION}={installation}"),
        format!("{LABEL_KIND}={kind}"),
    ];
    wanted.extend(node.map(|node| format!("{LABEL_NODE}={node}")));
    let filters = HashMap::from([("label".to_string(), wanted)]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let containers = docker
        .list_containers(Some(options))
        .await
        .map_err(engine_error)?;
    Ok(containers
        .into_iter()
        .filter_map(|container| {
            Some(Listed {
                id: container.id?,
                name: container.names.unwrap_or_default().into_iter().next()?,
                labels: container.labels.unwrap_or_default(),
            })
        })
        .collect())
}

/// Removes a container, running or not, with its workspace volume; one already gone is fine.
pub async fn remove_container(docker: &Docker, id: &str) -> Result<(), SandboxError> {
    let options = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(id, Some(options)).await {
        Ok(()) => Ok(()),
        Err(err) => match engine_error(err) {
            SandboxError::ContainerGone => Ok(()),
            other => Err(other),
        },
    }
}
