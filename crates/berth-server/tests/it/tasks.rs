//! Creating, reading, listing and cancelling tasks, and reading their event logs.

use berth_client::ListTasks;
use berth_proto::{Budget, CreateTask, EventKind, Network, TaskStatus};

use crate::harness::{on_both_backends, Backend, TestDatabase, TestServer};

on_both_backends!(
    create_then_read_back,
    list_is_newest_first_and_filters_by_status,
    cancel_queued_task_ends_it_at_once,
    events_page_after_a_sequence_number,
    health_and_readiness,
    a_task_naming_no_network_gets_the_servers_default,
);

fn sample(prompt: &str) -> CreateTask {
    CreateTask::new("https://github.com/octo/hello.git", prompt)
}

async fn create_then_read_back(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let alice = server.user("alice").await;

    let mut request = sample("add a README");
    request.git_ref = Some("main".into());
    request.model = Some("claude-sonnet-4-5".into());
    request.network = Some(Network::Full);
    request.budget = Budget {
        max_turns: Some(20),
        max_tokens: Some(100_000),
        max_usd: Some(2.5),
    };
    request.timeout_secs = Some(600);
    request.resources = berth_proto::Resources {
        memory_mb: Some(512),
        cpus: Some(0.5),
        pids: Some(128),
    };
    request.agent = Some(berth_proto::Agent::ClaudeCode);
    let (task, created) = alice.create_task(&request, None).await.unwrap();
    assert!(created);
    assert_eq!(task.status, TaskStatus::Queued);
    assert_eq!(task.prompt, "add a README");
    assert_eq!(task.git_ref.as_deref(), Some("main"));
    assert_eq!(task.network, Network::Full);
    assert_eq!(task.budget.max_usd, Some(2.5));
    assert_eq!(task.timeout_secs, Some(600));
    assert_eq!(task.resources.memory_mb, Some(512));
    assert_eq!(task.agent, Some(berth_proto::Agent::ClaudeCode));
    assert_eq!(task.attempt, 0);
    assert_eq!(task.last_event_seq, 1);

    let read = alice.get_task(task.id).await.unwrap();
    assert_eq!(read, task);
    let me = alice.me().await.unwrap();
    assert_eq!(me.name, "alice");
    assert_eq!(task.owner_id, me.user_id);
    server.stop().await;
}

async fn a_task_naming_no_network_gets_the_servers_default(backend: Backend) {
    let mut db = TestDatabase::new(&backend).await;
    let none = TestServer::start(&db).await;
    let task = none
        .user("alice")
        .await
        .create_task(&sample("a"), None)
        .await
        .unwrap()
        .0;
    assert_eq!(task.network, Network::None, "the default denies");
    none.stop().await;

    db.settings.default_network = Network::Allowlist;
    db.settings.validate().unwrap();
    let allowlist = TestServer::start(&db).await;
    let alice = allowlist.user("alice").await;
    let task = alice.create_task(&sample("b"), None).await.unwrap().0;
    assert_eq!(task.network, Network::Allowlist);
    let mut asked = sample("c");
    asked.network = Some(Network::None);
    let task = alice.create_task(&asked, None).await.unwrap().0;
    assert_eq!(task.network, Network::None, "a task may ask for less");
    allowlist.stop().await;

    db.settings.default_network = Network::Full;
    let err = db.settings.validate().unwrap_err();
    assert!(
        err.contains("default_network must be none or allowlist"),
        "{err}"
    );
}

async fn list_is_newest_first_and_filters_by_status(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let alice = server.user("alice").await;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(
            alice
                .create_task(&sample(&format!("task {n}")), None)
                .await
                .unwrap()
                .0
                .id,
        );
    }
    alice.cancel_task(ids[1]).await.unwrap();

    let page = alice.list_tasks(&ListTasks::default()).await.unwrap();
    let listed: Vec<_> = page.tasks.iter().map(|task| task.id).collect();
    let newest_first: Vec<_> = ids.iter().rev().copied().collect();
    assert_eq!(listed, newest_first);
    assert!(page.next_cursor.is_none());

    let cancelled = ListTasks {
        status: Some(TaskStatus::Cancelled),
        ..Default::default()
    };
    let page = alice.list_tasks(&cancelled).await.unwrap();
    assert_eq!(
        page.tasks.iter().map(|task| task.id).collect::<Vec<_>>(),
        vec![ids[1]]
    );
    let queued = ListTasks {
        status: Some(TaskStatus::Queued),
        ..Default::default()
    };
    assert_eq!(alice.list_tasks(&queued).await.unwrap().tasks.len(), 4);
    server.stop().await;
}

async fn cancel_queued_task_ends_it_at_once(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let alice = server.user("alice").await;
    let (task, _) = alice
        .create_task(&sample("never mind"), None)
        .await
        .unwrap();

    let cancelled = alice.cancel_task(task.id).await.unwrap();
    assert_eq!(cancelled.status, TaskStatus::Cancelled);
    assert!(cancelled.finished_at.is_some());
    assert_eq!(cancelled.last_event_seq, 2);
    // A retried cancel (a phone that lost the first answer) is harmless.
    let again = alice.cancel_task(task.id).await.unwrap();
    assert_eq!(again.status, TaskStatus::Cancelled);
    assert_eq!(again.last_event_seq, 2, "a second cancel writes no event");

    let events = alice.list_events(task.id, 0, None).await.unwrap().events;
    let statuses: Vec<_> = events
        .iter()
        .map(|event| event.payload["status"].clone())
        .collect();
    assert_eq!(statuses, vec!["queued", "cancelled"]);
    server.stop().await;
}

async fn events_page_after_a_sequence_number(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let alice = server.user("alice").await;
    let (task, _) = alice
        .create_task(&sample("look around"), None)
        .await
        .unwrap();
    alice.cancel_task(task.id).await.unwrap();

    let all = alice.list_events(task.id, 0, None).await.unwrap();
    assert_eq!(all.head_seq, 2);
    assert_eq!(
        all.events.iter().map(|event| event.seq).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert!(all
        .events
        .iter()
        .all(|event| event.kind == EventKind::Status));
    assert_eq!(all.next_after, 2);

    let first = alice.list_events(task.id, 0, Some(1)).await.unwrap();
    assert_eq!(first.events.len(), 1);
    assert_eq!(first.next_after, 1);
    let rest = alice
        .list_events(task.id, first.next_after, None)
        .await
        .unwrap();
    assert_eq!(
        rest.events
            .iter()
            .map(|event| event.seq)
            .collect::<Vec<_>>(),
        vec![2]
    );
    let none = alice.list_events(task.id, 2, None).await.unwrap();
    assert!(none.events.is_empty());
    assert_eq!(none.next_after, 2);
    server.stop().await;
}

async fn health_and_readiness(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    server.anonymous().ready().await.unwrap();
    server.stop().await;
}
