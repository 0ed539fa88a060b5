//! Realtime streams over real WebSocket and SSE connections: resume without gaps or
//! duplicates, slow readers, tickets, tenancy, and events crossing nodes.

use std::time::Duration;

use berth_client::Client;
use berth_proto::{
    close_code, CreateTask, EventKind, StreamFrame, StreamTicket, TaskId, TaskStatus,
};
use berth_store::{Fence, Store, TaskEnd};
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{on_both_backends, Backend, TestDatabase, TestServer};

on_both_backends!(
    reconnecting_with_the_last_seq_gets_exactly_what_was_missed,
    subscribers_joining_during_writes_see_every_event_once,
    a_slow_reader_is_told_to_resume_and_then_catches_up,
    sse_resumes_from_last_event_id,
    tickets_are_single_use_and_expire,
    another_users_task_cannot_be_followed,
    the_task_list_stream_carries_status_changes,
);

pub(crate) type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A task moved to `running`, so events can be appended to it as a runner would.
pub(crate) async fn running_task(server: &TestServer, client: &Client) -> (TaskId, Fence) {
    let (task, _) = client
        .create_task(
            &CreateTask::new("https://github.com/o/r", "stream me"),
            None,
        )
        .await
        .unwrap();
    let fence = server.claim().await;
    assert_eq!(fence.task_id, task.id);
    (task.id, fence)
}

pub(crate) async fn append(store: &dyn Store, fence: Fence, n: usize) {
    for i in 0..n {
        let payload = serde_json::json!({ "text": format!("line {i}") });
        store
            .append_event(fence, EventKind::AssistantText, payload)
            .await
            .unwrap();
    }
}

pub(crate) async fn finish(store: &dyn Store, fence: Fence) {
    let end = TaskEnd {
        status: TaskStatus::Succeeded,
        reason: None,
        diff: None,
        branch: None,
        pull_request_url: None,
    };
    store.finish_task(fence, end).await.unwrap();
}

pub(crate) async fn connect(base: &str, path: &str, token: Option<&str>) -> Socket {
    let url = format!("{}{path}", base.replace("http://", "ws://"));
    let mut request = url.into_client_request().unwrap();
    if let Some(token) = token {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    tokio_tungstenite::connect_async(request)
        .await
        .expect("the upgrade succeeds")
        .0
}

/// The next frame, or the close code once the server closes.
pub(crate) async fn next(socket: &mut Socket) -> Result<StreamFrame, u16> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), socket.next())
            .await
            .expect("a frame in time");
        match message {
            Some(Ok(Message::Text(text))) => return Ok(serde_json::from_str(&text).unwrap()),
            Some(Ok(Message::Close(frame))) => {
                return Err(frame.map_or(1005, |f| u16::from(f.code)))
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return Err(1006),
        }
    }
}

/// Reads events until the end; returns their sequence numbers and the close code.
pub(crate) async fn read_to_end(socket: &mut Socket) -> (Vec<i64>, u16) {
    let mut seqs = Vec::new();
    loop {
        match next(socket).await {
            Ok(StreamFrame::Event { event }) => seqs.push(event.seq),
            Ok(_) => {}
            Err(code) => return (seqs, code),
        }
    }
}

async fn reconnecting_with_the_last_seq_gets_exactly_what_was_missed(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let alice = server.user("alice").await;
    let (id, fence) = running_task(&server, &alice).await;
    append(server.store.as_ref(), fence, 8).await; // seqs 3..=10

    let path = format!("/v1/tasks/{id}/stream?after=0");
    let mut socket = connect(&server.base_url, &path, alice.token()).await;
    match next(&mut socket).await.unwrap() {
        StreamFrame::Subscribed {
            head_seq, status, ..
        } => {
            assert_eq!(head_seq, Some(10));
            assert_eq!(status, Some(TaskStatus::Running));
        }
        other => panic!("first frame: {other:?}"),
    }
    let mut seen = Vec::new();
    while seen.len() < 5 {
        if let StreamFrame::Event { event } = next(&mut socket).await.unwrap() {
            seen.push(event.seq);
        }
    }
    assert_eq!(seen, vec![1, 2, 3, 4, 5]);
    drop(socket); // the phone goes into a tunnel

    append(server.store.as_ref(), fence, 5).await; // seqs 11..=15
    let mut socket = connect(
        &server.base_url,
        &format!("/v1/tasks/{id}/stream?after=5"),
        alice.token(),
    )
    .await;
    finish(server.store.as_ref(), fence).await; // seq 16
    let (seqs, code) = read_to_end(&mut socket).await;
    assert_eq!(seqs, (6..=16).collect::<Vec<_>>());
    assert_eq!(code, 1000, "a normal close after the end frame");
    server.stop().await;
}

