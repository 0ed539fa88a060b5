//! Git on the runner's host: clones with the owner's credentials, pinned to the addresses the
//! repository's host was checked against, and pushes from the same checkout. Credentials go
//! through `GIT_CONFIG_*` variables only, so neither a command line nor the checkout's
//! `.git/config` (which is copied into the sandbox) ever holds them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use berth_proto::Task;

use crate::Outcome;

/// Checks a repository URL against the server's rules and returns the only addresses a clone
/// may connect to, resolved once: git is then pinned to them, so a name that resolves
/// differently a moment later (DNS rebinding) cannot send the clone elsewhere.
pub type ResolveHost = Arc<
    dyn Fn(String) -> futures::future::BoxFuture<'static, Result<Vec<SocketAddr>, String>>
        + Send
        + Sync,
>;

/// The token for a task's repository, if the server holds one: the owner's GitHub token (or
/// the server's own), for the GitHub host only. It is used on the host, never in the sandbox.
pub type CredentialsFor = Arc<
    dyn Fn(berth_proto::UserId, String) -> futures::future::BoxFuture<'static, Option<String>>
        + Send
        + Sync,
>;

/// What a runner needs to reach task repositories.
#[derive(Clone)]
pub struct GitAccess {
    pub resolve_host: ResolveHost,
    pub credentials: CredentialsFor,
    /// Where host-side clones are made (each removed after its attempt).
    pub work_dir: PathBuf,
}

/// A clone of a task's repository on the host, removed when dropped.
pub struct Checkout {
    dir: tempfile::TempDir,
    repo_url: String,
    addresses: Vec<SocketAddr>,
    token: Option<String>,
}

impl GitAccess {
    /// Clones the task's repository at its ref (the default branch when it names none).
    /// A refused host or a failed clone fails the task; a machine problem is retried.
    pub async fn clone_task(&self, task: &Task) -> Result<Checkout, Outcome> {
        std::fs::create_dir_all(&self.work_dir).map_err(|err| machine(err.to_string()))?;
        let dir = tempfile::Builder::new()
            .prefix("checkout-")
            .tempdir_in(&self.work_dir)
            .map_err(|err| machine(err.to_string()))?;
        let addresses = (self.resolve_host)(task.repo_url.clone())
            .await
            .map_err(|reason| {
                Outcome::failed(format!("the repository's host was refused: {reason}"))
            })?;
        let token = (self.credentials)(task.owner_id, task.repo_url.clone()).await;
        let checkout = Checkout {
            dir,
            repo_url: task.repo_url.clone(),
            addresses,
            token,
        };
        let mut clone = checkout.remote_command();
        clone.args(["clone", "--quiet", "--no-tags"]);
        if let Some(git_ref) = &task.git_ref {
            clone.args(["--branch", git_ref]);
        }
        clone.arg("--").arg(&task.repo_url).arg(checkout.path());
        let output = run(&mut clone).await?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(Outcome::failed(format!(
                "cloning the repository failed: {}",
                stderr.trim()
            )));
        }
        Ok(checkout)
    }
}

impl Checkout {
    /// The working tree.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    /// The token git uses for this repository, if any (for the GitHub API too).
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    pub fn repo_url(&self) -> &str {
        &self.repo_url
    }

    /// Runs a local git command in the working tree (no network).
    pub async fn git(&self, args: &[&str]) -> Result<std::process::Output, Outcome> {
        let mut command = tokio::process::Command::new("git");
        command.arg("-C").arg(self.path()).args(args);
        run(&mut command).await
    }

    /// Runs a git command that talks to the repository's host: pinned and authorized.
    pub async fn git_remote(&self, args: &[&str]) -> Result<std::process::Output, Outcome> {
        let mut command = self.remote_command();
        command.arg("-C").arg(self.path()).args(args);
        run(&mut command).await
    }

    /// Like [`Checkout::git`], returning trimmed stdout, or the failure in words.
    pub async fn git_text(&self, args: &[&str]) -> Result<String, String> {
        self.git_text_with(&[], args).await
    }

    /// [`Checkout::git_text`] with extra environment (a scratch index, an author).
    pub async fn git_text_with(
        &self,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Result<String, String> {
        let mut command = tokio::process::Command::new("git");
        command.arg("-C").arg(self.path()).args(args);
        command.envs(env.iter().copied());
        let output = run(&mut command)
            .await
            .map_err(|_| "cannot run git".to_string())?;
        text_of(output, args)
    }

    fn remote_command(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::new("git");
        pin_to(&mut command, &self.repo_url, &self.addresses);
        if let Some(token) = &self.token {
            authorize(&mut command, &self.repo_url, token);
        }
        command
    }
}

/// Trimmed stdout of a git command that succeeded, or its stderr.
pub fn text_of(output: std::process::Output, args: &[&str]) -> Result<String, String> {
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    } else {
        Err(format!(
            "git {} failed: {}",
            args.first().unwrap_or(&""),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
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
/// GitHub accepts), scoped to the repository's origin.
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

/// Runs git on the host with no prompts, no local-file transports and no user or system
/// configuration that could change what it does.
async fn run(command: &mut tokio::process::Command) -> Result<std::process::Output, Outcome> {
    command
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ALLOW_PROTOCOL", "https:http:ssh")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        // Messages in English: some are matched (a missing remote branch) and all are shown.
        .env("LC_ALL", "C")
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|err| machine(format!("cannot run git: {err}")))
}

fn machine(reason: String) -> Outcome {
    Outcome::Infrastructure { reason }
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
