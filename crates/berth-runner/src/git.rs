//! Git on the runner's host: clones with the owner's credentials, pinned to the addresses the
//! repository's host was checked against, and pushes from the same checkout. Credentials go
//! through `GIT_CONFIG_*` variables only, so neither a command line nor the checkout's
//! `.git/config` (which is copied into the sandbox) ever holds them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use berth_guard::{RepoHost, RepoUrl, Scheme};
use berth_proto::Task;
use tokio::io::AsyncReadExt;

use crate::attempt::Ending;

/// Checks a repository URL (always in its normalised form, see [`RepoUrl`]) against the
/// server's rules and returns the only addresses a clone may connect to, resolved once: git is
/// then pinned to them, so a name that resolves differently a moment later (DNS rebinding)
/// cannot send the clone elsewhere.
pub type ResolveHost = Arc<
    dyn Fn(String) -> futures::future::BoxFuture<'static, Result<Vec<SocketAddr>, String>>
        + Send
        + Sync,
>;

/// The server's rules for repository hosts: `allowed`, and no internal address unless listed
/// by IP (see [`berth_guard::resolve_repo_host`]).
pub fn checked_against(allowed: Vec<berth_guard::AllowedHost>) -> ResolveHost {
    Arc::new(move |url: String| {
        let allowed = allowed.clone();
        Box::pin(async move { berth_guard::resolve_repo_host(&url, &allowed).await })
    })
}

/// The token for a task's repository, if the server holds one, asked with the task's owner,
/// the task and its normalised URL: the GitHub App's installation token for a task started
/// from GitHub, else the owner's GitHub token (or the server's own), for the GitHub host only.
/// It is used on the host, never in the sandbox.
pub type CredentialsFor = Arc<
    dyn Fn(
            berth_proto::UserId,
            berth_proto::TaskId,
            String,
        ) -> futures::future::BoxFuture<'static, Option<String>>
        + Send
        + Sync,
>;

/// What a task's repository may cost the host, whatever it holds: counted in the bytes git
/// reports as it downloads and in the sizes git states for the files, before anything is
/// written past the bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RepositoryLimits {
    /// The most a clone may download, the most its files may hold, and the most a task's
    /// change may add when it is applied on the host.
    pub max_bytes: u64,
    /// The longest a clone may take.
    pub clone_timeout: Duration,
}

impl Default for RepositoryLimits {
    fn default() -> Self {
        Self {
            max_bytes: 1 << 30,
            clone_timeout: Duration::from_secs(10 * 60),
        }
    }
}

/// What a runner needs to reach task repositories.
#[derive(Clone)]
pub struct GitAccess {
    pub resolve_host: ResolveHost,
    pub credentials: CredentialsFor,
    /// Where host-side clones are made (each removed after its attempt).
    pub work_dir: PathBuf,
    pub limits: RepositoryLimits,
}

/// A clone of a task's repository on the host, removed when dropped.
pub struct Checkout {
    dir: tempfile::TempDir,
    /// The URL as checked: its normalised form is the only one git is given.
    url: RepoUrl,
    addresses: Vec<SocketAddr>,
    token: Option<String>,
}

impl GitAccess {
    /// The token the task's repository is reached with, if the server holds one.
    pub async fn token_for(&self, task: &Task) -> Option<String> {
        // Asked for the normalised URL, which every reader takes to name the same host; a URL
        // that is refused gets no token (and no clone).
        let url = RepoUrl::parse(&task.repo_url).ok()?;
        (self.credentials)(task.owner_id, task.id, url.to_string()).await
    }

