//! Web Push (RFC 8030): browsers subscribe with the server's VAPID public key
//! (`routes/push.rs`); each ending of a task is queued in the outbox for each of its owner's
//! subscriptions, and the sender here encrypts it to the browser's keys (RFC 8291, aes128gcm),
//! signs a VAPID token for the push service (RFC 8292) and posts it there. `web-push-native`
//! encrypts and `jwt-simple` signs, both on RustCrypto (no OpenSSL in the binary: README,
//! "Footprint"); reqwest sends the request.

pub mod sender;

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use berth_guard::PushEndpoint;
use web_push_native::jwt_simple::algorithms::{
    ECDSAP256KeyPairLike, ECDSAP256PublicKeyLike, ES256KeyPair,
};
use web_push_native::jwt_simple::claims::Claims;
use web_push_native::p256::PublicKey;
use web_push_native::Auth;

use crate::Settings;

/// How long a push service keeps a message for a device that is offline, in seconds: news of
/// an ending older than a day is stale.
pub const TTL_SECS: u32 = 24 * 3600;

/// How long a VAPID token is good for: push services refuse one that lasts over 24 hours.
const VAPID_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// The server's VAPID key and who it says runs it.
pub struct WebPush {
    key: ES256KeyPair,
    /// The public key, base64url: the browsers' `applicationServerKey`.
    public_key: String,
    /// The VAPID `sub`: `mailto:` or `https:`.
    subject: String,
}

/// One message for a push service: the request's headers and its encrypted body.
pub struct PushMessage {
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
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
        let key = URL_SAFE_NO_PAD
            .decode(key.expose().trim_end_matches('='))
            .ok()
            .filter(|bytes| bytes.len() == 32)
            .and_then(|bytes| ES256KeyPair::from_bytes(&bytes).ok())
            .ok_or_else(|| {
                "web_push_vapid_key must be a P-256 private key: its 32 bytes in base64url \
                 (docs/web.md says how to make one)"
                    .to_string()
            })?;
        let subject = subject.ok_or(
            "web_push_subject must be set (mailto:… or https://…) when web_push_vapid_key is: \
             push services use it to reach whoever runs the server",
        )?;
        let public_key = key.public_key().public_key().to_bytes_uncompressed();
        Ok(Some(Self {
            public_key: URL_SAFE_NO_PAD.encode(public_key),
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
    ) -> Result<PushMessage, String> {
        let (browser_key, browser_auth) = decode_browser_keys(p256dh, auth)?;
        let body = web_push_native::encrypt(payload.to_vec(), &browser_key, &browser_auth)
            .map_err(|err| format!("encrypting the message: {err}"))?;
        // The audience is the push service's origin, port and all (RFC 8292, section 2).
        let claims = Claims::create(VAPID_LIFETIME.into())
            .with_audience(endpoint.origin())
            .with_subject(&self.subject);
        let token = self
            .key
            .sign(claims)
            .map_err(|err| format!("signing the VAPID token: {err}"))?;
        let authorization = format!("vapid t={token}, k={}", self.public_key);
        Ok(PushMessage {
            headers: vec![
                ("ttl", TTL_SECS.to_string()),
                ("topic", topic.to_string()),
                ("content-encoding", "aes128gcm".into()),
                ("content-type", "application/octet-stream".into()),
                ("authorization", authorization),
            ],
            body,
        })
    }
}

/// A browser's keys as the encryption takes them; errors say which is wrong.
fn decode_browser_keys(p256dh: &str, auth: &str) -> Result<(PublicKey, Auth), String> {
    let key = URL_SAFE_NO_PAD
        .decode(p256dh.trim_end_matches('='))
        .ok()
        .filter(|key| key.len() == 65 && key[0] == 4)
        .ok_or("keys.p256dh must be the browser's P-256 public key: 65 bytes in base64url")?;
    let secret = URL_SAFE_NO_PAD
        .decode(auth.trim_end_matches('='))
        .ok()
        .filter(|secret| secret.len() == 16)
        .ok_or("keys.auth must be the browser's 16-byte secret in base64url")?;
    let key = PublicKey::from_sec1_bytes(&key)
        .map_err(|_| "keys.p256dh is not a point on the P-256 curve")?;
    Ok((key, Auth::clone_from_slice(&secret)))
}

/// Checks a browser's keys: `p256dh` a P-256 public key (65 bytes, uncompressed, a point on
/// the curve) and `auth` 16 bytes, both base64url. Returns them without padding, as they are
/// kept.
pub fn browser_keys(p256dh: &str, auth: &str) -> Result<(String, String), String> {
    decode_browser_keys(p256dh, auth)?;
    let unpadded = |text: &str| text.trim_end_matches('=').to_string();
    Ok((unpadded(p256dh), unpadded(auth)))
}