async fn subscribers_joining_during_writes_see_every_event_once(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let alice = server.user("alice").await;
    let (id, fence) = running_task(&server, &alice).await;
    let store = server.store.clone();
    let writer = tokio::spawn(async move {
        for _ in 0..30 {
            append(store.as_ref(), fence, 10).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        finish(store.as_ref(), fence).await;
    });
    let subscribers = (0..200).map(|n| {
        let base = server.base_url.clone();
        let token = alice.token().unwrap().to_string();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis((n % 50) * 15)).await;
            let mut socket = connect(&base, &format!("/v1/tasks/{id}/stream"), Some(&token)).await;
            read_to_end(&mut socket).await
        })
    });
    let results = futures::future::join_all(subscribers).await;
    writer.await.unwrap();
    let expected: Vec<i64> = (1..=303).collect();
    for result in results {
        let (seqs, code) = result.unwrap();
        assert_eq!(code, 1000);
        assert_eq!(
            seqs, expected,
            "every subscriber sees 1..=303 once, in order"
        );
    }
    server.stop().await;
}

async fn a_slow_reader_is_told_to_resume_and_then_catches_up(backend: Backend) {
    let mut db = TestDatabase::new(&backend).await;
    db.settings.stream_buffer_frames = 8;
    db.settings.stream_stall_secs = 1;
    let server = TestServer::start(&db).await;
    let alice = server.user("alice").await;
    let (id, fence) = running_task(&server, &alice).await;
    let big = "x".repeat(64 * 1024);
    for _ in 0..200 {
        let payload = serde_json::json!({ "stream": "stdout", "text": big });
        server
            .store
            .append_event(fence, EventKind::CommandOutput, payload)
            .await
            .unwrap();
    }
    finish(server.store.as_ref(), fence).await;

    let mut socket = connect(
        &server.base_url,
        &format!("/v1/tasks/{id}/stream"),
        alice.token(),
    )
    .await;
    let mut last = 0;
    // Read a little, then stop reading for longer than the server lets a stream stall.
    for _ in 0..5 {
        next(&mut socket).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let code = loop {
        match next(&mut socket).await {
            Ok(StreamFrame::Event { event }) => last = event.seq,
            Ok(_) => {}
            Err(code) => break code,
        }
    };
    assert_eq!(code, close_code::SLOW_CONSUMER);
    assert!(close_code::should_resume(code));
    assert!(last < 203, "it was cut off before the end");
    let mut socket = connect(
        &server.base_url,
        &format!("/v1/tasks/{id}/stream?after={last}"),
        alice.token(),
    )
    .await;
    let (seqs, code) = read_to_end(&mut socket).await;
    assert_eq!(
        seqs,
        ((last + 1)..=203).collect::<Vec<_>>(),
        "the rest, exactly"
    );
    assert_eq!(code, 1000);
    server.stop().await;
}

/// Reads an SSE response until it ends: (id, event type, data) of each event.
pub(crate) async fn read_sse(
    response: reqwest::Response,
) -> Vec<(Option<String>, String, serde_json::Value)> {
    let text = tokio::time::timeout(Duration::from_secs(30), response.text())
        .await
        .unwrap()
        .unwrap();
    let mut out = Vec::new();
    for block in text
        .split("\n\n")
        .filter(|b| !b.trim().is_empty() && !b.starts_with(':'))
    {
        let field = |name: &str| {
            block
                .lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
        };
        let data = field("data:").unwrap();
        out.push((
            field("id:"),
            field("event:").unwrap_or_default(),
            serde_json::from_str(&data).unwrap(),
        ));
    }
    out
}

async fn sse_resumes_from_last_event_id(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let alice = server.user("alice").await;
    let (id, fence) = running_task(&server, &alice).await;
    append(server.store.as_ref(), fence, 5).await;
    finish(server.store.as_ref(), fence).await; // seq 8
    let response = alice
        .request(reqwest::Method::GET, &format!("/v1/tasks/{id}/stream"))
        .unwrap()
        .header("accept", "text/event-stream")
        .header("last-event-id", "3")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let events = read_sse(response).await;
    assert_eq!(events.first().unwrap().1, "subscribed");
    let ids: Vec<String> = events
        .iter()
        .filter(|e| e.1 == "event")
        .map(|e| e.0.clone().unwrap())
        .collect();
    assert_eq!(ids, ["4", "5", "6", "7", "8"]);
    assert_eq!(events.last().unwrap().1, "end");
    assert_eq!(events.last().unwrap().2["status"], "succeeded");
    server.stop().await;
}

pub(crate) async fn ticket(client: &Client) -> StreamTicket {
    let response = client
        .request(reqwest::Method::POST, "/v1/stream-tickets")
        .unwrap()
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["cache-control"], "no-store");
    response.json().await.unwrap()
}

