//! One disposable, locked-down Docker container per task. The agent's brain stays outside: the
//! runner calls into a [`Sandbox`] to copy the repository in, run commands and read the change
//! back out. Nothing secret is ever put into a container.

mod backend;
pub mod claude_code_image;
mod docker;
pub mod environment;
pub mod image;
mod labels;
mod network;
mod output;
mod pool;
mod settings;

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;

pub use backend::{DockerSandboxes, Sandboxes};
/// The engine client, for callers that hand one to this crate's functions.
pub use bollard::Docker;
pub use docker::{check_image, connect, connect_at, DockerSandbox};
pub use image::{default_image, ensure_default_image, DEFAULT_IMAGE};
pub use labels::{
    remove_container, task_containers, TaskContainer, LABEL_ATTEMPT, LABEL_INSTALLATION,
    LABEL_KIND, LABEL_NODE, LABEL_REMOVE_AFTER, LABEL_TASK,
};
pub use network::{
    ensure_egress_network, ensure_sandbox_network, fence_egress_network, sandbox_network_addresses,
    SandboxNetworkAddresses, EGRESS_NETWORK, SANDBOX_NETWORK,
};
pub use output::BoundedOutput;
pub use pool::{PoolSettings, WarmPool};
pub use settings::Settings;

/// Starts GNU tar packing `dir` to its stdout, every file owned by the sandbox user (uid and gid
/// 1000) as it is packed, so nothing has to run as root in the sandbox to fix owners. Every
/// backend's copy-in reads the archive from here.
pub fn pack_workspace(dir: &Path) -> std::io::Result<tokio::process::Child> {
    tokio::process::Command::new("tar")
        .arg("-C")
        .arg(dir)
        .args([
            "--owner=1000",
            "--group=1000",
            "--numeric-owner",
            "-cf",
            "-",
            ".",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("the Docker engine cannot be reached: {0}")]
    EngineUnreachable(String),
    #[error("image {0} is not on this machine; build it with `berth image build` or load it")]
    ImageMissing(String),
    #[error("image {image} cannot be used: {reason}")]
    ImageUnsuitable { image: String, reason: String },
    #[error("the container ran out of memory (limit {limit_bytes} bytes)")]
    OutOfMemory { limit_bytes: u64 },
    #[error("the container is gone")]
    ContainerGone,
    #[error("the change is larger than the {limit_mib} MiB a diff may be")]
    DiffTooLarge { limit_mib: usize },
    #[error("the workspace is larger than the bound of {limit_mib} MiB")]
    WorkspaceTooLarge { limit_mib: u64 },
    #[error("Docker engine error: {0}")]
    Engine(String),
    #[error("{0}")]
    Other(String),
}

impl From<std::io::Error> for SandboxError {
    fn from(err: std::io::Error) -> Self {
        SandboxError::Other(err.to_string())
    }
}

/// Maps a bollard error to what it means for a task.
pub(crate) fn engine_error(err: bollard::errors::Error) -> SandboxError {
    use bollard::errors::Error;
    match err {
        Error::DockerResponseServerError {
            status_code: 404,
            message,
        } => {
            if message.contains("image") {
                SandboxError::ImageMissing(message)
            } else {
                SandboxError::ContainerGone
            }
        }
        Error::DockerResponseServerError { message, .. } => SandboxError::Engine(message),
        Error::IOError { err } => SandboxError::EngineUnreachable(err.to_string()),
        Error::SocketNotFoundError(path) => {
            SandboxError::EngineUnreachable(format!("no Docker socket at {path}"))
        }
        Error::HyperResponseError { err } => SandboxError::EngineUnreachable(err.to_string()),
        other => SandboxError::Engine(other.to_string()),
    }
}

/// Resource limits of one container.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// Memory, with no swap on top.
    pub memory_bytes: u64,
    /// CPUs, fractions allowed.
    pub cpus: f64,
    /// Most processes (and threads) at once.
    pub pids: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 2 << 30,
            cpus: 1.0,
            pids: 512,
        }
    }
}

impl Limits {
    /// These limits, lowered where they go past `max` (what the server allows).
    pub fn clamp_to(self, max: Limits) -> Limits {
        Limits {
            memory_bytes: self.memory_bytes.min(max.memory_bytes),
            cpus: self.cpus.min(max.cpus),
            pids: self.pids.min(max.pids),
        }
    }
}

