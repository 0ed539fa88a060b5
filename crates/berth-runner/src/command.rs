//! Runs a task as a fixed command in its sandbox: clone the repository on the host (its
//! credentials never enter the container), copy it in, run the configured command with the
//! task's network policy, stream the output as events, and keep the diff whatever the ending.
//! The agent loop replaces this with a conversation; the queue works the same either way.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use berth_proto::{EventKind, Network, Task};
use berth_sandbox::{
    DockerSandbox, ExecRequest, Limits, NetworkPolicy, Sandbox, SandboxError, SandboxSpec,
};
use berth_store::Fence;
use tokio::sync::mpsc;

use crate::{Context, Executor, Outcome};

/// Output of one command kept as events, at most; the rest is cut and said so.
const MAX_EVENT_OUTPUT: usize = 1 << 20;

/// Checks a repository URL against the server's rules and returns the only addresses a clone
/// may connect to, resolved once: git is then pinned to them, so a name that resolves
/// differently a moment later (DNS rebinding) cannot send the clone elsewhere.
pub type ResolveHost = Arc<
    dyn Fn(String) -> futures::future::BoxFuture<'static, Result<Vec<SocketAddr>, String>>
        + Send
        + Sync,
>;

/// The task owner's token for the repository's host, if the server holds one (their GitHub
/// token, for the GitHub host only). It is used on the host, never inside the sandbox.
pub type CredentialsFor = Arc<
    dyn Fn(berth_proto::UserId, String) -> futures::future::BoxFuture<'static, Option<String>>
        + Send
        + Sync,
>;

pub struct SandboxCommand {
    pub resolve_host: ResolveHost,
    pub credentials: CredentialsFor,
    pub docker: bollard::Docker,
    pub image: String,
    pub limits: Limits,
    pub command: String,
    pub command_timeout: Duration,
    /// Where host-side clones are made (removed after each attempt).
    pub work_dir: PathBuf,
}

#[async_trait]
impl Executor for SandboxCommand {
    async fn run(&self, task: Task, ctx: Context) -> Outcome {
        let checkout = match self.checkout(&task, &ctx).await {
            Ok(checkout) => checkout,
            Err(outcome) => return outcome,
        };
        let spec = SandboxSpec {
            task_id: task.id.to_string(),
            attempt: task.attempt,
            node_id: node_of(&ctx),
            image: self.image.clone(),
            limits: task_limits(&task, self.limits),
        };
        let sandbox = match DockerSandbox::create(&self.docker, &spec).await {
            Ok(sandbox) => Arc::new(sandbox),
            Err(err) => return infrastructure(err),
        };
        let outcome = self
            .work(&task, &ctx, sandbox.as_ref(), checkout.path())
            .await;
        if let Err(err) = sandbox.destroy().await {
            tracing::warn!(task = %task.id, error = %err, "removing the container failed; the sweep will");
        }
        outcome
    }

    async fn sweep(&self, node_id: &str, live: &[Fence]) {
        let is_live = |task: &str, attempt: i64| {
            live.iter()
                .any(|fence| fence.task_id.to_string() == task && fence.attempt == attempt)
        };
        match berth_sandbox::remove_orphans(&self.docker, node_id, &is_live).await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "removed containers left behind"),
            Err(err) => tracing::warn!(error = %err, "looking for containers left behind failed"),
        }
    }
}

