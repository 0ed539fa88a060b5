//! The agent's provider and settings, from the configuration.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use berth_agent::anthropic::{AnthropicConfig, AnthropicProvider};
use berth_agent::model::Turn;
use berth_agent::openai::{OpenAiConfig, OpenAiProvider};
use berth_agent::prices::PriceTable;
use berth_agent::run::AgentSettings;
use berth_agent::{AgentProvider, Provider, ProviderError, RetryPolicy, TurnRequest};
use berth_runner::redact::Redactor;

use crate::config::Config;

pub fn provider(config: &Config) -> Arc<dyn Provider> {
    let retry = RetryPolicy::default();
    let agent = &config.agent;
    match agent.agent_provider {
        AgentProvider::Anthropic => match &agent.anthropic_api_key {
            Some(key) => Arc::new(AnthropicProvider::new(AnthropicConfig {
                base_url: agent.anthropic_base_url.clone(),
                api_key: key.expose().to_string(),
                version: agent.anthropic_version.clone(),
                retry,
                idle_timeout: Duration::from_secs(300),
            })),
            None => {
                tracing::warn!("no Anthropic API key: tasks will fail until ANTHROPIC_API_KEY or anthropic_api_key is set");
                Arc::new(NoKey)
            }
        },
        AgentProvider::Openai => Arc::new(OpenAiProvider::new(OpenAiConfig {
            base_url: agent.openai_base_url.clone(),
            api_key: agent
                .openai_api_key
                .as_ref()
                .map(|key| key.expose().to_string()),
            retry,
            timeout: Duration::from_secs(600),
        })),
    }
}

pub fn settings(config: &Config) -> AgentSettings {
    let agent = &config.agent;
    AgentSettings {
        model: agent.agent_model.clone(),
        max_tokens_per_turn: agent.agent_max_output_tokens,
        context_tokens: agent.agent_context_tokens,
        max_turns: agent.agent_max_turns,
        command_timeout: Duration::from_secs(agent.agent_command_timeout_secs),
        prices: PriceTable::default().with(&agent.prices),
    }
}

/// What every attempt keeps out of what it stores and streams, whoever does its work.
pub fn redactor(config: &Config) -> Redactor {
    Redactor::new(server_secrets(config))
}

/// Every secret in the server's configuration, for the agent to keep out of what it stores:
/// the keys, the GitHub credentials, the encryption keys, the VAPID key, the database password,
/// the Fly token and the operator's own `redact_secrets`.
fn server_secrets(config: &Config) -> Vec<String> {
    let whole = config
        .agent
        .anthropic_api_key
        .iter()
        .chain(&config.agent.openai_api_key)
        .chain(&config.common.github_token)
        .chain(&config.server.github_client_secret)
        .chain(&config.server.web_push_vapid_key)
        .chain(&config.sealing.encryption_key)
        .chain(&config.common.redact_secrets)
        .chain(&config.fly.fly_api_token)
        .map(|secret| secret.expose().to_string());
    // Each old key by itself (a malformed list stops the server before this runs).
    let old_keys = config
        .sealing
        .old_keys()
        .unwrap_or_default()
        .into_iter()
        .map(|(_, key)| key.to_string());
    let database_password = config
        .common
        .database_url
        .as_ref()
        .and_then(|url| url::Url::parse(url.expose()).ok())
        .and_then(|url| url.password().map(str::to_string));
    whole.chain(old_keys).chain(database_password).collect()
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

#[cfg(test)]
mod tests {
    use berth_proto::Secret;

    use super::*;
    use crate::config::Common;

    #[test]
    fn every_configured_secret_is_redacted() {
        let config = Config {
            agent: berth_agent::Settings {
                anthropic_api_key: Some(Secret::new("sk-ant-key-123456".to_string())),
                ..Default::default()
            },
            sealing: berth_store::sealing::Settings {
                encryption_key: Some(Secret::new("bmV3LWtleS1ieXRlcw==".to_string())),
                encryption_old_keys: Some(Secret::new(
                    "k1:b2xkLWtleS1vbmU=, k2:b2xkLWtleS10d28=".to_string(),
                )),
                ..Default::default()
            },
            common: Common {
                database_url: Some(Secret::new(
                    "postgres://berth:db-pass-987@db.internal/berth".to_string(),
                )),
                ..Default::default()
            },
            fly: berth_fly::Settings {
                fly_api_token: Some(Secret::new("fo1_fly-token-4711".to_string())),
                ..Default::default()
            },
            ..Config::default()
        };
        let secrets = server_secrets(&config);
        for expected in [
            "sk-ant-key-123456",
            "bmV3LWtleS1ieXRlcw==",
            "b2xkLWtleS1vbmU=",
            "b2xkLWtleS10d28=",
            "db-pass-987",
            "fo1_fly-token-4711",
        ] {
            assert!(secrets.iter().any(|s| s == expected), "{expected} missing");
        }
        let redactor = redactor(&config);
        assert_eq!(
            redactor.text("connect with db-pass-987 and b2xkLWtleS10d28="),
            "connect with [REDACTED] and [REDACTED]"
        );
    }
}