/// The network a container has during the agent phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetworkPolicy {
    /// Only loopback: no route, no DNS.
    None,
    /// The default bridge network.
    Full,
    /// The internal egress network ([`EGRESS_NETWORK`]), whose only way out is the proxy at
    /// `proxy` (on the network's gateway); commands get the usual proxy variables naming it.
    Egress { proxy: std::net::SocketAddr },
}

/// What to create a container for.
#[derive(Clone, Debug)]
pub struct SandboxSpec {
    /// The installation's id (see [`LABEL_INSTALLATION`]).
    pub installation: String,
    pub task_id: String,
    pub attempt: i64,
    pub node_id: String,
    pub image: String,
    pub limits: Limits,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// A command to run in the container, through `bash -lc` in `/workspace`.
#[derive(Clone)]
pub struct ExecRequest {
    /// A bash script.
    pub command: String,
    /// The script's positional parameters (`$1`, `$2`, …): text the script works on but
    /// must never run, such as a path the model gave, goes here and not into the script.
    pub args: Vec<String>,
    pub timeout: Duration,
    /// Bytes kept per stream in the result (head and tail).
    pub max_output: usize,
    /// Variables for this command alone (`NAME`, value), on top of the container's: setup
    /// secrets go here, never into the container's own environment. Never in `Debug`.
    pub env: Vec<(String, String)>,
}

impl std::fmt::Debug for ExecRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.env.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("ExecRequest")
            .field("command", &self.command)
            .field("args", &self.args)
            .field("timeout", &self.timeout)
            .field("max_output", &self.max_output)
            .field("env", &names)
            .finish()
    }
}

impl ExecRequest {
    pub fn new(command: impl Into<String>) -> Self {
        Self {
            command: command.into(),
            args: Vec::new(),
            timeout: Duration::from_secs(600),
            max_output: 1 << 20,
            env: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ExecResult {
    /// `None` when the command was killed for its timeout.
    pub exit_code: Option<i64>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub timed_out: bool,
    pub oom_killed: bool,
    /// Some output was cut to the bound.
    pub truncated: bool,
}

#[async_trait]
pub trait Sandbox: Send + Sync {
    /// The container's id.
    fn id(&self) -> &str;
    /// Copies a host directory's contents into `/workspace`, owned by the sandbox user,
    /// streamed; more than `max_bytes` of it is refused before it is all sent.
    async fn copy_in(&self, dir: &Path, max_bytes: u64) -> Result<(), SandboxError>;
    /// Runs a command; `on_output` gets each chunk as it comes, in order.
    async fn exec(
        &self,
        request: &ExecRequest,
        on_output: &mut (dyn for<'b> FnMut(Stream, &'b [u8]) + Send),
    ) -> Result<ExecResult, SandboxError>;
    /// Writes a new file owned by the sandbox user (mode 0644) into an existing directory.
    /// It is written by the engine, not by the sandbox user: callers write only to fresh
    /// names in directories they control, and move the file with a command from there.
    async fn put_file(&self, path: &str, contents: &[u8]) -> Result<(), SandboxError>;
    /// Reads a file of the container (binary-safe).
    async fn read_file(&self, path: &str) -> Result<Vec<u8>, SandboxError>;
    /// The change in `/workspace` against `base` (the commit the work started from), as a
    /// binary git diff with new, deleted and renamed files. Commits made in the container
    /// count as change like any other edit. A change too large to keep is an error.
    async fn diff(&self, base: &str) -> Result<Vec<u8>, SandboxError>;
    /// Gives the running container the network the policy names.
    async fn set_network(&self, policy: NetworkPolicy) -> Result<(), SandboxError>;
    /// The container's address on the egress network, once `set_network` put it there: the
    /// egress proxy knows which attempt a request comes from by it. `None` for a backend whose
    /// sandboxes cannot join it.
    async fn egress_address(&self) -> Result<Option<std::net::IpAddr>, SandboxError> {
        Ok(None)
    }
    /// Stops and removes the container.
    async fn destroy(&self) -> Result<(), SandboxError>;
}
