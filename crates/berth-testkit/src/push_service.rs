//! A fake Web Push service (RFC 8030) on loopback, standing for the one a browser subscribes
//! with. [`FakePushService::subscribe`] makes a subscription as a browser would (its own P-256
//! key pair and auth secret, restricted to the server's VAPID key); each message posted to its
//! endpoint is checked as push services check it — the VAPID token's ES256 signature with the
//! key in `k`, `aud` this service's origin, `exp` in the next 24 hours, a `sub`, and `k` the key
//! the subscription was made with (RFC 8292) — and then decrypted with the subscription's
//! private keys (RFC 8291, aes128gcm, by the `ece` crate) and recorded. A chosen endpoint can be
//! made to answer 410 Gone, and the next few messages 503.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

/// A subscription as the browser holds it.
#[derive(Clone, Debug)]
pub struct FakeSubscription {
    pub endpoint: String,
    /// The browser's public key, base64url.
    pub p256dh: String,
    /// The auth secret, base64url.
    pub auth: String,
}

impl FakeSubscription {
    /// What `PushSubscription.toJSON()` gives, to post to `/v1/push/subscriptions`.
    pub fn to_json(&self) -> Value {
        json!({
            "endpoint": self.endpoint,
            "expirationTime": null,
            "keys": { "p256dh": self.p256dh, "auth": self.auth },
        })
    }
}

/// A message that passed every check, decrypted.
#[derive(Clone, Debug)]
pub struct PushMessage {
    pub endpoint: String,
    pub payload: Value,
    /// The `TTL` header, in seconds.
    pub ttl: u64,
    pub topic: Option<String>,
    /// The VAPID token's `sub`.
    pub subject: String,
}

struct Subscription {
    keys: ece::EcKeyComponents,
    auth: Vec<u8>,
    /// The VAPID public key the subscription was made with.
    server_key: Vec<u8>,
    gone: bool,
}

#[derive(Default)]
struct Inner {
    subscriptions: HashMap<String, Subscription>,
    received: Vec<PushMessage>,
    /// Why each refused message was refused.
    refused: Vec<String>,
    /// Requests that reached an endpoint, whatever was answered.
    posts: usize,
    /// Messages still to answer 503 before any is taken.
    failures: usize,
}

type Shared = Arc<Mutex<Inner>>;

pub struct FakePushService {
    /// `http://127.0.0.1:port`: the `aud` its tokens must carry.
    pub origin: String,
    inner: Shared,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakePushService {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakePushService {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let inner = Shared::default();
        let app = Router::new()
            .route("/push/{token}", post(receive))
            .with_state((inner.clone(), origin.clone()));
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            origin,
            inner,
            server,
        }
    }

    /// A new subscription for the server whose VAPID public key (base64url) is `server_key`,
    /// as `pushManager.subscribe({applicationServerKey})` makes one.
    pub fn subscribe(&self, server_key: &str) -> FakeSubscription {
        let (pair, auth) = ece::generate_keypair_and_auth_secret().unwrap();
        let public = pair.pub_as_raw().unwrap();
        let token = format!("{:032x}", rand::random::<u128>());
        let subscription = Subscription {
            keys: pair.raw_components().unwrap(),
            auth: auth.to_vec(),
            server_key: URL_SAFE_NO_PAD.decode(server_key).unwrap(),
            gone: false,
        };
        let mut inner = self.inner.lock().unwrap();
        inner.subscriptions.insert(token.clone(), subscription);
        FakeSubscription {
            endpoint: format!("{}/push/{token}", self.origin),
            p256dh: URL_SAFE_NO_PAD.encode(public),
            auth: URL_SAFE_NO_PAD.encode(auth),
        }
    }

    /// From now on, the subscription answers 410 Gone, as when its browser unsubscribed.
    pub fn make_gone(&self, subscription: &FakeSubscription) {
        let token = subscription.endpoint.rsplit('/').next().unwrap();
        let mut inner = self.inner.lock().unwrap();
        inner.subscriptions.get_mut(token).unwrap().gone = true;
    }

    /// The next `n` messages are answered 503, whatever they hold.
    pub fn fail_next(&self, n: usize) {
        self.inner.lock().unwrap().failures = n;
    }

    /// The messages taken, in order.
    pub fn received(&self) -> Vec<PushMessage> {
        self.inner.lock().unwrap().received.clone()
    }

