//! One reader per task in each server process: however many clients follow a task, each new
//! event is read from the database once, and a client that falls behind the hub's buffer
//! reads the database itself and still gets every event once.

use std::time::Duration;

use berth_proto::{EventKind, StreamFrame};
use berth_server::StreamReads;

use crate::harness::{on_both_backends, Backend, TestDatabase, TestServer};
use crate::stream::{connect, finish, next, read_to_end, running_task, Socket};

on_both_backends!(
    each_event_is_read_once_for_every_subscriber_of_its_task,
    a_subscriber_behind_the_hub_reads_the_database_and_misses_nothing,
);

/// Reads a new subscription's frames up to the event with sequence number `seq`.
async fn read_through(socket: &mut Socket, seq: i64) {
    loop {
        match next(socket).await.unwrap() {
            StreamFrame::Event { event } if event.seq == seq => return,
            _ => {}
        }
    }
}

fn since(before: StreamReads, after: StreamReads) -> StreamReads {
    StreamReads {
        hubs: after.hubs - before.hubs,
        catching_up: after.catching_up - before.catching_up,
        credentials: after.credentials - before.credentials,
    }
}

async fn each_event_is_read_once_for_every_subscriber_of_its_task(backend: Backend) {
    const SUBSCRIBERS: usize = 100;
    const EVENTS: i64 = 20;
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let alice = server.user("alice").await;
    let (id, fence) = running_task(&server, &alice).await; // seqs 1 and 2
    let mut sockets = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let path = format!("/v1/tasks/{id}/stream");
        let mut socket = connect(&server.base_url, &path, alice.token()).await;
        read_through(&mut socket, 2).await;
        sockets.push(socket);
    }
    let before = server.streams.reads();

    for i in 0..EVENTS {
        let payload = serde_json::json!({ "text": format!("line {i}") });
        server
            .store
            .append_event(fence, EventKind::AssistantText, payload)
            .await
            .unwrap();
    }
    finish(server.store.as_ref(), fence).await;
    let readers = sockets
        .into_iter()
        .map(|mut socket| tokio::spawn(async move { read_to_end(&mut socket).await }));
    for reader in futures::future::join_all(readers).await {
        let (seqs, code) = reader.unwrap();
        assert_eq!(
            seqs,
            (3..=EVENTS + 3).collect::<Vec<_>>(),
            "each event once"
        );
        assert_eq!(code, 1000);
    }

    let reads = since(before, server.streams.reads());
    // One per event at most (a read may find several); one per subscriber would be 2,100.
    assert!(
        (1..=EVENTS as u64 + 1).contains(&reads.hubs),
        "{EVENTS} events and an end read {} times for {SUBSCRIBERS} subscribers",
        reads.hubs
    );
    assert_eq!(
        reads.catching_up, 0,
        "no subscriber read the database itself"
    );
    server.stop().await;
}

async fn a_subscriber_behind_the_hub_reads_the_database_and_misses_nothing(backend: Backend) {
    const EVENTS: i64 = 80;
    let mut db = TestDatabase::new(&backend).await;
    // The hub keeps 8 reads for subscribers that are behind; a stalled client may stay
    // stalled long enough for this test.
    db.settings.stream_buffer_frames = 8;
    db.settings.stream_stall_secs = 120;
    let server = TestServer::start(&db).await;
    let alice = server.user("alice").await;
    let (id, fence) = running_task(&server, &alice).await;
    let path = format!("/v1/tasks/{id}/stream");
    let mut fast = connect(&server.base_url, &path, alice.token()).await;
    let mut slow = connect(&server.base_url, &path, alice.token()).await;
    read_through(&mut fast, 2).await;
    read_through(&mut slow, 2).await;
    let before = server.streams.reads();

    // Large events, each read by the hub on its own (the fast client has it before the next
    // is written), while the slow client reads nothing: its socket and queue fill, and the
    // hub moves on past what it keeps.
    let big = "x".repeat(256 * 1024);
    for _ in 0..EVENTS {
        let payload = serde_json::json!({ "stream": "stdout", "text": big });
        let seq = server
            .store
            .append_event(fence, EventKind::CommandOutput, payload)
            .await
            .unwrap();
        read_through(&mut fast, seq).await;
    }
    finish(server.store.as_ref(), fence).await;
    let behind = since(before, server.streams.reads());
    assert!(behind.hubs >= EVENTS as u64, "the hub read each event");

    let (seqs, code) = tokio::time::timeout(Duration::from_secs(120), read_to_end(&mut slow))
        .await
        .expect("the slow client gets the rest");
    assert_eq!(
        seqs,
        (3..=EVENTS + 3).collect::<Vec<_>>(),
        "every event once, in order"
    );
    assert_eq!(code, 1000);
    let reads = since(before, server.streams.reads());
    assert!(
        reads.catching_up > 0,
        "the slow client fell behind the hub and read the database: {reads:?}"
    );
    let (seqs, _) = read_to_end(&mut fast).await;
    assert_eq!(seqs, vec![EVENTS + 3], "the fast client gets the end too");
    server.stop().await;
}
