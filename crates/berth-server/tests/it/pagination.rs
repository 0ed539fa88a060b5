//! Cursor pagination: walking the pages sees every task once, even while tasks are added.

use std::collections::HashSet;

use berth_client::ListTasks;
use berth_proto::CreateTask;
use reqwest::StatusCode;

use crate::harness::{on_both_backends, Backend, TestDatabase, TestServer};

on_both_backends!(
    pages_have_no_gaps_or_repeats_while_tasks_are_added,
    bad_cursor_is_refused
);

async fn pages_have_no_gaps_or_repeats_while_tasks_are_added(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let alice = server.user("alice").await;
    let mut existing = Vec::new();
    for n in 0..23 {
        let request = CreateTask::new("https://github.com/octo/hello", format!("task {n}"));
        existing.push(alice.create_task(&request, None).await.unwrap().0.id);
    }

    let writer = {
        let alice = alice.clone();
        tokio::spawn(async move {
            for n in 0..20 {
                let request = CreateTask::new("https://github.com/octo/hello", format!("new {n}"));
                alice.create_task(&request, None).await.unwrap();
            }
        })
    };
    let mut seen = Vec::new();
    let mut query = ListTasks {
        limit: Some(4),
        ..Default::default()
    };
    loop {
        let page = alice.list_tasks(&query).await.unwrap();
        seen.extend(page.tasks.iter().map(|task| task.id));
        match page.next_cursor {
            Some(cursor) => query.cursor = Some(cursor),
            None => break,
        }
    }
    writer.await.unwrap();

    let unique: HashSet<_> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "no task appears twice");
    for id in &existing {
        assert!(
            unique.contains(id),
            "task {id} that existed before the walk was missed"
        );
    }
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, sorted, "pages are newest first");
    server.stop().await;
}

async fn bad_cursor_is_refused(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let alice = server.user("alice").await;
    for cursor in ["not-a-cursor!", "AAAA"] {
        let query = ListTasks {
            cursor: Some(cursor.into()),
            ..Default::default()
        };
        let err = alice.list_tasks(&query).await.unwrap_err();
        assert_eq!(err.status(), Some(StatusCode::BAD_REQUEST));
        assert_eq!(err.code(), Some("invalid_cursor"));
    }
    let query = ListTasks {
        limit: Some(0),
        ..Default::default()
    };
    assert_eq!(
        alice.list_tasks(&query).await.unwrap_err().code(),
        Some("invalid_limit")
    );
    server.stop().await;
}
