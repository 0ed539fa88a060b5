//! `/metrics` in Prometheus's text format, on its own listen address (`metrics_listen`), for
//! `berth server` and `berth runner` alike: the library crates record through the `metrics`
//! facade, and `metrics-exporter-prometheus` keeps and writes the series. An API node also
//! counts the tasks in each state, from the database, at each scrape.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use berth_proto::TaskStatus;
use berth_store::Store;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

/// Histogram buckets in seconds, from a quick HTTP answer to an hour-long task.
const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

#[derive(Clone)]
struct Exporter {
    handle: PrometheusHandle,
    /// The store whose tasks are counted by state: set on API nodes only, so that a sum over
    /// nodes does not count a task once per runner.
    tasks: Option<Arc<dyn Store>>,
}

/// Installs the recorder and serves `/metrics` on `address` until the process ends.
pub async fn serve(address: SocketAddr, tasks: Option<Arc<dyn Store>>) -> anyhow::Result<()> {
    let handle = PrometheusBuilder::new()
        .set_buckets(BUCKETS)?
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("metrics_listen: cannot listen on {address}"))?;
    println!("berth metrics on http://{}/metrics", listener.local_addr()?);
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    let app = Router::new()
        .route("/metrics", get(scrape))
        .with_state(Exporter { handle, tasks });
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::error!(error = %err, "the metrics listener failed");
        }
    });
    Ok(())
}

async fn scrape(State(exporter): State<Exporter>) -> impl IntoResponse {
    if let Some(store) = &exporter.tasks {
        match store.count_tasks_by_status().await {
            Ok(counts) => {
                for status in TaskStatus::ALL {
                    let count = counts
                        .iter()
                        .find(|(counted, _)| *counted == status)
                        .map_or(0, |(_, count)| *count);
                    metrics::gauge!("berth_tasks", "status" => status.as_str()).set(count as f64);
                }
            }
            Err(err) => tracing::warn!(error = %err, "counting tasks for the metrics failed"),
        }
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        exporter.handle.render(),
    )
}
