//! What an attempt keeps as it works, and what the next attempt finds: the transcript, usage
//! totals, the diff so far, the base commit and a follow-up prompt.

use berth_proto::{EventKind, TaskId, TaskStatus, Usage};
use berth_store::StoreError;
use berth_store::{NewFollowUp, WorkState};

use crate::support::*;

on_both_backends!(
    messages_are_kept_in_order_across_attempts,
    usage_adds_up_on_the_task,
    a_turn_lands_whole_and_only_while_its_attempt_holds_the_task,
    the_diff_so_far_is_served_and_an_empty_one_removes_it,
    the_base_commit_is_set_once,
    the_next_message_answers_a_follow_up_prompt,
);

async fn messages_are_kept_in_order_across_attempts(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let alice = user(store.as_ref(), "alice").await;
    let id = enqueue(store.as_ref(), alice, "one").await.id;
    let message = |n: i64| serde_json::json!({ "role": "user", "content": format!("m{n}") });
    let (_, first) = claim(store.as_ref(), &roomy("a")).await;
    for n in 1..=3 {
        let turn = store.record_turn(first, None, message(n), Vec::new());
        turn.await.unwrap();
    }
    store.release_task(first, "node lost", None).await.unwrap();
    let (_, second) = claim(store.as_ref(), &roomy("a")).await;
    let turn = store.record_turn(second, None, message(4), Vec::new());
    turn.await.unwrap();
    let kept = store.list_messages(id).await.unwrap();
    assert_eq!(kept, (1..=4).map(message).collect::<Vec<_>>());
    assert!(store.list_messages(TaskId::new()).await.unwrap().is_empty());
}

async fn usage_adds_up_on_the_task(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let alice = user(store.as_ref(), "alice").await;
    let id = enqueue(store.as_ref(), alice, "one").await.id;
    let (_, fence) = claim(store.as_ref(), &roomy("a")).await;
    let turn = Usage {
        input_tokens: 100,
        output_tokens: 20,
        cache_write_tokens: 5,
        cache_read_tokens: 50,
        cost_usd: 0.25,
    };
    store.add_usage(fence, &turn).await.unwrap();
    store.add_usage(fence, &turn).await.unwrap();
    let total = task(store.as_ref(), alice, id).await.usage;
    let expected = Usage {
        input_tokens: 200,
        output_tokens: 40,
        cache_write_tokens: 10,
        cache_read_tokens: 100,
        cost_usd: 0.5,
    };
    assert_eq!(total, expected);
}

/// A turn's usage, message and events land together, the events in order after those
/// before; a turn of an attempt that no longer holds the task writes none of them.
async fn a_turn_lands_whole_and_only_while_its_attempt_holds_the_task(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let alice = user(store.as_ref(), "alice").await;
    let id = enqueue(store.as_ref(), alice, "one").await.id;
    let (_, fence) = claim(store.as_ref(), &roomy("a")).await;
    let usage = Usage {
        input_tokens: 10,
        output_tokens: 2,
        cache_write_tokens: 0,
        cache_read_tokens: 0,
        cost_usd: 0.01,
    };
    let message = serde_json::json!({ "role": "assistant", "content": "hello" });
    let parts = vec![
        (EventKind::Usage, serde_json::json!({ "input_tokens": 10 })),
        (
            EventKind::AssistantText,
            serde_json::json!({ "text": "hello" }),
        ),
        (
            EventKind::ToolCall,
            serde_json::json!({ "id": "toolu_1", "name": "bash" }),
        ),
    ];
    let payloads: Vec<serde_json::Value> = parts.iter().map(|(_, p)| p.clone()).collect();
    let before = events(store.as_ref(), alice, id).await;
    let recorded = store.record_turn(fence, Some(&usage), message.clone(), parts);
    recorded.await.unwrap();

    let after = events(store.as_ref(), alice, id).await;
    let new: Vec<(i64, EventKind)> = after[before.len()..]
        .iter()
        .map(|event| (event.seq, event.kind))
        .collect();
    let next = before.last().unwrap().seq + 1;
    let expected = [
        (next, EventKind::Usage),
        (next + 1, EventKind::AssistantText),
        (next + 2, EventKind::ToolCall),
    ];
    assert_eq!(new, expected);
    let stored: Vec<serde_json::Value> = after[before.len()..]
        .iter()
        .map(|event| event.payload.clone())
        .collect();
    assert_eq!(stored, payloads, "each event with its own payload");
    assert_eq!(store.list_messages(id).await.unwrap(), vec![message]);
    assert_eq!(task(store.as_ref(), alice, id).await.usage, usage);

    // The attempt ends between two turns: the next turn of that attempt writes nothing.
    let finished = store.finish_task(fence, ended(TaskStatus::Succeeded)).await;
    finished.unwrap();
    let late = serde_json::json!({ "role": "assistant", "content": "late" });
    let text = vec![(
        EventKind::AssistantText,
        serde_json::json!({ "text": "late" }),
    )];
    let refused = store.record_turn(fence, Some(&usage), late, text).await;
    assert!(matches!(refused, Err(StoreError::Fenced(_))), "{refused:?}");
    assert_eq!(store.list_messages(id).await.unwrap().len(), 1);
    assert_eq!(task(store.as_ref(), alice, id).await.usage, usage);
}

