//! The command-line client: `login`, `submit`, `reply`, `watch`, `tasks`, `show`, `cancel`, `diff`,
//! `env`, `secret`,
//! all over the public HTTP API through `berth-client`.
//!
//! Exit status: 0 success (the task succeeded), 1 the task failed or timed out, 2 an error
//! (usage, authentication, network), 3 the task was cancelled.

mod environments;
mod login;
mod render;

use std::io::{IsTerminal, Read, Write};

use anyhow::Context;
use berth_client::{Client, Followed, ListTasks};
use berth_proto::{Agent, Budget, CreateTask, Network, StreamFrame, TaskId, TaskStatus};
use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub enum ClientCommand {
    /// Save the server's address and an API token for the other commands: sign in with
    /// GitHub (`--github`, the device flow) or give a token made on the server.
    Login {
        /// The server, such as http://127.0.0.1:7700.
        #[arg(long)]
        server: String,
        /// Sign in with GitHub: shows a code to enter on GitHub, then gets a token for this
        /// device.
        #[arg(long, conflicts_with = "token")]
        github: bool,
        /// The token; read from standard input when neither it nor --github is given.
        #[arg(long)]
        token: Option<String>,
    },
    /// Hand Berth a task: a repository and a request in plain words.
    Submit {
        /// The repository, such as https://github.com/you/project.
        #[arg(long)]
        repo: String,
        /// What to do.
        prompt: String,
        /// Branch, tag or commit to start from.
        #[arg(long = "ref")]
        git_ref: Option<String>,
        /// Network for the agent: none, full, or allowlist (the server's allowed domains);
        /// the server's default_network when absent.
        #[arg(long)]
        network: Option<String>,
        /// Open a pull request when it succeeds.
        #[arg(long)]
        pr: bool,
        /// The model; the server's default when absent.
        #[arg(long)]
        model: Option<String>,
        /// `berth` or `claude-code`; the server's `agent` setting when absent.
        #[arg(long)]
        agent: Option<String>,
        /// Most model turns.
        #[arg(long)]
        max_turns: Option<u32>,
        /// Most tokens, input and output together.
        #[arg(long)]
        max_tokens: Option<u64>,
        /// Most spend in US dollars.
        #[arg(long)]
        max_usd: Option<f64>,
        /// Follow it live until it ends.
        #[arg(long)]
        watch: bool,
        #[command(flatten)]
        output: Output,
    },
    /// Send a follow-up to a task that has ended: it continues the same conversation and
    /// workspace, and updates the same branch and pull request.
    Reply {
        id: TaskId,
        /// What to do next.
        prompt: String,
        /// Follow it live until it ends.
        #[arg(long)]
        watch: bool,
        #[command(flatten)]
        output: Output,
    },
    /// Follow a task live until it ends; resumes by itself after a dropped connection.
    Watch {
        id: TaskId,
        #[command(flatten)]
        output: Output,
    },
    /// List your tasks, newest first.
    Tasks {
        /// Only tasks in this state (queued, running, succeeded, …).
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[command(flatten)]
        output: Output,
    },
    /// Show one task.
    Show {
        id: TaskId,
        #[command(flatten)]
        output: Output,
    },
    /// Cancel a task.
    Cancel {
        id: TaskId,
        #[command(flatten)]
        output: Output,
    },
    /// Print a task's diff.
    Diff { id: TaskId },
    /// A repository's prepared environments: list, show with the setup's log, rebuild.
    #[command(subcommand)]
    Env(environments::EnvCommand),
    /// Setup secrets of your tasks on a repository: set (from standard input), list, remove.
    #[command(subcommand)]
    Secret(environments::SecretCommand),
}

#[derive(Args, Clone, Copy)]
pub struct Output {
    /// Print JSON for scripts (one object per line when following a task).
    #[arg(long)]
    json: bool,
}

/// What the process should exit with.
pub enum Exit {
    Success,
    TaskFailed,
    TaskCancelled,
}

impl Exit {
    fn of(status: TaskStatus) -> Self {
        match status {
            TaskStatus::Cancelled => Exit::TaskCancelled,
            TaskStatus::Failed | TaskStatus::TimedOut => Exit::TaskFailed,
            _ => Exit::Success,
        }
    }

    pub fn code(&self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::TaskFailed => 1,
            Exit::TaskCancelled => 3,
        }
    }
}

