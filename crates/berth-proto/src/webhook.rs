//! Outgoing webhooks: the endpoints a user registers for their task events, and what each
//! delivery says (see docs/webhooks.md).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::WebhookId;

/// How a webhook's body is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// `{"type", "timestamp", "data"}`, per the Standard Webhooks specification.
    #[default]
    Standard,
    /// `{"text": …}`, which Slack's incoming webhooks (and chat apps that copy them) post.
    Slack,
}

impl WebhookFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookFormat::Standard => "standard",
            WebhookFormat::Slack => "slack",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "standard" => Some(WebhookFormat::Standard),
            "slack" => Some(WebhookFormat::Slack),
            _ => None,
        }
    }
}

/// The body of `POST /v1/webhooks`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// Where to send: an https URL on a public host (or a host the server lists).
    pub url: String,
    #[serde(default)]
    pub format: WebhookFormat,
}

/// A registered endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Webhook {
    pub id: WebhookId,
    pub url: String,
    pub format: WebhookFormat,
    pub created_at: DateTime<Utc>,
    /// The signing secret (`whsec_…`), in the answer that creates the endpoint only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WebhookList {
    pub webhooks: Vec<Webhook>,
}