    /// Clones the task's repository at its ref (the default branch when it names none), with
    /// `token` (from [`GitAccess::token_for`]). The URL is read strictly and checked again
    /// here, whatever was stored, and git is given only its normalised form, pinned to the
    /// addresses checked: a refused URL connects nowhere. A refused URL or host, or a failed
    /// clone, fails the task; a machine problem is retried.
    pub async fn clone_task(&self, task: &Task, token: Option<String>) -> Result<Checkout, Ending> {
        let url = RepoUrl::parse(&task.repo_url).map_err(|reason| {
            Ending::Failed(format!("the repository's URL was refused: {reason}"))
        })?;
        let addresses = (self.resolve_host)(url.to_string())
            .await
            .map_err(|reason| {
                Ending::Failed(format!("the repository's host was refused: {reason}"))
            })?;
        std::fs::create_dir_all(&self.work_dir).map_err(|err| machine(err.to_string()))?;
        let dir = tempfile::Builder::new()
            .prefix("checkout-")
            .tempdir_in(&self.work_dir)
            .map_err(|err| machine(err.to_string()))?;
        let checkout = Checkout {
            dir,
            url,
            addresses,
            token,
        };
        let mut clone = checkout.remote_command();
        // No checkout yet: the files' sizes are checked first, from what git says of them.
        clone.args(["clone", "--progress", "--no-tags", "--no-checkout"]);
        if let Some(git_ref) = &task.git_ref {
            clone.args(["--branch", git_ref]);
        }
        clone
            .arg("--")
            .arg(checkout.url.to_string())
            .arg(checkout.path());
        bounded_clone(&mut clone, &self.limits).await?;
        let tree = checkout
            .git_text(&["ls-tree", "-r", "-l", "--full-tree", "HEAD"])
            .await
            .map_err(Ending::Failed)?;
        let files = tree_bytes(&tree);
        if files > self.limits.max_bytes {
            return Err(Ending::Failed(format!(
                "the repository's files come to {}, over the bound of {}",
                mib(files),
                mib(self.limits.max_bytes)
            )));
        }
        checkout
            .git_text(&["checkout", "--quiet", "--force", "HEAD"])
            .await
            .map_err(Ending::Infrastructure)?;
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

    /// Runs a git command that talks to the repository's host: pinned and authorized.
    pub async fn git_remote(&self, args: &[&str]) -> Result<std::process::Output, Ending> {
        let mut command = self.remote_command();
        command.arg("-C").arg(self.path()).args(args);
        run(&mut command).await
    }

    /// Runs a local git command in the working tree (no network); its trimmed stdout, or the
    /// failure in words.
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
        // A redirect could lead to a host that was never checked, with the token.
        command.args(["-c", "http.followRedirects=false"]);
        pin_to(&mut command, &self.url, &self.addresses);
        if let Some(token) = &self.token {
            authorize(&mut command, &self.url, token);
        }
        command
    }
}

/// Runs a clone, stopping it once git reports having received more than the bound, or when
/// it takes too long. A refused or failed clone fails the task, in git's own words.
async fn bounded_clone(
    clone: &mut tokio::process::Command,
    limits: &RepositoryLimits,
) -> Result<(), Ending> {
    let mut child = prepared(clone)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .map_err(|err| machine(format!("cannot run git: {err}")))?;
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let mut said = String::new();
    let watch = async {
        let mut chunk = [0u8; 4096];
        loop {
            let read = stderr.read(&mut chunk).await.unwrap_or(0);
            if read == 0 {
                return None;
            }
            said.push_str(&String::from_utf8_lossy(&chunk[..read]));
            let received = said
                .rsplit(['\r', '\n'])
                .find_map(received_bytes)
                .unwrap_or(0);
            if received > limits.max_bytes {
                return Some(received);
            }
            // Only the latest progress matters; the end holds git's messages.
            if said.len() > 64 << 10 {
                said.drain(..said.len() - (16 << 10));
            }
        }
    };
    let outcome = tokio::time::timeout(limits.clone_timeout, watch).await;
    let _ = child.start_kill();
    let status = child.wait().await;
    match outcome {
        Err(_) => Err(Ending::Failed(format!(
            "cloning the repository took longer than {} s",
            limits.clone_timeout.as_secs()
        ))),
        Ok(Some(received)) => Err(Ending::Failed(format!(
            "the repository is larger than the bound of {}: {} received when the clone was stopped",
            mib(limits.max_bytes),
            mib(received)
        ))),
        Ok(None) if status.as_ref().is_ok_and(|status| status.success()) => Ok(()),
        Ok(None) => Err(Ending::Failed(format!(
            "cloning the repository failed: {}",
            messages_of(&said)
        ))),
    }
}