async fn tickets_are_single_use_and_expire(backend: Backend) {
    let mut db = TestDatabase::new(&backend).await;
    db.settings.stream_ticket_ttl_secs = 1;
    let server = TestServer::start(&db).await;
    let alice = server.user("alice").await;
    let (id, fence) = running_task(&server, &alice).await;
    finish(server.store.as_ref(), fence).await;
    let path = |ticket: &str| format!("/v1/tasks/{id}/stream?ticket={ticket}");

    let first = ticket(&alice).await;
    let mut socket = connect(&server.base_url, &path(&first.ticket), None).await;
    assert!(matches!(
        next(&mut socket).await,
        Ok(StreamFrame::Subscribed { .. })
    ));
    let mut again = connect(&server.base_url, &path(&first.ticket), None).await;
    assert_eq!(
        next(&mut again).await.unwrap_err(),
        close_code::UNAUTHORIZED,
        "a ticket works once"
    );

    // As a subprotocol, the way browsers send it; the server echoes it.
    let second = ticket(&alice).await;
    let url = format!(
        "{}/v1/tasks/{id}/stream",
        server.base_url.replace("http://", "ws://")
    );
    let mut request = url.into_client_request().unwrap();
    let protocol = format!("berth.ticket.{}", second.ticket);
    request
        .headers_mut()
        .insert("sec-websocket-protocol", protocol.parse().unwrap());
    let (mut socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        protocol.as_str()
    );
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert!(matches!(
        next(&mut socket).await,
        Ok(StreamFrame::Subscribed { .. })
    ));

    let late = ticket(&alice).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let mut expired = connect(&server.base_url, &path(&late.ticket), None).await;
    assert_eq!(
        next(&mut expired).await.unwrap_err(),
        close_code::UNAUTHORIZED,
        "tickets expire"
    );
    let mut nothing = connect(&server.base_url, &format!("/v1/tasks/{id}/stream"), None).await;
    assert_eq!(
        next(&mut nothing).await.unwrap_err(),
        close_code::UNAUTHORIZED
    );
    let _ = socket.close(None).await;
    server.stop().await;
}

async fn another_users_task_cannot_be_followed(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let (id, _) = running_task(&server, &alice).await;
    let mut socket = connect(
        &server.base_url,
        &format!("/v1/tasks/{id}/stream"),
        bob.token(),
    )
    .await;
    assert_eq!(next(&mut socket).await.unwrap_err(), close_code::NOT_FOUND);
    let response = bob
        .request(reqwest::Method::GET, &format!("/v1/tasks/{id}/stream"))
        .unwrap()
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let bob_ticket = ticket(&bob).await;
    let mut ticketed = connect(
        &server.base_url,
        &format!("/v1/tasks/{id}/stream?ticket={}", bob_ticket.ticket),
        None,
    )
    .await;
    assert_eq!(
        next(&mut ticketed).await.unwrap_err(),
        close_code::NOT_FOUND
    );
    server.stop().await;
}

