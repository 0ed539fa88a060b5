//! A stream lives no longer than what it was opened with: revoking the token, or signing out
//! of the session, closes every stream it opened — WebSocket and SSE, one task's and the
//! task list, directly or through a ticket, on every node — with 4401, at once rather than at
//! the next safety poll. Streams opened with another credential go on.

use std::time::Duration;

use berth_client::Client;
use berth_proto::{close_code, StreamFrame};
use reqwest::header::COOKIE;

use crate::harness::{on_both_backends, Backend, TestDatabase, TestServer};
use crate::stream::{append, connect, next, read_sse, running_task, ticket, Socket};

on_both_backends!(
    revoking_a_token_closes_the_streams_it_opened,
    signing_out_closes_the_streams_the_session_opened,
    streams_opened_with_one_token_share_its_check,
);

/// Well under the 30 s after which every stream looks again anyway: a close inside it came
/// from the revocation itself.
const PROMPTLY: Duration = Duration::from_secs(10);

/// The close code the socket ends with, skipping the frames before it.
async fn closed_with(socket: &mut Socket) -> u16 {
    tokio::time::timeout(PROMPTLY, async {
        loop {
            if let Err(code) = next(socket).await {
                return code;
            }
        }
    })
    .await
    .expect("the stream closes promptly")
}

async fn subscribed(socket: &mut Socket) {
    let first = next(socket).await;
    assert!(
        matches!(first, Ok(StreamFrame::Subscribed { .. })),
        "{first:?}"
    );
}

/// A second token of the same user's, as a second device would have.
async fn second_device(server: &TestServer, first: &Client) -> Client {
    let created = first.create_token("phone").await.unwrap();
    Client::new(&server.base_url, Some(created.token)).unwrap()
}

async fn revoking_a_token_closes_the_streams_it_opened(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let laptop = server.user("alice").await;
    let phone = second_device(&server, &laptop).await;
    let (id, fence) = running_task(&server, &laptop).await;
    let base = &server.base_url;
    let task_path = format!("/v1/tasks/{id}/stream");

    let mut task_stream = connect(base, &task_path, laptop.token()).await;
    let mut list_stream = connect(base, "/v1/stream", laptop.token()).await;
    let ticketed = format!("{task_path}?ticket={}", ticket(&laptop).await.ticket);
    let mut ticket_stream = connect(base, &ticketed, None).await;
    let mut phone_stream = connect(base, &task_path, phone.token()).await;
    for socket in [
        &mut task_stream,
        &mut list_stream,
        &mut ticket_stream,
        &mut phone_stream,
    ] {
        subscribed(socket).await;
    }
    let sse = laptop
        .request(reqwest::Method::GET, &task_path)
        .unwrap()
        .send()
        .await
        .unwrap();

    let me = laptop.me().await.unwrap();
    let laptop_token = laptop
        .list_tokens()
        .await
        .unwrap()
        .into_iter()
        .find(|token| token.name == "test")
        .unwrap();
    assert_eq!(laptop_token.user_id, me.user_id);
    phone.revoke_token(laptop_token.id).await.unwrap();

    for socket in [&mut task_stream, &mut list_stream, &mut ticket_stream] {
        assert_eq!(closed_with(socket).await, close_code::UNAUTHORIZED);
    }
    let events = tokio::time::timeout(PROMPTLY, read_sse(sse))
        .await
        .expect("the SSE stream ends promptly");
    let (_, kind, data) = events.last().unwrap();
    assert_eq!(kind, "closed", "{events:?}");
    assert_eq!(data["code"], close_code::UNAUTHORIZED);

    // The phone's own stream goes on.
    append(server.store.as_ref(), fence, 1).await;
    loop {
        match next(&mut phone_stream).await {
            Ok(StreamFrame::Event { .. }) => break,
            Ok(_) => continue,
            Err(code) => panic!("the phone's stream closed with {code}"),
        }
    }
    server.stop().await;
}

async fn signing_out_closes_the_streams_the_session_opened(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let alice = server.user("alice").await;
    let (id, _) = running_task(&server, &alice).await;
    let user = alice.me().await.unwrap().user_id;
    let session = "a-browser-session-value";
    let hash = berth_server::auth::hash_token(session);
    server
        .store
        .insert_session(user, &hash, 600_000)
        .await
        .unwrap();
    let browser = reqwest::Client::new();
    let cookie = format!("berth_session={session}");
    let issued: berth_proto::StreamTicket = browser
        .post(format!("{}/v1/stream-tickets", server.base_url))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let path = format!("/v1/tasks/{id}/stream?ticket={}", issued.ticket);
    let mut socket = connect(&server.base_url, &path, None).await;
    subscribed(&mut socket).await;

    let signed_out = browser
        .post(format!("{}/v1/auth/logout", server.base_url))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert!(signed_out.status().is_success(), "{}", signed_out.status());
    assert_eq!(closed_with(&mut socket).await, close_code::UNAUTHORIZED);
    server.stop().await;
}

/// A revocation on one node closes a stream on another: the notice crosses nodes through
/// PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_on_one_node_closes_a_stream_on_another() {
    let Some(backend) = Backend::postgres() else {
        return;
    };
    let db = TestDatabase::new(&backend).await;
    let revoking_node = TestServer::start(&db).await;
    let streaming_node = TestServer::start(&db).await;
    let laptop = streaming_node.user("alice").await;
    let phone = second_device(&revoking_node, &laptop).await;
    let (id, _) = running_task(&streaming_node, &laptop).await;
    let path = format!("/v1/tasks/{id}/stream");
    let mut socket = connect(&streaming_node.base_url, &path, laptop.token()).await;
    subscribed(&mut socket).await;
    let token = laptop.list_tokens().await.unwrap();
    let token = token.iter().find(|token| token.name == "test").unwrap();
    phone.revoke_token(token.id).await.unwrap();
    assert_eq!(closed_with(&mut socket).await, close_code::UNAUTHORIZED);
    revoking_node.stop().await;
    streaming_node.stop().await;
}

/// Revoking a token that holds many streams asks the database once for all of them, not once
/// per stream.
async fn streams_opened_with_one_token_share_its_check(backend: Backend) {
    const STREAMS: usize = 40;
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let laptop = server.user("alice").await;
    let phone = second_device(&server, &laptop).await;
    let (id, _) = running_task(&server, &laptop).await;
    let path = format!("/v1/tasks/{id}/stream");
    let mut sockets = Vec::new();
    for _ in 0..STREAMS {
        let mut socket = connect(&server.base_url, &path, laptop.token()).await;
        subscribed(&mut socket).await;
        sockets.push(socket);
    }
    let before = server.streams.reads().credentials;

    let laptop_token = laptop.list_tokens().await.unwrap();
    let laptop_token = laptop_token.iter().find(|t| t.name == "test").unwrap();
    phone.revoke_token(laptop_token.id).await.unwrap();
    for socket in &mut sockets {
        assert_eq!(closed_with(socket).await, close_code::UNAUTHORIZED);
    }

    // Every stream was told by one check; one per stream would be 40.
    let checks = server.streams.reads().credentials - before;
    assert_eq!(
        checks, 1,
        "{STREAMS} streams of one token made {checks} checks"
    );
    server.stop().await;
}