fn client() -> anyhow::Result<Client> {
    let login = login::load()?;
    Ok(Client::new(&login.server, Some(login.token))?)
}

pub async fn run(command: ClientCommand) -> anyhow::Result<Exit> {
    match command {
        ClientCommand::Login {
            server,
            github: true,
            ..
        } => log_in_with_github(server).await,
        ClientCommand::Login { server, token, .. } => log_in(server, token).await,
        ClientCommand::Submit {
            repo,
            prompt,
            git_ref,
            network,
            pr,
            model,
            agent,
            max_turns,
            max_tokens,
            max_usd,
            watch,
            output,
        } => {
            let agent = agent
                .map(|agent| Agent::parse(&agent).context("--agent must be berth or claude-code"))
                .transpose()?;
            let network = match network {
                Some(network) => Some(
                    Network::parse(&network)
                        .context("--network must be none, full or allowlist")?,
                ),
                None => None,
            };
            let request = CreateTask {
                agent,
                git_ref,
                network,
                open_pull_request: pr,
                model,
                budget: Budget {
                    max_turns,
                    max_tokens,
                    max_usd,
                },
                ..CreateTask::new(repo, prompt)
            };
            // The client sends the request again after a network error, with this key, so a
            // lost answer never makes a second task.
            let key = TaskId::new().to_string();
            let client = client()?;
            let (task, _) = client.create_task(&request, Some(&key)).await?;
            if watch {
                if !output.json {
                    eprintln!("task {}", task.id);
                }
                return follow(&client, task.id, output).await;
            }
            print(output, &task, || println!("{}", task.id))
        }
        ClientCommand::Reply {
            id,
            prompt,
            watch,
            output,
        } => {
            let client = client()?;
            // As for submit: a retried follow-up is never queued twice.
            let key = TaskId::new().to_string();
            let queued = client.follow_up(id, &prompt, Some(&key)).await?;
            let task = queued.task;
            if watch {
                // Only what happens from the follow-up on, even when the answer came to a
                // retry after the task had moved on.
                let first = queued.first_seq.unwrap_or(task.last_event_seq);
                return follow_from(&client, task.id, first - 1, output).await;
            }
            print(output, &task, || println!("{} {}", task.id, task.status))
        }
        ClientCommand::Watch { id, output } => follow(&client()?, id, output).await,
        ClientCommand::Env(command) => environments::env(command).await,
        ClientCommand::Secret(command) => environments::secret(command).await,
        ClientCommand::Tasks {
            status,
            limit,
            output,
        } => {
            let status = status
                .map(|s| TaskStatus::parse(&s).with_context(|| format!("unknown status {s:?}")))
                .transpose()?;
            let page = client()?
                .list_tasks(&ListTasks {
                    status,
                    limit: Some(limit),
                    ..Default::default()
                })
                .await?;
            print(output, &page, || table(&page.tasks))
        }
        ClientCommand::Show { id, output } => {
            let task = client()?.get_task(id).await?;
            print(output, &task, || describe(&task))
        }
        ClientCommand::Cancel { id, output } => {
            let task = client()?.cancel_task(id).await?;
            print(output, &task, || println!("{} {}", task.id, task.status))
        }
        ClientCommand::Diff { id } => {
            let diff = client()?.get_diff(id).await?;
            std::io::stdout().write_all(&diff)?;
            Ok(Exit::Success)
        }
    }
}

fn print<T: serde::Serialize>(
    output: Output,
    value: &T,
    human: impl FnOnce(),
) -> anyhow::Result<Exit> {
    match output.json {
        true => println!("{}", serde_json::to_string(value)?),
        false => human(),
    }
    Ok(Exit::Success)
}

async fn log_in(server: String, token: Option<String>) -> anyhow::Result<Exit> {
    let token = match token {
        Some(token) => token,
        None => {
            if std::io::stdin().is_terminal() {
                eprint!("API token: ");
            }
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text)?;
            text.trim().to_string()
        }
    };
    let me = Client::new(&server, Some(token.clone()))?
        .me()
        .await
        .map_err(|err| match err.status().map(|status| status.as_u16()) {
            Some(401) => anyhow::anyhow!("the server refused the token: {err}"),
            _ => err.into(),
        })?;
    let path = login::save(&login::Login { server, token })?;
    eprintln!("Logged in as {} (saved to {})", me.name, path.display());
    Ok(Exit::Success)
}

