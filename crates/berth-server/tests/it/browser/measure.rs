//! Figures for docs/web.md, printed, never asserted (timings vary from machine to machine):
//! `cargo test -p berth-server --test it browser::measure -- --ignored --nocapture`.

use berth_proto::CreateTask;
use berth_store::NewTask;
use berth_testkit::chromium::{Chromium, PHONE};
use serde_json::json;

use super::{sign_in, text};
use crate::harness::{Backend, TestDatabase, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run it by name with --ignored --nocapture"]
async fn measure_the_app_with_a_thousand_tasks() {
    let Some(mut chromium) = Chromium::launch().await else {
        return;
    };
    let db = TestDatabase::new(&Backend::Sqlite).await;
    let server = TestServer::start(&db).await;
    let alice = server.user("alice").await;
    let owner_id = server.store.upsert_user("alice").await.unwrap().id;
    for n in 0..1000 {
        let request = CreateTask::new(
            format!("https://github.com/o/repo-{}", n % 7),
            format!("Task number {n}: tidy module {n}\nwith more lines"),
        );
        let new = NewTask {
            owner_id,
            request,
            max_attempts: 3,
            idempotency: None,
            github: None,
        };
        server.store.create_task(new).await.unwrap();
    }
    let tab = chromium
        .open_on(&format!("{}/", server.base_url), PHONE)
        .await;
    sign_in(&mut chromium, &tab, alice.token().unwrap()).await;
    chromium
        .wait_for(&tab, &text("#tasks"), "Task number 999")
        .await;

    // A fresh load, signed in, with the shell in the service worker's cache: the time from
    // navigation until the first page of tasks is on screen.
    let mut loads = Vec::new();
    for _ in 0..5 {
        chromium.call("Page.reload", json!({}), Some(&tab)).await;
        let script = "new Promise((done) => { const check = () => \
            document.querySelector('#tasks li') ? done(performance.now()) : setTimeout(check, 5); \
            check(); })";
        let took = chromium.eval(&tab, script).await.as_f64().unwrap();
        loads.push(took);
    }
    println!("first page of tasks on screen after a load, ms: {loads:.0?}");
    let script = "(() => { const nav = performance.getEntriesByType('navigation')[0]; \
        const api = performance.getEntriesByType('resource').filter((r) => r.name.includes('/v1/')) \
          .map((r) => r.name.replace(location.origin, '') + ' ' + Math.round(r.startTime) + '–' + Math.round(r.responseEnd)); \
        return 'DOMContentLoaded ' + Math.round(nav.domContentLoadedEventEnd) + ' ms; ' + api.join('; '); })()";
    println!("the last load: {}", chromium.text_of(&tab, script).await);

    // Scrolling to the end of 1,000 tasks (pages of 50 load on the way): frame times.
    let script = "new Promise((done) => { const frames = []; let last = performance.now(); \
        const step = (now) => { frames.push(now - last); last = now; window.scrollBy(0, 400); \
          const all = document.querySelectorAll('#tasks li').length; \
          if (all >= 1000 && innerHeight + scrollY >= document.documentElement.scrollHeight - 2) { \
            frames.sort((a, b) => a - b); \
            done({ frames: frames.length, tasks: all, \
              median: frames[frames.length >> 1], p95: frames[Math.floor(frames.length * .95)], \
              worst: frames[frames.length - 1], over50: frames.filter((f) => f > 50).length }); \
          } else requestAnimationFrame(step); }; \
        requestAnimationFrame(step); })";
    let figures = chromium.eval(&tab, script).await;
    println!("scrolling 1,000 tasks, frame times in ms: {figures}");
    server.stop().await;
}
