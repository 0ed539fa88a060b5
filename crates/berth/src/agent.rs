//! The agent's provider and settings, from the configuration.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use berth_agent::anthropic::{AnthropicConfig, AnthropicProvider};
use berth_agent::model::Turn;
use berth_agent::openai::{OpenAiConfig, OpenAiProvider};
use berth_agent::prices::PriceTable;
use berth_agent::publish::{Author, GitHub};
use berth_agent::redact::Redactor;
use berth_agent::run::AgentSettings;
use berth_agent::{Provider, ProviderError, RetryPolicy, TurnRequest};
use berth_server::config::AgentProvider;
use berth_server::Config;

pub fn provider(config: &Config) -> Arc<dyn Provider> {
    let retry = RetryPolicy::default();
    match config.agent_provider {
        AgentProvider::Anthropic => match &config.anthropic_api_key {
            Some(key) => Arc::new(AnthropicProvider::new(AnthropicConfig {
                base_url: config.anthropic_base_url.clone(),
                api_key: key.expose().to_string(),
                version: config.anthropic_version.clone(),
                retry,
                idle_timeout: Duration::from_secs(300),
            })),
            None => {
                tracing::warn!("no Anthropic API key: tasks will fail until ANTHROPIC_API_KEY or anthropic_api_key is set");
                Arc::new(NoKey)
            }
        },
        AgentProvider::Openai => Arc::new(OpenAiProvider::new(OpenAiConfig {
            base_url: config.openai_base_url.clone(),
            api_key: config
                .openai_api_key
                .as_ref()
                .map(|key| key.expose().to_string()),
            retry,
            timeout: Duration::from_secs(600),
        })),
    }
}

pub fn settings(config: &Config) -> AgentSettings {
    let secrets = config
        .anthropic_api_key
        .iter()
        .chain(&config.openai_api_key)
        .chain(&config.github_token)
        .chain(&config.github_client_secret)
        .chain(&config.redact_secrets)
        .map(|secret| secret.expose().to_string());
    AgentSettings {
        model: config.agent_model.clone(),
        max_tokens_per_turn: config.agent_max_output_tokens,
        max_turns: config.agent_max_turns,
        command_timeout: Duration::from_secs(config.agent_command_timeout_secs),
        setup_commands: config.setup_commands.clone(),
        prices: PriceTable::default().with(&config.prices),
        redactor: Redactor::new(secrets),
        github: Some(GitHub {
            web_url: config.github_web_url.clone(),
            api_url: config.github_api_url.clone(),
        }),
        author: Author {
            name: config.git_author_name.clone(),
            email: config.git_author_email.clone(),
        },
    }
}

/// Stands in for the Anthropic API when no key is configured, so each task ends saying so.
struct NoKey;

#[async_trait]
impl Provider for NoKey {
    async fn turn(&self, _request: &TurnRequest<'_>) -> Result<Turn, ProviderError> {
        Err(ProviderError::Refused {
            status: 401,
            message: "this server has no Anthropic API key; set ANTHROPIC_API_KEY or \
                      anthropic_api_key in berth.toml"
                .to_string(),
        })
    }
}