/// The device flow: the person confirms a code on GitHub; the server then gives this device
/// its own API token, listed and revocable like any other.
async fn log_in_with_github(server: String) -> anyhow::Result<Exit> {
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let name = format!("cli@{}", host.trim());
    let created = berth_client::device::login(&server, &name, |code| {
        eprintln!(
            "Open {} and enter the code {}",
            code.verification_uri, code.user_code
        );
    })
    .await
    .context("signing in with GitHub failed")?;
    let path = login::save(&login::Login {
        server,
        token: created.token,
    })?;
    eprintln!(
        "Signed in; the token for this device is saved to {}",
        path.display()
    );
    Ok(Exit::Success)
}

/// Follows a task to its end, rendering each step (or printing JSON lines).
async fn follow(client: &Client, id: TaskId, output: Output) -> anyhow::Result<Exit> {
    follow_from(client, id, 0, output).await
}

/// Renders the task's events after `after` as they come, until it ends.
async fn follow_from(
    client: &Client,
    id: TaskId,
    after: i64,
    output: Output,
) -> anyhow::Result<Exit> {
    let style = render::Style::detect();
    let mut stream = client.follow_task(id, after);
    let mut spinner = Spinner::new(style.is_terminal() && !output.json);
    let mut status = TaskStatus::Queued;
    let mut waiting = false;
    loop {
        let followed = tokio::select! {
            followed = stream.next() => followed,
            () = spinner.tick() => continue,
        };
        let Some(followed) = followed else { break };
        spinner.clear();
        let frame = match followed? {
            Followed::Frame(frame) => frame,
            Followed::Waiting { reason, retry_in } => {
                if !waiting {
                    eprintln!("waiting for the server… ({reason})");
                }
                tracing::debug!(%reason, ?retry_in, "the server is out of reach");
                waiting = true;
                continue;
            }
        };
        if std::mem::take(&mut waiting) {
            eprintln!(
                "connected again; resuming after event {}",
                stream.last_seq()
            );
        }
        if let StreamFrame::End { status: ended, .. } = &frame {
            status = *ended;
        }
        match output.json {
            true => println!("{}", serde_json::to_string(&frame)?),
            false => render::human(&style, &frame),
        }
    }
    Ok(Exit::of(status))
}

/// A spinner on the terminal while nothing happens; nothing when output is not a terminal.
struct Spinner {
    on: bool,
    shown: bool,
    frame: usize,
}

impl Spinner {
    fn new(on: bool) -> Self {
        Self {
            on,
            shown: false,
            frame: 0,
        }
    }

    async fn tick(&mut self) {
        if !self.on {
            return std::future::pending().await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        const FRAMES: [&str; 4] = ["⠋", "⠙", "⠸", "⠴"];
        self.frame = (self.frame + 1) % FRAMES.len();
        eprint!("\r{} working…", FRAMES[self.frame]);
        self.shown = true;
    }

    fn clear(&mut self) {
        if self.shown {
            eprint!("\r\x1b[2K");
            self.shown = false;
        }
    }
}

fn table(tasks: &[berth_proto::Task]) {
    println!(
        "{:<36}  {:<10}  {:<40}  PROMPT",
        "ID", "STATUS", "REPOSITORY"
    );
    for task in tasks {
        let prompt: String = task
            .prompt
            .lines()
            .next()
            .unwrap_or_default()
            .chars()
            .take(50)
            .collect();
        let repo: String = task.repo_url.chars().take(40).collect();
        println!(
            "{:<36}  {:<10}  {:<40}  {prompt}",
            task.id.to_string(),
            task.status.as_str(),
            repo
        );
    }
}

fn describe(task: &berth_proto::Task) {
    println!("task      {}", task.id);
    println!("status    {}", task.status);
    println!(
        "repo      {}{}",
        task.repo_url,
        task.git_ref
            .as_ref()
            .map(|r| format!(" @ {r}"))
            .unwrap_or_default()
    );
    println!("prompt    {}", task.prompt);
    println!("attempt   {}", task.attempt);
    println!("created   {}", task.created_at);
    if let Some(error) = &task.error {
        println!("reason    {error}");
    }
    if task.result.has_diff {
        println!("diff      berth diff {}", task.id);
    }
    if let Some(url) = &task.result.pull_request_url {
        println!("pull req  {url}");
    }
    println!(
        "usage     {} in, {} out tokens, ${:.4}",
        task.usage.input_tokens, task.usage.output_tokens, task.usage.cost_usd
    );
}
