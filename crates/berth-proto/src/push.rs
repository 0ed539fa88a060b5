//! Web Push: the server's VAPID key a browser subscribes with, and the subscription the browser
//! hands back (the Push API's `PushSubscription.toJSON()`), kept per device (see docs/web.md).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::PushSubscriptionId;

/// The answer of `GET /v1/push/key`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PushKey {
    /// The server's VAPID public key (an uncompressed P-256 point, base64url): the
    /// `applicationServerKey` of `pushManager.subscribe`.
    pub public_key: String,
}

/// The body of `POST /v1/push/subscriptions`: what `PushSubscription.toJSON()` gives.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscribePush {
    /// The push service's URL for this browser: https, on a public host.
    pub endpoint: String,
    /// When the browser says the subscription ends (ms since the epoch), if it does.
    #[serde(default)]
    pub expiration_time: Option<f64>,
    pub keys: PushKeys,
}

/// The browser's keys that messages are encrypted to (RFC 8291).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PushKeys {
    /// The browser's P-256 public key, uncompressed, base64url.
    pub p256dh: String,
    /// The 16-byte authentication secret, base64url.
    pub auth: String,
}

/// The body of `DELETE /v1/push/subscriptions`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UnsubscribePush {
    /// The endpoint of the subscription to remove, as it was posted.
    pub endpoint: String,
}

/// A device's subscription, as its owner sees it (the keys are not shown again).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PushSubscription {
    pub id: PushSubscriptionId,
    pub endpoint: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PushSubscriptionList {
    pub subscriptions: Vec<PushSubscription>,
}
