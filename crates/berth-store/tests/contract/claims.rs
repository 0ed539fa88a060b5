//! Claims: each task taken exactly once by many claimers, within the node's capacity and
//! the per-user limit, fairly across users, and leased to the node until its heartbeats stop.

use std::collections::{HashMap, HashSet};

use berth_proto::{Task, TaskId, TaskStatus, UserId};
use berth_store::{ClaimLimits, Store, TaskQuery};
use tokio::task::JoinSet;

use crate::support::*;

on_both_backends!(
    a_claim_leases_the_task_to_the_node_and_bumps_its_attempt,
    a_heartbeat_extends_the_lease,
    concurrent_claimers_take_each_task_exactly_once,
    workers_claiming_and_finishing_at_once_never_fail,
    a_node_runs_no_more_than_its_capacity,
    the_per_user_limit_holds_under_concurrent_claims,
    a_user_with_one_task_is_served_beside_a_backlog,
    running_tasks_stay_balanced_across_users,
);

fn limited(node: &str, node_capacity: i64, per_user_limit: i64) -> ClaimLimits {
    ClaimLimits {
        node_capacity,
        per_user_limit,
        ..roomy(node)
    }
}

async fn a_claim_leases_the_task_to_the_node_and_bumps_its_attempt(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let alice = user(store.as_ref(), "alice").await;
    let id = enqueue(store.as_ref(), alice, "one").await.id;
    let (claimed, fence) = claim(store.as_ref(), &roomy("node-a")).await;
    assert_eq!((claimed.id, claimed.status), (id, TaskStatus::Running));
    assert_eq!((fence.attempt, claimed.started_at.is_some()), (1, true));
    assert_eq!(task(store.as_ref(), alice, id).await.attempt, 1);
    let running = events(store.as_ref(), alice, id).await.pop().unwrap();
    assert_eq!(running.payload["status"], "running");
    assert_eq!(running.payload["node"], "node-a");
    let renewed = store.heartbeat(fence, 60_000).await.unwrap();
    assert_eq!(renewed, Some(TaskStatus::Running));
    assert!(store
        .claim_next_task(&roomy("node-a"))
        .await
        .unwrap()
        .is_none());
    store.cancel_task(alice, id).await.unwrap();
    assert_eq!(store.cancelling_on_node("node-a").await.unwrap(), [fence]);
}

