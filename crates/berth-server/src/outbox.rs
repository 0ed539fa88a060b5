//! What the webhook and push senders share: taking due messages of one topic from the durable
//! outbox, each under a lease, and handing a failed one back to be tried again later.

use std::future::Future;
use std::time::Duration;

use berth_store::{OutboxMessage, StoreError};

use crate::AppState;

/// How long a claimed message is held before another sender may take it.
const LEASE_MS: i64 = 60_000;
/// The longest one delivery may take.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(15);

/// Hands each due `topic` message to `deliver`, one at a time, until the server shuts down.
pub async fn drain<F, Fut>(state: &AppState, topic: &str, mut deliver: F)
where
    F: FnMut(OutboxMessage) -> Fut,
    Fut: Future<Output = ()>,
{
    while !state.shutdown.is_cancelled() {
        match state.store.claim_outbox(topic, LEASE_MS).await {
            Ok(Some(message)) => deliver(message).await,
            Ok(None) => {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    () = state.shutdown.cancelled() => {}
                }
            }
            Err(err) => {
                tracing::warn!(topic, error = %err, "a sender cannot read the outbox");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

/// Hands a message whose attempt failed back, to be tried again after a delay that doubles
/// (from `webhook_retry_secs`), or given up after `webhook_max_attempts`.
pub async fn retry_later(
    state: &AppState,
    message: &OutboxMessage,
    reason: &str,
) -> Result<(), StoreError> {
    let retry = state.settings.delivery_retry_ms(message.attempts);
    tracing::info!(id = %message.id, topic = %message.topic, attempt = message.attempts,
        %reason, retry_in_ms = ?retry, "a delivery failed");
    state
        .store
        .retry_outbox(&message.id, message.attempts, reason, retry)
        .await
}