impl SandboxCommand {
    /// Clones the repository on the host, and records the commit the work starts from.
    async fn checkout(&self, task: &Task, ctx: &Context) -> Result<tempfile::TempDir, Outcome> {
        std::fs::create_dir_all(&self.work_dir).map_err(|err| infrastructure(err.into()))?;
        let dir = tempfile::Builder::new()
            .prefix("checkout-")
            .tempdir_in(&self.work_dir)
            .map_err(|err| infrastructure(err.into()))?;
        let addresses = (self.resolve_host)(task.repo_url.clone())
            .await
            .map_err(|reason| Outcome::Failed {
                reason: format!("the repository's host was refused: {reason}"),
                diff: None,
            })?;
        let mut clone = tokio::process::Command::new("git");
        pin_to(&mut clone, &task.repo_url, &addresses);
        if let Some(token) = (self.credentials)(task.owner_id, task.repo_url.clone()).await {
            authorize(&mut clone, &task.repo_url, &token);
        }
        clone.args(["clone", "--quiet", "--no-tags"]);
        if let Some(git_ref) = &task.git_ref {
            clone.args(["--branch", git_ref]);
        }
        clone
            .arg("--")
            .arg(&task.repo_url)
            .arg(dir.path().join("repo"));
        let output = git(&mut clone).await?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(Outcome::Failed {
                reason: format!("cloning the repository failed: {}", stderr.trim()),
                diff: None,
            });
        }
        let mut head = tokio::process::Command::new("git");
        head.arg("-C")
            .arg(dir.path().join("repo"))
            .args(["rev-parse", "HEAD"]);
        let commit = String::from_utf8_lossy(&git(&mut head).await?.stdout)
            .trim()
            .to_string();
        if let Err(err) = ctx.store.set_base_commit(ctx.fence, &commit).await {
            tracing::info!(task = %task.id, error = %err, "could not record the base commit");
        }
        Ok(dir)
    }

    async fn work(
        &self,
        task: &Task,
        ctx: &Context,
        sandbox: &DockerSandbox,
        checkout: &Path,
    ) -> Outcome {
        if let Err(err) = sandbox.copy_in(&checkout.join("repo")).await {
            return infrastructure(err);
        }
        let policy = match task.network {
            Network::None => NetworkPolicy::None,
            Network::Full => NetworkPolicy::Full,
        };
        if let Err(err) = sandbox.set_network(policy).await {
            return infrastructure(err);
        }
        let _ = ctx
            .emit(
                EventKind::ToolCall,
                serde_json::json!({"name": "bash", "input": {"command": self.command}}),
            )
            .await;
        let (sender, receiver) = mpsc::unbounded_channel::<(berth_sandbox::Stream, Vec<u8>)>();
        let forwarder = tokio::spawn(forward_output(ctx.clone(), receiver));
        let request = ExecRequest {
            timeout: self.command_timeout,
            ..ExecRequest::new(self.command.clone())
        };
        let mut on_output = |stream, bytes: &[u8]| {
            let _ = sender.send((stream, bytes.to_vec()));
        };
        let result = tokio::select! {
            result = sandbox.exec(&request, &mut on_output) => Some(result),
            () = ctx.stop.cancelled() => None,
        };
        drop(sender);
        let _ = forwarder.await;
        let diff = sandbox.diff().await.ok().filter(|diff| !diff.is_empty());
        match result {
            None => Outcome::Stopped { diff },
            Some(Err(err)) => infrastructure(err),
            Some(Ok(done)) if done.oom_killed => Outcome::Failed {
                reason: format!(
                    "the command ran out of memory (limit {} MiB)",
                    self.limits.memory_bytes >> 20
                ),
                diff,
            },
            Some(Ok(done)) if done.timed_out => Outcome::Failed {
                reason: format!(
                    "the command ran longer than {} s",
                    request.timeout.as_secs()
                ),
                diff,
            },
            Some(Ok(done)) if done.exit_code == Some(0) => Outcome::Succeeded { diff },
            Some(Ok(done)) => Outcome::Failed {
                reason: format!(
                    "the command exited with status {}",
                    done.exit_code.unwrap_or(-1)
                ),
                diff,
            },
        }
    }
}

/// Stores command output as events, in order, up to a bound.
async fn forward_output(
    ctx: Context,
    mut receiver: mpsc::UnboundedReceiver<(berth_sandbox::Stream, Vec<u8>)>,
) {
    let mut kept = 0usize;
    let mut cut = false;
    while let Some((stream, bytes)) = receiver.recv().await {
        if kept >= MAX_EVENT_OUTPUT {
            cut = true;
            continue;
        }
        kept += bytes.len();
        let stream = match stream {
            berth_sandbox::Stream::Stdout => "stdout",
            berth_sandbox::Stream::Stderr => "stderr",
        };
        let text = String::from_utf8_lossy(&bytes);
        let payload = serde_json::json!({ "stream": stream, "text": text });
        if ctx.emit(EventKind::CommandOutput, payload).await.is_err() {
            return;
        }
    }
    if cut {
        let note = serde_json::json!({ "stream": "stderr", "text": "\n[output past 1 MiB was not kept]\n" });
        let _ = ctx.emit(EventKind::CommandOutput, note).await;
    }
}

/// Makes git connect only to `addresses` for the repository's host.
fn pin_to(git: &mut tokio::process::Command, repo_url: &str, addresses: &[SocketAddr]) {
    let Some(first) = addresses.first() else {
        return;
    };
    if let Some(url) = url::Url::parse(repo_url)
        .ok()
        .filter(|url| url.scheme().starts_with("http"))
    {
        let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
            return;
        };
        let ips: Vec<String> = addresses
            .iter()
            .map(|addr| match addr.ip() {
                std::net::IpAddr::V6(ip) => format!("[{ip}]"),
                ip => ip.to_string(),
            })
            .collect();
        git.arg("-c").arg(format!(
            "http.curloptResolve={host}:{port}:{}",
            ips.join(",")
        ));
    } else if let Some(host) = ssh_host(repo_url) {
        // ssh connects to the checked address while checking the host key of the name.
        let ssh = format!("ssh -o HostName={} -o HostKeyAlias={host}", first.ip());
        git.env("GIT_SSH_COMMAND", ssh);
    }
}