    /// Why each refused message was refused.
    pub fn refused(&self) -> Vec<String> {
        self.inner.lock().unwrap().refused.clone()
    }

    /// Every request that reached an endpoint, whatever it was answered.
    pub fn posts(&self) -> usize {
        self.inner.lock().unwrap().posts
    }
}

async fn receive(
    State((inner, origin)): State<(Shared, String)>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let mut inner = inner.lock().unwrap();
    inner.posts += 1;
    let endpoint = format!("{origin}/push/{token}");
    let Some(subscription) = inner.subscriptions.get(&token) else {
        return StatusCode::NOT_FOUND;
    };
    if subscription.gone {
        return StatusCode::GONE;
    }
    if inner.failures > 0 {
        inner.failures -= 1;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    match check(subscription, &origin, &headers, &body) {
        Ok((payload, subject)) => {
            let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
            let message = PushMessage {
                endpoint,
                payload,
                ttl: header("ttl").and_then(|ttl| ttl.parse().ok()).unwrap_or(0),
                topic: header("topic").map(str::to_string),
                subject,
            };
            inner.received.push(message);
            StatusCode::CREATED
        }
        Err((status, reason)) => {
            inner.refused.push(reason);
            status
        }
    }
}

type Refusal = (StatusCode, String);

/// The checks of a push service, then the decryption: the payload and the token's `sub`.
fn check(
    subscription: &Subscription,
    origin: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Value, String), Refusal> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let bad = |reason: &str| (StatusCode::BAD_REQUEST, reason.to_string());
    header("ttl")
        .and_then(|ttl| ttl.parse::<u64>().ok())
        .ok_or_else(|| bad("no TTL header"))?;
    if header("content-encoding") != Some("aes128gcm") {
        return Err(bad("the content encoding is not aes128gcm"));
    }
    let subject = verify_vapid(subscription, origin, header("authorization"))?;
    let plain = ece::decrypt(&subscription.keys, &subscription.auth, body)
        .map_err(|err| bad(&format!("the message does not decrypt: {err}")))?;
    let payload = serde_json::from_slice(&plain).map_err(|_| bad("the payload is not JSON"))?;
    Ok((payload, subject))
}

#[derive(serde::Deserialize)]
struct Claims {
    exp: u64,
    sub: String,
}

/// `Authorization: vapid t=<JWT>, k=<public key>`, checked; the token's `sub`.
fn verify_vapid(
    subscription: &Subscription,
    origin: &str,
    authorization: Option<&str>,
) -> Result<String, Refusal> {
    let unauthorized = |reason: String| (StatusCode::UNAUTHORIZED, reason);
    let fields = authorization
        .and_then(|value| value.strip_prefix("vapid "))
        .ok_or_else(|| unauthorized("no vapid Authorization".into()))?;
    let field = |name: &str| {
        fields
            .split(',')
            .find_map(|part| part.trim().strip_prefix(name))
            .map(str::to_string)
    };
    let (token, key) = field("t=")
        .zip(field("k="))
        .ok_or_else(|| unauthorized("vapid Authorization without t= and k=".into()))?;
    let key = URL_SAFE_NO_PAD
        .decode(&key)
        .map_err(|_| unauthorized("k= is not base64url".into()))?;
    if key != subscription.server_key {
        return Err((
            StatusCode::FORBIDDEN,
            "k= is not the key the subscription was made with".into(),
        ));
    }
    if key.len() != 65 {
        return Err(unauthorized("k= is not an uncompressed P-256 point".into()));
    }
    let decoding = jsonwebtoken::DecodingKey::from_ec_components(
        &URL_SAFE_NO_PAD.encode(&key[1..33]),
        &URL_SAFE_NO_PAD.encode(&key[33..65]),
    )
    .map_err(|err| unauthorized(err.to_string()))?;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&[origin]);
    validation.set_required_spec_claims(&["exp", "aud", "sub"]);
    let claims = jsonwebtoken::decode::<Claims>(&token, &decoding, &validation)
        .map_err(|err| unauthorized(format!("the VAPID token does not verify: {err}")))?
        .claims;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if claims.exp > now + 24 * 3600 {
        return Err(unauthorized(
            "the VAPID token expires more than 24 h ahead".into(),
        ));
    }
    if !(claims.sub.starts_with("mailto:") || claims.sub.starts_with("https:")) {
        return Err(unauthorized(
            "the VAPID sub is not mailto: or https:".into(),
        ));
    }
    Ok(claims.sub)
}
