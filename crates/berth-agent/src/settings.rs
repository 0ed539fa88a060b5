//! The agent's part of the configuration, as a person writes it: which model API and model,
//! the default budget of a request, and what setup and prices to use. The binary turns it into
//! a [`crate::Provider`] and the executor's [`crate::run::AgentSettings`].

use std::collections::BTreeMap;

use berth_proto::Secret;
use serde::{Deserialize, Serialize};

use crate::prices::Price;

/// The API the agent talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentProvider {
    Anthropic,
    Openai,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// `anthropic` (the Messages API) or `openai` (any OpenAI-compatible chat API).
    pub agent_provider: AgentProvider,
    /// The model of tasks that name none.
    pub agent_model: String,
    /// Turns one request may take unless its task's budget says otherwise.
    pub agent_max_turns: u32,
    /// Most tokens the model may write in one turn.
    pub agent_max_output_tokens: u32,
    /// Longest one command of the agent may run.
    pub agent_command_timeout_secs: u64,
    /// The model's context window in tokens: past three quarters of it, the oldest tool
    /// results are left out of requests. Set it for local models with smaller windows.
    pub agent_context_tokens: u64,
    /// Also read from `ANTHROPIC_API_KEY`.
    pub anthropic_api_key: Option<Secret>,
    /// Also read from `ANTHROPIC_BASE_URL`.
    pub anthropic_base_url: String,
    pub anthropic_version: String,
    /// Such as `http://127.0.0.1:8080/v1` for a llama.cpp server.
    pub openai_base_url: String,
    pub openai_api_key: Option<Secret>,
    /// Commands run in the sandbox before the agent starts, by repository URL prefix.
    pub setup_commands: BTreeMap<String, String>,
    /// Prices per million tokens by model name prefix, added to the built-in table.
    pub prices: BTreeMap<String, Price>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            agent_provider: AgentProvider::Anthropic,
            agent_model: "claude-sonnet-4-5".to_string(),
            agent_max_turns: 100,
            agent_max_output_tokens: 16_000,
            agent_command_timeout_secs: 600,
            agent_context_tokens: 200_000,
            anthropic_api_key: None,
            anthropic_base_url: crate::anthropic::DEFAULT_BASE_URL.to_string(),
            anthropic_version: crate::anthropic::DEFAULT_VERSION.to_string(),
            openai_base_url: "http://127.0.0.1:8080/v1".to_string(),
            openai_api_key: None,
            setup_commands: BTreeMap::new(),
            prices: BTreeMap::new(),
        }
    }
}

impl Settings {
    /// `Err` says which setting is wrong and what it must be.
    pub fn validate(&self) -> Result<(), String> {
        if self.agent_max_turns == 0
            || self.agent_max_output_tokens == 0
            || self.agent_command_timeout_secs == 0
        {
            return Err(
                "agent_max_turns, agent_max_output_tokens and agent_command_timeout_secs must \
                 be above 0"
                    .into(),
            );
        }
        if self.agent_context_tokens < 4_096 {
            return Err(format!(
                "agent_context_tokens is {}; a model needs a context window of at least 4096 \
                 tokens",
                self.agent_context_tokens
            ));
        }
        for (name, url) in [
            ("anthropic_base_url", &self.anthropic_base_url),
            ("openai_base_url", &self.openai_base_url),
        ] {
            let parsed = url::Url::parse(url);
            if !matches!(parsed, Ok(u) if u.scheme() == "http" || u.scheme() == "https") {
                return Err(format!("{name} {url:?} is not an http(s) URL"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_are_named() {
        Settings::default().validate().unwrap();
        let cases = [
            (
                Settings {
                    agent_max_turns: 0,
                    ..Settings::default()
                },
                "agent_max_turns",
            ),
            (
                Settings {
                    agent_context_tokens: 1_000,
                    ..Settings::default()
                },
                "agent_context_tokens",
            ),
            (
                Settings {
                    openai_base_url: "localhost:8080".into(),
                    ..Settings::default()
                },
                "openai_base_url",
            ),
        ];
        for (settings, named) in cases {
            let err = settings.validate().unwrap_err();
            assert!(err.contains(named), "{named}: {err}");
        }
    }
}
