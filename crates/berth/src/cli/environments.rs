//! `berth env …` and `berth secret …`: a repository's prepared environments and the setup
//! secrets of the caller's tasks on it.

use std::io::Read;

use anyhow::Context;
use berth_proto::Environment;
use clap::Subcommand;

use super::{client, print, Exit, Output};

#[derive(Subcommand)]
pub enum EnvCommand {
    /// List a repository's prepared environments (one per runner node and cache key).
    List {
        #[arg(long)]
        repo: String,
        #[command(flatten)]
        output: Output,
    },
    /// Show one environment with its setup's log.
    Show {
        key: String,
        #[command(flatten)]
        output: Output,
    },
    /// Drop the prepared image: the next task on the repository runs the setup again.
    Rebuild {
        key: String,
        #[command(flatten)]
        output: Output,
    },
}

#[derive(Subcommand)]
pub enum SecretCommand {
    /// Keep a secret for the setup of your tasks on a repository; the value is read from
    /// standard input so it stays out of the shell's history.
    Set {
        #[arg(long)]
        repo: String,
        /// The variable the setup sees, such as NPM_TOKEN.
        name: String,
    },
    /// List the names of your setup secrets for a repository.
    List {
        #[arg(long)]
        repo: String,
        #[command(flatten)]
        output: Output,
    },
    /// Remove one of your setup secrets.
    Remove {
        #[arg(long)]
        repo: String,
        name: String,
    },
}

pub async fn env(command: EnvCommand) -> anyhow::Result<Exit> {
    let client = client()?;
    match command {
        EnvCommand::List { repo, output } => {
            let list = client.list_environments(&repo).await?;
            print(output, &list, || table(&list.environments))
        }
        EnvCommand::Show { key, output } => {
            let list = client.get_environment(&key).await?;
            print(output, &list, || {
                for environment in &list.environments {
                    table(std::slice::from_ref(environment));
                    println!("{}", environment.log.as_deref().unwrap_or_default());
                }
            })
        }
        EnvCommand::Rebuild { key, output } => {
            let list = client.rebuild_environment(&key).await?;
            print(output, &list, || {
                println!("the next task on it prepares the environment again")
            })
        }
    }
}

pub async fn secret(command: SecretCommand) -> anyhow::Result<Exit> {
    let client = client()?;
    match command {
        SecretCommand::Set { repo, name } => {
            let mut value = String::new();
            std::io::stdin()
                .read_to_string(&mut value)
                .context("reading the secret from standard input")?;
            let value = value.trim_end_matches(['\r', '\n']);
            client.put_setup_secret(&repo, &name, value).await?;
            eprintln!("kept {name} for the setup of your tasks on {repo}");
        }
        SecretCommand::List { repo, output } => {
            let list = client.list_setup_secrets(&repo).await?;
            return print(output, &list, || {
                list.names.iter().for_each(|name| println!("{name}"))
            });
        }
        SecretCommand::Remove { repo, name } => {
            client.delete_setup_secret(&repo, &name).await?;
            eprintln!("removed {name}");
        }
    }
    Ok(Exit::Success)
}

fn table(environments: &[Environment]) {
    for e in environments {
        let key = e.key.get(..12).unwrap_or(&e.key);
        let mib = e.size_bytes >> 20;
        let used = e.last_used.format("%Y-%m-%d %H:%M");
        println!(
            "{key}  {:<8} {mib:>6} MiB  {used}  {}  {}",
            e.state, e.node_id, e.repo_url
        );
    }
}
