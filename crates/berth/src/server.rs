//! `berth server`, `berth runner` and `berth token create`: open the configured store and run
//! the roles asked for against it, until SIGINT or SIGTERM.

use anyhow::Context;
use berth_server::{AppState, Config};
use tokio::net::TcpListener;

pub async fn run(config: Config, with_runner: bool) -> anyhow::Result<()> {
    let store = berth_server::config::open_store(&config)
        .await
        .context("cannot open the database")?;
    if store.count_users().await? == 0 {
        println!("{}", first_token_hint(&config));
    }
    let shutdown = shutdown_signal()?;
    let runner = match with_runner {
        true => Some(crate::runner::start(&config, store.clone()).await?),
        false => None,
    };
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let address = listener.local_addr()?;
    println!("berth listening on http://{address}");
    tracing::info!(%address, database = ?store.backend(), runner = with_runner, "server started");

    let state = AppState::new(store.clone(), config);
    let stopping = runner.as_ref().map(|runner| runner.stop_handle());
    berth_server::serve(listener, state, async move {
        shutdown.await;
        if let Some(stop) = stopping {
            stop.cancel();
        }
    })
    .await?;
    if let Some(runner) = runner {
        runner.finish().await;
    }
    tracing::info!("stopped; closing the database");
    store.close().await;
    Ok(())
}

pub async fn run_runner(config: Config) -> anyhow::Result<()> {
    let store = berth_server::config::open_store(&config)
        .await
        .context("cannot open the database")?;
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
    let store = berth_server::config::open_store(config)
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

fn first_token_hint(config: &Config) -> String {
    let mut command = String::from("berth token create --user YOUR_NAME");
    match config.database() {
        Ok(berth_server::config::Database::Postgres { .. }) => {
            command.push_str(" --database-url postgres://…")
        }
        _ => command.push_str(&format!(" --data-dir {}", config.data_dir.display())),
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
