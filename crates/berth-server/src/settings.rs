//! The API's part of the configuration: limits on requests and tasks, streams, GitHub sign-in,
//! sessions, rate limits, outgoing webhooks and Web Push; and [`Shared`], the values it needs that other parts need too,
//! which the binary reads once and hands to each.

use std::time::Duration;

use berth_guard::AllowedHost;
use berth_proto::settings::comma_separated;
use berth_proto::Secret;
use berth_store::sealing::Keyring;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Largest prompt accepted, in bytes.
    pub max_prompt_bytes: usize,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Longest a task may run when it does not say, in seconds.
    pub default_timeout_secs: u64,
    /// Longest a task may ask to run, in seconds.
    pub max_timeout_secs: u64,
    /// How many times a task is attempted before it fails for good.
    pub max_attempts: i64,
    /// Frames queued for one stream connection; a client further behind is disconnected
    /// with the "resume" close code. Also the reads a task's hub keeps for its subscribers:
    /// one further behind reads the database until it has caught up.
    pub stream_buffer_frames: usize,
    /// Seconds between WebSocket pings; a connection with no pong for 10 s more is dropped.
    pub stream_ping_secs: u64,
    /// Seconds a stream ticket (for browsers) stays valid.
    pub stream_ticket_ttl_secs: u64,
    /// Seconds a stream may stay stalled (its queue full) before the client is disconnected
    /// with the "resume" close code.
    pub stream_stall_secs: u64,
    /// GitHub OAuth app's client id; setting it turns GitHub sign-in on.
    pub github_client_id: Option<String>,
    /// GitHub OAuth app's client secret (the web flow needs it; the device flow does not).
    pub github_client_secret: Option<Secret>,
    /// The address people reach this server at, e.g. `https://berth.example.com`; the OAuth
    /// callback is `<public_url>/v1/auth/github/callback`, and `https` makes cookies `Secure`.
    pub public_url: Option<String>,
    /// GitHub logins that may sign in; with `allowed_orgs`, empty means everyone.
    #[serde(deserialize_with = "comma_separated")]
    pub allowed_logins: Vec<String>,
    /// GitHub organisations whose members may sign in.
    #[serde(deserialize_with = "comma_separated")]
    pub allowed_orgs: Vec<String>,
    /// Whether the first user to sign in becomes admin.
    pub first_user_admin: bool,
    /// How long a browser session lasts, in seconds.
    pub session_ttl_secs: u64,
    /// Tasks one user may create in a burst, and how many more per minute after it.
    pub rate_limit_task_burst: u32,
    pub rate_limit_tasks_per_minute: u32,
    /// Sign-in attempts one user (or address) may make in a burst, and per minute after it.
    pub rate_limit_sign_in_burst: u32,
    pub rate_limit_sign_ins_per_minute: u32,
    /// The GitHub App's webhook secret; setting it (with the App's id and key) turns on
    /// `POST /v1/github/webhook`.
    pub github_webhook_secret: Option<Secret>,
    /// The issue label that hands an issue to Berth.
    pub github_trigger_label: String,
    /// The name people mention (`@berth`) in an issue comment to hand the issue to Berth.
    pub github_handle: String,
    /// Deliveries whose event is older than this many seconds are refused as stale.
    pub github_webhook_max_age_secs: u64,
    /// Hosts outgoing webhooks may reach besides public https ones: `http://host:port` for
    /// plain HTTP, and an internal address only by its IP literal.
    #[serde(deserialize_with = "comma_separated")]
    pub webhook_allowed_hosts: Vec<String>,
    /// Seconds before a failed webhook delivery is tried again; the wait doubles each time.
    pub webhook_retry_secs: u64,
    /// Attempts at one webhook delivery before it is given up.
    pub webhook_max_attempts: u32,
    /// The VAPID private key (P-256: its 32 bytes, base64url); setting it turns Web Push on.
    pub web_push_vapid_key: Option<Secret>,
    /// Who runs this server, for push services to reach: `mailto:…` or `https://…`.
    pub web_push_subject: Option<String>,
    /// The network of a task that names none: `none`, or `allowlist` (the runner's
    /// `egress_allowed_domains` through the egress proxy). Never `full`: the default denies.
    pub default_network: berth_proto::Network,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_prompt_bytes: 64 * 1024,
            max_body_bytes: 1024 * 1024,
            default_timeout_secs: 30 * 60,
            max_timeout_secs: 4 * 60 * 60,
            max_attempts: 3,
            stream_buffer_frames: 1024,
            stream_ping_secs: 25,
            stream_ticket_ttl_secs: 60,
            stream_stall_secs: 10,
            github_client_id: None,
            github_client_secret: None,
            public_url: None,
            allowed_logins: Vec::new(),
            allowed_orgs: Vec::new(),
            first_user_admin: true,
            session_ttl_secs: 7 * 24 * 3600,
            rate_limit_task_burst: 60,
            rate_limit_tasks_per_minute: 30,
            rate_limit_sign_in_burst: 10,
            rate_limit_sign_ins_per_minute: 5,
            github_webhook_secret: None,
            github_trigger_label: "berth".into(),
            github_handle: "berth".into(),
            github_webhook_max_age_secs: 24 * 3600,
            webhook_allowed_hosts: Vec::new(),
            webhook_retry_secs: 5,
            webhook_max_attempts: 15,
            web_push_vapid_key: None,
            web_push_subject: None,
            default_network: berth_proto::Network::None,
        }
    }
}

