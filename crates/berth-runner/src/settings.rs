//! The runner's part of the configuration: its name, how much it takes on, how long its claims
//! last, how it drains, and the fixed command it may run instead of the agent.

use std::collections::BTreeMap;
use std::net::IpAddr;

use berth_proto::Agent;
use serde::{Deserialize, Serialize};

use crate::egress::{self, DomainEntry, DomainRule};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Names this node's runner in leases and container labels (default: an id kept in
    /// `data_dir`, made once as `hostname-<random>`).
    pub runner_node_id: Option<String>,
    /// Most tasks this node's runner runs at once.
    pub runner_capacity: usize,
    /// Most tasks one user has running at once, across all runners.
    pub runner_per_user_limit: i64,
    /// How long a runner's claim lasts without a heartbeat, in seconds.
    pub runner_lease_secs: u64,
    /// On shutdown, how long running tasks may go on before they are handed back, in seconds.
    pub runner_drain_grace_secs: u64,
    /// A fixed command to run in each task's sandbox instead of the agent (batch jobs, tests).
    pub runner_command: Option<String>,
    /// Which agent does the work of tasks that name none: Berth's own loop, or the Claude
    /// Code CLI inside the sandbox, talking to the model through the runner's metered proxy
    /// (which the runner starts only then: tasks may pick Claude Code only on such runners).
    pub agent: Agent,
    /// Claude Code's `--model`; its own default when absent.
    pub claude_code_model: Option<String>,
    /// Tools Claude Code may use without asking (its `--allowedTools`).
    pub claude_code_allowed_tools: String,
    /// Domains tasks with `network: allowlist` may reach through the egress proxy: names,
    /// `*.suffix` for the names under one, or `{ domain, methods }` to allow only some methods.
    pub egress_allowed_domains: Vec<DomainEntry>,
    /// Allowed names the egress proxy sends to a fixed address instead of looking them up:
    /// the only way a task reaches an internal address (an internal package mirror, say).
    pub egress_pinned_hosts: BTreeMap<String, IpAddr>,
    /// The egress proxy's port on the egress network's gateway; 0 picks a free one.
    pub egress_proxy_port: u16,
    /// Whether repositories may declare `.berth/environment.toml`, whose setup is kept as a
    /// prepared image; off, the file is ignored and only `setup_commands` run.
    pub environments: bool,
    /// Base images an environment file may name, besides the sandbox image.
    pub environment_images: Vec<String>,
    /// Domains an environment file may allow: `*` for any, `example.com` for it and its
    /// subdomains.
    pub environment_domains: Vec<String>,
    /// Most bytes the prepared environment images may take; past it the least recently used
    /// are removed.
    pub environment_cache_bytes: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            runner_node_id: None,
            runner_capacity: 2,
            runner_per_user_limit: 2,
            runner_lease_secs: 30,
            runner_drain_grace_secs: 30,
            runner_command: None,
            agent: Agent::Berth,
            claude_code_model: None,
            claude_code_allowed_tools: crate::claude_code::DEFAULT_ALLOWED_TOOLS.to_string(),
            egress_allowed_domains: Vec::new(),
            egress_pinned_hosts: BTreeMap::new(),
            egress_proxy_port: 0,
            environments: true,
            environment_images: Vec::new(),
            environment_domains: vec!["*".into()],
            environment_cache_bytes: 20 << 30,
        }
    }
}

impl Settings {
    /// `Err` says which setting is wrong and what it must be.
    pub fn validate(&self) -> Result<(), String> {
        if self.runner_capacity == 0 || self.runner_per_user_limit < 1 {
            return Err("runner_capacity and runner_per_user_limit must be at least 1".into());
        }
        if self.runner_lease_secs < 3 {
            return Err(
                "runner_lease_secs must be at least 3 (heartbeats come every third)".into(),
            );
        }
        if let Some(node) = &self.runner_node_id {
            if !crate::node::valid(node) {
                return Err(format!(
                    "runner_node_id {node:?} must be 1 to 64 letters, digits, '-', '_' or '.'"
                ));
            }
        }
        if self
            .runner_command
            .as_deref()
            .is_some_and(|command| command.trim().is_empty())
        {
            return Err("runner_command is empty; leave it out to run the agent".into());
        }
        if self.claude_code_allowed_tools.trim().is_empty() {
            return Err(
                "claude_code_allowed_tools is empty; Claude Code needs tools to work \
                 unattended (such as \"Bash,Read,Edit,Write\")"
                    .into(),
            );
        }
        let rules = self.egress_rules()?;
        if let Some(name) = (self.egress_pinned_hosts.keys()).find(|name| {
            egress::check(&rules, name, "CONNECT").is_err()
                && egress::check(&rules, name, "GET").is_err()
        }) {
            return Err(format!(
                "egress_pinned_hosts names {name}, which egress_allowed_domains does not allow"
            ));
        }
        if self.environment_cache_bytes == 0 {
            return Err("environment_cache_bytes must be more than 0".into());
        }
        let blank = |values: &[String]| values.iter().any(|value| value.trim().is_empty());
        if blank(&self.environment_images) || blank(&self.environment_domains) {
            return Err(
                "environment_images and environment_domains must not hold empty names".into(),
            );
        }
        Ok(())
    }

    /// The rules environment files are held to.
    pub fn environment_rules(&self) -> crate::environment::EnvironmentRules {
        crate::environment::EnvironmentRules {
            images: self.environment_images.clone(),
            domains: self.environment_domains.clone(),
            cache_bytes: self.environment_cache_bytes,
        }
    }

    /// `egress_allowed_domains`, parsed; `Err` names the bad entry.
    pub fn egress_rules(&self) -> Result<Vec<DomainRule>, String> {
        egress::parse_rules(&self.egress_allowed_domains)
            .map_err(|err| format!("egress_allowed_domains: {err}"))
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
                    runner_capacity: 0,
                    ..Settings::default()
                },
                "runner_capacity",
            ),
            (
                Settings {
                    runner_lease_secs: 2,
                    ..Settings::default()
                },
                "runner_lease_secs",
            ),
            (
                Settings {
                    runner_node_id: Some("a b".into()),
                    ..Settings::default()
                },
                "runner_node_id",
            ),
            (
                Settings {
                    runner_command: Some("  ".into()),
                    ..Settings::default()
                },
                "runner_command",
            ),
            (
                Settings {
                    egress_allowed_domains: vec![DomainEntry::Domain("https://pypi.org".into())],
                    ..Settings::default()
                },
                "egress_allowed_domains",
            ),
            (
                Settings {
                    egress_allowed_domains: vec![DomainEntry::Domain("pypi.org".into())],
                    egress_pinned_hosts: BTreeMap::from([(
                        "mirror.internal".into(),
                        [10, 0, 0, 5].into(),
                    )]),
                    ..Settings::default()
                },
                "egress_pinned_hosts",
            ),
            (
                Settings {
                    environment_cache_bytes: 0,
                    ..Settings::default()
                },
                "environment_cache_bytes",
            ),
            (
                Settings {
                    environment_images: vec![String::new()],
                    ..Settings::default()
                },
                "environment_images",
            ),
        ];
        for (settings, named) in cases {
            let err = settings.validate().unwrap_err();
            assert!(err.contains(named), "{named}: {err}");
        }
    }
}