/// What git says it has received so far, from one of its progress lines (`Receiving
/// objects:  45% (9/20), 1.20 MiB | 2.40 MiB/s`).
fn received_bytes(line: &str) -> Option<u64> {
    let rest = line.trim().strip_prefix("Receiving objects:")?;
    let (_, size) = rest.split_once("), ")?;
    let size = size.split(['|', ',']).next()?.trim();
    let (number, unit) = size.split_once(' ')?;
    let number: f64 = number.parse().ok()?;
    let scale = match unit.trim() {
        "bytes" | "byte" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some((number * scale) as u64)
}

/// Git's messages without its progress lines.
fn messages_of(stderr: &str) -> String {
    let progress = |line: &&str| line.contains('%') && line.contains('(') && line.contains('/');
    let lines: Vec<&str> = stderr
        .split(['\r', '\n'])
        .map(str::trim)
        .filter(|line| !line.is_empty() && !progress(line))
        .collect();
    lines.join("\n")
}

/// The total size of the files `git ls-tree -r -l` lists (submodules have none).
fn tree_bytes(listing: &str) -> u64 {
    listing
        .lines()
        .filter_map(|line| line.split_whitespace().nth(3)?.parse::<u64>().ok())
        .sum()
}

/// A size for people, in MiB.
pub(crate) fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes.div_ceil(1 << 20))
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

/// Makes git connect only to `addresses` for the repository's host (an IP literal is its own
/// address). The host is taken from the parts the URL was checked by, never read again.
fn pin_to(git: &mut tokio::process::Command, url: &RepoUrl, addresses: &[SocketAddr]) {
    let (RepoHost::Name(host), Some(first)) = (url.host(), addresses.first()) else {
        return;
    };
    if url.scheme() == Scheme::Ssh {
        // ssh connects to the checked address while checking the host key of the name.
        let ssh = format!("ssh -o HostName={} -o HostKeyAlias={host}", first.ip());
        git.env("GIT_SSH_COMMAND", ssh);
        return;
    }
    let ips: Vec<String> = addresses
        .iter()
        .map(|addr| match addr.ip() {
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        })
        .collect();
    git.arg("-c").arg(format!(
        "http.curloptResolve={host}:{}:{}",
        url.port(),
        ips.join(",")
    ));
}

/// Hands git a token for the repository's host, as HTTP Basic (`x-access-token:<token>`, which
/// GitHub accepts), scoped to the repository's origin.
fn authorize(git: &mut tokio::process::Command, url: &RepoUrl, token: &str) {
    if url.scheme() == Scheme::Ssh {
        return;
    }
    let basic = basic_credentials(token);
    git.env("GIT_CONFIG_COUNT", "1")
        .env(
            "GIT_CONFIG_KEY_0",
            format!("http.{}/.extraHeader", url.origin()),
        )
        .env(
            "GIT_CONFIG_VALUE_0",
            format!("Authorization: Basic {basic}"),
        );
}

/// `x-access-token:<token>` in base64, as the Basic header carries it.
fn basic_credentials(token: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"))
}

/// Every form in which a token travels from the host: itself, and as the Basic credentials of
/// git's header. Each is a secret to redact.
pub fn token_forms(token: &str) -> [String; 2] {
    [token.to_string(), basic_credentials(token)]
}

/// Runs git on the host (see [`prepared`]) and collects its output.
async fn run(command: &mut tokio::process::Command) -> Result<std::process::Output, Ending> {
    prepared(command)
        .output()
        .await
        .map_err(|err| machine(format!("cannot run git: {err}")))
}