impl Settings {
    /// `Err` says which setting is wrong and what it must be.
    pub fn validate(&self) -> Result<(), String> {
        if self.default_network == berth_proto::Network::Full {
            return Err(
                "default_network must be none or allowlist; a task that wants full network \
                 asks for it"
                    .into(),
            );
        }
        if self.max_prompt_bytes == 0 || self.max_prompt_bytes >= self.max_body_bytes {
            return Err(format!(
                "max_prompt_bytes ({}) must be above 0 and below max_body_bytes ({})",
                self.max_prompt_bytes, self.max_body_bytes
            ));
        }
        if self.default_timeout_secs == 0 || self.default_timeout_secs > self.max_timeout_secs {
            return Err(format!(
                "default_timeout_secs ({}) must be above 0 and at most max_timeout_secs ({})",
                self.default_timeout_secs, self.max_timeout_secs
            ));
        }
        if self.max_attempts < 1 {
            return Err("max_attempts must be at least 1".into());
        }
        if self.stream_buffer_frames < 8
            || self.stream_ping_secs == 0
            || self.stream_ticket_ttl_secs == 0
        {
            return Err(
                "stream_buffer_frames must be at least 8, stream_ping_secs and \
                        stream_ticket_ttl_secs above 0"
                    .into(),
            );
        }
        if let Some(public) = &self.public_url {
            if !(public.starts_with("https://") || public.starts_with("http://")) {
                return Err(format!(
                    "public_url {public:?} must start with https:// (or http://)"
                ));
            }
        }
        if self.session_ttl_secs < 60 {
            return Err("session_ttl_secs must be at least 60".into());
        }
        if self.rate_limit_task_burst == 0
            || self.rate_limit_tasks_per_minute == 0
            || self.rate_limit_sign_in_burst == 0
            || self.rate_limit_sign_ins_per_minute == 0
        {
            return Err("rate_limit_* settings must be at least 1".into());
        }
        if self.github_trigger_label.trim().is_empty() || !valid_handle(&self.github_handle) {
            return Err(
                "github_trigger_label must not be empty, and github_handle must be a GitHub \
                 login (letters, digits, '-'), without the @"
                    .into(),
            );
        }
        if self.github_webhook_max_age_secs < 60 {
            return Err("github_webhook_max_age_secs must be at least 60".into());
        }
        if self.webhook_retry_secs == 0 || self.webhook_max_attempts == 0 {
            return Err("webhook_retry_secs and webhook_max_attempts must be at least 1".into());
        }
        for host in &self.webhook_allowed_hosts {
            AllowedHost::parse(host)
                .map_err(|message| format!("webhook_allowed_hosts entry {host:?}: {message}"))?;
        }
        crate::push::WebPush::from_settings(self)?;
        Ok(())
    }

