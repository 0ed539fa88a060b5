//! The runner's side of `agent = "claude-code"`: the metered model proxy, listening where
//! sandboxes reach it, Claude Code as a task's work, and each task's choice of agent.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use berth_agent::model::TokenUsage;
use berth_agent::prices::PriceTable;
use berth_proto::Agent;
use berth_runner::attempt::{Ending, Job, Work};
use berth_runner::claude_code::ClaudeCode;
use berth_runner::model_proxy::{ModelProxy, Pricing, Reach, Upstreams};

use crate::config::Config;

/// The image tasks run in: the configured one, or the default image's Claude Code variant,
/// which must have been built.
pub async fn image(config: &Config) -> anyhow::Result<String> {
    if let Some(image) = &config.sandbox.sandbox_image {
        return Ok(image.clone());
    }
    let image = berth_sandbox::claude_code_image::claude_code_image();
    let docker = berth_sandbox::connect().await?;
    berth_sandbox::check_image(&docker, &image)
        .await
        .with_context(|| {
            format!(
                "agent = \"claude-code\" needs {image}: build it with \
             `berth image build --with-claude-code <claude-agent-sdk wheel>`"
            )
        })?;
    Ok(image)
}

/// Starts the proxy on the sandbox network's gateway (a random port: each attempt is told the
/// address) and returns the work that runs Claude Code through it.
pub async fn work(config: &Config) -> anyhow::Result<ClaudeCode> {
    let docker = berth_sandbox::connect()
        .await
        .context("the model proxy needs the Docker engine")?;
    let addresses = berth_sandbox::sandbox_network_addresses(&docker).await?;
    let reach = Reach {
        network: addresses
            .subnet
            .parse()
            .with_context(|| format!("the sandbox network's subnet {}", addresses.subnet))?,
        host: addresses.gateway,
    };
    let listener = tokio::net::TcpListener::bind((addresses.gateway, 0))
        .await
        .with_context(|| format!("the model proxy cannot listen on {}", addresses.gateway))?;
    let proxy_url = format!("http://{}", listener.local_addr()?);
    let agent = &config.agent;
    let upstreams = Upstreams {
        anthropic_base_url: agent.anthropic_base_url.clone(),
        anthropic_api_key: agent.anthropic_api_key.clone(),
        openai_base_url: agent.openai_base_url.clone(),
        openai_api_key: agent.openai_api_key.clone(),
    };
    let proxy = ModelProxy::new(
        upstreams,
        reach,
        pricing(PriceTable::default().with(&agent.prices)),
    );
    let serving = proxy.clone();
    // It lives as long as the process: attempts in their drain still need it.
    tokio::spawn(async move {
        if let Err(err) = serving.serve(listener, std::future::pending()).await {
            tracing::error!(error = %err, "the model proxy stopped");
        }
    });
    tracing::info!(address = %proxy_url, "the model proxy serves the sandboxes");
    let runner = &config.runner;
    Ok(ClaudeCode {
        proxy,
        proxy_url,
        model: runner.claude_code_model.clone(),
        allowed_tools: runner.claude_code_allowed_tools.clone(),
        timeout: Duration::from_secs(config.server.max_timeout_secs),
    })
}

fn pricing(table: PriceTable) -> Pricing {
    Arc::new(move |model, counts| {
        let usage = TokenUsage {
            input: counts.input,
            output: counts.output,
            cache_write: counts.cache_write,
            cache_read: counts.cache_read,
        };
        table.price(model).map(|price| price.cost(&usage))
    })
}

/// A task's work by the agent it asked for, or by the server's. Claude Code is there only on
/// runners set up for it (`agent = "claude-code"`, which starts the proxy).
pub struct ChosenAgent {
    pub berth: berth_agent::run::Agent,
    pub claude_code: Option<ClaudeCode>,
    pub default: Agent,
}

#[async_trait]
impl Work for ChosenAgent {
    async fn run(&self, job: Job<'_>) -> Ending {
        match (job.task.agent.unwrap_or(self.default), &self.claude_code) {
            (Agent::Berth, _) => self.berth.run(job).await,
            (Agent::ClaudeCode, Some(claude_code)) => claude_code.run(job).await,
            (Agent::ClaudeCode, None) => Ending::Failed(
                "this server's runners do not run Claude Code; they need agent = \"claude-code\" \
                 and the image from `berth image build --with-claude-code` (docs/claude-code.md)"
                    .into(),
            ),
        }
    }
}
