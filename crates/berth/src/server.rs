//! `berth server`, `berth runner` and `berth token create`: open the configured store and run
//! the roles asked for against it, until SIGINT or SIGTERM.

use anyhow::Context;
use berth_server::{AppState, SandboxCeiling, Shared};
use tokio::net::TcpListener;

use crate::config::{open_store, Config, Database};

pub async fn run(config: Config, with_runner: bool) -> anyhow::Result<()> {
    let certificate = config.operations.certificate().await?;
    let store = open_store(&config.common)
        .await
        .context("cannot open the database")?;
    if store.count_users().await? == 0 {
        println!("{}", first_token_hint(&config));
    }
    if let Some(address) = config.operations.metrics_listen {
        crate::metrics::serve(address, Some(store.clone())).await?;
    }
    let shutdown = shutdown_signal()?;
    let runner = match with_runner {
        true => Some(crate::runner::start(&config, store.clone()).await?),
        false => None,
    };
    let listen = config.common.listen;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let address = listener.local_addr()?;
    let scheme = if certificate.is_some() {
        "https"
    } else {
        "http"
    };
    println!("berth listening on {scheme}://{address}");
    tracing::info!(%address, database = ?store.backend(), runner = with_runner, "server started");

    let shared = api_shared(&config)?;
    let state = AppState::new(store.clone(), config.server, shared);
    let stopping = runner.as_ref().map(|runner| runner.stop_handle());
    let shutdown = async move {
        shutdown.await;
        if let Some(stop) = stopping {
            stop.cancel();
        }
    };
    berth_server::serve_with(listener, state, shutdown, certificate).await?;
    if let Some(runner) = runner {
        runner.finish().await;
    }
    tracing::info!("stopped; closing the database");
    store.close().await;
    Ok(())
}

pub async fn run_runner(config: Config) -> anyhow::Result<()> {
    let store = open_store(&config.common)
        .await
        .context("cannot open the database")?;
    if let Some(address) = config.operations.metrics_listen {
        crate::metrics::serve(address, None).await?;
    }
    let shutdown = shutdown_signal()?;
    let runner = crate::runner::start(&config, store.clone()).await?;
    println!("berth runner {} started", runner.node_id());
    shutdown.await;
    runner.stop_handle().cancel();
    runner.finish().await;
    store.close().await;
    Ok(())
}

pub async fn create_token(config: &Config, user: &str, name: &str) -> anyhow::Result<()> {
    let user = user.trim();
    anyhow::ensure!(
        !user.is_empty() && user.len() <= 100,
        "--user must be 1 to 100 characters"
    );
    let store = open_store(&config.common)
        .await
        .context("cannot open the database")?;
    let user = store.upsert_user(user).await?;
    let created = berth_server::auth::issue_token(store.as_ref(), user.id, name).await?;
    store.close().await;
    eprintln!(
        "Created token {} for user {}. It is shown only this once:",
        created.info.prefix, user.name
    );
    println!("{}", created.token);
    Ok(())
}

/// `berth backup`: SQLite's own consistent copy; PostgreSQL has its own tools.
pub async fn backup(config: &Config, to: &std::path::Path) -> anyhow::Result<()> {
    let data_dir = match config.common.database().map_err(anyhow::Error::msg)? {
        Database::Sqlite { data_dir } => data_dir,
        Database::Postgres { .. } => anyhow::bail!(
            "berth backup copies the SQLite database; for PostgreSQL use pg_dump (see \
             docs/operations.md)"
        ),
    };
    let database = data_dir.join("berth.db");
    anyhow::ensure!(
        database.exists(),
        "there is no database at {}",
        database.display()
    );
    anyhow::ensure!(
        !to.exists(),
        "{} exists already: choose a new file",
        to.display()
    );
    berth_store::backup_sqlite(&data_dir, to)
        .await
        .with_context(|| format!("backing up {} failed", database.display()))?;
    let size = std::fs::metadata(to)?.len();
    println!(
        "backed up {} to {} ({size} bytes)",
        database.display(),
        to.display()
    );
    Ok(())
}

/// What the API shares with the runner, from the one configuration both are started with.
fn api_shared(config: &Config) -> anyhow::Result<Shared> {
    let common = &config.common;
    Ok(Shared {
        git_allowed_hosts: common.allowed_hosts(),
        github_web_url: common.github_web_url.clone(),
        github_api_url: common.github_api_url.clone(),
        server_github_token: common.github_token.is_some(),
        keyring: config.sealing.keyring().map_err(anyhow::Error::msg)?,
        sandbox_ceiling: SandboxCeiling {
            memory_mb: config.sandbox.sandbox_memory_mb,
            cpus: config.sandbox.sandbox_cpus,
            pids: config.sandbox.sandbox_pids,
        },
        github_app: common.github_app().map_err(anyhow::Error::msg)?,
    })
}

fn first_token_hint(config: &Config) -> String {
    let mut command = String::from("berth token create --user YOUR_NAME");
    match config.common.database() {
        Ok(Database::Postgres { .. }) => command.push_str(" --database-url postgres://…"),
        _ => command.push_str(&format!(" --data-dir {}", config.common.data_dir.display())),
    }
    format!("No users yet. Create the first API token on this machine with:\n    {command}")
}

/// Completes on Ctrl-C or SIGTERM. The handlers are installed before this returns, so a
/// signal that arrives right after the server says it is listening is not lost.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {},
            _ = interrupt.recv() => {},
        }
        tracing::info!("shutdown requested");
    })
}
