//! Fair order across users and the per-user limit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_proto::{TaskId, UserId};
use berth_runner::Outcome;

use crate::harness::*;

on_both_backends!(
    one_users_backlog_does_not_starve_another,
    per_user_limit_caps_concurrency
);

async fn one_users_backlog_does_not_starve_another(backend: Backend) {
    let db = TestStore::new(backend).await;
    let store = db.open().await;
    let alice = store.upsert_user("alice").await.unwrap().id;
    let bob = store.upsert_user("bob").await.unwrap().id;
    for n in 0..30 {
        enqueue(store.as_ref(), alice, &format!("alice {n}"), None).await;
    }
    let bobs = enqueue(store.as_ref(), bob, "bob's only task", None).await;

    let order: Arc<Mutex<Vec<TaskId>>> = Arc::default();
    let executor = {
        let order = order.clone();
        Scripted::new(move |task: berth_proto::Task, _ctx| {
            order.lock().unwrap().push(task.id);
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Outcome::succeeded(None)
            }
        })
    };
    let config = berth_runner::RunnerConfig {
        capacity: 1,
        ..quick_config("node")
    };
    let runner = RunningRunner::start(config, db.open().await, executor.clone());
    eventually(Duration::from_secs(60), "all 31 tasks run", || async {
        executor.runs().len() == 31
    })
    .await;
    runner.stop().await;
    let order = order.lock().unwrap().clone();
    let position = order.iter().position(|id| *id == bobs.id).unwrap();
    assert!(
        position <= 1,
        "bob's task waited behind {position} of alice's"
    );
}

async fn per_user_limit_caps_concurrency(backend: Backend) {
    let db = TestStore::new(backend).await;
    let store = db.open().await;
    let alice = store.upsert_user("alice").await.unwrap().id;
    for n in 0..6 {
        enqueue(store.as_ref(), alice, &format!("alice {n}"), None).await;
    }
    let running: Arc<Mutex<HashMap<UserId, (usize, usize)>>> = Arc::default();
    let executor = {
        let running = running.clone();
        Scripted::new(move |task: berth_proto::Task, _ctx| {
            let running = running.clone();
            async move {
                {
                    let mut counts = running.lock().unwrap();
                    let (now, max) = counts.entry(task.owner_id).or_default();
                    *now += 1;
                    *max = (*max).max(*now);
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
                running.lock().unwrap().get_mut(&task.owner_id).unwrap().0 -= 1;
                Outcome::succeeded(None)
            }
        })
    };
    let config = berth_runner::RunnerConfig {
        capacity: 8,
        per_user_limit: 2,
        ..quick_config("a")
    };
    let first = RunningRunner::start(config.clone(), db.open().await, executor.clone());
    let second = RunningRunner::start(
        berth_runner::RunnerConfig {
            node_id: "b".into(),
            ..config
        },
        db.open().await,
        executor.clone(),
    );
    eventually(Duration::from_secs(60), "all 6 tasks run", || async {
        executor.runs().len() == 6
    })
    .await;
    first.stop().await;
    second.stop().await;
    let max = running.lock().unwrap()[&alice].1;
    assert_eq!(
        max, 2,
        "two runners together ran at most two of alice's tasks at once"
    );
}