/// Git with no prompts, no local-file transports and no user or system configuration that
/// could change what it does.
fn prepared(command: &mut tokio::process::Command) -> &mut tokio::process::Command {
    command
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ALLOW_PROTOCOL", "https:http:ssh")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        // Messages in English: some are matched (a missing remote branch) and all are shown.
        .env("LC_ALL", "C")
        .kill_on_drop(true)
}

fn machine(reason: String) -> Ending {
    Ending::Infrastructure(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_give_the_bytes_received() {
        let cases = [
            (
                "Receiving objects:  45% (9/20), 1.50 MiB | 2.40 MiB/s",
                Some(1_572_864),
            ),
            (
                "Receiving objects: 100% (3/3), 230 bytes | 230.00 KiB/s, done.",
                Some(230),
            ),
            (
                "Receiving objects: 100% (3/3), 2.00 GiB | 9.00 MiB/s",
                Some(2 << 30),
            ),
            ("Receiving objects:  33% (1/3)", None),
            ("Resolving deltas: 100% (1/1), done.", None),
        ];
        for (line, bytes) in cases {
            assert_eq!(received_bytes(line), bytes, "{line}");
        }
        let said =
            "Cloning into 'x'...\rReceiving objects:  50% (1/2)\rfatal: repository not found\n";
        assert_eq!(
            messages_of(said),
            "Cloning into 'x'...\nfatal: repository not found"
        );
        let tree =
            "100644 blob aa    3\ta\n160000 commit bb       -\tsub\n100755 blob cc 1048576\tb";
        assert_eq!(tree_bytes(tree), 1_048_579);
    }

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
        let url = RepoUrl::parse("https://github.com/o/private.git").unwrap();
        authorize(&mut git, &url, "gho_secret");
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

        // On another port, the header is scoped to that port; ssh takes no header.
        let mut git = tokio::process::Command::new("git");
        let url = RepoUrl::parse("https://Git.Example.com:8443/o/r").unwrap();
        authorize(&mut git, &url, "gho_secret");
        let key = git
            .as_std()
            .get_envs()
            .find(|(key, _)| *key == "GIT_CONFIG_KEY_0")
            .and_then(|(_, value)| value.map(|v| v.to_string_lossy().to_string()));
        assert_eq!(
            key.as_deref(),
            Some("http.https://git.example.com:8443/.extraHeader")
        );
        let mut git = tokio::process::Command::new("git");
        let url = RepoUrl::parse("git@github.com:o/r.git").unwrap();
        authorize(&mut git, &url, "gho_secret");
        assert_eq!(git.as_std().get_envs().count(), 0);
    }

    #[test]
    fn clones_are_pinned_to_the_checked_addresses() {
        let v4: SocketAddr = "203.0.113.7:443".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
        let mut git = tokio::process::Command::new("git");
        let url = RepoUrl::parse("https://github.com/o/r.git").unwrap();
        pin_to(&mut git, &url, &[v4, v6]);
        assert_eq!(
            args_of(&git),
            [
                "-c",
                "http.curloptResolve=github.com:443:203.0.113.7,[2001:db8::1]"
            ]
        );

        for url in ["ssh://git@github.com/o/r.git", "git@github.com:o/r.git"] {
            let mut git = tokio::process::Command::new("git");
            pin_to(&mut git, &RepoUrl::parse(url).unwrap(), &[v4]);
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

        // An IP literal is its own address: nothing to pin.
        let mut git = tokio::process::Command::new("git");
        let url = RepoUrl::parse("http://127.0.0.1:9/o/r.git").unwrap();
        pin_to(&mut git, &url, &["127.0.0.1:9".parse().unwrap()]);
        assert!(args_of(&git).is_empty());
        assert_eq!(git.as_std().get_envs().count(), 0);
    }
}
