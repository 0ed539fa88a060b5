//! Headless chromium driven over the DevTools protocol, for tests of the web app: tabs with a
//! phone's or a desktop's screen, JavaScript evaluated in them, waiting for what a page shows,
//! screenshots, and what only DevTools can do (deliver a push message to a service worker).

use std::path::Path;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A screen to emulate: width, height, device pixel ratio, and whether it is a phone (touch,
/// mobile viewport).
#[derive(Clone, Copy, Debug)]
pub struct Screen {
    pub width: u32,
    pub height: u32,
    pub scale: f64,
    pub mobile: bool,
}

/// A phone of the size most phones have today.
pub const PHONE: Screen = Screen {
    width: 390,
    height: 844,
    scale: 3.0,
    mobile: true,
};
pub const DESKTOP: Screen = Screen {
    width: 1280,
    height: 800,
    scale: 1.0,
    mobile: false,
};

/// Headless chromium and one DevTools connection to it.
pub struct Chromium {
    _child: tokio::process::Child,
    socket: Socket,
    next_id: u64,
    /// DevTools events received while waiting for answers, oldest first.
    events: Vec<Value>,
    _profile: tempfile::TempDir,
}

impl Chromium {
    /// Starts chromium; `None` (with a message) where it is not installed, except on CI.
    pub async fn launch() -> Option<Self> {
        let binary = ["chromium", "chromium-browser", "google-chrome"]
            .into_iter()
            .find(|name| {
                std::process::Command::new("which")
                    .arg(name)
                    .output()
                    .is_ok_and(|o| o.status.success())
            });
        let Some(binary) = binary else {
            assert!(
                std::env::var_os("CI").is_none(),
                "chromium is needed: scripts/test installs it"
            );
            eprintln!("skipped: chromium is not installed (scripts/test installs it)");
            return None;
        };
        let profile = tempfile::tempdir().unwrap();
        let mut child = tokio::process::Command::new(binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let endpoint = loop {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("chromium says where DevTools listen");
            if let Some(url) = line.strip_prefix("DevTools listening on ") {
                break url.trim().to_string();
            }
        };
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let (socket, _) = tokio_tungstenite::connect_async(endpoint).await.unwrap();
        Some(Self {
            _child: child,
            socket,
            next_id: 0,
            events: Vec::new(),
            _profile: profile,
        })
    }

    /// One DevTools command; panics on an error answer.
    pub async fn call(&mut self, method: &str, params: Value, session: Option<&str>) -> Value {
        let reply = self.try_call(method, params, session).await;
        assert!(reply.get("error").is_none(), "{method}: {reply}");
        reply["result"].clone()
    }

    /// One DevTools command; its whole answer, error or result.
    pub async fn try_call(&mut self, method: &str, params: Value, session: Option<&str>) -> Value {
        self.next_id += 1;
        let mut message = json!({ "id": self.next_id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        self.socket
            .send(Message::Text(message.to_string().into()))
            .await
            .unwrap();
        loop {
            let reply = self.socket.next().await.unwrap().unwrap();
            let Message::Text(text) = reply else { continue };
            let reply: Value = serde_json::from_str(&text).unwrap();
            if reply["id"] == json!(self.next_id) {
                return reply;
            }
            if reply.get("method").is_some() {
                self.events.push(reply);
            }
        }
    }

    /// The parameters of the events named `method` received so far.
    pub fn events(&self, method: &str) -> Vec<Value> {
        let named = self.events.iter().filter(|event| event["method"] == method);
        named.map(|event| event["params"].clone()).collect()
    }

    /// Delivers `data` to the service worker registered for `origin` (`http://host:port`),
    /// as a push service would, once the page has registered one.
    pub async fn deliver_push(&mut self, session: &str, origin: &str, data: &str) {
        self.call("ServiceWorker.enable", json!({}), Some(session))
            .await;
        let mut registration = None;
        for _ in 0..100 {
            let updates = self.events("ServiceWorker.workerRegistrationUpdated");
            registration = updates
                .iter()
                .flat_map(|update| {
                    update["registrations"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                })
                .find(|r| {
                    r["scopeURL"]
                        .as_str()
                        .is_some_and(|s| s.starts_with(origin))
                        && r["isDeleted"] == false
                })
                .map(|r| r["registrationId"].clone());
            if registration.is_some() {
                break;
            }
            // Another command lets the events that came meanwhile be read.
            self.call(
                "Runtime.evaluate",
                json!({ "expression": "1" }),
                Some(session),
            )
            .await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let registration = registration.expect("a service worker registered for the origin");
        let params = json!({ "origin": origin, "registrationId": registration, "data": data });
        self.call("ServiceWorker.deliverPushMessage", params, Some(session))
            .await;
    }

    /// Opens a tab on `url` with a desktop's screen; returns its session.
    pub async fn open(&mut self, url: &str) -> String {
        self.open_on(url, DESKTOP).await
    }

    /// Opens a tab with `screen` emulated, then goes to `url`; returns its session.
    pub async fn open_on(&mut self, url: &str, screen: Screen) -> String {
        let target = self
            .call("Target.createTarget", json!({ "url": "about:blank" }), None)
            .await;
        let attached = self
            .call(
                "Target.attachToTarget",
                json!({ "targetId": target["targetId"], "flatten": true }),
                None,
            )
            .await;
        let session = attached["sessionId"].as_str().unwrap().to_string();
        self.emulate(&session, screen).await;
        self.call("Page.enable", json!({}), Some(&session)).await;
        self.call("Page.navigate", json!({ "url": url }), Some(&session))
            .await;
        session
    }

    pub async fn emulate(&mut self, session: &str, screen: Screen) {
        let metrics = json!({
            "width": screen.width,
            "height": screen.height,
            "deviceScaleFactor": screen.scale,
            "mobile": screen.mobile,
        });
        self.call("Emulation.setDeviceMetricsOverride", metrics, Some(session))
            .await;
        let touch = json!({ "enabled": screen.mobile, "maxTouchPoints": 5 });
        self.call("Emulation.setTouchEmulationEnabled", touch, Some(session))
            .await;
    }

    /// Evaluates `expression` (awaiting a promise) and returns its value as JSON.
    pub async fn eval(&mut self, session: &str, expression: &str) -> Value {
        let params =
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true });
        let result = self.call("Runtime.evaluate", params, Some(session)).await;
        if let Some(thrown) = result.get("exceptionDetails") {
            panic!("{expression}: {thrown}");
        }
        result["result"]["value"].clone()
    }

    /// The text `expression` evaluates to; empty when it is not a string (or throws).
    pub async fn text_of(&mut self, session: &str, expression: &str) -> String {
        let params =
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true });
        let result = self.call("Runtime.evaluate", params, Some(session)).await;
        result["result"]["value"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Waits (about 20 s at most) until `expression` evaluates to text containing `wanted`;
    /// returns that text.
    pub async fn wait_for(&mut self, session: &str, expression: &str, wanted: &str) -> String {
        let within = Duration::from_secs(20);
        self.wait_for_within(session, expression, wanted, within)
            .await
    }

    /// [`Chromium::wait_for`] for as long as `within`: for pages that wait on real work (a
    /// container starting, a server restarting).
    pub async fn wait_for_within(
        &mut self,
        session: &str,
        expression: &str,
        wanted: &str,
        within: Duration,
    ) -> String {
        let until = std::time::Instant::now() + within;
        while std::time::Instant::now() < until {
            let text = self.text_of(session, expression).await;
            if text.contains(wanted) {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let page = self.text_of(session, "document.body.innerText").await;
        panic!("the page never showed {wanted:?} in {expression}; it shows: {page:?}");
    }

    /// Sets a form field's value as typing would (an `input` event follows), once it is there.
    pub async fn fill(&mut self, session: &str, selector: &str, value: &str) {
        let script = format!(
            "(() => {{ const field = document.querySelector({selector}); if (!field) return ''; \
             field.value = {value}; field.dispatchEvent(new Event('input', {{ bubbles: true }})); \
             return 'filled'; }})()",
            selector = json!(selector),
            value = json!(value),
        );
        self.wait_for(session, &script, "filled").await;
    }

    /// Clicks the element the selector names, once it is there.
    pub async fn click(&mut self, session: &str, selector: &str) {
        let script = format!(
            "(() => {{ const target = document.querySelector({}); if (!target) return 'missing'; \
             target.click(); return 'clicked'; }})()",
            json!(selector)
        );
        self.wait_for(session, &script, "clicked").await;
    }

    /// Saves a PNG of the whole page as the emulated screen shows it.
    pub async fn screenshot(&mut self, session: &str, path: &Path) {
        let shot = self
            .call(
                "Page.captureScreenshot",
                json!({ "format": "png" }),
                Some(session),
            )
            .await;
        let png = STANDARD.decode(shot["data"].as_str().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }
}

/// An expression for the text of the element the selector names ("" while it is not there).
pub fn text(selector: &str) -> String {
    format!(
        "(document.querySelector({}) || {{}}).textContent || ''",
        json!(selector)
    )
}
