//! The push sender: takes due `push` messages from the outbox and delivers each to its
//! subscription's push service. A 2xx acknowledges the message; 404 or 410 says the
//! subscription is gone, so it is removed (for every user of that endpoint) and the message
//! dropped; anything else hands it back to be tried again after a delay that doubles (from
//! `webhook_retry_secs`), until `webhook_max_attempts`. A message older than its TTL is dropped.

use berth_proto::PushSubscriptionId;
use berth_store::OutboxMessage;
use serde_json::{json, Value};

use super::{WebPush, TTL_SECS};
use crate::outbox::{self, DELIVERY_TIMEOUT};
use crate::AppState;

/// Delivers push messages until the server shuts down; where push is off, does nothing (the
/// messages wait, and are dropped as stale once they are older than their TTL).
pub async fn run(state: AppState) {
    let Some(push) = state.push.clone() else {
        return;
    };
    outbox::drain(&state, "push", |message| deliver(&state, &push, message)).await;
}

/// What became of one attempt.
enum Sent {
    /// Delivered, or nothing to deliver (the subscription was removed, the news is stale).
    Done,
    /// The push service says the subscription at this endpoint no longer exists.
    Gone(String),
}

async fn deliver(state: &AppState, push: &WebPush, message: OutboxMessage) {
    let recorded = match send(state, push, &message).await {
        Ok(Sent::Done) => state.store.ack_outbox(&message.id).await,
        Ok(Sent::Gone(endpoint)) => {
            let removed = state.store.forget_push_endpoint(&endpoint).await;
            tracing::info!(id = %message.id, "a push subscription is gone; removed");
            match removed {
                Ok(_) => state.store.ack_outbox(&message.id).await,
                Err(err) => Err(err),
            }
        }
        Err(reason) => outbox::retry_later(state, &message, &reason).await,
    };
    if let Err(err) = recorded {
        tracing::warn!(id = %message.id, error = %err, "recording a push delivery failed");
    }
}

/// One attempt. The endpoint is a capability of the browser's: it stays out of the log.
async fn send(state: &AppState, push: &WebPush, message: &OutboxMessage) -> Result<Sent, String> {
    let id: Option<PushSubscriptionId> = message.payload["subscription_id"]
        .as_str()
        .and_then(|id| id.parse().ok());
    let subscription = match id {
        Some(id) => state.store.get_push_subscription(id).await,
        None => Ok(None),
    };
    let Some(subscription) = subscription.map_err(|err| err.to_string())? else {
        return Ok(Sent::Done);
    };
    let age_ms = chrono::Utc::now().timestamp_millis() - message.created_at;
    if age_ms > i64::from(TTL_SECS) * 1000 {
        return Ok(Sent::Done);
    }
    let listed = state.settings.webhook_hosts();
    let (endpoint, addresses) =
        berth_guard::resolve_push_host(&subscription.endpoint, &listed).await?;
    let payload = serde_json::to_vec(&notification(&message.payload)).map_err(|e| e.to_string())?;
    let topic = message.payload["task_id"]
        .as_str()
        .unwrap_or_default()
        .replace('-', "");
    let message = push.message(
        &endpoint,
        &subscription.p256dh,
        &subscription.auth,
        &payload,
        &topic,
    )?;
    let mut client = reqwest::Client::builder()
        .user_agent(concat!("berth-push/", env!("CARGO_PKG_VERSION")))
        .timeout(DELIVERY_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none());
    if let berth_guard::RepoHost::Name(name) = endpoint.host() {
        // Connect to the addresses checked, not to what DNS says a moment later.
        client = client.resolve_to_addrs(name, &addresses);
    }
    let client = client.build().map_err(|err| err.to_string())?;
    let mut post = client.post(endpoint.to_string());
    for (name, value) in message.headers {
        post = post.header(name, value);
    }
    let answer = post
        .body(message.body)
        .send()
        .await
        .map_err(|err| format!("no answer: {}", err.without_url()))?;
    match answer.status().as_u16() {
        200..=299 => Ok(Sent::Done),
        404 | 410 => Ok(Sent::Gone(subscription.endpoint)),
        status => Err(format!("the push service answered {status}")),
    }
}

/// What the service worker shows (`web/sw.js`): a title that says how the task ended, the
/// first line of its request, and where tapping it leads.
fn notification(news: &Value) -> Value {
    let task_id = news["task_id"].as_str().unwrap_or_default();
    let status = news["status"].as_str().unwrap_or_default();
    let title = match status {
        "succeeded" => "Task succeeded",
        "failed" => "Task failed",
        "cancelled" => "Task cancelled",
        "timed_out" => "Task timed out",
        _ => "Task ended",
    };
    json!({
        "task_id": task_id,
        "status": status,
        "title": title,
        "body": news["title"],
        "url": format!("/#/task/{task_id}"),
    })
}