async fn a_heartbeat_extends_the_lease(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let alice = user(store.as_ref(), "alice").await;
    let id = enqueue(store.as_ref(), alice, "one").await.id;
    let (_, fence) = claim_and_let_expire(store.as_ref()).await;
    let renewed = store.heartbeat(fence, 600_000).await.unwrap();
    assert_eq!(renewed, Some(TaskStatus::Running));
    assert!(store
        .reap_expired_leases(&no_backoff)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(status(store.as_ref(), alice, id).await, TaskStatus::Running);
}

/// Claims until nothing is left for these limits. A claim that fails (a deadlock between
/// concurrent claims, say) fails the test.
async fn claim_until_none(store: &dyn Store, limits: &ClaimLimits) -> Vec<TaskId> {
    let mut taken = Vec::new();
    loop {
        match store.claim_next_task(limits).await {
            Ok(Some(task)) => taken.push(task.id),
            Ok(None) => return taken,
            Err(err) => panic!("claiming failed: {err}"),
        }
    }
}

async fn concurrent_claimers_take_each_task_exactly_once(backend: Backend) {
    const CLAIMERS: usize = 8;
    let db = Db::new(backend).await;
    let stores = db.machines(CLAIMERS).await;
    let mut made = HashSet::new();
    for owner in 0..4 {
        let owner = user(stores[0].as_ref(), &format!("user{owner}")).await;
        for n in 0..15 {
            made.insert(
                enqueue(stores[0].as_ref(), owner, &format!("task {n}"))
                    .await
                    .id,
            );
        }
    }
    let mut claimers = JoinSet::new();
    for (n, store) in stores.iter().cloned().enumerate() {
        claimers.spawn(async move {
            let limits = roomy(&format!("node{n}"));
            claim_until_none(store.as_ref(), &limits).await
        });
    }
    let mut taken = Vec::new();
    while let Some(claimed) = claimers.join_next().await {
        taken.extend(claimed.unwrap());
    }
    let distinct: HashSet<TaskId> = taken.iter().copied().collect();
    assert_eq!(taken.len(), distinct.len(), "a task was claimed twice");
    assert_eq!(distinct, made, "every task was claimed");
}

/// Workers that claim and finish at once, as runners do, over few users, so that claims
/// wait for each other's user rows while finishes change them: no call fails (on
/// PostgreSQL, no deadlock), and every task ends once.
async fn workers_claiming_and_finishing_at_once_never_fail(backend: Backend) {
    const WORKERS: usize = 8;
    let db = Db::new(backend).await;
    let stores = db.machines(WORKERS).await;
    let mut made = HashSet::new();
    for owner in 0..3 {
        let owner = user(stores[0].as_ref(), &format!("user{owner}")).await;
        for n in 0..40 {
            let task = enqueue(stores[0].as_ref(), owner, &format!("task {n}")).await;
            made.insert(task.id);
        }
    }
    let mut workers = JoinSet::new();
    for (n, store) in stores.iter().cloned().enumerate() {
        workers.spawn(async move {
            let limits = roomy(&format!("node{n}"));
            let mut finished = Vec::new();
            loop {
                let claimed = store.claim_next_task(&limits).await;
                let Some(task) = claimed.unwrap_or_else(|err| panic!("claiming failed: {err}"))
                else {
                    return finished;
                };
                let fence = berth_store::Fence {
                    task_id: task.id,
                    attempt: task.attempt,
                };
                let done = store.finish_task(fence, ended(TaskStatus::Succeeded)).await;
                done.unwrap_or_else(|err| panic!("finishing failed: {err}"));
                finished.push(task.id);
            }
        });
    }
    let mut finished = Vec::new();
    while let Some(done) = workers.join_next().await {
        finished.extend(done.unwrap());
    }
    let distinct: HashSet<TaskId> = finished.iter().copied().collect();
    assert_eq!(finished.len(), distinct.len(), "a task was run twice");
    assert_eq!(distinct, made, "every task ran");
}

async fn a_node_runs_no_more_than_its_capacity(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let alice = user(store.as_ref(), "alice").await;
    for n in 0..5 {
        enqueue(store.as_ref(), alice, &format!("task {n}")).await;
    }
    let node_a = limited("a", 2, 100);
    let (_, first) = claim(store.as_ref(), &node_a).await;
    claim(store.as_ref(), &node_a).await;
    assert!(store.claim_next_task(&node_a).await.unwrap().is_none());
    claim(store.as_ref(), &limited("b", 2, 100)).await;
    store
        .finish_task(first, ended(TaskStatus::Succeeded))
        .await
        .unwrap();
    claim(store.as_ref(), &node_a).await;
    assert!(store.claim_next_task(&node_a).await.unwrap().is_none());
}

async fn running_per_user(store: &dyn Store, users: &[UserId]) -> Vec<usize> {
    let mut counts = Vec::new();
    for &owner in users {
        let query = TaskQuery {
            status: Some(TaskStatus::Running),
            limit: 1_000,
            ..TaskQuery::default()
        };
        counts.push(store.list_tasks(owner, query).await.unwrap().len());
    }
    counts
}

async fn the_per_user_limit_holds_under_concurrent_claims(backend: Backend) {
    const CLAIMERS: usize = 8;
    let db = Db::new(backend).await;
    let stores = db.machines(CLAIMERS).await;
    let mut users = Vec::new();
    for name in ["alice", "bob"] {
        let owner = user(stores[0].as_ref(), name).await;
        for n in 0..10 {
            enqueue(stores[0].as_ref(), owner, &format!("{name} {n}")).await;
        }
        users.push(owner);
    }
    let mut claimers = JoinSet::new();
    for (n, store) in stores.iter().cloned().enumerate() {
        claimers.spawn(async move {
            let limits = limited(&format!("node{n}"), 100, 2);
            claim_until_none(store.as_ref(), &limits).await
        });
    }
    while let Some(done) = claimers.join_next().await {
        done.unwrap();
    }
    let counts = running_per_user(stores[0].as_ref(), &users).await;
    assert!(counts.iter().all(|&n| n <= 2), "over the limit: {counts:?}");
    // Whatever a race left unclaimed, the limit is a cap, not a stop: each user reaches it.
    claim_until_none(stores[0].as_ref(), &limited("z", 100, 2)).await;
    assert_eq!(running_per_user(stores[0].as_ref(), &users).await, [2, 2]);
}

async fn a_user_with_one_task_is_served_beside_a_backlog(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let alice = user(store.as_ref(), "alice").await;
    for n in 0..20 {
        enqueue(store.as_ref(), alice, &format!("alice {n}")).await;
    }
    let bob = user(store.as_ref(), "bob").await;
    let carol = user(store.as_ref(), "carol").await;
    enqueue(store.as_ref(), bob, "bob's only").await;
    enqueue(store.as_ref(), carol, "carol's only").await;

    // One task at a time, each finished before the next claim: three claims serve three users.
    let mut served = HashSet::new();
    for _ in 0..3 {
        let (claimed, fence) = claim(store.as_ref(), &limited("a", 1, 100)).await;
        served.insert(claimed.owner_id);
        store
            .finish_task(fence, ended(TaskStatus::Succeeded))
            .await
            .unwrap();
    }
    assert_eq!(served, HashSet::from([alice, bob, carol]));
}

async fn running_tasks_stay_balanced_across_users(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let mut queued = HashMap::new();
    let alice = user(store.as_ref(), "alice").await;
    let bob = user(store.as_ref(), "bob").await;
    for (owner, tasks) in [(alice, 12), (bob, 4)] {
        for n in 0..tasks {
            enqueue(store.as_ref(), owner, &format!("task {n}")).await;
        }
        queued.insert(owner, tasks);
    }
    // Claims held, not finished: while both have queued work, neither runs two more.
    let mut running: HashMap<UserId, i64> = HashMap::new();
    while queued[&bob] > 0 {
        let (claimed, _): (Task, _) = claim(store.as_ref(), &roomy("a")).await;
        *queued.get_mut(&claimed.owner_id).unwrap() -= 1;
        *running.entry(claimed.owner_id).or_default() += 1;
        let (a, b) = (running.get(&alice), running.get(&bob));
        let gap = (a.copied().unwrap_or(0) - b.copied().unwrap_or(0)).abs();
        assert!(gap <= 1, "unbalanced: {running:?}");
    }
}