async fn the_task_list_stream_carries_status_changes(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let mut socket = connect(&server.base_url, "/v1/stream", alice.token()).await;
    assert!(matches!(
        next(&mut socket).await,
        Ok(StreamFrame::Subscribed { task_id: None, .. })
    ));
    let (id, fence) = running_task(&server, &alice).await;
    bob.create_task(&CreateTask::new("https://github.com/o/r", "bob's"), None)
        .await
        .unwrap();
    finish(server.store.as_ref(), fence).await;
    let mut statuses = Vec::new();
    let mut cursor = String::new();
    while statuses.last() != Some(&TaskStatus::Succeeded) {
        if let StreamFrame::Task { task, cursor: at } = next(&mut socket).await.unwrap() {
            assert_eq!(task.id, id, "only alice's own tasks");
            statuses.push(task.status);
            cursor = at;
        }
    }
    assert!(statuses.contains(&TaskStatus::Succeeded));
    // Resuming from the last cursor sends nothing old.
    let mut again = connect(
        &server.base_url,
        &format!("/v1/stream?after={cursor}"),
        alice.token(),
    )
    .await;
    assert!(matches!(
        next(&mut again).await,
        Ok(StreamFrame::Subscribed { .. })
    ));
    let nothing = tokio::time::timeout(Duration::from_millis(500), again.next()).await;
    assert!(nothing.is_err(), "no frame after the cursor: {nothing:?}");
    let _ = again.send(Message::Close(None)).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_written_on_one_node_reaches_a_client_of_another() {
    let Some(backend) = Backend::postgres() else {
        return;
    };
    let db = TestDatabase::new(&backend).await;
    let writer_node = TestServer::start(&db).await;
    let reader_node = TestServer::start(&db).await;
    let alice = writer_node.user("alice").await;
    let (id, fence) = running_task(&writer_node, &alice).await;
    let mut socket = connect(
        &reader_node.base_url,
        &format!("/v1/tasks/{id}/stream?after=2"),
        alice.token(),
    )
    .await;
    assert!(matches!(
        next(&mut socket).await,
        Ok(StreamFrame::Subscribed { .. })
    ));
    writer_node
        .store
        .append_event(
            fence,
            EventKind::AssistantText,
            serde_json::json!({"text": "hello from node A"}),
        )
        .await
        .unwrap();
    match next(&mut socket).await.unwrap() {
        StreamFrame::Event { event } => assert_eq!(event.payload["text"], "hello from node A"),
        other => panic!("{other:?}"),
    }
    writer_node.stop().await;
    reader_node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_server_tells_streams_to_resume() {
    let db = TestDatabase::new(&Backend::Sqlite).await;
    let server = TestServer::start(&db).await;
    let alice = server.user("alice").await;
    let (id, _) = running_task(&server, &alice).await;
    let mut socket = connect(
        &server.base_url,
        &format!("/v1/tasks/{id}/stream"),
        alice.token(),
    )
    .await;
    assert!(matches!(
        next(&mut socket).await,
        Ok(StreamFrame::Subscribed { .. })
    ));
    while let Ok(StreamFrame::Event { .. }) =
        tokio::time::timeout(Duration::from_millis(300), next(&mut socket))
            .await
            .unwrap_or(Err(0))
    {}
    server.stop().await;
    assert_eq!(
        next(&mut socket).await.unwrap_err(),
        close_code::SHUTTING_DOWN
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_a_user_closes_their_open_streams() {
    let db = TestDatabase::new(&Backend::Sqlite).await;
    let server = TestServer::start(&db).await;
    let bob = server.user("bob").await;
    let (id, _) = running_task(&server, &bob).await;
    let mut task_stream = connect(
        &server.base_url,
        &format!("/v1/tasks/{id}/stream"),
        bob.token(),
    )
    .await;
    let mut list_stream = connect(&server.base_url, "/v1/stream", bob.token()).await;
    assert!(matches!(
        next(&mut task_stream).await,
        Ok(StreamFrame::Subscribed { .. })
    ));
    assert!(matches!(
        next(&mut list_stream).await,
        Ok(StreamFrame::Subscribed { .. })
    ));

    let bob_id = bob.me().await.unwrap().user_id;
    server
        .store
        .disable_user(bob_id)
        .await
        .unwrap()
        .expect("bob exists");
    for socket in [&mut task_stream, &mut list_stream] {
        let code = loop {
            match next(socket).await {
                Ok(_) => continue,
                Err(code) => break code,
            }
        };
        assert_eq!(
            code,
            close_code::UNAUTHORIZED,
            "a disabled user's stream closes at once"
        );
    }
    server.stop().await;
}
