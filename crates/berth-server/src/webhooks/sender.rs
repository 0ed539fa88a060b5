//! The sender: takes due `webhook` messages from the outbox and posts each to its endpoint.
//! A 2xx acknowledges the message; anything else hands it back to be tried again after a
//! delay that doubles (from `webhook_retry_secs`), until `webhook_max_attempts`.

use berth_proto::{WebhookFormat, WebhookId};
use berth_store::OutboxMessage;
use serde_json::{json, Value};

use super::signing;
use crate::outbox::{self, DELIVERY_TIMEOUT};
use crate::AppState;

/// Delivers webhook messages until the server shuts down.
pub async fn run(state: AppState) {
    outbox::drain(&state, "webhook", |message| deliver(&state, message)).await;
}

async fn deliver(state: &AppState, message: OutboxMessage) {
    let sent = send(state, &message).await;
    let recorded = match sent {
        Ok(()) => state.store.ack_outbox(&message.id).await,
        Err(reason) => outbox::retry_later(state, &message, &reason).await,
    };
    if let Err(err) = recorded {
        tracing::warn!(id = %message.id, error = %err, "recording a webhook delivery failed");
    }
}

/// One attempt: `Ok` when the endpoint answered 2xx, or is gone (nothing to send to).
async fn send(state: &AppState, message: &OutboxMessage) -> Result<(), String> {
    let endpoint_id: Option<WebhookId> = message.payload["endpoint_id"]
        .as_str()
        .and_then(|id| id.parse().ok());
    let Some(endpoint) = (match endpoint_id {
        Some(id) => state
            .store
            .get_webhook(id)
            .await
            .map_err(|err| err.to_string())?,
        None => None,
    }) else {
        return Ok(());
    };
    let listed = state.settings.webhook_hosts();
    let (url, addresses) = berth_guard::resolve_webhook_host(&endpoint.url, &listed).await?;
    let format = WebhookFormat::parse(&endpoint.format).unwrap_or_default();
    let body = match format {
        WebhookFormat::Standard => serde_json::to_vec(&message.payload["body"]),
        WebhookFormat::Slack => serde_json::to_vec(&slack(state, &message.payload["body"])),
    }
    .map_err(|err| err.to_string())?;
    let timestamp = chrono::Utc::now().timestamp();
    let signature = signing::sign(&endpoint.secret, &message.id, timestamp, &body)?;
    let mut client = reqwest::Client::builder()
        .user_agent(concat!("berth-webhooks/", env!("CARGO_PKG_VERSION")))
        .timeout(DELIVERY_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none());
    if let berth_guard::RepoHost::Name(name) = url.host() {
        // Connect to the addresses checked, not to what DNS says a moment later.
        client = client.resolve_to_addrs(name, &addresses);
    }
    let client = client.build().map_err(|err| err.to_string())?;
    let answer = client
        .post(url.to_string())
        .header("content-type", "application/json")
        .header("webhook-id", &message.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await
        .map_err(|err| format!("no answer: {}", err.without_url()))?;
    match answer.status() {
        status if status.is_success() => Ok(()),
        status => Err(format!("the endpoint answered {status}")),
    }
}

/// A message Slack posts as it is: one line on the task and a link to it.
fn slack(state: &AppState, body: &Value) -> Value {
    let data = &body["data"];
    let task_id = data["id"].as_str().unwrap_or_default();
    let title = data["title"].as_str().unwrap_or("a task");
    let what = match body["type"].as_str() {
        Some("task.created") => "was created".to_string(),
        Some("task.started") => "started".to_string(),
        _ => format!("ended: {}", data["status"].as_str().unwrap_or("unknown")),
    };
    let mut text = format!("Berth task \"{title}\" {what}");
    if let Some(url) = data["pull_request_url"].as_str() {
        text.push_str(&format!(" — pull request: {url}"));
    }
    if let Some(error) = data["error"].as_str() {
        text.push_str(&format!(" — {error}"));
    }
    if let Some(public) = &state.settings.public_url {
        text.push_str(&format!(
            " — {}/#task={task_id}",
            public.trim_end_matches('/')
        ));
    }
    json!({ "text": text })
}