/// Hands git a token for the repository's host, as HTTP Basic (`x-access-token:<token>`, which
/// GitHub accepts). It goes through `GIT_CONFIG_*` variables: never on a command line others
/// can read, and never into the checkout's `.git/config` that is copied into the sandbox.
fn authorize(git: &mut tokio::process::Command, repo_url: &str, token: &str) {
    use base64::Engine;
    let Some(url) = url::Url::parse(repo_url)
        .ok()
        .filter(|url| url.scheme().starts_with("http"))
    else {
        return;
    };
    let origin = url.origin().ascii_serialization();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"));
    git.env("GIT_CONFIG_COUNT", "1")
        .env("GIT_CONFIG_KEY_0", format!("http.{origin}/.extraHeader"))
        .env(
            "GIT_CONFIG_VALUE_0",
            format!("Authorization: Basic {basic}"),
        );
}

/// The host of `ssh://user@host[:port]/path` or `user@host:path`.
fn ssh_host(repo_url: &str) -> Option<String> {
    if let Ok(url) = url::Url::parse(repo_url) {
        return (url.scheme() == "ssh")
            .then(|| url.host_str().map(str::to_string))
            .flatten();
    }
    let (authority, _) = repo_url.split_once(':')?;
    Some(authority.rsplit('@').next()?.to_string())
}

/// Runs git on the host with no prompts and no local-file transports.
async fn git(command: &mut tokio::process::Command) -> Result<std::process::Output, Outcome> {
    command
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ALLOW_PROTOCOL", "https:http:ssh")
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|err| infrastructure(SandboxError::Other(format!("cannot run git: {err}"))))
}

/// The task's own limits where it asked for lower ones; the server's otherwise, and never more.
fn task_limits(task: &Task, server: Limits) -> Limits {
    let asked = &task.resources;
    let wanted = Limits {
        memory_bytes: asked.memory_mb.map_or(server.memory_bytes, |mb| mb << 20),
        cpus: asked.cpus.unwrap_or(server.cpus),
        pids: asked.pids.unwrap_or(server.pids),
    };
    wanted.clamp_to(server)
}

fn infrastructure(err: SandboxError) -> Outcome {
    Outcome::Infrastructure {
        reason: err.to_string(),
    }
}

fn node_of(ctx: &Context) -> String {
    ctx.node_id.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args_of(command: &tokio::process::Command) -> Vec<String> {
        command
            .as_std()
            .get_args()
            .map(|arg| arg.to_string_lossy().to_string())
            .collect()
    }

    #[test]
    fn credentials_go_through_the_environment_scoped_to_the_host() {
        let mut git = tokio::process::Command::new("git");
        authorize(&mut git, "https://github.com/o/private.git", "gho_secret");
        assert!(args_of(&git).is_empty(), "never on the command line");
        let env: Vec<(String, String)> = git
            .as_std()
            .get_envs()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().to_string(),
                    v.unwrap().to_string_lossy().to_string(),
                )
            })
            .collect();
        assert!(env.contains(&(
            "GIT_CONFIG_KEY_0".into(),
            "http.https://github.com/.extraHeader".into()
        )));
        // base64("x-access-token:gho_secret")
        assert!(env.contains(&(
            "GIT_CONFIG_VALUE_0".into(),
            "Authorization: Basic eC1hY2Nlc3MtdG9rZW46Z2hvX3NlY3JldA==".into()
        )));
    }

    #[test]
    fn clones_are_pinned_to_the_checked_addresses() {
        let v4: SocketAddr = "203.0.113.7:443".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
        let mut git = tokio::process::Command::new("git");
        pin_to(&mut git, "https://github.com/o/r.git", &[v4, v6]);
        assert_eq!(
            args_of(&git),
            [
                "-c",
                "http.curloptResolve=github.com:443:203.0.113.7,[2001:db8::1]"
            ]
        );

        for url in ["ssh://git@github.com/o/r.git", "git@github.com:o/r.git"] {
            let mut git = tokio::process::Command::new("git");
            pin_to(&mut git, url, &[v4]);
            let ssh = git
                .as_std()
                .get_envs()
                .find(|(key, _)| *key == "GIT_SSH_COMMAND")
                .unwrap()
                .1
                .unwrap();
            assert_eq!(
                ssh, "ssh -o HostName=203.0.113.7 -o HostKeyAlias=github.com",
                "{url}"
            );
        }
    }
}
