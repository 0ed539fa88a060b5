//! What reaches listeners without being stored: the model's text as it is written, and on
//! SQLite, word that another process wrote to the database.

use std::time::Duration;

use berth_store::{EventNotice, TextDelta};

use crate::support::*;

on_both_backends!(text_deltas_reach_every_node_once_in_order_and_are_not_stored,);

/// On PostgreSQL a delta travels by NOTIFY, in pieces that fit its payload; on SQLite there
/// is one node, and it hears it once.
async fn text_deltas_reach_every_node_once_in_order_and_are_not_stored(backend: Backend) {
    let db = Db::new(backend).await;
    let stores = db.machines(2).await;
    let (here, there) = (&stores[0], &stores[1]);
    let alice = user(here.as_ref(), "alice").await;
    enqueue(here.as_ref(), alice, "one").await;
    let (task, fence) = claim(here.as_ref(), &roomy("a")).await;
    let mut heard_here = here.subscribe_text_deltas();
    let mut heard_there = there.subscribe_text_deltas();
    // Longer than one notification carries, with characters of several bytes at every cut.
    let text = "ünïcødé ".repeat(2000);
    let delta = TextDelta {
        fence,
        text: text.clone(),
    };
    here.publish_text_delta(delta).await.unwrap();
    for heard in [&mut heard_here, &mut heard_there] {
        let mut joined = String::new();
        while joined.len() < text.len() {
            let delta = tokio::time::timeout(Duration::from_secs(30), heard.recv())
                .await
                .expect("the text is heard")
                .unwrap();
            assert_eq!(delta.fence, fence);
            joined.push_str(&delta.text);
        }
        assert_eq!(joined, text, "once, in order");
        let more = tokio::time::timeout(Duration::from_millis(300), heard.recv()).await;
        assert!(more.is_err(), "nothing heard twice: {more:?}");
    }
    let (events, _) = here
        .list_events(alice, task.id, 0, 100)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(events.len(), 2, "queued and running; no text stored");
}

/// A separate `berth runner` has its own store on the same SQLite file: the server's store
/// hears that something changed, and its streams read again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_by_another_process_on_sqlite_tells_streams_to_read_again() {
    let db = Db::new(Backend::Sqlite).await;
    let server = db.open().await;
    let runner = db.open().await;
    let alice = user(runner.as_ref(), "alice").await;
    let mut notices = server.subscribe_events();
    enqueue(runner.as_ref(), alice, "written by the other store").await;
    let notice = tokio::time::timeout(Duration::from_secs(30), notices.recv())
        .await
        .expect("the server's store hears of it")
        .unwrap();
    assert_eq!(notice, EventNotice::RESYNC);
}

/// The other way round: the server queues a task, and the runner in another process is woken
/// at once rather than at its next safety poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_queued_by_another_process_on_sqlite_wakes_this_ones_runners() {
    let db = Db::new(Backend::Sqlite).await;
    let server = db.open().await;
    let runner = db.open().await;
    let alice = user(server.as_ref(), "alice").await;
    let mut work = runner.work_signal();
    // The user's row was a write too: let its wake-up pass before looking for the task's.
    tokio::time::sleep(Duration::from_millis(200)).await;
    work.borrow_and_update();
    enqueue(server.as_ref(), alice, "queued by the server").await;
    tokio::time::timeout(Duration::from_secs(30), work.changed())
        .await
        .expect("the runner's store is woken")
        .unwrap();
    let (task, _) = claim(runner.as_ref(), &roomy("runner")).await;
    assert_eq!(task.prompt, "queued by the server");
}
