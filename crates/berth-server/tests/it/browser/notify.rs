//! "Notify me": the button is offered only where the server has Web Push on, and a message in
//! the shape the server pushes is shown by the service worker, linking to its task. Headless
//! chromium cannot subscribe offline (its push service is on the internet), so subscribing
//! itself is tested against the fake push service in tests/it/push.rs.

use berth_testkit::chromium::{Chromium, PHONE};
use serde_json::json;

use super::{sign_in, text};
use crate::harness::{Backend, TestDatabase, TestServer};

/// Signs in and waits until the app has asked whether the server pushes.
async fn signed_in_and_asked(chromium: &mut Chromium, server: &TestServer) -> String {
    let alice = server.user("alice").await;
    let tab = chromium
        .open_on(&format!("{}/", server.base_url), PHONE)
        .await;
    sign_in(chromium, &tab, alice.token().unwrap()).await;
    chromium.wait_for(&tab, &text("#who"), "alice").await;
    let asked = "performance.getEntriesByType('resource') \
        .some((e) => e.name.endsWith('/v1/push/key')) ? 'asked' : ''";
    chromium.wait_for(&tab, asked, "asked").await;
    tab
}

const BUTTON: &str = "(() => { const b = document.querySelector('#notify'); \
    return b.hidden ? 'hidden' : b.textContent + ' ' + b.getAttribute('aria-pressed'); })()";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_me_is_offered_only_where_the_server_pushes() {
    let Some(mut chromium) = Chromium::launch().await else {
        return;
    };
    let db = TestDatabase::new(&Backend::Sqlite).await;
    let server = TestServer::start(&db).await;
    let tab = signed_in_and_asked(&mut chromium, &server).await;
    assert_eq!(chromium.text_of(&tab, BUTTON).await, "hidden");
    server.stop().await;

    let mut db = TestDatabase::new(&Backend::Sqlite).await;
    db.settings.web_push_vapid_key = Some(berth_proto::Secret::new(crate::push::VAPID_KEY));
    db.settings.web_push_subject = Some("mailto:ops@example.com".into());
    let server = TestServer::start(&db).await;
    let origin = server.base_url.clone();
    let tab = signed_in_and_asked(&mut chromium, &server).await;
    chromium.wait_for(&tab, BUTTON, "Notify me false").await;

    // A message as the server pushes it is shown, and leads to its task.
    chromium
        .call(
            "Browser.grantPermissions",
            json!({ "origin": origin, "permissions": ["notifications"] }),
            None,
        )
        .await;
    let ready = "navigator.serviceWorker.ready.then((r) => r.active ? r.active.state : '')";
    chromium.wait_for(&tab, ready, "activated").await;
    let task = "0190c0de-0000-7000-8000-000000000002";
    let message = json!({
        "task_id": task,
        "status": "timed_out",
        "title": "Task timed out",
        "body": "Speed up the build",
        "url": format!("/#/task/{task}"),
    });
    chromium
        .deliver_push(&tab, &origin, &message.to_string())
        .await;
    let shown = "navigator.serviceWorker.ready.then((r) => r.getNotifications()) \
        .then((all) => all.map((n) => n.title + ': ' + n.body + ' → ' + n.data.url).join('\\n'))";
    let expected = format!("Task timed out: Speed up the build → /#/task/{task}");
    chromium.wait_for(&tab, shown, &expected).await;
    server.stop().await;
}
