//! Web Push (RFC 8030): browsers subscribe with the server's VAPID public key
//! (`routes/push.rs`); each ending of a task is queued in the outbox for each of its owner's
//! subscriptions, and the sender here encrypts it to the browser's keys (RFC 8291, aes128gcm),
//! signs a VAPID token for the push service (RFC 8292) and posts it there. The `web-push` crate
//! does the encryption and the signing; reqwest sends what it builds.

pub mod sender;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use berth_guard::PushEndpoint;
use web_push::{
    ContentEncoding, PartialVapidSignatureBuilder, SubscriptionInfo, VapidSignatureBuilder,
    WebPushMessage, WebPushMessageBuilder,
};

use crate::Settings;

/// How long a push service keeps a message for a device that is offline, in seconds: news of
/// an ending older than a day is stale.
pub const TTL_SECS: u32 = 24 * 3600;

/// The server's VAPID key and who it says runs it.
pub struct WebPush {
    key: PartialVapidSignatureBuilder,
    /// The public key, base64url: the browsers' `applicationServerKey`.
    public_key: String,
    /// The VAPID `sub`: `mailto:` or `https:`.
    subject: String,
}

impl WebPush {
    /// From `web_push_vapid_key` and `web_push_subject`: `None` where push is off, `Err`
    /// saying which setting is wrong.
    pub fn from_settings(settings: &Settings) -> Result<Option<Self>, String> {
        let subject = settings.web_push_subject.clone();
        if let Some(subject) = &subject {
            let plausible = subject
                .strip_prefix("mailto:")
                .or_else(|| subject.strip_prefix("https://"))
                .is_some_and(|rest| !rest.is_empty() && !rest.contains(char::is_whitespace));
            if !plausible {
                return Err(format!(
                    "web_push_subject {subject:?} must be mailto:you@example.com or an https:// URL"
                ));
            }
        }
        let Some(key) = &settings.web_push_vapid_key else {
            return Ok(None);
        };
        let key = VapidSignatureBuilder::from_base64_no_sub(key.expose().trim_end_matches('='))
            .map_err(|_| {
                "web_push_vapid_key must be a P-256 private key: its 32 bytes in base64url \
                 (docs/web.md says how to make one)"
                    .to_string()
            })?;
        let subject = subject.ok_or(
            "web_push_subject must be set (mailto:… or https://…) when web_push_vapid_key is: \
             push services use it to reach whoever runs the server",
        )?;
        Ok(Some(Self {
            public_key: URL_SAFE_NO_PAD.encode(key.get_public_key()),
            key,
            subject,
        }))
    }

    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    /// `payload` for one subscription: encrypted to the browser's keys, with a VAPID token for
    /// the endpoint's push service, a TTL, and `topic` (so that a newer message on the same
    /// topic replaces one the device has not fetched yet).
    pub fn message(
        &self,
        endpoint: &PushEndpoint,
        p256dh: &str,
        auth: &str,
        payload: &[u8],
        topic: &str,
    ) -> Result<WebPushMessage, String> {
        let info = SubscriptionInfo::new(endpoint.to_string(), p256dh.into(), auth.into());
        let mut signature = self.key.clone().add_sub_info(&info);
        signature.add_claim("aud", endpoint.origin());
        signature.add_claim("sub", self.subject.as_str());
        let signature = signature
            .build()
            .map_err(|err| format!("signing the VAPID token: {err}"))?;
        let mut message = WebPushMessageBuilder::new(&info);
        message.set_payload(ContentEncoding::Aes128Gcm, payload);
        message.set_ttl(TTL_SECS);
        message.set_topic(topic.to_string());
        message.set_vapid_signature(signature);
        message
            .build()
            .map_err(|err| format!("encrypting the message: {err}"))
    }
}

/// Checks a browser's keys: `p256dh` a P-256 public key (65 bytes, uncompressed) and `auth` 16
/// bytes, both base64url; a trial encryption to them proves the point is on the curve. Returns
/// them without padding, as they are kept.
pub fn browser_keys(p256dh: &str, auth: &str) -> Result<(String, String), String> {
    let (p256dh, auth) = (p256dh.trim_end_matches('='), auth.trim_end_matches('='));
    match URL_SAFE_NO_PAD.decode(p256dh) {
        Ok(key) if key.len() == 65 && key[0] == 4 => {}
        _ => {
            return Err(
                "keys.p256dh must be the browser's P-256 public key: 65 bytes in base64url".into(),
            )
        }
    }
    if !URL_SAFE_NO_PAD
        .decode(auth)
        .is_ok_and(|secret| secret.len() == 16)
    {
        return Err("keys.auth must be the browser's 16-byte secret in base64url".into());
    }
    let info = SubscriptionInfo::new("https://push.invalid/check", p256dh, auth);
    let mut trial = WebPushMessageBuilder::new(&info);
    trial.set_payload(ContentEncoding::Aes128Gcm, b"{}");
    match trial.build() {
        Ok(_) => Ok((p256dh.to_string(), auth.to_string())),
        Err(_) => Err("keys.p256dh is not a point on the P-256 curve".into()),
    }
}