async fn the_diff_so_far_is_served_and_an_empty_one_removes_it(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let alice = user(store.as_ref(), "alice").await;
    let id = enqueue(store.as_ref(), alice, "one").await.id;
    let (_, fence) = claim(store.as_ref(), &roomy("a")).await;
    assert!(store.get_diff(alice, id).await.unwrap().is_none());
    store.save_diff(fence, b"first").await.unwrap();
    store.save_diff(fence, b"second").await.unwrap();
    let served = store.get_diff(alice, id).await.unwrap();
    assert_eq!(served.as_deref(), Some(&b"second"[..]));
    assert!(task(store.as_ref(), alice, id).await.result.has_diff);
    store.save_diff(fence, b"").await.unwrap();
    assert!(store.get_diff(alice, id).await.unwrap().is_none());
    assert!(!task(store.as_ref(), alice, id).await.result.has_diff);
}

async fn the_base_commit_is_set_once(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let alice = user(store.as_ref(), "alice").await;
    let id = enqueue(store.as_ref(), alice, "one").await.id;
    assert_eq!(store.work_state(id).await.unwrap(), WorkState::default());
    let (_, first) = claim(store.as_ref(), &roomy("a")).await;
    store.set_base_commit(first, "aaa").await.unwrap();
    store.set_base_commit(first, "bbb").await.unwrap();
    store.release_task(first, "node lost", None).await.unwrap();
    let (_, second) = claim(store.as_ref(), &roomy("a")).await;
    store.set_base_commit(second, "ccc").await.unwrap();
    let state = store.work_state(id).await.unwrap();
    assert_eq!(state.base_commit.as_deref(), Some("aaa"));
}

async fn the_next_message_answers_a_follow_up_prompt(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let alice = user(store.as_ref(), "alice").await;
    let id = enqueue(store.as_ref(), alice, "one").await.id;
    let (_, first) = claim(store.as_ref(), &roomy("a")).await;
    let end = ended(TaskStatus::Succeeded);
    store.finish_task(first, end).await.unwrap();
    let follow_up = NewFollowUp {
        prompt: "now the docs".into(),
        max_attempts: 1,
        idempotency: None,
    };
    store.continue_task(alice, id, follow_up).await.unwrap();
    let (_, second) = claim(store.as_ref(), &roomy("a")).await;
    let pending = store.work_state(id).await.unwrap().pending_prompt;
    assert_eq!(pending.as_deref(), Some("now the docs"));
    let answer = serde_json::json!({ "role": "user", "content": "now the docs" });
    store
        .record_turn(second, None, answer, Vec::new())
        .await
        .unwrap();
    assert_eq!(store.work_state(id).await.unwrap().pending_prompt, None);
}
