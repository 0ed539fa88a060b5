//! The model's text as it is written: `text_delta` frames on the task's stream, ahead of the
//! `assistant_text` event that stores the whole of it, redacted as it is, and never replayed.

use berth_client::Followed;
use berth_proto::{EventKind, StreamFrame, TaskStatus};
use berth_testkit::anthropic::Reply;

use crate::common::terminate;
use crate::{ended, Stack, CONFIGURED_SECRET};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_models_text_streams_as_deltas_before_the_event_that_stores_it() {
    let stack = Stack::start(&[("README", "hi\n")]).await;
    let said = format!("I read the README. It says hi, and {CONFIGURED_SECRET} needs no change.");
    stack.model.push([Reply::text(&said)]);
    let (mut server, client) = stack.server();
    let (task, _) = client
        .create_task(&stack.task("Look around"), None)
        .await
        .unwrap();
    // Subscribed while the runner clones and starts the sandbox, before the model speaks.
    let mut stream = client.follow_task(task.id, 0);
    let mut deltas = String::new();
    let mut stored = None;
    while let Some(next) = stream.next().await {
        match next.unwrap() {
            Followed::Frame(StreamFrame::TextDelta { attempt, text }) => {
                assert_eq!(attempt, 1);
                assert!(stored.is_none(), "no delta after the text was stored");
                deltas.push_str(&text);
            }
            Followed::Frame(StreamFrame::Event { event })
                if event.kind == EventKind::AssistantText =>
            {
                stored = Some(event.payload["text"].as_str().unwrap().to_string());
            }
            _ => {}
        }
    }
    let redacted = said.replace(CONFIGURED_SECRET, "[REDACTED]");
    assert_eq!(stored, Some(redacted), "the event stores the whole text");
    assert_eq!(
        Some(deltas),
        stored,
        "the deltas, joined, were that text (redacted the same), before it"
    );
    assert_eq!(ended(&client, task.id).await.status, TaskStatus::Succeeded);

    // Replaying the task gives its events only.
    let mut replay = client.follow_task(task.id, 0);
    while let Some(next) = replay.next().await {
        let frame = next.unwrap();
        assert!(
            !matches!(frame, Followed::Frame(StreamFrame::TextDelta { .. })),
            "deltas are never replayed: {frame:?}"
        );
    }
    assert!(terminate(&mut server).success());
}
