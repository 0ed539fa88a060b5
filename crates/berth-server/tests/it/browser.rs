//! The browser page, in a real headless chromium driven over the DevTools protocol: it signs
//! in with a token, opens the task's stream with a single-use ticket (a subprotocol, as
//! browsers must), shows what was stored, then what happens live, then the end.

use std::time::Duration;

use berth_proto::{CreateTask, EventKind, TaskStatus};
use berth_store::TaskEnd;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{Backend, TestDatabase, TestServer};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Headless chromium and one DevTools connection to it.
struct Chromium {
    _child: tokio::process::Child,
    socket: Socket,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Chromium {
    /// Starts chromium; `None` (with a message) where it is not installed, except on CI.
    async fn launch() -> Option<Self> {
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
            _profile: profile,
        })
    }

    async fn call(&mut self, method: &str, params: Value, session: Option<&str>) -> Value {
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
                assert!(reply.get("error").is_none(), "{method}: {reply}");
                return reply["result"].clone();
            }
        }
    }

    /// Opens a tab on `url`; returns its session.
    async fn open(&mut self, url: &str) -> String {
        let target = self
            .call("Target.createTarget", json!({ "url": url }), None)
            .await;
        let attached = self
            .call(
                "Target.attachToTarget",
                json!({ "targetId": target["targetId"], "flatten": true }),
                None,
            )
            .await;
        attached["sessionId"].as_str().unwrap().to_string()
    }

    async fn text_of(&mut self, session: &str, expression: &str) -> String {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true }),
                Some(session),
            )
            .await;
        result["result"]["value"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Waits until `expression` evaluates to text containing `wanted`.
    async fn wait_for(&mut self, session: &str, expression: &str, wanted: &str) -> String {
        for _ in 0..150 {
            let text = self.text_of(session, expression).await;
            if text.contains(wanted) {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = self
            .text_of(session, "document.getElementById('log').textContent")
            .await;
        panic!(
            "log: {log:?}; the page never showed {wanted:?} in {expression}: {:?}",
            self.text_of(session, expression).await
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_page_follows_a_task_live() {
    let Some(mut chromium) = Chromium::launch().await else {
        return;
    };
    let db = TestDatabase::new(&Backend::Sqlite).await;
    let server = TestServer::start(&db).await;
    let alice = server.user("alice").await;
    let (task, _) = alice
        .create_task(
            &CreateTask::new("https://github.com/o/r", "say hello"),
            None,
        )
        .await
        .unwrap();
    let fence = server.claim().await;
    let text = |t: &str| json!({ "text": t });
    server
        .store
        .append_event(
            fence,
            EventKind::AssistantText,
            text("stored before the page opened"),
        )
        .await
        .unwrap();

    let url = format!(
        "{}/#token={}&task={}",
        server.base_url,
        alice.token().unwrap(),
        task.id
    );
    let tab = chromium.open(&url).await;
    chromium
        .wait_for(&tab, "document.getElementById('who').textContent", "alice")
        .await;
    chromium
        .wait_for(
            &tab,
            "document.getElementById('tasks').textContent",
            "say hello",
        )
        .await;
    chromium
        .wait_for(
            &tab,
            "document.getElementById('log').textContent",
            "stored before the page opened",
        )
        .await;
    let hash = chromium.text_of(&tab, "location.hash").await;
    assert!(
        !hash.contains("token"),
        "the token leaves the address bar at once: {hash}"
    );

    // The server restarts under the page (its stream closes with 4002, "resume"); events
    // written meanwhile are shown once the page has reconnected, after the last it showed.
    let address = server
        .base_url
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    server.stop().await;
    let restarted = db.listening_at(address);
    let server = TestServer::start(&restarted).await;
    let store = server.store.clone();
    let live = text("written while watching");
    store
        .append_event(fence, EventKind::AssistantText, live)
        .await
        .unwrap();
    let output = json!({ "stream": "stdout", "text": "tests pass\n" });
    store
        .append_event(fence, EventKind::CommandOutput, output)
        .await
        .unwrap();
    let end = TaskEnd {
        status: TaskStatus::Succeeded,
        reason: None,
        diff: None,
        branch: None,
        pull_request_url: None,
    };
    store.finish_task(fence, end).await.unwrap();
    chromium
        .wait_for(
            &tab,
            "document.getElementById('status').textContent",
            "succeeded",
        )
        .await;
    let log = chromium
        .text_of(&tab, "document.getElementById('log').textContent")
        .await;
    let order = [
        "queued",
        "running",
        "stored before",
        "written while watching",
        "tests pass",
        "succeeded",
    ];
    let mut at = 0;
    for wanted in order {
        let found = log[at..]
            .find(wanted)
            .unwrap_or_else(|| panic!("{wanted:?} missing or out of order in {log:?}"));
        at += found;
    }
    assert_eq!(
        log.matches("written while watching").count(),
        1,
        "nothing shown twice"
    );
    server.stop().await;
}

#[tokio::test]
async fn the_page_is_served_with_a_strict_policy() {
    let db = TestDatabase::new(&Backend::Sqlite).await;
    let server = TestServer::start(&db).await;
    for (path, kind) in [
        ("/", "text/html"),
        ("/app.js", "text/javascript"),
        ("/app.css", "text/css"),
    ] {
        let response = reqwest::get(format!("{}{path}", server.base_url))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let headers = response.headers();
        assert!(headers["content-type"].to_str().unwrap().starts_with(kind));
        assert_eq!(
            headers["content-security-policy"],
            "default-src 'self'; frame-ancestors 'none'"
        );
        assert_eq!(headers["x-content-type-options"], "nosniff");
    }
    server.stop().await;
}