    /// How long to wait before attempt `attempts + 1` at a webhook or push delivery: from
    /// `webhook_retry_secs`, doubling each time, at most 10 hours; `None` once
    /// `webhook_max_attempts` are used up.
    pub fn delivery_retry_ms(&self, attempts: i64) -> Option<i64> {
        const LONGEST_WAIT: Duration = Duration::from_secs(10 * 3600);
        let wait = Duration::from_secs(self.webhook_retry_secs)
            .saturating_mul(1 << (attempts - 1).clamp(0, 20))
            .min(LONGEST_WAIT);
        (attempts < i64::from(self.webhook_max_attempts)).then_some(wait.as_millis() as i64)
    }

    /// The entries of `webhook_allowed_hosts`, which validation has parsed once already.
    pub fn webhook_hosts(&self) -> Vec<AllowedHost> {
        self.webhook_allowed_hosts
            .iter()
            .filter_map(|host| AllowedHost::parse(host).ok())
            .collect()
    }
}

fn valid_handle(handle: &str) -> bool {
    !handle.is_empty()
        && handle.len() <= 39
        && handle
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// What the API is handed besides its own settings: values other parts need too (the runner
/// clones from the same hosts, opens tokens with the same keys, runs the sandboxes whose
/// limits tasks ask under), which the binary reads once and gives to each.
#[derive(Clone, Debug)]
pub struct Shared {
    /// Git hosts tasks may name.
    pub git_allowed_hosts: Vec<AllowedHost>,
    /// GitHub's web address: people sign in there, and pull requests are opened on its
    /// repositories.
    pub github_web_url: String,
    /// GitHub's API address, for sign-in.
    pub github_api_url: String,
    /// Whether the operator set a GitHub token of the server's own, with which any task may
    /// push and open a pull request. The API never uses the token itself.
    pub server_github_token: bool,
    /// Seals the GitHub tokens of people who sign in; `None` without an encryption key.
    pub keyring: Option<Keyring>,
    /// The most a task may ask of its sandbox.
    pub sandbox_ceiling: SandboxCeiling,
    /// The GitHub App, when its id and private key are configured: the API answers on GitHub
    /// as the App, and the runner clones and pushes GitHub's tasks with its tokens.
    pub github_app: Option<std::sync::Arc<berth_github::GitHubApp>>,
}

/// The sandbox limits of this installation: a task may ask for less, never more.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SandboxCeiling {
    pub memory_mb: u64,
    pub cpus: f64,
    pub pids: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A P-256 private key made for this test.
    const VAPID_KEY: &str = "eaSZgbvFughNACychZkXiPTJoX249cKaVt69uTPGiB4";

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        Settings::default().validate().unwrap();
        let push = Settings {
            web_push_vapid_key: Some(Secret::new(VAPID_KEY)),
            web_push_subject: Some("https://berth.example.com".into()),
            ..Settings::default()
        };
        push.validate().unwrap();
        let cases = [
            (
                Settings {
                    max_prompt_bytes: 2 << 20,
                    ..Settings::default()
                },
                "max_prompt_bytes",
            ),
            (
                Settings {
                    default_timeout_secs: 5 * 3600,
                    ..Settings::default()
                },
                "default_timeout_secs",
            ),
            (
                Settings {
                    public_url: Some("berth.example.com".into()),
                    ..Settings::default()
                },
                "public_url",
            ),
            (
                Settings {
                    rate_limit_sign_in_burst: 0,
                    ..Settings::default()
                },
                "rate_limit_",
            ),
            (
                Settings {
                    web_push_vapid_key: Some(Secret::new("not-a-key")),
                    web_push_subject: Some("mailto:ops@example.com".into()),
                    ..Settings::default()
                },
                "web_push_vapid_key",
            ),
            (
                Settings {
                    web_push_vapid_key: Some(Secret::new(VAPID_KEY)),
                    ..Settings::default()
                },
                "web_push_subject",
            ),
            (
                Settings {
                    web_push_vapid_key: Some(Secret::new(VAPID_KEY)),
                    web_push_subject: Some("ops@example.com".into()),
                    ..Settings::default()
                },
                "web_push_subject",
            ),
        ];
        for (settings, named) in cases {
            let err = settings.validate().unwrap_err();
            assert!(err.contains(named), "{named}: {err}");
        }
    }
}
