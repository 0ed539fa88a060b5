//! The event log: read in pages up to its head, and appended with sequence numbers that have
//! no gap and no repeat, however many writers append at once.

use std::collections::HashSet;

use berth_proto::{EventKind, TaskId};
use berth_store::Fence;
use tokio::task::JoinSet;

use crate::support::*;

on_both_backends!(
    events_are_read_in_pages_up_to_the_head,
    concurrent_appends_number_events_without_gaps_exactly_once,
);

async fn events_are_read_in_pages_up_to_the_head(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let alice = user(store.as_ref(), "alice").await;
    let id = enqueue(store.as_ref(), alice, "one").await.id;
    let (_, fence) = claim(store.as_ref(), &roomy("a")).await;
    for n in 0..8 {
        let payload = serde_json::json!({ "text": format!("line {n}") });
        store
            .append_event(fence, EventKind::AssistantText, payload)
            .await
            .unwrap();
    }
    // queued, running, then the eight lines.
    let (page, head) = store.list_events(alice, id, 3, 4).await.unwrap().unwrap();
    assert_eq!(head, 10);
    let seqs: Vec<i64> = page.iter().map(|event| event.seq).collect();
    assert_eq!(seqs, [4, 5, 6, 7]);
    assert_eq!(page[0].payload["text"], "line 1");
    assert!(page
        .iter()
        .all(|event| event.attempt == 1 && event.task_id == id));
    let (rest, _) = store.list_events(alice, id, 10, 4).await.unwrap().unwrap();
    assert!(rest.is_empty(), "nothing after the head");
}

async fn concurrent_appends_number_events_without_gaps_exactly_once(backend: Backend) {
    const TASKS: usize = 3;
    const WRITERS: usize = 4;
    const APPENDS: usize = 25;
    let db = Db::new(backend).await;
    let stores = db.machines(WRITERS).await;
    let alice = user(stores[0].as_ref(), "alice").await;
    let mut fences = Vec::new();
    for n in 0..TASKS {
        enqueue(stores[0].as_ref(), alice, &format!("task {n}")).await;
        fences.push(claim(stores[0].as_ref(), &roomy("a")).await.1);
    }

    let mut writers = JoinSet::new();
    for (writer, store) in stores.iter().enumerate() {
        for &fence in &fences {
            let store = store.clone();
            writers.spawn(async move {
                let mut seqs = Vec::new();
                for n in 0..APPENDS {
                    let payload = serde_json::json!({ "writer": writer, "n": n });
                    let seq = store.append_event(fence, EventKind::AssistantText, payload);
                    seqs.push(seq.await.unwrap());
                }
                (fence.task_id, seqs)
            });
        }
    }
    let mut answered: Vec<(TaskId, Vec<i64>)> = Vec::new();
    while let Some(done) = writers.join_next().await {
        answered.push(done.unwrap());
    }

    for Fence { task_id, .. } in fences {
        let log = events(stores[0].as_ref(), alice, task_id).await;
        let seqs: Vec<i64> = log.iter().map(|event| event.seq).collect();
        let expected: Vec<i64> = (1..=(2 + WRITERS * APPENDS) as i64).collect();
        assert_eq!(seqs, expected, "sequence numbers 1..=n, no gap, no repeat");
        let lines: HashSet<(u64, u64)> = log[2..]
            .iter()
            .map(|event| {
                let at = |key: &str| event.payload[key].as_u64().unwrap();
                (at("writer"), at("n"))
            })
            .collect();
        assert_eq!(lines.len(), WRITERS * APPENDS, "every append stored once");
        let mut given: Vec<i64> = answered
            .iter()
            .filter(|(id, _)| *id == task_id)
            .flat_map(|(_, seqs)| seqs.iter().copied())
            .collect();
        given.sort_unstable();
        assert_eq!(given, expected[2..], "each append was told its own seq");
    }
}
