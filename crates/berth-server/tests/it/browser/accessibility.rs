//! The axe accessibility engine over every view of the app, light and dark, on a phone: no
//! serious or critical findings. axe-core is not vendored: `scripts/test` fetches it
//! (`scripts/install-axe`) and names its `axe.min.js` in `BERTH_AXE_JS`; under `CI=true` a
//! missing engine fails the test, elsewhere it skips.

use berth_proto::CreateTask;
use berth_testkit::chromium::{Chromium, PHONE};
use serde_json::{json, Value};

use super::tasks::one_round;
use super::{click, sign_in, text};
use crate::harness::{Backend, TestDatabase, TestServer};

/// Runs axe on the page; returns how many rules passed, then its findings, as
/// `impact rule: where` lines.
pub(super) async fn axe(chromium: &mut Chromium, tab: &str, source: &str) -> Vec<String> {
    chromium.eval(tab, source).await;
    let script =
        "axe.run(document, { runOnly: ['wcag2a', 'wcag2aa', 'wcag21aa', 'best-practice'] }) \
        .then((r) => [{ impact: 'checked', id: r.passes.length + ' rules passed', nodes: [] }] \
          .concat(r.violations.map((v) => ({ impact: v.impact, id: v.id, \
            nodes: v.nodes.map((n) => n.target.join(' ')).slice(0, 3) }))))";
    let found = chromium.eval(tab, script).await;
    found
        .as_array()
        .unwrap()
        .iter()
        .map(|v: &Value| format!("{} {}: {}", v["impact"], v["id"], v["nodes"]))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_serious_accessibility_findings_in_any_view() {
    let Some(path) = std::env::var_os("BERTH_AXE_JS") else {
        let message = "BERTH_AXE_JS is not set: run scripts/test, or \
                       `export BERTH_AXE_JS=$(scripts/install-axe)`";
        assert!(std::env::var_os("CI").is_none(), "{message}");
        eprintln!("skipped: {message}");
        return;
    };
    let source = std::fs::read_to_string(path).unwrap();
    let Some(mut chromium) = Chromium::launch().await else {
        return;
    };
    let db = TestDatabase::new(&Backend::Sqlite).await;
    let server = TestServer::start(&db).await;
    let alice = server.user("alice").await;
    let (task, _) = alice
        .create_task(
            &CreateTask::new("https://github.com/o/r", "Rename old to new"),
            None,
        )
        .await
        .unwrap();
    one_round(server.store.as_ref(), server.claim().await, "first round").await;
    alice
        .create_task(
            &CreateTask::new("https://github.com/o/site", "Add a dark theme"),
            None,
        )
        .await
        .unwrap();

    let base = server.base_url.clone();
    let mut serious = Vec::new();
    for scheme in ["light", "dark"] {
        let tab = chromium.open_on(&format!("{base}/"), PHONE).await;
        let media = json!({ "features": [{ "name": "prefers-color-scheme", "value": scheme }] });
        chromium
            .call("Emulation.setEmulatedMedia", media, Some(&tab))
            .await;
        chromium.wait_for(&tab, &text("#view"), "Sign in").await;
        let mut views = vec![("sign-in", axe(&mut chromium, &tab, &source).await)];
        sign_in(&mut chromium, &tab, alice.token().unwrap()).await;
        chromium
            .wait_for(&tab, &text("#tasks"), "Add a dark theme")
            .await;
        views.push(("tasks", axe(&mut chromium, &tab, &source).await));
        click(&mut chromium, &tab, "a[href='#/new']").await;
        chromium.wait_for(&tab, &text("#view"), "New task").await;
        views.push(("new", axe(&mut chromium, &tab, &source).await));
        let url = format!("{base}/#/task/{}", task.id);
        chromium
            .call("Page.navigate", json!({ "url": url }), Some(&tab))
            .await;
        chromium.wait_for(&tab, &text("#diff"), "README.md").await;
        click(&mut chromium, &tab, "#diff details.file summary").await;
        views.push(("task", axe(&mut chromium, &tab, &source).await));
        for (view, findings) in views {
            for finding in findings {
                println!("{scheme} {view}: {finding}");
                if finding.starts_with("serious") || finding.starts_with("critical") {
                    serious.push(format!("{scheme} {view}: {finding}"));
                }
            }
        }
        click(&mut chromium, &tab, "#sign-out").await;
        chromium.wait_for(&tab, &text("#view"), "Sign in").await;
    }
    assert!(
        serious.is_empty(),
        "serious or critical findings: {serious:#?}"
    );
    server.stop().await;
}
