//! The `berth` binary: command-line parsing, configuration and wiring; the work happens in the
//! library crates.

mod agent;
mod claude_code;
mod cli;
mod config;
mod doctor;
mod logging;
mod metrics;
mod runner;
mod server;

use std::path::PathBuf;
use std::process::ExitCode;

use berth_proto::Secret;
use clap::{Args, Parser, Subcommand};

use crate::config::{Config, Overrides};

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "Self-hosted background coding agents"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API, the realtime streams and a runner on this machine.
    Server {
        /// Serve the API only; tasks are run by `berth runner` nodes sharing the database.
        #[arg(long)]
        no_runner: bool,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Run tasks from the shared database on this machine, without serving the API.
    Runner {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Manage API tokens directly in the server's database (run on the server's machine).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage the sandbox image.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Manage the key sealing users' GitHub tokens (run on the server's machine).
    #[command(subcommand)]
    Keys(KeysCommand),
    #[command(flatten)]
    Client(cli::ClientCommand),
    /// Check Docker, the sandbox image, the database, the keys, GitHub and the model API, and
    /// say how to fix what fails (exit status 1).
    Doctor {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Copy the SQLite database to a new file, consistently, while the server runs (see
    /// docs/operations.md for restoring it).
    Backup {
        /// The copy to write; it must not exist yet.
        path: PathBuf,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Print the OpenAPI document of the HTTP API.
    Openapi {
        /// Write it to this file instead of standard output.
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Build the default sandbox image on this machine (no registry needed); does nothing
    /// when this version of it is already built.
    Build {
        /// Build it again even if it exists.
        #[arg(long)]
        force: bool,
        /// Then build `berth-sandbox-claude-code` on it, with the Claude Code CLI taken from
        /// this `claude-agent-sdk` wheel (Linux x86_64, from PyPI), for `agent = "claude-code"`.
        #[arg(long, value_name = "WHEEL")]
        with_claude_code: Option<std::path::PathBuf>,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Re-seal every stored GitHub token under `encryption_key`, opening older ones with
    /// `encryption_old_keys`.
    Rotate {
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a user if needed and print a new API token for it (shown once).
    Create {
        /// The user's name.
        #[arg(long)]
        user: String,
        /// A label to recognise the token by.
        #[arg(long, default_value = "cli")]
        name: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

/// Options every command that opens the database honours. Each also has a `BERTH_*`
/// environment variable and a `berth.toml` key; the flag wins.
#[derive(Args, Clone, Debug)]
struct ConfigArgs {
    /// Configuration file (default: ./berth.toml when it exists) [env: BERTH_CONFIG]
    #[arg(long, env = "BERTH_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:7700) [env: BERTH_LISTEN]
    #[arg(long)]
    listen: Option<String>,
    /// Directory for the SQLite database and local state (default ./berth-data) [env: BERTH_DATA_DIR]
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// postgres://… to use PostgreSQL instead of SQLite [env: BERTH_DATABASE_URL]
    #[arg(long, hide_env_values = true)]
    database_url: Option<String>,
}

impl ConfigArgs {
    /// The settings, with the logger set up as they say.
    fn load(&self) -> anyhow::Result<Config> {
        let overrides = Overrides {
            listen: self.listen.clone(),
            data_dir: self.data_dir.clone(),
            database_url: self.database_url.clone().map(Secret::new),
        };
        let config = Config::load(self.config.as_deref(), &overrides)?;
        logging::init(config.operations.log_format);
        Ok(config)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(
        cli.command,
        Command::Server { .. }
            | Command::Runner { .. }
            | Command::Token(_)
            | Command::Keys(_)
            | Command::Backup { .. }
    ) {
        logging::init(config::LogFormat::Text);
    }
    let runtime = tokio::runtime::Runtime::new().expect("the Tokio runtime starts");
    match runtime.block_on(run(cli)) {
        Ok(exit) => ExitCode::from(exit.code()),
        Err(err) => {
            eprintln!("berth: {err:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<cli::Exit> {
    if let Command::Client(command) = cli.command {
        return cli::run(command).await;
    }
    if let Command::Doctor { config } = cli.command {
        return match doctor::run(config.load()).await {
            true => Ok(cli::Exit::Success),
            // Status 1, as for a task that failed: something needs fixing.
            false => Ok(cli::Exit::TaskFailed),
        };
    }
    run_role(cli.command).await.map(|()| cli::Exit::Success)
}

async fn run_role(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Client(_) | Command::Doctor { .. } => unreachable!("handled by run"),
        Command::Server { no_runner, config } => server::run(config.load()?, !no_runner).await,
        Command::Runner { config } => server::run_runner(config.load()?).await,
        Command::Token(TokenCommand::Create { user, name, config }) => {
            server::create_token(&config.load()?, &user, &name).await
        }
        Command::Keys(KeysCommand::Rotate { config }) => {
            let config = config.load()?;
            let keyring = config
                .sealing
                .keyring()
                .map_err(anyhow::Error::msg)?
                .ok_or_else(|| {
                    anyhow::anyhow!("encryption_key is not set: nothing to rotate to")
                })?;
            let store = config::open_store(&config.common).await?;
            let count = berth_store::sealing::rotate_keys(store.as_ref(), &keyring).await;
            store.close().await;
            println!(
                "re-sealed {} GitHub tokens and setup secrets under key {}",
                count?,
                keyring.current_id()
            );
            Ok(())
        }
        Command::Image(ImageCommand::Build {
            force,
            with_claude_code,
        }) => {
            let docker = berth_sandbox::connect().await?;
            let mut progress = |line: &str| eprintln!("berth image: {line}");
            match force {
                true => berth_sandbox::image::build_default_image(&docker, &mut progress).await?,
                false => berth_sandbox::ensure_default_image(&docker, &mut progress).await?,
            }
            if let Some(wheel) = with_claude_code {
                let base = berth_sandbox::default_image();
                let build = berth_sandbox::claude_code_image::build_claude_code_image;
                build(&docker, &base, &wheel, &mut progress).await?;
            }
            Ok(())
        }
        Command::Backup { path, config } => server::backup(&config.load()?, &path).await,
        Command::Openapi { output } => {
            let document = berth_server::openapi::document_json();
            match output {
                Some(path) => std::fs::write(&path, document)?,
                None => print!("{document}"),
            }
            Ok(())
        }
    }
}
