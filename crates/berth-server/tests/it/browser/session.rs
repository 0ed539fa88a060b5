//! Signing in and staying signed in; a server restart under an open task view; the files of
//! the app and the headers they are served with.

use berth_proto::{CreateTask, EventKind, TaskStatus};
use berth_store::TaskEnd;
use berth_testkit::chromium::{Chromium, PHONE};
use serde_json::json;

use super::{click, sign_in, text};
use crate::harness::{Backend, TestDatabase, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_signs_in_with_a_token_and_stays_signed_in() {
    let Some(mut chromium) = Chromium::launch().await else {
        return;
    };
    let db = TestDatabase::new(&Backend::Sqlite).await;
    let server = TestServer::start(&db).await;
    let alice = server.user("alice").await;
    let tab = chromium
        .open_on(&format!("{}/", server.base_url), PHONE)
        .await;

    sign_in(&mut chromium, &tab, "berth_not-a-token").await;
    chromium
        .wait_for(&tab, &text("#signin-status"), "unknown or revoked")
        .await;
    sign_in(&mut chromium, &tab, alice.token().unwrap()).await;
    chromium.wait_for(&tab, &text("#who"), "alice").await;
    chromium
        .wait_for(&tab, &text("#view"), "No tasks yet")
        .await;
    let cookies = chromium.text_of(&tab, "document.cookie").await;
    assert!(
        !cookies.contains("berth_session"),
        "the session cookie is HttpOnly: scripts never see it ({cookies:?})"
    );
    let session = session_cookie(&mut chromium, &tab).await;
    assert_eq!(session["httpOnly"], true);
    assert_eq!(session["sameSite"], "Lax");
    let session = format!("berth_session={}", session["value"].as_str().unwrap());

    // The tab closes; a new one opens signed in, and tasks made meanwhile are listed.
    let target = target_of(&mut chromium, &tab).await;
    chromium
        .call("Target.closeTarget", json!({ "targetId": target }), None)
        .await;
    alice
        .create_task(
            &CreateTask::new("https://github.com/o/r", "tidy the README"),
            None,
        )
        .await
        .unwrap();
    let tab = chromium
        .open_on(&format!("{}/", server.base_url), PHONE)
        .await;
    chromium.wait_for(&tab, &text("#who"), "alice").await;
    chromium
        .wait_for(&tab, &text("#tasks"), "tidy the README")
        .await;
    chromium.wait_for(&tab, &text("#tasks"), "o/r").await;

    click(&mut chromium, &tab, "#sign-out").await;
    chromium
        .wait_for(&tab, &text("#view"), "Sign in to Berth")
        .await;
    let tab = chromium
        .open_on(&format!("{}/", server.base_url), PHONE)
        .await;
    chromium
        .wait_for(&tab, &text("#view"), "Sign in to Berth")
        .await;
    let me = reqwest::Client::new()
        .get(format!("{}/v1/me", server.base_url))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(
        me.status(),
        401,
        "signing out ends the session on the server"
    );
    server.stop().await;
}

async fn session_cookie(chromium: &mut Chromium, tab: &str) -> serde_json::Value {
    let cookies = chromium
        .call("Network.getCookies", json!({}), Some(tab))
        .await;
    let cookies = cookies["cookies"].as_array().unwrap();
    cookies
        .iter()
        .find(|cookie| cookie["name"] == "berth_session")
        .cloned()
        .expect("a session cookie")
}

async fn target_of(chromium: &mut Chromium, session: &str) -> String {
    let info = chromium
        .call("Target.getTargetInfo", json!({}), Some(session))
        .await;
    info["targetInfo"]["targetId"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_follows_a_task_live_across_a_server_restart() {
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
    let text_of = |t: &str| json!({ "text": t });
    server
        .store
        .append_event(
            fence,
            EventKind::AssistantText,
            text_of("stored before the page opened"),
        )
        .await
        .unwrap();

    // An older link carrying the token is traded for a session and leaves the address bar.
    let url = format!(
        "{}/#token={}&task={}",
        server.base_url,
        alice.token().unwrap(),
        task.id
    );
    let tab = chromium.open_on(&url, PHONE).await;
    chromium.wait_for(&tab, &text("#who"), "alice").await;
    chromium
        .wait_for(&tab, &text("#steps"), "stored before the page opened")
        .await;
    let hash = chromium.text_of(&tab, "location.hash").await;
    assert_eq!(
        hash,
        format!("#/task/{}", task.id),
        "the token leaves the address bar"
    );

    // The server restarts under the page (its stream closes with 4002, "resume"); events
    // written meanwhile are shown once the page has reconnected, after the last it showed.
    let address = server
        .base_url
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    server.stop().await;
    chromium
        .wait_for(&tab, &text("#connection"), "reconnecting")
        .await;
    let restarted = db.listening_at(address);
    let server = TestServer::start(&restarted).await;
    let store = server.store.clone();
    store
        .append_event(
            fence,
            EventKind::AssistantText,
            text_of("written while watching"),
        )
        .await
        .unwrap();
    let output = json!({ "stream": "stdout", "text": "tests pass\n" });
    let call = json!({ "id": "t1", "name": "bash", "input": { "command": "cargo test" } });
    store
        .append_event(fence, EventKind::ToolCall, call)
        .await
        .unwrap();
    let output = json!({ "tool_use_id": "t1", "stream": "stdout", "text": output["text"] });
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
        .wait_for(&tab, &text("#steps"), "● succeeded")
        .await;
    chromium.wait_for(&tab, &text("#facts"), "succeeded").await;
    assert_eq!(chromium.text_of(&tab, &text("#connection")).await, "");
    let log = chromium
        .text_of(&tab, "document.getElementById('steps').textContent")
        .await;
    let order = [
        "queued",
        "running",
        "stored before",
        "written while watching",
        "$ cargo test",
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
async fn the_app_is_served_with_a_strict_policy() {
    let db = TestDatabase::new(&Backend::Sqlite).await;
    let server = TestServer::start(&db).await;
    for (path, kind) in [
        ("/", "text/html"),
        ("/app.js", "text/javascript"),
        ("/js/task.js", "text/javascript"),
        ("/app.css", "text/css"),
        ("/sw.js", "text/javascript"),
        ("/manifest.webmanifest", "application/manifest+json"),
        ("/icon-192.png", "image/png"),
    ] {
        let response = reqwest::get(format!("{}{path}", server.base_url))
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers();
        assert!(headers["content-type"].to_str().unwrap().starts_with(kind));
        assert_eq!(
            headers["content-security-policy"],
            "default-src 'self'; frame-ancestors 'none'"
        );
        assert_eq!(headers["x-content-type-options"], "nosniff");
    }
    let missing = reqwest::get(format!("{}/js/nothing.js", server.base_url))
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    server.stop().await;
}

#[tokio::test]
async fn a_session_is_made_from_a_token_and_refused_to_other_sites() {
    let db = TestDatabase::new(&Backend::Sqlite).await;
    let server = TestServer::start(&db).await;
    let alice = server.user("alice").await;
    let http = reqwest::Client::new();
    let session_url = format!("{}/v1/auth/session", server.base_url);
    let wrong = http
        .post(&session_url)
        .json(&json!({ "token": "berth_wrong" }))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());

    let made = http
        .post(&session_url)
        .json(&json!({ "token": alice.token().unwrap() }))
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), 201);
    let cookie = made.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    assert!(
        !cookie.contains("Secure"),
        "no Secure over plain http: {cookie}"
    );
    let me: serde_json::Value = made.json().await.unwrap();
    assert_eq!(me["name"], "alice");
    let session = cookie.split(';').next().unwrap().to_string();

    let me_url = format!("{}/v1/me", server.base_url);
    let ask = |headers: &[(&str, &str)]| {
        let mut request = http.get(&me_url).header("cookie", &session);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send()
    };
    assert_eq!(ask(&[]).await.unwrap().status(), 200);
    assert_eq!(
        ask(&[("sec-fetch-site", "same-origin")])
            .await
            .unwrap()
            .status(),
        200
    );
    for refused in [
        [("sec-fetch-site", "cross-site")],
        [("origin", "https://elsewhere.example")],
    ] {
        let answer = ask(&refused).await.unwrap();
        assert_eq!(answer.status(), 403, "{refused:?}");
        let body: serde_json::Value = answer.json().await.unwrap();
        assert_eq!(body["error"]["code"], "cross_site_request");
    }
    // A bearer token is not a cookie: another site's page cannot send it by itself.
    let bearer = http
        .get(&me_url)
        .bearer_auth(alice.token().unwrap())
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 200);

    let ended = http
        .delete(&session_url)
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(ended.status(), 204);
    assert_eq!(ask(&[]).await.unwrap().status(), 401);
    server.stop().await;
}

/// The app's half of notifications: its service worker shows a task's ending pushed to it
/// (delivered over DevTools, as a push service would), linking to the task; and the shell it
/// keeps opens without the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_ending_is_shown_as_a_notification() {
    let Some(mut chromium) = Chromium::launch().await else {
        return;
    };
    let db = TestDatabase::new(&Backend::Sqlite).await;
    let server = TestServer::start(&db).await;
    let origin = server.base_url.clone();
    chromium
        .call(
            "Browser.grantPermissions",
            json!({ "origin": origin, "permissions": ["notifications"] }),
            None,
        )
        .await;
    let tab = chromium.open_on(&format!("{origin}/"), PHONE).await;
    let ready = "navigator.serviceWorker.ready.then((r) => r.active ? r.active.state : '')";
    chromium.wait_for(&tab, ready, "activated").await;
    let message = json!({
        "title": "Task succeeded",
        "body": "Rename old to new",
        "task_id": "0190c0de-0000-7000-8000-000000000001",
    });
    chromium
        .deliver_push(&tab, &origin, &message.to_string())
        .await;
    let shown = "navigator.serviceWorker.ready.then((r) => r.getNotifications()) \
        .then((all) => all.map((n) => n.title + ': ' + n.body + ' → ' + n.data.url).join('\\n'))";
    chromium
        .wait_for(
            &tab,
            shown,
            "Task succeeded: Rename old to new → /#/task/0190c0de-0000-7000-8000-000000000001",
        )
        .await;

    // With the server gone, the app still opens from the service worker's copy, and says
    // that it is offline rather than showing anything as current.
    server.stop().await;
    chromium.call("Page.reload", json!({}), Some(&tab)).await;
    chromium.wait_for(&tab, &text("#view"), "Offline").await;
    chromium
        .wait_for(&tab, &text("#connection"), "offline")
        .await;
}
